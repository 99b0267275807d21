"""The decoding-overhead benchmark (`benchmarks/decoding_overhead.py`) runs end to end on a small CPU model, and the
host reads per decoding step, each a device sync on a GPU, stay at one for the tree and below transformers' own
assisted loop for the chain (counted, not timed)."""

from __future__ import annotations

import json

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def overhead():
    return load_script("benchmarks/decoding_overhead.py")


def test_benchmark_reports_every_loop(overhead, tmp_path, capsys):
    out = tmp_path / "overhead.json"
    report = overhead.main(["--layers", "2", "--hidden", "64", "--vocab", "64", "--k", "3", "--tree-top-k", "2",
                            "--lengths", "6", "14", "--repeats", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert "| tree (EAGLE-2) |" in capsys.readouterr().out
    for name, costs in report["per_step"].items():
        assert costs["step_s"] > 0 and costs["forwards_s"] > 0, name
        assert costs["step_s"] == pytest.approx(costs["forwards_s"] + costs["overhead_s"]), name
    chain, assisted, tree = report["per_step"].values()
    assert report["ratios"]["chain_step / transformers_assisted_step"] == pytest.approx(
        chain["step_s"] / assisted["step_s"])
    # one host read per tree step (the accepted tokens); the hook's chain reads its drafted tokens once, on top of
    # transformers' loop, whose own assistant reads more
    assert tree["host_reads"] == 1
    assert chain["host_reads"] < assisted["host_reads"]


def test_host_read_counter_counts_and_restores(overhead):
    import torch

    before = torch.Tensor.item
    x = torch.arange(4)
    with overhead.HostReadCounter() as counter:
        x.sum().item(), int(x[0]), bool(x.any()), x.tolist(), x[x > 1], x.nonzero(), x[1:3]
    assert counter.count == 6
    assert torch.Tensor.item is before
