"""Which target a piece of data came from.

Regenerated datasets, cached features and shift scores are only valid for the target that produced them. Every writer
records `target_signature(target)` next to its output and every reader checks it with `check_target_signature`, so a
draft is never trained on the hidden states of another model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..fingerprints import target_fingerprint
from ..errors import EdaInputError

# Keys of a signature that must agree for two targets to be "the same target" (name and dtype may differ).
IDENTITY_KEYS = ("fingerprint", "hidden_size", "vocab_size")


def target_signature(model: nn.Module) -> dict[str, Any]:
    """Identify a target model: `{"name_or_path", "model_type", "hidden_size", "vocab_size", "num_hidden_layers",
    "dtype", "fingerprint"}`. Only `IDENTITY_KEYS` are compared by `check_target_signature`."""
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    return {
        "name_or_path": getattr(config, "_name_or_path", "") or "",
        "model_type": getattr(config, "model_type", ""),
        "hidden_size": int(text_config.hidden_size),
        "vocab_size": int(text_config.vocab_size),
        "num_hidden_layers": int(getattr(text_config, "num_hidden_layers", 0) or 0),
        "dtype": str(dtype).replace("torch.", ""),
        "fingerprint": target_fingerprint(model),
    }


def check_target_signature(
    recorded: dict[str, Any], target: nn.Module | dict[str, Any], what: str = "these features"
) -> None:
    """Raise a one-line `ValueError` if `target` (a model or a signature) is not the target `recorded` describes."""
    actual = target if isinstance(target, dict) else target_signature(target)
    diffs = [
        f"{key} {recorded.get(key)!r} != {actual.get(key)!r}"
        for key in IDENTITY_KEYS
        if recorded.get(key) != actual.get(key)
    ]
    if diffs:
        raise EdaInputError(
            f"{what} came from target {recorded.get('name_or_path') or '<unnamed>'!r}, not from this target "
            f"{actual.get('name_or_path') or '<unnamed>'!r} ({'; '.join(diffs)}); recompute them with this target "
            "or load the target they came from."
        )
