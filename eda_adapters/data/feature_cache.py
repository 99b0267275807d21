"""Cached target features: the target's last hidden states extracted once to sharded safetensors, streamed back.

On-disk layout of a feature directory (resumable and multi-process like regeneration, see `eda_adapters.data.runs`):

    index.json                    written last, when every sample is there:
        {"format": "eda-features/1",
         "target": target_signature(target),     # name_or_path, model_type, hidden_size, vocab_size, dtype, fingerprint
         "hidden_size": int, "dtype": "bfloat16" | "float16" | "float32",
         "num_samples": int, "num_tokens": int,
         "dataset_fingerprint": str,             # digest of the input_ids/loss_mask the features were computed on
         "shards": [{"file": "chunks/shard-000000000.safetensors", "samples": [0, 1, ...], "num_tokens": int}, ...]}
    chunks/shard-<first>.safetensors  for every sample s of the shard, three tensors:
        "<s>.input_ids"      int64  [seq]
        "<s>.loss_mask"      int8   [seq]          (1 on the tokens the draft is trained on, e.g. the response)
        "<s>.hidden_states"  dtype  [seq, hidden]  target(...).hidden_states[-1] (after the final norm)
    run.json, progress-r<rank>.jsonl   resume bookkeeping

Samples are numbered by their row in the dataset given to `extract_features`. Logits are not stored: they are
`target.lm_head(hidden_states)` (the draft holds the frozen head).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset as TorchDataset
from transformers import PreTrainedModel

from ..atomic import atomic_path
from ..fingerprints import dataset_tokens_fingerprint
from ..validation import check_causal_lm, check_safetensors_file
from .features import compute_target_features
from .io import (
    DatasetLike,
    atomic_write_json,
    check_row_lengths,
    check_token_ids,
    load_rows,
    require_columns,
)
from .runs import ChunkedRun, process_state
from .signature import IDENTITY_KEYS, check_target_signature, target_signature
from ..errors import EdaInputError

FORMAT = "eda-features/1"
INDEX_FILE = "index.json"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype_name(dtype: torch.dtype | str | None, target: PreTrainedModel) -> str:
    if dtype is None:
        dtype = next(target.parameters()).dtype
    name = str(dtype).replace("torch.", "")
    if name not in _DTYPES:
        raise EdaInputError(f"cannot store features as {name!r}; choose one of {sorted(_DTYPES)}")
    return name


def pad_batch(samples: list[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad samples (`input_ids`, optional `loss_mask` and `hidden_states`) into a batch.

    Returns `input_ids` `[B, S]`, `attention_mask` `[B, S]`, `loss_mask` `[B, S]` (0 on padding; all ones where a
    sample has none) and, when the samples carry them, `hidden_states` `[B, S, H]` (zeros on padding).
    """
    lengths = [len(s["input_ids"]) for s in samples]
    width = max(lengths)
    batch = {
        "input_ids": torch.full((len(samples), width), pad_token_id, dtype=torch.long),
        "attention_mask": torch.zeros(len(samples), width, dtype=torch.long),
        "loss_mask": torch.zeros(len(samples), width, dtype=torch.long),
    }
    with_hidden = all("hidden_states" in s for s in samples)
    if with_hidden:
        first = samples[0]["hidden_states"]
        batch["hidden_states"] = torch.zeros(len(samples), width, first.shape[-1], dtype=first.dtype)
    for row, (sample, length) in enumerate(zip(samples, lengths)):
        batch["input_ids"][row, :length] = torch.as_tensor(sample["input_ids"])
        batch["attention_mask"][row, :length] = 1
        mask = sample.get("loss_mask")
        batch["loss_mask"][row, :length] = 1 if mask is None else torch.as_tensor(mask)
        if with_hidden:
            batch["hidden_states"][row, :length] = sample["hidden_states"]
    return batch


