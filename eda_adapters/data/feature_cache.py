"""Cached target features: the target's last hidden states extracted once to sharded safetensors, streamed back.

On-disk layout of a feature directory (resumable and multi-process like regeneration, see `eda_adapters.data.runs`):

    index.json                    written last, when every sample is there:
        {"format": "eda-features/1",
         "target": target_signature(target),     # name_or_path, model_type, hidden_size, vocab_size, dtype, fingerprint
         "hidden_size": int, "dtype": "bfloat16" | "float16" | "float32",
        "layers": [int, ...],                   # entries of the target's `hidden_states` kept, concatenated in order
        "num_hidden_layers": int,               # (the last, num_hidden_layers, is after the final norm: EAGLE-1's)
        "source": "extraction" | "generation",  # a teacher-forced pass, or captured while the target generated
         "num_samples": int, "num_tokens": int,
         "dataset_fingerprint": str,             # digest of the input_ids/loss_mask the features were computed on
         "shards": [{"file": "chunks/shard-000000000.safetensors", "samples": [0, 1, ...], "num_tokens": int}, ...]}
    chunks/shard-<first>.safetensors  for every sample s of the shard, three or four tensors:
        "<s>.input_ids"         int64  [seq]
        "<s>.loss_mask"         int8   [seq]       (1 on the tokens the draft is trained on, e.g. the response)
        "<s>.hidden_states"     dtype  [seq, len(layers) * hidden]  the kept `hidden_states` entries, concatenated
        "<s>.target_top_token"  int64  [seq]       the target's top next token (written by `extract_features`)
    run.json, progress-r<rank>.jsonl   resume bookkeeping

Samples are numbered by their row in the dataset given to `extract_features` (or by prompt, for features captured by
`regenerate(..., capture_features=True)`). Logits are not stored: they are `target.lm_head(hidden_states)` of the
last layer (the draft holds the frozen head). Only the target's top token is stored: with it, training a draft
whose head scores a reduced vocabulary needs the head's rows for that vocabulary alone, not the whole vocabulary's
logits at every step. An index without `layers` (written before they were recorded) holds the last layer.
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
from ..validation import check_causal_lm, check_safetensors_file, find_json_lines_problem
from .features import compute_target_features, target_top_tokens
from .io import (
    DatasetLike,
    atomic_write_json,
    load_tokenized_rows,
)
from .runs import ChunkedRun, process_state
from .signature import IDENTITY_KEYS, check_target_signature, target_signature
from ..errors import EdaInputError
from ..schemas.feature_index import FEATURE_FORMAT, REEXTRACT, check_feature_index

FORMAT = FEATURE_FORMAT
INDEX_FILE = "index.json"
#: Per-sample key of the target's top next token `[seq]`, where the features carry it.
TOP_TOKEN_KEY = "target_top_token"
FEATURES_DIR = "features"  # where regeneration keeps the features it captured
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype_name(dtype: torch.dtype | str | None, target: PreTrainedModel) -> str:
    if dtype is None:
        dtype = next(target.parameters()).dtype
    name = str(dtype).replace("torch.", "")
    if name not in _DTYPES:
        raise EdaInputError(f"cannot store features as {name!r}; choose one of {sorted(_DTYPES)}")
    return name


def pad_batch(samples: list[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad samples (`input_ids`, optional `loss_mask`, `hidden_states` and `target_top_token`) into a batch.

    Returns `input_ids` `[B, S]`, `attention_mask` `[B, S]`, `loss_mask` `[B, S]` (0 on padding; all ones where a
    sample has none) and, when every sample carries them, `hidden_states` `[B, S, H]` and `target_top_token` `[B, S]`
    (zeros on padding).
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
    with_top = all(TOP_TOKEN_KEY in s for s in samples)
    if with_top:
        batch[TOP_TOKEN_KEY] = torch.zeros(len(samples), width, dtype=torch.long)
    for row, (sample, length) in enumerate(zip(samples, lengths)):
        batch["input_ids"][row, :length] = torch.as_tensor(sample["input_ids"])
        batch["attention_mask"][row, :length] = 1
        mask = sample.get("loss_mask")
        batch["loss_mask"][row, :length] = 1 if mask is None else torch.as_tensor(mask)
        if with_hidden:
            batch["hidden_states"][row, :length] = sample["hidden_states"]
        if with_top:
            batch[TOP_TOKEN_KEY][row, :length] = torch.as_tensor(sample[TOP_TOKEN_KEY])
    return batch


def feature_layers(target: PreTrainedModel, layers: list[int] | tuple[int, ...] | None = None) -> list[int]:
    """The entries of `target`'s `hidden_states` a feature set keeps, as indices in `0 .. num_hidden_layers`
    (negative ones count from the end). `None` is the last one, after the final norm: what an EAGLE-1 draft reads."""
    count = target.config.get_text_config().num_hidden_layers
    if layers is None:
        return [count]
    resolved = []
    for layer in layers:
        index = int(layer) + (count + 1 if int(layer) < 0 else 0)
        if not 0 <= index <= count:
            raise EdaInputError(
                f"feature layer {layer} is out of range: the target has hidden_states 0 .. {count} "
                f"(0 = embeddings, {count} = last layer after the final norm)"
            )
        resolved.append(index)
    return resolved


def draft_feature_layers(draft: Any, target: PreTrainedModel) -> list[int]:
    """The `hidden_states` entries a feature cache holds for `draft` (see `feature_layers`): those the draft reads
    (its `hidden_state_indices`), then the last one unless that is all it reads, since the target's logits come from it
    through the frozen head. EAGLE-1: `[L]`; EAGLE-3: its three aux layers, then `L`."""
    count = target.config.get_text_config().num_hidden_layers
    read = feature_layers(target, getattr(draft, "hidden_state_indices", None))
    return read if read == [count] else read + [count]


def write_feature_shard(
    path: str | os.PathLike, samples: dict[int, tuple[torch.Tensor, ...]], dtype_name: str
) -> None:
    """Write `{sample: (input_ids, loss_mask, features[, target_top_token])}` (one sequence each, unpadded) as one
    shard, atomically."""
    tensors = {}
    for index, (input_ids, loss_mask, hidden, *top_token) in samples.items():
        tensors[f"{index}.input_ids"] = torch.as_tensor(input_ids, dtype=torch.long).clone()
        tensors[f"{index}.loss_mask"] = torch.as_tensor(loss_mask).to(torch.int8).clone()
        # clone: each tensor gets its own storage (a slice of the batch would share it)
        tensors[f"{index}.hidden_states"] = hidden.to(_DTYPES[dtype_name]).cpu().clone()
        if top_token:
            tensors[f"{index}.{TOP_TOKEN_KEY}"] = torch.as_tensor(top_token[0], dtype=torch.long).cpu().clone()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})


def write_feature_index(
    path: str | os.PathLike,
    *,
    signature: dict[str, Any],
    dtype_name: str,
    layers: list[int],
    num_hidden_layers: int,
    source: str,
    dataset_fingerprint: str,
    num_samples: int,
    shards: dict[str, list[int]],
    lengths: list[int],
) -> None:
    """Write the `index.json` of a feature directory whose shards (`{relative file: samples}`) are all written."""
    entries = [
        {"file": file, "samples": samples, "num_tokens": sum(lengths[i] for i in samples)}
        for file, samples in shards.items()
    ]
    atomic_write_json(
        Path(path) / INDEX_FILE,
        {
            "format": FORMAT,
            "target": signature,
            "hidden_size": signature["hidden_size"],
            "dtype": dtype_name,
            "layers": layers,
            "num_hidden_layers": num_hidden_layers,
            "source": source,
            "num_samples": num_samples,
            "num_tokens": sum(entry["num_tokens"] for entry in entries),
            "dataset_fingerprint": dataset_fingerprint,
            "shards": entries,
        },
    )


def extract_features(
    target: PreTrainedModel,
    dataset: DatasetLike,
    output_dir: str | os.PathLike,
    *,
    batch_size: int = 8,
    dtype: torch.dtype | str | None = None,
    layers: list[int] | tuple[int, ...] | None = None,
    show_progress: bool = True,
) -> "CachedFeatureDataset":
    """Run `target` once over every sample of `dataset` (columns `input_ids`, optional `loss_mask`) and store its last
    hidden states in `output_dir` (layout in the module docstring). Resumes an unfinished run; refuses a directory
    holding features of another target, dataset or dtype. With several processes (`accelerate launch`) each process
    extracts its share and the main process writes the index. `dtype` defaults to the target's dtype; `layers` are
    the `hidden_states` entries kept (see `feature_layers`; default: the last, which EAGLE-1 drafts read).
    """
    if batch_size < 1:
        raise EdaInputError(f"batch_size must be >= 1, got {batch_size}")
    check_causal_lm(target, "the target")
    signature = target_signature(target)
    rows = load_tokenized_rows(dataset, vocab_size=signature["vocab_size"])
    if len(rows) == 0:
        raise EdaInputError("the dataset is empty")
    rows = rows.select_columns(["input_ids"] + (["loss_mask"] if "loss_mask" in rows.column_names else []))
    dtype_name = _dtype_name(dtype, target)
    layers = feature_layers(target, layers)
    state = process_state()
    run = ChunkedRun(
        output_dir,
        kind="feature extraction",
        config={
            "format": FORMAT,
            "target": {key: signature[key] for key in IDENTITY_KEYS},
            "dataset": {"num_samples": len(rows), "fingerprint": dataset_tokens_fingerprint(rows)},
            "dtype": dtype_name,
            **({} if layers == feature_layers(target) else {"layers": layers}),  # older runs without it still resume
        },
        state=state,
    )
    run.open(INDEX_FILE)
    if run.final_path.is_file():
        return CachedFeatureDataset(output_dir, target=signature, layers=layers)

    target.eval()
    lengths = [len(ids) for ids in rows["input_ids"]]
    hidden_size = signature["hidden_size"]
    with_top_tokens = layers[-1] == target.config.get_text_config().num_hidden_layers

    def write_shard(indices: list[int]) -> str:
        batch = pad_batch([rows[i] for i in indices])
        hidden, _ = compute_target_features(
            target, batch["input_ids"].to(target.device), batch["attention_mask"].to(target.device), layers=layers
        )
        hidden = hidden.to(_DTYPES[dtype_name])
        # from the features as stored: what the head gives at training time (only after the final norm)
        top_tokens = target_top_tokens(target, hidden[..., -hidden_size:]) if with_top_tokens else None
        name = f"shard-{indices[0]:09d}.safetensors"
        write_feature_shard(
            run.chunk_path(name),
            {
                index: (batch["input_ids"][row, : lengths[index]], batch["loss_mask"][row, : lengths[index]],
                        hidden[row, : lengths[index]])
                + (() if top_tokens is None else (top_tokens[row, : lengths[index]],))
                for row, index in enumerate(indices)
            },
            dtype_name,
        )
        return name

    def write_index(chunks: dict[str, list[int]]) -> None:
        write_feature_index(
            output_dir, signature=signature, dtype_name=dtype_name, layers=layers,
            num_hidden_layers=target.config.get_text_config().num_hidden_layers, source="extraction",
            dataset_fingerprint=run.config["dataset"]["fingerprint"], num_samples=len(rows),
            shards={f"{run.chunk_path(name).parent.name}/{name}": indices for name, indices in chunks.items()},
            lengths=lengths,
        )

    # batches of similar lengths pad less; sample numbering is unaffected
    run.execute(len(rows), batch_size, write_shard, write_index, sort_key=lambda i: (lengths[i], i),
                desc="extracting features", show_progress=show_progress)
    return CachedFeatureDataset(output_dir, target=signature, layers=layers)


def load_feature_index(path: str | os.PathLike) -> dict[str, Any]:
    """The `index.json` of a finished feature directory."""
    index_file = Path(path) / INDEX_FILE
    if not index_file.is_file():
        hint = " (the extraction is unfinished: run it again to resume)" if (Path(path) / "run.json").is_file() else ""
        raise FileNotFoundError(f"no cached features at {str(path)!r}: {INDEX_FILE} is missing{hint}")
    problem = find_json_lines_problem(index_file)  # UTF-8, JSON, no key twice
    if problem is not None:
        raise EdaInputError(f"the cached features in {str(path)!r}: {problem}; {REEXTRACT}")
    index = json.loads(index_file.read_text(encoding="utf-8-sig"))
    check_feature_index(index, path)
    return index


class CachedFeatureDataset(TorchDataset):
    """Map-style dataset over cached features; item `i` is sample `i` of the extracted dataset:
    `{"input_ids": LongTensor[seq], "loss_mask": LongTensor[seq], "hidden_states": Tensor[seq, hidden]}`, plus
    `"target_top_token": LongTensor[seq]` where the shard stores it (features from `extract_features`).

    Pass `target` (the model the draft is trained for, or its `target_signature`) to refuse features that came from
    another target, and `layers` (the `hidden_states` entries the draft reads, see `feature_layers`; with a loaded
    `target` the default is its last layer, EAGLE-1's) to serve those entries alone, in that order: one extraction
    of an EAGLE-3 draft's layers, which end with the last one, serves an EAGLE-1 draft too. Features that lack one
    of them are refused. Shards are opened lazily
    with `safe_open` (memory-mapped), once per worker. Batch with
    `pad_batch` (e.g. `DataLoader(ds, collate_fn=pad_batch)`).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        target: PreTrainedModel | dict[str, Any] | None = None,
        layers: list[int] | tuple[int, ...] | None = None,
    ):
        self.path = Path(path)
        self.index = load_feature_index(path)
        if target is not None:
            check_target_signature(self.index["target"], target, what=f"the cached features in {str(path)!r}")
        self._columns: list[int] | None = None  # positions in the stored layers of those served; None: all
        self.select_layers(target, layers)
        self._shard_of: dict[int, str] = {}
        for shard in self.index["shards"]:
            check_safetensors_file(self.path / shard["file"], "cached feature shard")  # headers only: cheap
            for sample in shard["samples"]:
                self._shard_of[int(sample)] = shard["file"]
        self._handles: dict[str, Any] = {}
        self._shard_keys: dict[str, frozenset[str]] = {}

    def select_layers(self, target: PreTrainedModel | dict[str, Any] | None, wanted: Any) -> None:
        """Serve the `hidden_states` entries `wanted` (default, with a loaded `target`: its last one), in that order,
        from those stored; raise a one-line error naming the fix when one of them is not stored."""
        loaded = isinstance(target, PreTrainedModel)
        if wanted is None and not loaded:
            return
        wanted = feature_layers(target, wanted) if loaded else [int(layer) for layer in wanted]
        stored = self.stored_layers
        if stored is None:  # written before layers were recorded: the last one
            if not loaded:
                return
            stored = feature_layers(target)
        missing = [layer for layer in wanted if layer not in stored]
        if missing:
            raise EdaInputError(
                f"the cached features in {str(self.path)!r} hold the target's hidden_states {list(stored)}, but this "
                f"draft reads {wanted}: extract features of those layers (`extract_features(..., layers={wanted})`)"
            )
        self._columns = None if wanted == list(stored) else [list(stored).index(layer) for layer in wanted]

    @property
    def signature(self) -> dict[str, Any]:
        return self.index["target"]

    @property
    def lengths(self) -> list[int]:
        """Tokens of every sample, in order, read from the shards' headers (no feature is loaded): what a
        length-grouped sampler needs."""
        return [int(self._shard(i).get_slice(f"{i}.input_ids").get_shape()[0]) for i in range(len(self))]

    def _shard(self, i: int) -> Any:
        """The open shard that holds sample `i` (opened once per process, memory-mapped)."""
        file = self._shard_of[i]
        handle = self._handles.get(file)
        if handle is None:
            handle = self._handles[file] = safe_open(str(self.path / file), framework="pt")
        return handle

    @property
    def stored_layers(self) -> list[int] | None:
        """The target's `hidden_states` entries the shards hold (`None`: not recorded, the last one)."""
        return self.index.get("layers")

    @property
    def layers(self) -> list[int] | None:
        """The target's `hidden_states` entries an item holds, in order (`None`: not recorded, the last one)."""
        stored = self.stored_layers
        return stored if self._columns is None else [stored[c] for c in self._columns]

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
        handle = self._shard(i)
        sample = {
            "input_ids": handle.get_tensor(f"{i}.input_ids"),
            "loss_mask": handle.get_tensor(f"{i}.loss_mask").long(),
            "hidden_states": self._hidden_states(handle, f"{i}.hidden_states"),
        }
        if f"{i}.{TOP_TOKEN_KEY}" in self._keys(self._shard_of[i]):
            sample[TOP_TOKEN_KEY] = handle.get_tensor(f"{i}.{TOP_TOKEN_KEY}")
        return sample

    def _hidden_states(self, handle: Any, key: str) -> torch.Tensor:
        if self._columns is None:
            return handle.get_tensor(key)
        # read only the served layers' columns of the memory-mapped shard
        stored, width = handle.get_slice(key), self.hidden_size
        return torch.cat([stored[:, c * width:(c + 1) * width] for c in self._columns], dim=-1)

    def _keys(self, file: str) -> frozenset[str]:
        """The tensor names of one open shard (read once: a shard of an older run may lack the top tokens)."""
        keys = self._shard_keys.get(file)
        if keys is None:
            keys = self._shard_keys[file] = frozenset(self._handles[file].keys())
        return keys

    def __getstate__(self) -> dict[str, Any]:
        # open file handles do not travel to DataLoader workers; each worker reopens its own
        return {**self.__dict__, "_handles": {}}


