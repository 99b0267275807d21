"""The training stages of the shared-draft recipe: one draft per architecture, at the same training compute.

Equal compute means equal wall-clock seconds of training on the same machine. A short probe measures each
architecture's seconds per optimizer step once; `max_steps = train_minutes * 60 / seconds_per_step` is then fixed
in the committed plan (`data_dir/training-plan.json`), so the learning-rate schedule does not change between chunks
or machines. Training stops at the invocation's budget with a checkpoint and resumes from it in the next one.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, TrainerCallback

from ...atomic import atomic_directory, atomic_write_json
from ...data import extract_features
from ...data.feature_cache import INDEX_FILE, draft_feature_layers
from ...models import Eagle3DraftModel, EagleDraftModel
from ...training import EagleTrainer, EagleTrainingConfig
from .answers import load_answers
from .chunks import ChunkBudget, ChunkLog, check_recorded
from .compare import export_draft

ARCHITECTURES = ("eagle", "eagle3")
PLAN_FILE = "training-plan.json"
DRAFTS_DIR = "drafts"
MIN_TRAIN_SECONDS = 300.0


@dataclass(frozen=True)
class TrainSettings:
    """What both drafts share; only the architecture (and EAGLE-3's training-time test) differs."""

    train_minutes: float = 45.0  # x3 (two drafts, the assistant): what the 8-hour budget leaves, see the README
    draft_vocab_size: int = 8192
    per_device_train_batch_size: int = 8
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    max_length: int = 512
    ttt_steps: int = 3
    save_minutes: float = 10.0
    probe_steps: int = 50  # one megabatch of the length-grouped sampler: every length, not only the longest
    feature_dtype: str = "bfloat16"
    extra: dict[str, Any] = field(default_factory=dict)


def _config(arch: str, settings: TrainSettings, output_dir: Path, max_steps: int, save_steps: int,
            target: PreTrainedModel) -> EagleTrainingConfig:
    # a draft built from a bfloat16 target is bfloat16: mixed precision keeps its trainable weights (and AdamW's
    # updates, most of them below bfloat16's resolution) in float32, and its matmuls in bfloat16
    return EagleTrainingConfig(
        bf16=target.dtype == torch.bfloat16,
        output_dir=str(output_dir), draft_architecture=arch, ttt_steps=settings.ttt_steps if arch == "eagle3" else 1,
        draft_vocab_size=settings.draft_vocab_size, per_device_train_batch_size=settings.per_device_train_batch_size,
        learning_rate=settings.learning_rate, lr_scheduler_type="cosine", warmup_steps=settings.warmup_steps,
        max_length=settings.max_length, max_steps=max_steps, save_strategy="steps", save_steps=save_steps,
        save_total_limit=1, logging_steps=50, report_to=[], use_cpu=True, seed=0, dataloader_num_workers=0,
        train_sampling_strategy="group_by_length",  # answers run 1 to 256 tokens: less padding per batch
        **settings.extra,
    )


def feature_cache(target: PreTrainedModel, data_dir: Path, work_dir: Path, settings: TrainSettings,
                  budget: ChunkBudget, log: ChunkLog) -> Path | None:
    """Extract the features every architecture's draft reads, for every committed answer, into the cache, once: the
    union of their layers (EAGLE-3's aux layers and the last one, which EAGLE-1 reads alone), served to each draft
    as its own (`CachedFeatureDataset.select_layers`). `None` when the estimated time (from the last extraction's
    rate) does not fit the budget."""
    probes = (EagleDraftModel.from_target(target), Eagle3DraftModel.from_target(target))
    layers = sorted({layer for probe in probes for layer in draft_feature_layers(probe, target)})  # the last one last
    cache = work_dir / ("features-" + "-".join(map(str, layers)))
    if (cache / INDEX_FILE).exists():
        return cache
    dataset = load_answers(data_dir)
    tokens = sum(len(ids) for ids in dataset["input_ids"])
    if not budget.allows(tokens * log.last_rate("features", "tokens", default=1 / 1000)):
        return None
    started = time.perf_counter()
    extract_features(target, dataset, cache, layers=layers, dtype=settings.feature_dtype, batch_size=16)
    log.record("features", time.perf_counter() - started, architectures=list(ARCHITECTURES), layers=layers,
               tokens=tokens)
    return cache


class _StepClock(TrainerCallback):
    """Seconds of every optimizer step; asks the trainer to save and stop when the invocation's budget runs out."""

    def __init__(self, budget: ChunkBudget | None = None, margin_seconds: float = 120.0) -> None:
        self.budget, self.margin, self.steps, self._last = budget, margin_seconds, [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(time.perf_counter() - self._last)
        if self.budget is not None and self.budget.left() < self.margin and state.global_step < state.max_steps:
            control.should_save = True
            control.should_training_stop = True
        return control


def training_plan(target: PreTrainedModel, cache: Path | None, data_dir: Path, work_dir: Path,
                  settings: TrainSettings, log: ChunkLog) -> dict[str, Any]:
    """The committed plan: per architecture, the probed seconds per step and the `max_steps` of its budget (`cache`,
    the features, is only read to probe an architecture the plan does not hold yet)."""
    path = data_dir / PLAN_FILE
    plan = json.loads(path.read_text()) if path.exists() else {"settings": asdict(settings), "architectures": {}}
    check_recorded(plan["settings"], asdict(settings), f"the training plan {path}",
                   "pass the settings it records, or delete it to plan (and train) again")
    for arch in ARCHITECTURES:
        if arch in plan["architectures"]:
            continue
        if cache is None:
            raise ValueError(f"the training plan {path} has no {arch!r} yet: probing it needs the feature cache")
        clock = _StepClock()
        config = _config(arch, settings, work_dir / f"probe-{arch}", settings.probe_steps, settings.probe_steps + 1,
                         target)
        config.save_strategy = "no"
        started = time.perf_counter()
        EagleTrainer(target_model=target, args=config, train_dataset=str(cache), callbacks=[clock]).train()
        seconds_per_step = statistics.mean(clock.steps[1:])  # the first step warms up
        max_steps = int(settings.train_minutes * 60 / seconds_per_step)
        plan["architectures"][arch] = {"seconds_per_step": seconds_per_step, "max_steps": max_steps,
                                       "probe_steps": settings.probe_steps}
        log.record("probe", time.perf_counter() - started, architecture=arch, seconds_per_step=seconds_per_step)
        atomic_write_json(path, plan)
    return plan


def finished_draft(data_dir: Path, arch: str) -> Path:
    """Where `arch`'s finished draft is kept: beside the committed data, in bfloat16 (about 20 MB), since the cache
    (and with it the float32 draft training wrote) may not outlive the machine it was made on."""
    return data_dir / DRAFTS_DIR / arch


def draft_is_finished(data_dir: Path, arch: str) -> bool:
    """Whether `arch`'s finished draft is kept ([`finished_draft`]): then neither training nor features are needed."""
    return (finished_draft(data_dir, arch) / "config.json").exists()


def training_seconds(log: ChunkLog, arch: str) -> dict[str, float]:
    """Seconds of `arch`'s training: of the run that made its draft (from its last fresh start, through the chunks
    that resumed it), and of earlier runs lost with their checkpoint, which bought nothing."""
    rows = [row for row in log.rows() if row["stage"] == "train" and row.get("architecture") == arch]
    fresh = max((i for i, row in enumerate(rows) if not row.get("resumed")), default=0)
    return {"train_seconds": sum(row["seconds"] for row in rows[fresh:]),
            "lost_seconds": sum(row["seconds"] for row in rows[:fresh])}


def train_draft(target: PreTrainedModel, arch: str, cache: Path | None, plan: dict[str, Any], data_dir: Path,
                work_dir: Path, settings: TrainSettings, budget: ChunkBudget, log: ChunkLog) -> Path | None:
    """Train (or resume) `arch`'s draft to its planned steps; returns the finished draft's folder
    ([`finished_draft`]), or `None` when the budget ran out first (a checkpoint is saved; the next invocation resumes
    it). `cache` is only read when the draft is not finished yet."""
    if draft_is_finished(data_dir, arch):
        return finished_draft(data_dir, arch)
    final = work_dir / f"draft-{arch}"
    if not (final / "config.json").exists():
        if cache is None or budget.left() < MIN_TRAIN_SECONDS:  # not worth a start and a checkpoint
            return None
        steps = plan["architectures"][arch]
        save_steps = max(1, int(settings.save_minutes * 60 / steps["seconds_per_step"]))
        out = work_dir / f"train-{arch}"
        config = _config(arch, settings, out, steps["max_steps"], save_steps, target)
        clock = _StepClock(budget)
        trainer = EagleTrainer(target_model=target, args=config, train_dataset=str(cache), callbacks=[clock])
        resumed = out.is_dir() and any(p.name.startswith("checkpoint-") for p in out.iterdir())
        started = time.perf_counter()
        trainer.train(resume_from_checkpoint=True if resumed else None)
        state = trainer.state
        logs = [row for row in state.log_history if "accuracy" in row]
        log.record("train", time.perf_counter() - started, architecture=arch, global_step=state.global_step,
                   max_steps=state.max_steps, resumed=resumed, last_log=logs[-1] if logs else None)
        if state.global_step < state.max_steps:
            return None
        with atomic_directory(final) as tmp:
            trainer.save_model(str(tmp))
        atomic_write_json(data_dir / f"training-{arch}.json", {
            "architecture": arch, "global_step": state.global_step, **training_seconds(log, arch),
            "log_history": state.log_history,
        })
    durable = finished_draft(data_dir, arch)
    export_draft(final, durable)
    return durable
