"""Reading datasets from the forms users hand us, and writing files so that a crash never leaves half a file."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_from_disk

from ..atomic import (  # noqa: F401  (re-exported: data.io is where these were first public)
    atomic_directory,
    atomic_path,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
)
from ..errors import EdaInputError
from ..schemas.tokenized_rows import TOKEN_COLUMN, check_tokenized_rows

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
            raise EdaInputError(f"the DatasetDict has no split {split!r} (splits: {sorted(source)}); pass split=...")
        return source[split]
    if isinstance(source, (str, os.PathLike)):
        return _load_path(Path(source), split)
    if isinstance(source, Sequence):
        rows = list(source)
        if all(isinstance(row, str) for row in rows):
            return Dataset.from_dict({"prompt": rows})
        if all(isinstance(row, dict) for row in rows):
            return Dataset.from_list(rows)
    raise EdaInputError(
        f"cannot read a dataset from {type(source).__name__}: pass a datasets.Dataset, a list of prompt strings or "
        "dicts, or a path to a .jsonl/.json/.parquet/.arrow file or dataset directory"
    )


def _load_path(path: Path, split: str) -> Dataset:
    if not path.exists():
        raise FileNotFoundError(f"no dataset at {str(path)!r}")
    if path.is_dir():
        if (path / DATA_FILE).is_file():
            return _read_json(path / DATA_FILE)
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return load_rows(load_from_disk(str(path)), split)
        raise FileNotFoundError(
            f"{str(path)!r} holds neither {DATA_FILE} nor a dataset saved with save_to_disk; point at the data file"
        )
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _read_json(path)
    if suffix == ".parquet":
        return Dataset.from_parquet(str(path))
    if suffix == ".arrow":
        return Dataset.from_file(str(path))
    raise EdaInputError(
        f"unknown dataset file type {suffix!r} for {str(path)!r}: use .jsonl, .json, .parquet or .arrow"
    )


def _read_json(path: Path) -> Dataset:
    """`Dataset.from_json`, with a one-line error naming the file and line when it cannot be read (datasets raises an
    80-line `DatasetGenerationError`, or `StopIteration` for an empty file)."""
    from ..validation import check_utf8, find_json_lines_problem

    if path.stat().st_size == 0:
        raise EdaInputError(f"{path} is empty: it needs one JSON object per line")
    check_utf8(path)  # datasets would read invalid bytes without a word, and they fail later, far from the file
    try:
        with _datasets_log_silenced():  # its "Failed to load JSON" line would precede our one-line reason
            dataset = Dataset.from_json(str(path))
    except Exception as err:
        problem = find_json_lines_problem(path)
        if problem is not None:
            raise EdaInputError(problem) from err
        dataset = _read_normalised_json(path)
    if any(type(feature).__name__ == "Json" for feature in dataset.features.values()):
        # columns of mixed types (text here, chat turns there) are read by datasets' Python fallback, which keeps
        # the last of two values for one key where Arrow refuses the file: refuse it here too
        problem = find_json_lines_problem(path)
        if problem is not None:
            raise EdaInputError(problem)
    return dataset


@contextmanager
def _datasets_log_silenced() -> Iterator[None]:
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _read_normalised_json(path: Path) -> Dataset:
    """A JSON (Lines) file every row of which parses, but that datasets cannot read: a BOM or blank lines in a file
    whose columns mix types, which datasets hands to pandas. Read a copy without them (the rare case only: the copy
    costs a pass over the file)."""
    import tempfile

    text = path.read_text(encoding="utf-8-sig")
    if not text.lstrip().startswith("["):  # JSON Lines: one object per non-blank line
        text = "".join(line + "\n" for line in text.splitlines() if line.strip())
    with tempfile.TemporaryDirectory(prefix="eda-json-") as tmp:
        copy = Path(tmp) / path.name
        copy.write_text(text, encoding="utf-8")
        return Dataset.from_json(str(copy))  # kept in datasets' cache: the copy can go


def load_tokenized_rows(
    source: DatasetLike, *, vocab_size: int | None = None, required: Sequence[str] = (TOKEN_COLUMN,),
    split: str = "train",
) -> Dataset:
    """`load_rows(source)`, checked against the tokenized-rows schema (`eda_adapters.schemas.tokenized_rows`): ids
    within `vocab_size`, masks as long as the ids, finite scores; a one-line error names the file, rows and column."""
    rows = load_rows(source, split)
    check_tokenized_rows(rows, vocab_size=vocab_size, source=describe_source(source), required=required)
    return rows


def describe_source(source: Any, what: str = "dataset") -> str:
    """How an error names a dataset (or `what` it holds): with its path, or "the dataset" for one passed as an
    object."""
    return f"the {what} {source}" if isinstance(source, (str, os.PathLike)) else f"the {what}"


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_causal_lm(name_or_path: str, dtype: str = "auto", device: Any = None, gguf_file: str | None = None):
    """Load a frozen causal LM for data work: an HF folder, a `.gguf` file, a folder + `gguf_file`, or a packaged
    name (see `eda_adapters.models.loading.load_target`); no remote code."""
    from ..models.loading import load_target

    return load_target(name_or_path, gguf_file=gguf_file, dtype=dtype, device=device)


def load_tokenizer(name_or_path: str, gguf_file: str | None = None):
    """The tokenizer of any target reference `load_causal_lm` accepts, with a one-line error when there is none."""
    from ..models.loading import load_target_tokenizer

    return load_target_tokenizer(name_or_path, gguf_file=gguf_file)


def save_dataset_jsonl(dataset: Dataset, path: str | os.PathLike) -> None:
    """Write `dataset` as JSON lines through a temporary file (readers never see half of it)."""
    with atomic_path(path) as tmp:
        dataset.to_json(str(tmp), lines=True, force_ascii=False)