class FeatureCapture:
    """The features a regeneration run captures while the target generates: `<run directory>/features`, an
    `eda-features` directory like `extract_features` writes (one shard per regeneration chunk, named after it; the
    index is written when the run merges, before its `data.jsonl`)."""

    def __init__(
        self,
        target: PreTrainedModel,
        run_dir: str | os.PathLike,
        layers: list[int] | tuple[int, ...] | None = None,
        dtype: torch.dtype | str | None = None,
    ):
        self.path = Path(run_dir) / FEATURES_DIR
        self.layers = feature_layers(target, layers)
        self.dtype_name = _dtype_name(dtype, target)
        self.signature = target_signature(target)
        self.num_hidden_layers = target.config.get_text_config().num_hidden_layers

    @property
    def settings(self) -> dict[str, Any]:
        """What the regeneration run records of the capture (a resume with other settings is refused)."""
        return {"layers": self.layers, "dtype": self.dtype_name}

    @staticmethod
    def shard_file(chunk: str) -> str:
        return f"chunks/{Path(chunk).stem}.safetensors"

    def write_shard(self, chunk: str, samples: dict[int, tuple[Any, Any, torch.Tensor]]) -> None:
        """Write the `{prompt index: (input_ids, loss_mask, features)}` of the regeneration chunk named `chunk`."""
        (self.path / "chunks").mkdir(parents=True, exist_ok=True)
        write_feature_shard(self.path / self.shard_file(chunk), samples, self.dtype_name)

    def write_index(self, chunks: dict[str, list[int]], rows: list[dict[str, Any]]) -> None:
        """Index the shards of the regeneration's `chunks` (`{chunk name: prompts kept from it}`) and its `rows`."""
        lengths = [len(row["input_ids"]) for row in rows]
        tokens = Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows],
                                    "loss_mask": [r["loss_mask"] for r in rows]})
        write_feature_index(
            self.path, signature=self.signature, dtype_name=self.dtype_name, layers=self.layers,
            num_hidden_layers=self.num_hidden_layers, source="generation",
            dataset_fingerprint=dataset_tokens_fingerprint(tokens), num_samples=len(rows),
            shards={self.shard_file(chunk): samples for chunk, samples in sorted(chunks.items())}, lengths=lengths,
        )
