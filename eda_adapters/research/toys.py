"""Toy setups for tests, benchmarks and the demo: tiny targets trained offline and drafts (or small vanilla
assistants) fitted for a few optimizer steps on a target's own greedy continuations, enough to see acceptance above 1.

This is research scaffolding, not runtime: it sits above decoding and training (it uses the training losses and the
feature extraction) and below the experiment, the demo and the benchmarks. Real training uses the trainers.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from ..data.features import compute_target_features
from ..generation.drafts import as_eagle_draft
from ..models import EagleDraftModel
from ..training.losses import add_feature_noise, eagle_loss, shift_for_draft
from ..errors import EdaInputError

__all__ = [
    "TinySetup",
    "assistant_from_target",
    "build_tiny_setup",
    "chat_continuations",
    "greedy_continuations",
    "quick_fit_assistant",
    "quick_fit_draft",
    "stdlib_bytes",
    "train_lm",
]

@torch.no_grad()
def greedy_continuations(target: PreTrainedModel, prompts: torch.LongTensor, max_new_tokens: int) -> torch.LongTensor:
    """The target's own greedy continuations of equal-length `prompts` `[n, seq]`: `[n, seq + max_new_tokens]`."""
    return target.generate(
        prompts, attention_mask=torch.ones_like(prompts), do_sample=False, max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens, pad_token_id=0,
    )


@torch.no_grad()
def chat_continuations(
    target: PreTrainedModel, prompts: list[torch.LongTensor], max_new_tokens: int
) -> tuple[torch.LongTensor, torch.LongTensor]:
    """The target's greedy answers to prompts of any length, right-padded: `(sequences, attention_mask)`."""
    rows = [target.generate(p, do_sample=False, max_new_tokens=max_new_tokens)[0] for p in prompts]
    length = max(row.numel() for row in rows)
    sequences = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros_like(sequences)
    for i, row in enumerate(rows):
        sequences[i, : row.numel()] = row
        mask[i, : row.numel()] = 1
    return sequences, mask


def quick_fit_draft(
    target: PreTrainedModel,
    draft: Any,
    sequences: torch.LongTensor,
    steps: int = 40,
    lr: float = 1e-2,
    noise_std: float = 0.0,
    batch_size: int = 8,
    seed: int = 0,
    attention_mask: torch.Tensor | None = None,
) -> list[float]:
    """Fit `draft` (an `EagleDraftModel` or a PEFT-wrapped one: only trainable parameters move) to `target` with the
    EAGLE objective (`eagle_loss`) on `sequences` (e.g. from [`greedy_continuations`] or, right-padded with an
    `attention_mask`, from [`chat_continuations`]). Returns the step losses."""
    base = as_eagle_draft(draft)
    if base is None:
        raise TypeError(f"quick_fit_draft needs an EAGLE draft, got {type(draft).__name__}.")
    mask = torch.ones_like(sequences) if attention_mask is None else attention_mask
    features, logits = compute_target_features(target, sequences, mask, return_logits=True)
    draft_ids, draft_features, target_features, loss_mask = shift_for_draft(sequences, features, mask)
    target_logits = logits[:, 1:]

    def batch_loss(rows: torch.Tensor) -> torch.Tensor:
        out = base(input_ids=draft_ids[rows], hidden_states=add_feature_noise(draft_features[rows], noise_std))
        return eagle_loss(
            out.last_hidden_state, out.logits, target_features[rows], target_logits[rows], loss_mask[rows]
        ).loss

    return _fit(draft, batch_loss, sequences.shape[0], steps, lr, batch_size, seed)


def assistant_from_target(target: PreTrainedModel, num_layers: int = 1) -> PreTrainedModel:
    """A small vanilla causal LM of `target`'s own class and tokenizer for transformers' assisted generation: the
    target's config with `num_layers` decoder layers, initialised from the target's embedding, first `num_layers`
    layers, final norm and head (a truncated target; fit it with [`quick_fit_assistant`] before use)."""
    total = target.config.num_hidden_layers
    if not 1 <= num_layers <= total:
        raise EdaInputError(f"num_layers must be between 1 and the target's {total} layers, got {num_layers}.")
    values = {**target.config.to_dict(), "num_hidden_layers": num_layers}
    if values.get("layer_types") is not None:  # per-layer attention kinds (e.g. Qwen2's sliding layers)
        values["layer_types"] = values["layer_types"][:num_layers]
    config = type(target.config)(**values)
    assistant = type(target)(config).to(dtype=target.dtype, device=target.device)
    kept = {f"layers.{i}." for i in range(num_layers)}
    state = {key: value for key, value in target.state_dict().items()
             if ".layers." not in key or any(f".{prefix}" in key for prefix in kept)}
    assistant.load_state_dict(state, strict=True)
    return assistant.eval()


