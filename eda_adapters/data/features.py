"""Target features: the target's last (post-norm) hidden states, which the EAGLE draft reads and predicts."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from ..batched_decoding import contiguous_head_input


@torch.no_grad()
def compute_target_features(
    target: PreTrainedModel,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    return_logits: bool = False,
    layers: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the (frozen) target once and return its last hidden states `[batch, seq, hidden]` (online features).

    The last entry of `hidden_states` of a transformers causal LM is taken after the final norm, i.e. exactly what the
    output head reads, which is what an EAGLE-1 draft predicts. With `return_logits=True` the target's logits are
    returned too (the draft's cross-entropy target), otherwise `None`. `layers` (entries of `hidden_states`, see
    `eda_adapters.data.feature_cache.feature_layers`) returns those instead, concatenated on the feature axis.
    """
    with contiguous_head_input(target):
        out = target(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=0 if return_logits else 1,
        )
    hidden = out.hidden_states[-1] if layers is None else stack_layers(out.hidden_states, layers)
    return hidden, (out.logits if return_logits else None)


def stack_layers(hidden_states: tuple[torch.Tensor, ...], layers: list[int]) -> torch.Tensor:
    """The kept `hidden_states` entries, concatenated on the feature axis (a single layer is returned as is)."""
    if len(layers) == 1:
        return hidden_states[layers[0]]
    return torch.cat([hidden_states[layer] for layer in layers], dim=-1)


@torch.no_grad()
def target_top_tokens(target: PreTrainedModel, last_hidden: torch.Tensor, rows_per_pass: int = 4096) -> torch.Tensor:
    """The target's most likely next token `[..., ]` (int64) at every position of `last_hidden` `[..., hidden]` (its
    last, post-norm hidden states), through its output head: what draft training compares the draft's top token
    with. Computed from the features as cached, so it matches `head(features).argmax(-1)` at training time exactly;
    `rows_per_pass` positions at a time, so the vocabulary-wide logits never all exist at once."""
    head = target.get_output_embeddings()
    flat = last_hidden.reshape(-1, last_hidden.shape[-1])
    tokens = [
        head(flat[start : start + rows_per_pass].to(device=head.weight.device, dtype=head.weight.dtype)).argmax(-1)
        for start in range(0, flat.shape[0], rows_per_pass)
    ]
    return torch.cat(tokens).reshape(last_hidden.shape[:-1]).cpu()
