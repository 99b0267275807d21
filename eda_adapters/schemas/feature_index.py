"""The schema of a cached-features directory's `index.json` (`eda_adapters.data.feature_cache` documents the layout).

`check_feature_index` is called once when a feature directory is opened (after `load_feature_index` has refused a
file that is not UTF-8 JSON, or repeats a key), before any shard is read. It refuses, in one `EdaInputError` line
naming the directory, the key and the fix:

- an index that is not one JSON object, or of another format;
- a `target` signature without its identity keys, or whose `hidden_size` disagrees with the index's;
- `hidden_size`, `num_samples` not integers `>= 1`; `num_tokens`, `num_hidden_layers` not integers `>= 0`;
- a `dtype` that is not one the cache writes;
- `layers` that are not distinct entries of the target's `hidden_states` (`0 .. num_hidden_layers`);
- `shards` whose files are not relative paths inside the directory, are missing, or whose samples are not each of
  `0 .. num_samples - 1` exactly once.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import EdaInputError

__all__ = ["FEATURE_DTYPES", "FEATURE_FORMAT", "FEATURE_SOURCES", "REEXTRACT", "check_feature_index"]

FEATURE_FORMAT = "eda-features/1"
FEATURE_DTYPES = ("bfloat16", "float16", "float32")
FEATURE_SOURCES = ("extraction", "generation")
_IDENTITY = ("fingerprint", "hidden_size", "vocab_size")
#: the fix of every problem of an index
REEXTRACT = "extract the features again (eda extract-features)"


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _problem(index: Any, directory: Path) -> str | None:
    """What is wrong with `index`, in a few words naming the key; `None` if nothing is."""
    if not isinstance(index, dict):
        return f"holds a JSON {type(index).__name__}, not an object"
    if index.get("format") != FEATURE_FORMAT:
        return f"has format {index.get('format')!r}; this library reads {FEATURE_FORMAT!r}"
    target = index.get("target")
    if not isinstance(target, dict) or any(key not in target for key in _IDENTITY):
        return f"'target' must be the target's signature, with {list(_IDENTITY)}"
    for key, low in (("hidden_size", 1), ("num_samples", 1), ("num_tokens", 0)):
        if not _is_int(index.get(key), low):
            return f"'{key}' must be an integer >= {low}, got {index.get(key)!r}"
    if target["hidden_size"] != index["hidden_size"]:
        return f"'hidden_size' {index['hidden_size']} differs from the target's {target['hidden_size']!r}"
    if index.get("dtype") not in FEATURE_DTYPES:
        return f"'dtype' must be one of {list(FEATURE_DTYPES)}, got {index.get('dtype')!r}"
    if index.get("source", FEATURE_SOURCES[0]) not in FEATURE_SOURCES:
        return f"'source' must be one of {list(FEATURE_SOURCES)}, got {index.get('source')!r}"
    if "layers" in index:  # indexes written before layers were recorded hold the last layer
        count = index.get("num_hidden_layers")
        layers = index["layers"]
        if not _is_int(count, 0):
            return f"'num_hidden_layers' must be an integer >= 0, got {count!r}"
        in_range = isinstance(layers, list) and layers and all(_is_int(x, 0) and x <= count for x in layers)
        if not in_range or len(set(layers)) != len(layers):
            return f"'layers' must be distinct integers in [0, {count}], got {layers!r}"
    return _shards_problem(index.get("shards"), index["num_samples"], directory)


def _shards_problem(shards: Any, num_samples: int, directory: Path) -> str | None:
    if not isinstance(shards, list) or not shards:
        return "'shards' must be a non-empty list"
    seen: list[int] = []
    for i, shard in enumerate(shards):
        if not isinstance(shard, dict) or not isinstance(shard.get("file"), str) or not shard["file"]:
            return f"'shards'[{i}] must be an object with a 'file'"
        file = PurePosixPath(shard["file"])
        if file.is_absolute() or ".." in file.parts or "\\" in shard["file"]:
            return f"'shards'[{i}].file {shard['file']!r} must be a relative path inside the directory"
        if not (directory / file).is_file():
            return f"'shards'[{i}].file {shard['file']!r} is missing"
        samples = shard.get("samples")
        if not isinstance(samples, list) or not all(_is_int(s, 0) for s in samples):
            return f"'shards'[{i}].samples must be a list of sample numbers"
        seen += samples
    if sorted(seen) != list(range(num_samples)):
        counts = Counter(seen)
        extra = sorted(s for s, n in counts.items() if n > 1 or s >= num_samples)[:5]
        missing = sorted(set(range(num_samples)) - set(counts))[:5]
        return (f"'shards' must hold each of the 'num_samples' ({num_samples}) samples once (missing {missing}, "
                f"extra or repeated {extra})")
    return None


def check_feature_index(index: Any, directory: str | os.PathLike) -> None:
    """Raise `EdaInputError` unless `index` is a valid `index.json` of the feature directory `directory`."""
    problem = _problem(index, Path(directory))
    if problem is not None:
        raise EdaInputError(f"the cached features in {str(directory)!r}: index.json {problem}; {REEXTRACT}")