def quick_fit_assistant(
    target: PreTrainedModel,
    assistant: PreTrainedModel,
    sequences: torch.LongTensor,
    steps: int = 40,
    lr: float = 1e-2,
    batch_size: int = 8,
    seed: int = 0,
    attention_mask: torch.Tensor | None = None,
    loss_mask: torch.Tensor | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> list[float]:
    """Distil `target` into a small vanilla causal LM `assistant` (KL to the target's next-token distribution) on the
    same data, so that benchmarks compare EAGLE drafts against an equally trained classic assistant.

    `sequences` may be right-padded (`attention_mask`, 0 on padding; each batch is cut to its longest row);
    `loss_mask` (default: `attention_mask`) picks the positions whose next-token distribution counts, e.g. the
    response tokens of regenerated chat data. The target's logits are computed per batch, so real vocabularies fit in
    memory. `autocast_dtype` (e.g. `torch.bfloat16`) runs both forwards under `torch.autocast` in that dtype: mixed
    precision, with the assistant's weights and AdamW in their own dtype. Returns the step losses."""
    attention_mask = torch.ones_like(sequences) if attention_mask is None else attention_mask
    weights = (attention_mask if loss_mask is None else loss_mask * attention_mask).float()

    def batch_loss(rows: torch.Tensor) -> torch.Tensor:
        width = int(attention_mask[rows].sum(-1).max())  # right padding beyond the batch's longest row is dropped
        ids, mask, weight = sequences[rows, :width], attention_mask[rows, :width], weights[rows, :width]
        with torch.autocast(sequences.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            with torch.no_grad():
                target_logits = target(input_ids=ids, attention_mask=mask).logits
            logits = assistant(input_ids=ids, attention_mask=mask).logits
        target_logp = F.log_softmax(target_logits.float(), -1)
        logp = F.log_softmax(logits.float(), -1)
        per_position = F.kl_div(logp, target_logp, log_target=True, reduction="none").sum(-1)
        return (per_position * weight).sum() / weight.sum().clamp(min=1.0)

    return _fit(assistant, batch_loss, sequences.shape[0], steps, lr, batch_size, seed)


def _fit(
    model: torch.nn.Module, batch_loss: Any, num_rows: int, steps: int, lr: float, batch_size: int, seed: int
) -> list[float]:
    """AdamW on the trainable parameters of `model` for `steps` random batches of row indices; the step losses."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in (bar := tqdm(range(steps), desc=f"fit {type(model).__name__}", leave=False)):
        loss = batch_loss(torch.randperm(num_rows, generator=generator)[:batch_size])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def train_lm(
    model: PreTrainedModel, blocks: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int = 0,
    desc: str = "train LM",
) -> list[float]:
    """Plain next-token training with AdamW and a cosine schedule; returns the loss per step."""
    model.train()
    gen = torch.Generator().manual_seed(seed)
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    losses = []
    for _ in (bar := tqdm(range(steps), desc=desc, leave=False)):
        batch = blocks[torch.randint(0, blocks.shape[0], (batch_size,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return losses


@dataclass
class TinySetup:
    """A tiny target with a briefly fitted EAGLE draft and an equally fitted vanilla assistant of similar cost."""

    target: PreTrainedModel
    draft: EagleDraftModel
    assistant: PreTrainedModel
    prompts: list[torch.LongTensor]
    description: str


def stdlib_bytes(max_bytes: int, skip_files: int = 0) -> torch.Tensor:
    """Bytes of the Python standard library's source (offline text that exists everywhere), as tokens 0..255."""
    files = sorted(Path(os.__file__).parent.glob("*.py"))[skip_files:]
    data = bytearray()
    for path in files:
        data += path.read_bytes()
        if len(data) >= max_bytes:
            break
    return torch.tensor(list(data[:max_bytes]), dtype=torch.long)


def build_tiny_setup(
    num_prompts: int = 8,
    prompt_len: int = 48,
    target_steps: int = 300,
    fit_steps: int = 300,
    seed: int = 0,
    hidden_size: int = 256,
    num_layers: int = 4,
) -> TinySetup:
    """A CPU-sized benchmark setup that means something, built offline in a minute or two.

    The target is a byte-level Llama (vocab 256) trained for `target_steps` on Python standard-library source; the
    EAGLE draft (1 layer) and a vanilla 1-layer Llama assistant of the same width are each fitted for `fit_steps` on
    the target's own greedy continuations (EAGLE objective for the draft, distillation for the assistant). Prompts
    are held-out byte windows of other standard-library files.
    """
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=256, hidden_size=hidden_size, intermediate_size=hidden_size * 11 // 4,
        num_hidden_layers=num_layers, num_attention_heads=max(1, hidden_size // 64),
        num_key_value_heads=max(1, hidden_size // 64), max_position_embeddings=1024, eos_token_id=None,
        bos_token_id=None, pad_token_id=None,
    )
    target = LlamaForCausalLM(config)
    text = stdlib_bytes(1_500_000)
    blocks = text[: len(text) // 128 * 128].view(-1, 128)
    train_lm(target, blocks, target_steps, batch_size=16, lr=2e-3, seed=seed, desc="tiny target")
    target.eval()

    generator = torch.Generator().manual_seed(seed + 1)
    starts = torch.randint(0, blocks.shape[0], (128,), generator=generator)
    sequences = greedy_continuations(target, blocks[starts, :32], 64)
    draft = EagleDraftModel.from_target(target)
    quick_fit_draft(target, draft, sequences, steps=fit_steps, lr=3e-3, batch_size=16, seed=seed)
    assistant = LlamaForCausalLM(LlamaConfig(**{**config.to_dict(), "num_hidden_layers": 1})).eval()
    quick_fit_assistant(target, assistant, sequences, steps=fit_steps, lr=3e-3, batch_size=16, seed=seed)

    held_out = stdlib_bytes(200_000, skip_files=150)
    offsets = torch.randint(0, len(held_out) - prompt_len, (num_prompts,), generator=generator)
    prompts = [held_out[o : o + prompt_len][None] for o in offsets.tolist()]
    description = (
        f"byte-level Llama target (hidden {hidden_size}, {num_layers} layers, {target_steps} steps on Python stdlib "
        f"source); EAGLE draft (1 layer) and vanilla Llama assistant (1 layer, same width) each fitted {fit_steps} "
        "steps on 128 greedy continuations of the target"
    )
    return TinySetup(target, draft, assistant, prompts, description)
