"""The schema of tensors handed to the public API: token ids, masks and target features.

One rule everywhere: token ids are an integer tensor `[batch, seq]`; a 1-D tensor is accepted as one sequence
(`[seq]` -> `[1, seq]`), as `tokenizer(text)["input_ids"]` hands it over once wrapped in `torch.tensor`. Masks have
the ids' shape; features are floating `[batch, seq, hidden]`. What can be checked from the shape and dtype alone
is always checked; values (ids within the vocabulary, 0/1 masks) cost a read from the device, so only the entry
points called once per generation check them (`check_values=True`), never a forward run once per drafted token.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import EdaInputError


def token_ids_tensor(
    value: Any,
    name: str = "input_ids",
    *,
    where: str = "",
    vocab_size: int | None = None,
    batch_size: int | None = None,
    check_values: bool = False,
) -> torch.Tensor:
    """`value` as integer token ids `[batch, seq]` (a 1-D tensor becomes one sequence), or a one-line refusal naming
    `name` (in `where`), what it got, and the fix. `batch_size` is required when given; with `check_values`, every id
    must lie in `[0, vocab_size)`."""
    label = f"{where}: {name}" if where else name
    if not isinstance(value, torch.Tensor):
        raise EdaInputError(f"{label} must be a torch.LongTensor [batch, seq], got a {type(value).__name__}; wrap "
                            "the ids with torch.tensor([...]) or use the tokenizer's return_tensors='pt'")
    if value.dtype == torch.bool or value.is_floating_point() or value.is_complex():
        raise EdaInputError(f"{label} must hold integer token ids, got dtype {value.dtype}; pass the tokenizer's ids "
                            "(torch.long), not embeddings or masks")
    if value.dim() == 1:
        value = value[None]
    if value.dim() != 2:
        raise EdaInputError(f"{label} must be [batch, seq] (or [seq] for one sequence), got shape "
                            f"{tuple(value.shape)}")
    if value.shape[1] == 0:
        raise EdaInputError(f"{label} holds no token (shape {tuple(value.shape)}); pass at least one token per row")
    if batch_size is not None and value.shape[0] != batch_size:
        raise EdaInputError(f"{label} has batch size {value.shape[0]}; {where or 'this call'} supports batch size "
                            f"{batch_size}: call it once per sequence")
    if check_values and vocab_size is not None:
        low, high = int(value.min()), int(value.max())
        if low < 0 or high >= vocab_size:
            raise EdaInputError(f"{label} holds ids from {low} to {high}, outside the target's vocabulary "
                                f"[0, {vocab_size}): tokenize with the target's own tokenizer")
    return value.long() if value.dtype != torch.long else value


def mask_tensor(value: Any, like: torch.Tensor, name: str = "attention_mask", *, where: str = "",
                check_values: bool = False) -> torch.Tensor | None:
    """`value` (or `None`) as a mask of `like`'s shape (a 1-D mask follows a 1-D `input_ids`), or a refusal; with
    `check_values` every entry must be 0 or 1."""
    if value is None:
        return None
    label = f"{where}: {name}" if where else name
    if not isinstance(value, torch.Tensor):
        raise EdaInputError(f"{label} must be a tensor shaped like input_ids, got a {type(value).__name__}")
    if value.dim() == 1 and like.shape[0] == 1:
        value = value[None]
    if tuple(value.shape) != tuple(like.shape):
        raise EdaInputError(f"{label} has shape {tuple(value.shape)} but input_ids has {tuple(like.shape)}; a mask "
                            "holds one 0/1 entry per token")
    if value.is_complex():
        raise EdaInputError(f"{label} must hold 0/1 entries, got dtype {value.dtype}")
    if check_values and value.numel() and not bool(((value == 0) | (value == 1)).all()):
        raise EdaInputError(f"{label} holds values other than 0 and 1; a mask holds one 0/1 entry per token")
    return value


def features_tensor(value: Any, hidden_size: int, like: torch.Tensor | None = None, name: str = "hidden_states",
                    *, where: str = "") -> torch.Tensor:
    """`value` as floating features `[batch, seq, hidden_size]` pairing up with `like` (ids or embeddings, when
    given: the same batch and length), or a refusal naming the target the draft was built for."""
    label = f"{where}: {name}" if where else name
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        got = f"dtype {value.dtype}" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
        raise EdaInputError(f"{label} must be a floating tensor [batch, seq, hidden] of the target's hidden states, "
                            f"got {got}")
    if value.dim() != 3:
        raise EdaInputError(f"{label} must be [batch, seq, hidden], got shape {tuple(value.shape)}")
    if value.shape[-1] != hidden_size:
        raise EdaInputError(f"{label} have size {value.shape[-1]} but this draft expects {hidden_size}: pass the "
                            "hidden states of the target the draft was built for")
    if like is not None and tuple(value.shape[:2]) != tuple(like.shape[:2]):
        raise EdaInputError(f"{label} cover [batch, seq] = {list(value.shape[:2])} but the tokens cover "
                            f"{list(like.shape[:2])}; pass one feature vector per token")
    return value


__all__ = ["features_tensor", "mask_tensor", "token_ids_tensor"]