def extract_features(
    target: PreTrainedModel,
    dataset: DatasetLike,
    output_dir: str | os.PathLike,
    *,
    batch_size: int = 8,
    dtype: torch.dtype | str | None = None,
    show_progress: bool = True,
) -> "CachedFeatureDataset":
    """Run `target` once over every sample of `dataset` (columns `input_ids`, optional `loss_mask`) and store its last
    hidden states in `output_dir` (layout in the module docstring). Resumes an unfinished run; refuses a directory
    holding features of another target, dataset or dtype. With several processes (`accelerate launch`) each process
    extracts its share and the main process writes the index. `dtype` defaults to the target's dtype.
    """
    if batch_size < 1:
        raise EdaInputError(f"batch_size must be >= 1, got {batch_size}")
    check_causal_lm(target, "the target")
    rows = load_rows(dataset)
    require_columns(rows, ["input_ids"], "feature extraction")
    if len(rows) == 0:
        raise EdaInputError("the dataset is empty")
    check_row_lengths(rows, f"the dataset {dataset}" if isinstance(dataset, (str, os.PathLike)) else "the dataset")
    rows = rows.select_columns(["input_ids"] + (["loss_mask"] if "loss_mask" in rows.column_names else []))
    dtype_name = _dtype_name(dtype, target)
    signature = target_signature(target)
    check_token_ids(rows, signature["vocab_size"])
    hidden_size = signature["hidden_size"]
    state = process_state()
    run = ChunkedRun(
        output_dir,
        kind="feature extraction",
        config={
            "format": FORMAT,
            "target": {key: signature[key] for key in IDENTITY_KEYS},
            "dataset": {"num_samples": len(rows), "fingerprint": dataset_tokens_fingerprint(rows)},
            "dtype": dtype_name,
        },
        state=state,
    )
    run.open(INDEX_FILE)
    if run.final_path.is_file():
        return CachedFeatureDataset(output_dir, target=signature)

    target.eval()
    lengths = [len(ids) for ids in rows["input_ids"]]

    def write_shard(indices: list[int]) -> str:
        samples = [rows[i] for i in indices]
        batch = pad_batch(samples)
        hidden, _ = compute_target_features(
            target, batch["input_ids"].to(target.device), batch["attention_mask"].to(target.device)
        )
        tensors = {}
        for row, index in enumerate(indices):
            length = lengths[index]
            tensors[f"{index}.input_ids"] = batch["input_ids"][row, :length].clone()
            tensors[f"{index}.loss_mask"] = batch["loss_mask"][row, :length].to(torch.int8)
            # clone: each tensor gets its own storage (a slice of the batch would share it)
            tensors[f"{index}.hidden_states"] = hidden[row, :length].to(_DTYPES[dtype_name]).cpu().clone()
        name = f"shard-{indices[0]:09d}.safetensors"
        with atomic_path(run.chunk_path(name)) as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT})
        return name

    def write_index(chunks: dict[str, list[int]]) -> None:
        shards = []
        for name, indices in chunks.items():
            num_tokens = sum(lengths[i] for i in indices)
            shards.append({"file": f"{run.chunk_path(name).parent.name}/{name}", "samples": indices,
                           "num_tokens": num_tokens})
        atomic_write_json(
            run.final_path,
            {
                "format": FORMAT,
                "target": signature,
                "hidden_size": hidden_size,
                "dtype": dtype_name,
                "num_samples": len(rows),
                "num_tokens": sum(s["num_tokens"] for s in shards),
                "dataset_fingerprint": run.config["dataset"]["fingerprint"],
                "shards": shards,
            },
        )

    # batches of similar lengths pad less; sample numbering is unaffected
    run.execute(len(rows), batch_size, write_shard, write_index, sort_key=lambda i: (lengths[i], i),
                desc="extracting features", show_progress=show_progress)
    return CachedFeatureDataset(output_dir, target=signature)


def load_feature_index(path: str | os.PathLike) -> dict[str, Any]:
    """The `index.json` of a finished feature directory."""
    index_file = Path(path) / INDEX_FILE
    if not index_file.is_file():
        hint = " (the extraction is unfinished: run it again to resume)" if (Path(path) / "run.json").is_file() else ""
        raise FileNotFoundError(f"no cached features at {str(path)!r}: {INDEX_FILE} is missing{hint}")
    index = json.loads(index_file.read_text())
    if index.get("format") != FORMAT:
        raise EdaInputError(f"{str(index_file)!r} has format {index.get('format')!r}; this library reads {FORMAT!r}")
    return index


class CachedFeatureDataset(TorchDataset):
    """Map-style dataset over cached features; item `i` is sample `i` of the extracted dataset:
    `{"input_ids": LongTensor[seq], "loss_mask": LongTensor[seq], "hidden_states": Tensor[seq, hidden]}`.

    Pass `target` (the model the draft is trained for, or its `target_signature`) to refuse features that came from
    another target. Shards are opened lazily with `safe_open` (memory-mapped), once per worker. Batch with
    `pad_batch` (e.g. `DataLoader(ds, collate_fn=pad_batch)`).
    """

    def __init__(self, path: str | os.PathLike, target: PreTrainedModel | dict[str, Any] | None = None):
        self.path = Path(path)
        self.index = load_feature_index(path)
        if target is not None:
            check_target_signature(self.index["target"], target, what=f"the cached features in {str(path)!r}")
        self._shard_of: dict[int, str] = {}
        for shard in self.index["shards"]:
            check_safetensors_file(self.path / shard["file"], "cached feature shard")  # headers only: cheap
            for sample in shard["samples"]:
                self._shard_of[int(sample)] = shard["file"]
        self._handles: dict[str, Any] = {}

    @property
    def signature(self) -> dict[str, Any]:
        return self.index["target"]

    @property
    def hidden_size(self) -> int:
        return int(self.index["hidden_size"])

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.index["dtype"]]

    def __len__(self) -> int:
        return int(self.index["num_samples"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} cached samples")
        file = self._shard_of[i]
        handle = self._handles.get(file)
        if handle is None:
            handle = self._handles[file] = safe_open(str(self.path / file), framework="pt")
        return {
            "input_ids": handle.get_tensor(f"{i}.input_ids"),
            "loss_mask": handle.get_tensor(f"{i}.loss_mask").long(),
            "hidden_states": handle.get_tensor(f"{i}.hidden_states"),
        }

    def __getstate__(self) -> dict[str, Any]:
        # open file handles do not travel to DataLoader workers; each worker reopens its own
        return {**self.__dict__, "_handles": {}}
