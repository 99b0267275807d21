"""Fingerprints: short digests that tell whether two things are the same, each named for what it covers.

Every fingerprint is the first 16 hex digits of a SHA-256. Weight fingerprints hash values rounded through bfloat16,
so an fp32 and a bf16 copy of the same checkpoint agree. This module sits at the bottom of the package (it imports
only torch), so the adapter type, the data pipeline and the trainers all share it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

import torch
from torch import nn

__all__ = [
    "DIGEST_CHARS",
    "dataset_sample_fingerprint",
    "dataset_tokens_fingerprint",
    "draft_fingerprint",
    "json_fingerprint",
    "target_fingerprint",
    "tokenizer_fingerprint",
]

DIGEST_CHARS = 16

# Modules a draft borrows from its target (never saved with the draft); how PEFT names adapter weights and wrappers.
_TARGET_HEAD_MODULES = frozenset({"embed_tokens", "lm_head"})
_ADAPTER_PREFIX = "eda_"
_ADAPTER_COPIES = "modules_to_save"
_WRAPPER_LEVELS = frozenset({"base_layer", "original_module"})
# Values hashed per update, so a large tensor is never copied to the CPU at once.
_CHUNK = 1 << 24


def _short(hasher: Any) -> str:
    return hasher.hexdigest()[:DIGEST_CHARS]


def json_fingerprint(obj: Any) -> str:
    """Digest of `obj` written as JSON with sorted keys (prompts, settings, vocabularies)."""
    return _short(hashlib.sha256(json.dumps(obj, sort_keys=True).encode()))


def target_fingerprint(model: nn.Module, values_per_tensor: int = 64) -> str:
    """Digest of the first `values_per_tensor` values of every parameter of a target model: cheap on a 7B model.

    Enough to tell a fine-tuned target from its base (fine-tuning moves almost every tensor). Parameters that are not
    materialised here (meta tensors, ZeRO-3 shards) are skipped, and names only order the tensors, so a wrapper (DDP,
    `accelerator.prepare`) gives the same digest as the bare model.
    """
    hasher = hashlib.sha256()
    for _, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if param.is_meta or param.numel() == 0:
            continue
        head = param.detach().reshape(-1)[:values_per_tensor].to(torch.bfloat16).float().cpu()
        hasher.update(f"{tuple(param.shape)}:".encode())
        hasher.update(head.numpy().tobytes())
    return _short(hasher)


def _draft_own_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """The shared parameters a draft owns and saves, by their name in a bare draft, leaving out the modules it borrows
    from the target (the draft class's `borrowed_modules`: EAGLE-1 the embedding and head, EAGLE-3 the embedding) and
    everything an adapter adds: EDA weights (`eda_*`) and PEFT's per-adapter trained copies
    (`modules_to_save`). PEFT's wrapping levels (`base_layer`, `original_module`) are dropped from the names."""
    params = {}
    borrowed = next(
        (frozenset(m.borrowed_modules) for m in model.modules() if hasattr(m, "borrowed_modules")), _TARGET_HEAD_MODULES
    )
    # a reduced draft vocabulary's id map (`d2t`) is part of what the draft computes, though it is a buffer
    vocab_maps = ((name, b) for name, b in model.named_buffers() if name.split(".")[-1] == "d2t")
    for name, param in itertools.chain(model.named_parameters(), vocab_maps):
        parts = name.split(".")
        if (
            borrowed.intersection(parts)
            or _ADAPTER_COPIES in parts
            or any(p.startswith(_ADAPTER_PREFIX) for p in parts)
        ):
            continue
        params[".".join(p for p in parts if p not in _WRAPPER_LEVELS)] = param
    return params


def draft_fingerprint(model: nn.Module) -> str | None:
    """Digest of every shared weight of an EAGLE draft: `fc` and each layer's attention, MLP and norms.

    Two drafts of the same shapes but with any different weight (beyond bfloat16 resolution) give different
    fingerprints, so an adapter can tell whether it is loaded onto the draft it was trained on, and a draft whose
    weights failed to load is caught. The target's embedding and head (borrowed, never saved with the draft) and the
    EDA adapters' own weights are not covered, so wrapping the draft with adapters keeps its fingerprint. Every value
    is hashed (a few hundred MB of bf16 for an 8B target's draft). `None` when a weight has no data here (meta device).
    """
    params = _draft_own_parameters(model)
    if not params or any(p.is_meta for p in params.values()):
        return None
    hasher = hashlib.sha256()
    for name in sorted(params):
        values = params[name].detach().reshape(-1)
        hasher.update(f"{tuple(params[name].shape)}:".encode())
        for start in range(0, values.numel(), _CHUNK):
            chunk = values[start : start + _CHUNK]
            if chunk.is_floating_point():  # integer tensors (token ids) are hashed exactly
                chunk = chunk.to(torch.bfloat16).view(torch.int16)
            hasher.update(chunk.cpu().numpy().tobytes())
    return _short(hasher)


def dataset_tokens_fingerprint(dataset: Any) -> str:
    """Digest of every row's `input_ids` (and `loss_mask`, when the dataset has one) of a `datasets.Dataset`: ties
    cached features to the exact samples they describe."""
    hasher = hashlib.sha256()
    columns = ["input_ids"] + (["loss_mask"] if "loss_mask" in dataset.column_names else [])
    for row in dataset.select_columns(columns):
        hasher.update(json.dumps([row["input_ids"], row.get("loss_mask")]).encode())
    return _short(hasher)


def dataset_sample_fingerprint(dataset: Any, num_rows: int = 32) -> dict[str, Any]:
    """Size and a digest of up to `num_rows` evenly spaced rows' `input_ids` and `loss_mask` of a training dataset
    (any indexable dataset; an iterable one only records its type): `{"num_rows", "digest"}`."""
    try:
        size = len(dataset)
    except TypeError:
        return {"num_rows": None, "digest": type(dataset).__name__}
    parts = [str(size)]
    count = min(num_rows, size)
    for index in sorted({int(i * size / count) for i in range(count)}):
        row = dataset[index]
        for key in ("input_ids", "loss_mask"):
            if key in row:
                parts.append(f"{index}:{key}:{torch.as_tensor(row[key]).flatten().tolist()}")
    return {"num_rows": size, "digest": _short(hashlib.sha256("|".join(parts).encode()))}


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Digest of a tokenizer's vocabulary, chat template and special tokens."""
    payload = [sorted(tokenizer.get_vocab().items()), getattr(tokenizer, "chat_template", None),
               tokenizer.all_special_tokens]
    return _short(hashlib.sha256(json.dumps(payload).encode()))
