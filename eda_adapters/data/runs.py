"""Resumable, multi-process output directories, shared by regeneration and feature extraction.

Layout of a run directory:

    run.json                 what the run computes (inputs, target, settings); another run's directory is refused
    chunks/<name>            result chunks, each written to a temporary file and renamed into place
    progress-r<rank>.jsonl   append-only record, one line per committed chunk: {"chunk": name, "indices": [...]}

A sample counts as done once a progress line names it (the chunk file is complete before the line is written). On
(re)start every process reads the records *before* anyone writes, shards the samples still to do as
`todo[rank::world_size]`, and the main process merges the chunks at the end, first record wins, so nothing is
duplicated or lost even if the number of processes changes between attempts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from ..console import bar_options

from ..run_directory import RUN_KEY_FILE, RunDirectory
from ..errors import EdaInputError

RUN_FILE = RUN_KEY_FILE
CHUNK_DIR = "chunks"


def process_state() -> PartialState:
    """The accelerate process state shared with any `Accelerator`/`Trainer` of this job.

    If nothing initialised it yet, a machine without a GPU gets the CPU (gloo) state, so `torchrun` /
    `accelerate launch` on CPU really runs several processes. A launcher that started several processes which
    accelerate does not see would make every process write as rank 0 into the same directory: that is refused.
    """
    if not PartialState._shared_state:
        has_gpu = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
        PartialState(cpu=not has_gpu)
    state = PartialState()
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and state.num_processes == 1:
        raise EdaInputError(
            f"{launched} processes were launched but accelerate sees one: create `PartialState(cpu=True)` (CPU) "
            "before calling eda_adapters.data, or launch one process"
        )
    return state


class ChunkedRun:
    """One output directory filled in chunks by every process of `state` (an `accelerate.PartialState`)."""

    def __init__(self, output_dir: str | os.PathLike, kind: str, config: dict[str, Any], state: PartialState):
        self.dir = Path(output_dir)
        self.kind = kind
        self.config = {"kind": kind, **config}
        self.state = state
        self.rank = state.process_index
        self.world_size = state.num_processes

    def open(self, final_file: str) -> None:
        """Create the directory or check that it holds this same run; `final_file` is the run's merged output."""
        if self.state.is_main_process:
            RunDirectory(self.dir, self.kind, RUN_FILE).claim(self.config)
            (self.dir / CHUNK_DIR).mkdir(parents=True, exist_ok=True)
        self.state.wait_for_everyone()
        self.final_path = self.dir / final_file

    def done(self) -> dict[int, str]:
        """Sample index -> chunk name, over every process's progress record (first record of an index wins)."""
        done: dict[int, str] = {}
        for record_file in sorted(self.dir.glob("progress-r*.jsonl")):
            for line in record_file.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a crash: its chunk is simply redone
                    continue
                if not (self.dir / CHUNK_DIR / record["chunk"]).is_file():
                    continue
                for index in record["indices"]:
                    done.setdefault(int(index), record["chunk"])
        return done

    def todo(self, num_samples: int) -> list[int]:
        """This process's share of the samples not done yet. Every process reads the records before anyone writes."""
        done = self.done()
        self.state.wait_for_everyone()
        remaining = [i for i in range(num_samples) if i not in done]
        return remaining[self.rank :: self.world_size]

    def chunk_path(self, name: str) -> Path:
        return self.dir / CHUNK_DIR / name

    def commit(self, name: str, indices: list[int]) -> None:
        """Record that chunk `name` (already fully written) holds `indices`."""
        line = json.dumps({"chunk": name, "indices": [int(i) for i in indices]}) + "\n"
        record_file = self.dir / f"progress-r{self.rank}.jsonl"
        with open(record_file, "ab") as f:
            if f.tell() > 0:
                with open(record_file, "rb") as existing:
                    existing.seek(-1, os.SEEK_END)
                    if existing.read(1) != b"\n":  # a line torn by a crash: start a fresh one
                        line = "\n" + line
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    def execute(
        self,
        num_samples: int,
        batch_size: int,
        write_chunk: Callable[[list[int]], str],
        merge: Callable[[dict[str, list[int]]], None],
        *,
        sort_key: Callable[[int], Any] | None = None,
        desc: str,
        unit: str = "sample",
        show_progress: bool = True,
    ) -> None:
        """Drive the run: this process computes its share of the samples not done yet, `batch_size` at a time
        (ordered by `sort_key` if given), then the main process merges once every process has finished.

        `write_chunk(indices)` computes those samples, writes them completely to `chunk_path(name)` and returns `name`;
        the driver then commits it. `merge(chunks)` (main process only) writes the final output from
        `completed_chunks`.
        """
        todo = self.todo(num_samples)
        if sort_key is not None:
            todo.sort(key=sort_key)
        options = bar_options(show_progress and self.state.is_main_process)
        with tqdm(total=len(todo), desc=desc, unit=unit, **options) as progress:
            for start in range(0, len(todo), batch_size):
                indices = todo[start : start + batch_size]
                self.commit(write_chunk(indices), indices)
                progress.update(len(indices))
        self.state.wait_for_everyone()
        if self.state.is_main_process:
            merge(self.completed_chunks(num_samples))
        self.state.wait_for_everyone()

    def completed_chunks(self, num_samples: int) -> dict[str, list[int]]:
        """Chunk name -> the indices to take from it; raises if a sample is missing (call once every process ended)."""
        done = self.done()
        missing = [i for i in range(num_samples) if i not in done]
        if missing:
            raise RuntimeError(f"{len(missing)} sample(s) of the {self.kind} run are missing (first: {missing[:5]})")
        chunks: dict[str, list[int]] = {}
        for index, name in sorted(done.items()):
            if index < num_samples:
                chunks.setdefault(name, []).append(index)
        return chunks
