"""Which tokens end a generation: one rule for the chain, the tree and replay."""

from __future__ import annotations

from transformers import PreTrainedModel


def eos_token_ids(target: PreTrainedModel, eos_token_id: int | list[int] | None = None) -> tuple[int, ...]:
    """`eos_token_id` if given, else the target's `generation_config.eos_token_id`, as a tuple (empty: none)."""
    if eos_token_id is None:
        eos_token_id = getattr(getattr(target, "generation_config", None), "eos_token_id", None)
    if eos_token_id is None:
        return ()
    return tuple([eos_token_id] if isinstance(eos_token_id, int) else eos_token_id)
