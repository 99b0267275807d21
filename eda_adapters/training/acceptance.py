"""A quick acceptance-length (tau) measurement for training runs, on held-out prompts.

It runs real greedy speculative decoding (`target.generate(..., assistant_model=draft)`, chain drafting through
`eda_adapters.generation`) and reads the per-step acceptance recorded by `eda_adapters.track_acceptance`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..console import bar_options
from transformers import PreTrainedModel

from ..generation.stats import track_acceptance
from ..errors import EdaInputError


def prompts_from_dataset(dataset: Iterable[dict[str, Any]], num_prompts: int) -> list[torch.LongTensor]:
    """The prompts of the first `num_prompts` samples of a draft-training dataset.

    A sample's prompt is its `input_ids` before the first position of `loss_mask` (the response), or all of its
    `input_ids` when it has no `loss_mask` (or a mask without zeros at the start).
    """
    prompts = []
    for sample in dataset:
        if len(prompts) >= num_prompts:
            break
        ids = torch.as_tensor(sample["input_ids"], dtype=torch.long).flatten()
        if sample.get("loss_mask") is not None:
            mask = torch.as_tensor(sample["loss_mask"]).flatten()[: len(ids)]
            start = int(mask.nonzero()[0]) if mask.any() else len(ids)
            if start > 0:
                ids = ids[:start]
        if len(ids) > 0:
            prompts.append(ids)
    if not prompts:
        raise EdaInputError("The tau dataset has no usable prompt (samples need non-empty `input_ids`).")
    return prompts


@torch.no_grad()
def greedy_acceptance_length(
    draft: nn.Module,
    target: PreTrainedModel,
    prompts: Sequence[torch.LongTensor],
    num_draft_tokens: int = 5,
    max_new_tokens: int = 64,
    show_progress: bool = False,
) -> float:
    """tau (tokens per target forward, bonus included) of greedy chain speculative decoding of `target` with `draft`.

    Args:
        draft: An `EagleDraftModel` attached to `target` (or a `PeftModel` wrapping one, adapters active).
        target: The target causal LM.
        prompts: 1D token tensors, decoded one at a time (batch size 1).
        num_draft_tokens: Tokens the draft proposes per verification step (`k`); tau is at most `k + 1`.
        max_new_tokens: Tokens generated per prompt.
        show_progress: Show a progress bar over the prompts.
    """
    if num_draft_tokens < 1:
        raise EdaInputError(f"num_draft_tokens must be >= 1, got {num_draft_tokens}.")
    device = target.get_input_embeddings().weight.device
    was_training = draft.training
    generation = target.generation_config
    pad = generation.pad_token_id if generation.pad_token_id is not None else generation.eos_token_id
    pad = pad[0] if isinstance(pad, list) else pad
    try:
        with track_acceptance() as stats:
            for prompt in tqdm(prompts, desc="tau", **bar_options(show_progress)):
                prompt = prompt.to(device).view(1, -1)
                target.generate(
                    prompt,
                    attention_mask=torch.ones_like(prompt),
                    assistant_model=draft,
                    num_assistant_tokens=num_draft_tokens,
                    num_assistant_tokens_schedule="constant",
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=pad if pad is not None else 0,
                )
    finally:
        draft.train(was_training)
    if stats.num_steps == 0:
        raise EdaInputError("No verification step ran on the tau prompts: raise tau_max_new_tokens.")
    return stats.tau
