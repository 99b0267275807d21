"""Run signatures and checkpoints: what a training run was made of, so that resuming from another run's checkpoint is
refused, and which of its checkpoints are whole.

A signature is a small JSON-able dict (stage, draft, target, data, key hyperparameters) written to the output
directory and into every checkpoint as `run_signature.json`. Resuming compares the checkpoint's signature with the
current run's and raises one `RunMismatchError` listing every difference (`eda_adapters.run_directory`).

`Trainer` writes a checkpoint file by file, `trainer_state.json` last: a process killed part-way leaves a
`checkpoint-N` folder without it (or with it cut short), which `Trainer` would resume from as if from step 0.
`last_complete_checkpoint` skips such folders.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..run_directory import RunDirectory

SIGNATURE_NAME = "run_signature.json"
_FIX = ("resume with the same draft, target, data and hyperparameters, or train into a new output_dir")

#: Training arguments that change the optimisation trajectory (resuming with other values is another run). The
#: length of training (`max_steps`, `num_train_epochs`) is left out: resuming to train longer is a legitimate use.
SIGNATURE_HYPERPARAMETERS = (
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "seed",
    "regression_weight",
    "ce_weight",
    "feature_noise_std",
    "feature_noise_type",
    "max_length",
)


def _signature_dir(directory: str | os.PathLike) -> RunDirectory:
    return RunDirectory(directory, "training", SIGNATURE_NAME, fix=_FIX)


def write_run_signature(directory: str | os.PathLike, signature: dict[str, Any]) -> None:
    """Write `signature` as `directory/run_signature.json` (atomically)."""
    _signature_dir(directory).write_key(signature)


def read_run_signature(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The signature recorded in `directory`, `None` if it has none."""
    run_dir = _signature_dir(directory)
    return run_dir.recorded_key() if run_dir.key_path.is_file() else None


def check_run_signature(checkpoint: str | os.PathLike, signature: dict[str, Any]) -> None:
    """Raise `RunMismatchError` if `checkpoint` (or its parent output directory) was written by a different run."""
    for directory in (checkpoint, os.path.dirname(os.path.abspath(checkpoint))):
        found = read_run_signature(directory)
        if found is not None:
            RunDirectory(checkpoint, "training", SIGNATURE_NAME, fix=f"cannot resume from it: {_FIX}").compare(
                found, signature
            )
            return
    warnings.warn(
        f"{checkpoint} has no {SIGNATURE_NAME} (not written by an eda_adapters trainer): cannot check that it "
        "belongs to this run; resuming anyway."
    )


def check_training_output_dir(output_dir: str | os.PathLike, signature: dict[str, Any]) -> None:
    """Refuse to train into a non-empty `output_dir` that is not this run's own directory.

    The directory is this run's own when its `run_signature.json` matches `signature` (then resuming, or training the
    same run again, is allowed). A signature holding only `{"stage": ...}` makes an early check (before the models are
    loaded) that compares the training stage only.
    """
    _signature_dir(output_dir).check(signature, fields=["stage"] if set(signature) == {"stage"} else None)


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a whole checkpoint: its `trainer_state.json`, the file `Trainer` writes last, parses."""
    try:
        json.loads((Path(folder) / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def checkpoint_folders(output_dir: str | os.PathLike) -> list[Path]:
    """The `checkpoint-N` folders of `output_dir`, oldest (lowest N) first."""
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), p) for p in Path(output_dir).iterdir() if (m := pattern.match(p.name)) and p.is_dir()]
    return [path for _, path in sorted(found)]


def last_complete_checkpoint(output_dir: str | os.PathLike) -> tuple[Path | None, list[Path]]:
    """The newest whole checkpoint of `output_dir` (`None` if there is none), and the unfinished ones written after
    it (by a run killed while saving them)."""
    folders = checkpoint_folders(output_dir)
    for i in range(len(folders) - 1, -1, -1):
        if is_complete_checkpoint(folders[i]):
            return folders[i], folders[i + 1:]
    return None, folders
