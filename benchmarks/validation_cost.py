"""What checking tokenized rows against their schema costs, next to what reading them costs, in one run.

Writes a dataset of `--rows` rows of `--tokens` token ids (random ids below `--vocab`, a 0/1 loss mask) as Parquet,
as JSON Lines (the format `eda regenerate` and `eda select` write) and as a `save_to_disk` directory, then times:

  * reading it: `pyarrow.parquet.read_table` (decode only), `load_rows` on the JSON Lines file (the library's path
    for regenerated data, a fresh datasets cache each time) and one pass over every value of a memory-mapped
    `save_to_disk` copy (`pyarrow.compute.sum` of both columns: the least any reader does);
  * validating it: `check_tokenized_rows(rows, vocab_size=...)` on the loaded rows.

Reports each as seconds and validation as a fraction of each read. The fastest of `--repeats` runs counts (the
CPU is shared); the JSON Lines read, the slowest, runs once.

    python benchmarks/validation_cost.py                                   # 100k rows x 512 tokens
    python benchmarks/validation_cost.py --rows 1000 --json /tmp/v.json    # a quick check
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from eda_adapters.data.io import load_rows
from eda_adapters.schemas import check_tokenized_rows


def best_time(fn, repeats: int) -> tuple[object, float]:
    result, best = None, float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def make_table(rows: int, tokens: int, vocab: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    offsets = pa.array(np.arange(0, (rows + 1) * tokens, tokens, dtype=np.int32))
    ids = pa.ListArray.from_arrays(offsets, pa.array(rng.integers(0, vocab, rows * tokens, dtype=np.int64)))
    mask_values = np.ones(rows * tokens, dtype=np.int64)
    mask_values.reshape(rows, tokens)[:, : tokens // 4] = 0  # the prompt part has no loss
    mask = pa.ListArray.from_arrays(offsets, pa.array(mask_values))
    return pa.table({"input_ids": ids, "loss_mask": mask})


def write_jsonl(table: pa.Table, path: Path) -> None:
    with open(path, "w") as handle:
        for batch in table.to_batches(max_chunksize=2048):
            for ids, mask in zip(batch["input_ids"].to_pylist(), batch["loss_mask"].to_pylist()):
                handle.write(json.dumps({"input_ids": ids, "loss_mask": mask}) + "\n")


def one_pass(rows) -> int:
    table = rows.with_format("arrow")[:]
    return sum(pc.sum(pc.list_flatten(table[name])).as_py() for name in ("input_ids", "loss_mask"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    import datasets
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()
    table = make_table(args.rows, args.tokens, args.vocab)
    with tempfile.TemporaryDirectory(prefix="eda-validation-") as tmp:
        root = Path(tmp)
        pq.write_table(table, root / "rows.parquet")
        write_jsonl(table, root / "rows.jsonl")
        Dataset(table).save_to_disk(str(root / "saved"))
        del table

        _, parquet_read = best_time(lambda: pq.read_table(root / "rows.parquet"), args.repeats)
        datasets.config.HF_DATASETS_CACHE = root / "cache"  # a cold cache, removed with the rest
        start = time.perf_counter()
        rows = load_rows(root / "rows.jsonl")
        jsonl_read = time.perf_counter() - start
        saved = load_rows(root / "saved")
        _, pass_read = best_time(lambda: one_pass(saved), args.repeats)
        _, validate = best_time(lambda: check_tokenized_rows(rows, vocab_size=args.vocab, source="rows"),
                                args.repeats)
        _, validate_saved = best_time(lambda: check_tokenized_rows(saved, vocab_size=args.vocab, source="rows"),
                                      args.repeats)

    result = {
        "rows": args.rows,
        "tokens_per_row": args.tokens,
        "seconds": {"read_jsonl_load_rows": jsonl_read, "read_parquet_decode": parquet_read,
                    "read_one_pass_memory_mapped": pass_read, "validate_jsonl_rows": validate,
                    "validate_memory_mapped": validate_saved},
        "validation_fraction_of": {"jsonl_read": validate / jsonl_read, "parquet_decode": validate / parquet_read,
                                   "one_pass_memory_mapped": validate_saved / pass_read},
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                    "pyarrow": pa.__version__},
        "command": "python benchmarks/validation_cost.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items() if k != "json" and v != parser.get_default(k)),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
