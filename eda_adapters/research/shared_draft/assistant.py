"""The vanilla-assistant baseline of the shared-draft recipe: the target cut to its first layers, distilled on the
same committed answers (KL to the target's next-token distribution) for the drafts' training time, so that `eda
bench` compares EAGLE against transformers' classic assisted generation trained alike."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import PreTrainedModel

from ...atomic import atomic_directory, atomic_write_json
from ...compute_dtype import choose_dtype
from ...training.collator import DraftDataCollator
from ..toys import assistant_from_target, quick_fit_assistant
from .answers import load_answers
from .chunks import ChunkBudget, ChunkLog
from .training import TrainSettings

ASSISTANT_LAYERS = 2
ASSISTANT_LR = 1e-4
PROBE_STEPS = 4


def train_assistant(target: PreTrainedModel, data_dir: Path, work_dir: Path, settings: TrainSettings,
                    budget: ChunkBudget, log: ChunkLog, num_layers: int = ASSISTANT_LAYERS) -> Path | None:
    """Distil the assistant for `settings.train_minutes` (steps from a short probe), in one go: `None` when that does
    not fit the budget (it has no checkpoints; it is a baseline, not the method)."""
    final = work_dir / f"assistant-l{num_layers}"
    if (final / "config.json").exists():
        return final
    if not budget.allows(settings.train_minutes * 60 + 60):
        return None
    batch = DraftDataCollator(max_length=settings.max_length)(list(load_answers(data_dir)))
    # the drafts' mixed precision where this CPU runs bfloat16 fast (float32 weights and AdamW): the same seconds buy
    # the same kind of steps
    autocast = torch.bfloat16 if choose_dtype() == torch.bfloat16 else None
    fit = dict(sequences=batch["input_ids"], attention_mask=batch["attention_mask"], loss_mask=batch["loss_mask"],
               lr=ASSISTANT_LR, batch_size=settings.per_device_train_batch_size, autocast_dtype=autocast)
    started = time.perf_counter()
    quick_fit_assistant(target, assistant_from_target(target, num_layers), steps=PROBE_STEPS, seed=1, **fit)
    seconds_per_step = (time.perf_counter() - started) / PROBE_STEPS
    steps = max(1, int(settings.train_minutes * 60 / seconds_per_step))
    assistant = assistant_from_target(target, num_layers)
    started = time.perf_counter()
    losses = quick_fit_assistant(target, assistant, steps=steps, seed=0, **fit)
    seconds = time.perf_counter() - started
    with atomic_directory(final) as tmp:
        assistant.save_pretrained(tmp)
    atomic_write_json(data_dir / f"training-assistant-l{num_layers}.json", {
        "num_layers": num_layers, "steps": steps, "probe_seconds_per_step": seconds_per_step,
        "train_seconds": round(seconds, 1), "lr": ASSISTANT_LR, "autocast_dtype": str(autocast),
        "first_losses": losses[:5], "last_losses": losses[-5:],
    })
    log.record("assistant", seconds, steps=steps, num_layers=num_layers)
    return final
