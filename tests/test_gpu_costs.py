"""The GPU cost check (`benchmarks/gpu_costs.py`) runs end to end with tiny shapes on CPU: every cost is measured and
positive, the JSON report is complete, and its predicted speedups follow the documented formulas."""

from __future__ import annotations

import json

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def gpu_costs():
    return load_script("benchmarks/gpu_costs.py")


@pytest.mark.parametrize("arch", ["eagle", "eagle3"])
def test_tiny_cost_check_reports_every_cost(gpu_costs, tmp_path, capsys, arch):
    out = tmp_path / "costs" / "gpu_costs_cpu.json"
    k, depth, top_k, nodes, tau = 3, 3, 2, 6, 1.7
    returned = gpu_costs.main([
        "--tiny", "--tau", str(tau), "--context", "48", "--k", str(k), "--tree-depth", str(depth),
        "--tree-top-k", str(top_k), "--tree-total-tokens", str(nodes), "--repeats", "3", "--generate-repeats", "3",
        "--short-run", "4", "--long-run", "12", "--json", str(out), "--draft-arch", arch,
    ])
    report = json.loads(out.read_text())
    assert report == json.loads(json.dumps(returned))
    assert report["device"] == "cpu" and report["dtype"] == "float32"
    assert set(report["versions"]) == {"torch", "transformers", "eda_adapters"}
    shapes = report["shapes"]
    assert shapes["hidden_size"] == 64 and shapes["context"] == 48 and shapes["k"] == k and shapes["draft_arch"] == arch
    assert shapes["draft_vocab_size"] < shapes["vocab_size"]
    assert shapes["tree"] == {"depth": depth, "top_k": top_k, "total_tokens": nodes}

    assert set(report["target_forward_s"]) == {"1", str(k + 1), str(nodes)}
    times = [*report["target_forward_s"].values(), report["target_tree_forward_s"]]
    for key in ("draft_step_s", "draft_tree_step_s"):
        assert set(report[key]) == {"full", "reduced"}
        times += report[key].values()
    assert set(report["decoding_step_s"]) == {"plain", "chain_full", "chain_reduced", "tree_full", "tree_reduced"}
    assert set(report["overhead_s"]) == {"chain_full", "chain_reduced", "tree_full", "tree_reduced"}
    times += report["decoding_step_s"].values()
    assert all(t > 0 for t in times), times
    assert all(t >= 0 for t in report["overhead_s"].values())  # noise below the overhead is reported as 0

    rows = report["predicted_speedup"]
    assert [row["tau"] for row in rows] == [tau, 3.0, 4.0, 4.79, 5.0]
    row = rows[0]
    t1 = report["target_forward_s"]["1"]
    chain = report["target_forward_s"][str(k + 1)] + k * report["draft_step_s"]["full"] + report["overhead_s"][
        "chain_full"]
    assert row["chain_full"] == pytest.approx(tau * t1 / chain)
    tree = (report["target_tree_forward_s"] + (depth - 1) * report["draft_tree_step_s"]["reduced"]
            + report["draft_step_s"]["reduced"] + report["overhead_s"]["tree_reduced"])
    assert row["tree_reduced"] == pytest.approx(tau * t1 / tree)
    # the overhead is the residual of the measured step, so the prediction is tau x (target forward / step time);
    # where timing noise makes the step shorter than its forwards, the overhead is 0 and the forwards' sum counts
    step = report["decoding_step_s"]["tree_reduced"]
    assert row["tree_reduced"] == pytest.approx(tau * t1 / max(step, tree - report["overhead_s"]["tree_reduced"]))
    assert all(r["chain_full"] / r["tau"] == pytest.approx(row["chain_full"] / tau) for r in rows)

    printed = capsys.readouterr().out
    assert "| tau | chain, full head |" in printed and f"| {tau:.2f} |" in printed


def test_bad_run_lengths_are_a_one_line_error(gpu_costs, capsys):
    with pytest.raises(SystemExit):
        gpu_costs.parse_args(["--tiny", "--short-run", "12", "--long-run", "4"])
    assert "--short-run must be positive and smaller than --long-run" in capsys.readouterr().err
