"""One invocation's time budget, and the committed log of what every chunk did and what it cost."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

from ...atomic import atomic_path
from ...compute_dtype import machine_key
from ...errors import EdaInputError


class ChunkBudget:
    """Wall-clock budget of one invocation: stages ask before starting a unit of work whose cost they estimate."""

    def __init__(self, max_minutes: float) -> None:
        self.started = time.monotonic()
        self.seconds = max_minutes * 60.0

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def allows(self, estimated_seconds: float) -> bool:
        """Whether a unit of work expected to take `estimated_seconds` ends inside the budget."""
        return estimated_seconds <= self.left()


class ChunkLog:
    """Append-only JSON lines, one per finished unit of work: `{"chunk", "stage", "seconds", ...}`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.chunk = 1 + max((row.get("chunk", 0) for row in self.rows()), default=0)

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def record(self, stage: str, seconds: float, **details: Any) -> None:
        row = {"chunk": self.chunk, "stage": stage, "seconds": round(seconds, 1), **details,
               "machine": machine_key(), "date": time.strftime("%Y-%m-%d")}
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")

    def done(self, stage: str) -> bool:
        """Whether a chunk has recorded `stage` (one that runs once and commits its result)."""
        return any(row["stage"] == stage for row in self.rows())

    def last_rate(self, stage: str, unit: str, default: float) -> float:
        """Seconds per `unit` of the last logged unit of work of `stage` (`default` before there is one)."""
        for row in reversed(self.rows()):
            if row["stage"] == stage and row.get(unit):
                return row["seconds"] / row[unit]
        return default

    def markdown(self) -> str:
        """One table row per chunk: its date, the seconds of each stage it ran, its total; then the sum."""
        chunks: dict[int, dict[str, Any]] = {}
        for row in self.rows():
            chunk = chunks.setdefault(row["chunk"], {"date": row["date"], "stages": {}})
            chunk["stages"][row["stage"]] = chunk["stages"].get(row["stage"], 0.0) + row["seconds"]
        lines = ["| chunk | date | work (minutes) | total (minutes) |", "|---:|---|---|---:|"]
        for number, chunk in sorted(chunks.items()):
            work = ", ".join(f"{stage} {seconds / 60:.1f}" for stage, seconds in chunk["stages"].items())
            lines.append(f"| {number} | {chunk['date']} | {work} | {sum(chunk['stages'].values()) / 60:.1f} |")
        total = sum(self.seconds_by_stage().values())
        lines.append(f"| all | | | {total / 60:.1f} ({total / 3600:.2f} h) |")
        return "\n".join(lines)

    def seconds_by_stage(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for row in self.rows():
            totals[row["stage"]] = totals.get(row["stage"], 0.0) + row["seconds"]
        return totals


def write_jsonl_gz(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """Compressed JSON lines, written whole or not at all (no name or time in the header: the bytes depend on the rows only)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as handle:
            for row in rows:
                handle.write((json.dumps(row, separators=(",", ":")) + "\n").encode())


def read_jsonl_gz(path: str | os.PathLike) -> list[dict[str, Any]]:
    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def check_recorded(recorded: dict[str, Any], wanted: dict[str, Any], what: str, fix: str) -> None:
    """Raise a one-line error naming the fields where `wanted` differs from what a committed file `recorded`."""
    changed = sorted(key for key in wanted if recorded.get(key) != wanted[key])
    if changed:
        raise EdaInputError(f"{what} was made with other settings ({', '.join(changed)}): {fix}")
