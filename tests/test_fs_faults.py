"""Real filesystem faults, not mocks: each writer runs in a child process whose writes fail with `EFBIG` part-way
(`RLIMIT_FSIZE`, `SIGXFSZ` ignored). What was there before must be intact, no half-written file may sit where a
finished one is expected, the message must be one line, and a rerun without the limit must finish the job."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

WRITERS = Path(__file__).with_name("fs_fault_writers.py")
MESSAGE = "disk full or file too large while writing"


def write(writer: str, output_dir: Path, seed: int = 0, limit: int | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(WRITERS), writer, str(output_dir), "--seed", str(seed)]
    argv += ["--limit", str(limit)] if limit is not None else []
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_refused_in_one_line(run: subprocess.CompletedProcess, writer: str) -> None:
    lines = [line for line in run.stderr.splitlines() if line.startswith(f"eda {writer}: error:")]
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert len(lines) == 1 and MESSAGE in lines[0] and "nothing was replaced" in lines[0], run.stderr[-2000:]


def leftovers(root: Path) -> list[str]:
    """Temporary files or folders of an atomic write left behind."""
    return [str(p) for p in root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


@pytest.mark.parametrize("writer, limit", [("draft", 4096), ("adapter", 2048), ("export", 4096)])
def test_a_full_disk_while_saving_leaves_the_previous_save_intact(tmp_path, writer, limit):
    out = tmp_path / "out"
    assert write(writer, out, seed=0).returncode == 0
    before = digest(out)
    assert any(name.endswith(".safetensors") for name in before)

    faulted = write(writer, out, seed=1, limit=limit)  # other weights: every weights file would change
    assert_refused_in_one_line(faulted, writer)
    assert digest(out) == before and not leftovers(tmp_path)

    assert write(writer, out, seed=1).returncode == 0  # the same save with room: it replaces the weights
    after = digest(out)
    assert {name for name in after if name.endswith(".safetensors")} == {
        name for name in before if name.endswith(".safetensors")}
    assert any(after[name] != before[name] for name in before if name.endswith(".safetensors"))


@pytest.mark.parametrize("writer, limit", [("regenerate", 1200), ("features", 2048)])
def test_a_full_disk_during_a_chunked_run_resumes_to_the_same_result(tmp_path, writer, limit):
    reference = tmp_path / "reference"
    assert write(writer, reference).returncode == 0

    out = tmp_path / "out"
    faulted = write(writer, out, limit=limit)
    assert_refused_in_one_line(faulted, writer)
    assert not leftovers(tmp_path)
    finished = digest(reference)
    final = "data.jsonl" if writer == "regenerate" else "index.json"
    assert final not in digest(out)  # no finished-looking output from a run that failed

    assert write(writer, out).returncode == 0  # the rerun resumes and finishes
    resumed = digest(out)
    if writer == "regenerate":
        assert resumed["data.jsonl"] == finished["data.jsonl"]  # the same tokens, byte for byte
    else:
        from eda_adapters.data import CachedFeatureDataset

        import torch

        for got, want in zip(CachedFeatureDataset(out), CachedFeatureDataset(reference), strict=True):
            assert got.keys() == want.keys()
            assert all(torch.equal(got[key], want[key]) for key in got)
