"""Reading datasets from the forms users hand us, and writing files so that a crash never leaves half a file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_from_disk

# The file a regenerated or selected dataset directory holds (read with `datasets.Dataset.from_json`).
DATA_FILE = "data.jsonl"

DatasetLike = Dataset | DatasetDict | str | os.PathLike | Sequence[str] | Sequence[dict]


def load_rows(source: DatasetLike, split: str = "train") -> Dataset:
    """Turn `source` into a `datasets.Dataset`.

    Accepts a `Dataset`, a `DatasetDict` (its `split`), a list of prompt strings (one `prompt` column), a list of
    dicts, or a path: a `.jsonl`/`.json`/`.parquet`/`.arrow` file, a directory written by this library (holding
    `data.jsonl`), or a directory written by `Dataset.save_to_disk`.
    """
    if isinstance(source, Dataset):
        return source
    if isinstance(source, DatasetDict):
        if split not in source:
            raise ValueError(f"the DatasetDict has no split {split!r} (splits: {sorted(source)}); pass split=...")
        return source[split]
    if isinstance(source, (str, os.PathLike)):
        return _load_path(Path(source), split)
    if isinstance(source, Sequence):
        rows = list(source)
        if all(isinstance(row, str) for row in rows):
            return Dataset.from_dict({"prompt": rows})
        if all(isinstance(row, dict) for row in rows):
            return Dataset.from_list(rows)
    raise TypeError(
        f"cannot read a dataset from {type(source).__name__}: pass a datasets.Dataset, a list of prompt strings or "
        "dicts, or a path to a .jsonl/.json/.parquet/.arrow file or dataset directory"
    )


def _load_path(path: Path, split: str) -> Dataset:
    if not path.exists():
        raise FileNotFoundError(f"no dataset at {str(path)!r}")
    if path.is_dir():
        if (path / DATA_FILE).is_file():
            return Dataset.from_json(str(path / DATA_FILE))
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return load_rows(load_from_disk(str(path)), split)
        raise FileNotFoundError(
            f"{str(path)!r} holds neither {DATA_FILE} nor a dataset saved with save_to_disk; point at the data file"
        )
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return Dataset.from_json(str(path))
    if suffix == ".parquet":
        return Dataset.from_parquet(str(path))
    if suffix == ".arrow":
        return Dataset.from_file(str(path))
    raise ValueError(f"unknown dataset file type {suffix!r} for {str(path)!r}: use .jsonl, .json, .parquet or .arrow")


def require_columns(dataset: Dataset, columns: Iterable[str], what: str) -> None:
    """One-line error naming the columns that are missing and the ones that were found."""
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{what} needs column(s) {missing}; the dataset has columns {dataset.column_names}")


def check_token_ids(dataset: Dataset, vocab_size: int) -> None:
    """Refuse token ids the target cannot embed (a dataset tokenized for another model), before any work starts."""
    largest = max((max(ids, default=0) for ids in dataset["input_ids"]), default=0)
    if largest >= vocab_size:
        raise ValueError(
            f"token ids up to {largest} do not fit the target's vocabulary of {vocab_size}: the dataset was "
            "tokenized for another model"
        )


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file and `os.replace`, so readers see the old or the new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


@contextmanager
def atomic_directory(output_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `output_dir`; only if the block succeeds is it moved into place (replacing
    what was there), so a crash never leaves a half-written directory."""
    out = Path(output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_causal_lm(name_or_path: str, dtype: str = "auto", device: Any = None):
    """Load a causal LM for data work (frozen, eval mode) with the normal transformers call; no remote code."""
    import torch
    from transformers import AutoModelForCausalLM

    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, float32, bfloat16 or float16")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=dtype if dtype == "auto" else getattr(torch, dtype)
        )
    except OSError as err:
        raise FileNotFoundError(f"cannot load a model from {name_or_path!r}: {str(err).splitlines()[0]}") from err
    if device is not None:
        model = model.to(device)
    return model.eval().requires_grad_(False)


def load_tokenizer(name_or_path: str):
    """`AutoTokenizer.from_pretrained` with a one-line error when there is nothing to load."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except OSError as err:
        raise FileNotFoundError(f"cannot load a tokenizer from {name_or_path!r}: {str(err).splitlines()[0]}") from err


def save_dataset_jsonl(dataset: Dataset, path: str | os.PathLike) -> None:
    """Write `dataset` as JSON lines through a temporary file (readers never see half of it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    dataset.to_json(str(tmp), lines=True, force_ascii=False)
    os.replace(tmp, path)
