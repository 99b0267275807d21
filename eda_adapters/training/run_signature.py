"""Run signatures: what a training run was made of, so that resuming from another run's checkpoint is refused.

A signature is a small JSON-able dict (stage, draft, target, data, key hyperparameters) written to the output
directory and into every checkpoint as `run_signature.json`. Resuming compares the checkpoint's signature with the
current run's and raises one `ValueError` listing every difference.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

from ..atomic import atomic_write_json

SIGNATURE_NAME = "run_signature.json"

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


def write_run_signature(directory: str | os.PathLike, signature: dict[str, Any]) -> None:
    """Write `signature` as `directory/run_signature.json` (atomically)."""
    os.makedirs(directory, exist_ok=True)
    atomic_write_json(os.path.join(directory, SIGNATURE_NAME), signature)


def read_run_signature(directory: str | os.PathLike) -> dict[str, Any] | None:
    path = os.path.join(directory, SIGNATURE_NAME)
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def _differences(expected: Any, found: Any, prefix: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(found, dict):
        diffs = []
        for key in sorted(set(expected) | set(found)):
            diffs += _differences(expected.get(key), found.get(key), f"{prefix}{key}.")
        return diffs
    if expected != found:
        return [f"{prefix.rstrip('.')}: {found!r} there, {expected!r} now"]
    return []


def check_run_signature(checkpoint: str | os.PathLike, signature: dict[str, Any]) -> None:
    """Raise `ValueError` if `checkpoint` (or its parent output directory) was written by a different run."""
    found = read_run_signature(checkpoint) or read_run_signature(os.path.dirname(os.path.abspath(checkpoint)))
    if found is None:
        warnings.warn(
            f"{checkpoint} has no {SIGNATURE_NAME} (not written by an eda_adapters trainer): cannot check that it "
            "belongs to this run; resuming anyway."
        )
        return
    diffs = _differences(signature, found)
    if diffs:
        raise ValueError(
            f"Cannot resume from {checkpoint}: it belongs to another run ({'; '.join(diffs)}). Resume with the same "
            "draft, target, data and hyperparameters, or start a new run in a fresh output_dir."
        )


def check_output_dir(output_dir: str | os.PathLike, signature: dict[str, Any]) -> None:
    """Refuse to train into a non-empty `output_dir` that is not this run's own directory.

    The directory is this run's own when its `run_signature.json` matches `signature` (then resuming, or training the
    same run again, is allowed). A signature holding only `{"stage": ...}` makes an early check (before the models are
    loaded) that compares the files' origin and the training stage only.
    """
    # one listing, no exists-then-isdir pair: under DDP another rank may create the directory between two calls
    try:
        if not os.listdir(output_dir):
            return
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise ValueError(f"output_dir {output_dir} is a file: pass a directory path") from None
    found = read_run_signature(output_dir)
    if found is None:
        raise ValueError(
            f"output_dir {output_dir} is not empty and was not written by an eda_adapters trainer: choose a new or "
            "empty output_dir (nothing there is overwritten)"
        )
    expected = signature if len(signature) > 1 else {"stage": signature["stage"]}
    diffs = _differences(expected, found if len(signature) > 1 else {"stage": found.get("stage")})
    if diffs:
        raise ValueError(
            f"output_dir {output_dir} holds another run ({'; '.join(diffs[:4])}): choose a new output_dir, or run "
            "with that run's draft, target, data and hyperparameters to resume it"
        )
