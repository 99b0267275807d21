"""A few optimizer steps that make a draft (or a small vanilla assistant) imitate a target on the target's own greedy
continuations: enough for tests, demos and benchmarks to see acceptance above 1. Real training uses the trainers."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from ..data.features import compute_target_features
from ..training.losses import add_feature_noise, eagle_loss, shift_for_draft
from .drafts import as_eagle_draft


@torch.no_grad()
def greedy_continuations(target: PreTrainedModel, prompts: torch.LongTensor, max_new_tokens: int) -> torch.LongTensor:
    """The target's own greedy continuations of equal-length `prompts` `[n, seq]`: `[n, seq + max_new_tokens]`."""
    return target.generate(
        prompts, attention_mask=torch.ones_like(prompts), do_sample=False, max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens, pad_token_id=0,
    )


def quick_fit_draft(
    target: PreTrainedModel,
    draft: Any,
    sequences: torch.LongTensor,
    steps: int = 40,
    lr: float = 1e-2,
    noise_std: float = 0.0,
    batch_size: int = 8,
    seed: int = 0,
) -> list[float]:
    """Fit `draft` (an `EagleDraftModel` or a PEFT-wrapped one: only trainable parameters move) to `target` with the
    EAGLE objective (`eagle_loss`) on `sequences` (e.g. from [`greedy_continuations`]). Returns the step losses."""
    base = as_eagle_draft(draft)
    if base is None:
        raise TypeError(f"quick_fit_draft needs an EAGLE draft, got {type(draft).__name__}.")
    mask = torch.ones_like(sequences)
    features, logits = compute_target_features(target, sequences, mask, return_logits=True)
    draft_ids, draft_features, target_features, loss_mask = shift_for_draft(sequences, features, mask)
    target_logits = logits[:, 1:]

    def batch_loss(rows: torch.Tensor) -> torch.Tensor:
        out = base(input_ids=draft_ids[rows], hidden_states=add_feature_noise(draft_features[rows], noise_std))
        return eagle_loss(
            out.last_hidden_state, out.logits, target_features[rows], target_logits[rows], loss_mask[rows]
        ).loss

    return _fit(draft, batch_loss, sequences.shape[0], steps, lr, batch_size, seed)


def quick_fit_assistant(
    target: PreTrainedModel,
    assistant: PreTrainedModel,
    sequences: torch.LongTensor,
    steps: int = 40,
    lr: float = 1e-2,
    batch_size: int = 8,
    seed: int = 0,
) -> list[float]:
    """Distil `target` into a small vanilla causal LM `assistant` (KL to the target's next-token distribution) on the
    same data, so that benchmarks compare EAGLE drafts against an equally trained classic assistant."""
    with torch.no_grad():
        target_logits = target(input_ids=sequences).logits

    def batch_loss(rows: torch.Tensor) -> torch.Tensor:
        logits = assistant(input_ids=sequences[rows]).logits
        return F.kl_div(
            F.log_softmax(logits.float(), -1), F.log_softmax(target_logits[rows].float(), -1),
            log_target=True, reduction="batchmean",
        ) / sequences.shape[1]

    return _fit(assistant, batch_loss, sequences.shape[0], steps, lr, batch_size, seed)


def _fit(
    model: torch.nn.Module, batch_loss: Any, num_rows: int, steps: int, lr: float, batch_size: int, seed: int
) -> list[float]:
    """AdamW on the trainable parameters of `model` for `steps` random batches of row indices; the step losses."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(steps):
        loss = batch_loss(torch.randperm(num_rows, generator=generator)[:batch_size])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses
