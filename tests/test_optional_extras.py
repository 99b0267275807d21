"""The runtime needs none of the research extra: without matplotlib a requested plot is refused in one line naming
the install, and the benchmark still writes its figures (JSON and Markdown), skipping only the PNG."""

from __future__ import annotations

import json
import sys

import pytest

from eda_adapters import MissingExtraError
from eda_adapters.bench import BenchResult, save_bench_results
from eda_adapters.data.selection import plot_shift_histogram
from eda_adapters.errors import describe_input_error


@pytest.fixture
def no_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError


def test_a_requested_plot_names_the_extra(no_matplotlib, tmp_path):
    with pytest.raises(MissingExtraError) as caught:
        plot_shift_histogram([0.1, 0.2, 0.3], tmp_path / "hist.png")
    assert describe_input_error(caught.value) == (
        "The shift histogram needs matplotlib: pip install 'eda_adapters[plot]' (or '[research]')."
    )
    assert not (tmp_path / "hist.png").exists()


def test_the_benchmark_keeps_its_figures_without_the_plot(no_matplotlib, tmp_path):
    results = [BenchResult("plain generate", 2.0, 8, 4.0, 1.0, 1.0, True, 8),
               BenchResult("EAGLE chain", 1.0, 8, 8.0, 2.0, 2.0, True, 4)]
    with pytest.warns(UserWarning, match=r"needs matplotlib.*Skipped .*bench.png"):
        paths = save_bench_results(results, tmp_path, {"setup": "no plot"})
    assert [p.name for p in paths] == ["bench.json", "bench.md"]
    assert not (tmp_path / "bench.png").exists()
    assert [r["speedup"] for r in json.loads(paths[0].read_text())["results"]] == [1.0, 2.0]
