"""The compute dtype follows the machine: float32 where bfloat16 is emulated, bfloat16 where it pays; probe cached."""

from __future__ import annotations

import pytest
import torch

from eda_adapters import compute_dtype
from eda_adapters.compute_dtype import cached_matmul_peak, choose_dtype, matmul_gflops

AVX512_BF16 = {"float32": 170.0, "bfloat16": 420.0}  # measured on an AMD EPYC with avx512_bf16
AVX2_ONLY = {"float32": 120.0, "bfloat16": 1.0}  # measured on an AMD EPYC with AVX2 only


def never(): raise AssertionError("an AVX2 CPU must not be probed")  # noqa: E704


def test_the_choice_follows_the_kind_of_machine():
    assert choose_dtype("cpu", capability="AVX2", probe=never) == torch.float32
    assert choose_dtype("cpu", capability="DEFAULT", probe=never) == torch.float32
    assert choose_dtype("cpu", capability="AVX512", probe=lambda: AVX512_BF16) == torch.bfloat16
    # AVX-512 without fast bfloat16 (a probe that finds it slow) stays in float32
    assert choose_dtype("cpu", capability="AVX512", probe=lambda: AVX2_ONLY) == torch.float32
    assert choose_dtype("cpu", capability="AVX512", probe=lambda: {"float32": 100.0, "bfloat16": 110.0}) == torch.float32


def test_the_probe_runs_once_per_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(compute_dtype, "CACHE_FILE", tmp_path / "peak.json")
    calls = []

    def probe():
        calls.append(1)
        return AVX512_BF16

    assert cached_matmul_peak(probe) == AVX512_BF16
    assert cached_matmul_peak(probe) == AVX512_BF16 and len(calls) == 1
    # another machine (here: another thread count) probes again
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        cached_matmul_peak(probe)
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 2
    (tmp_path / "peak.json").write_text("{not json")  # a damaged cache is re-probed, not an error
    assert cached_matmul_peak(probe) == AVX512_BF16 and len(calls) == 3


def test_a_real_probe_measures_both_dtypes():
    assert matmul_gflops(torch.float32, size=64, seconds=0.001) > 0


def test_loading_in_the_machine_dtype(tmp_path, monkeypatch):
    from conftest import make_target

    from eda_adapters.data.io import load_causal_lm

    make_target("llama").save_pretrained(tmp_path / "t")
    for kind, expected in (("AVX2", torch.float32), ("AVX512", torch.bfloat16)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda kind=kind: kind)
        monkeypatch.setattr(compute_dtype, "cached_matmul_peak", lambda: AVX512_BF16)
        assert load_causal_lm(str(tmp_path / "t"), dtype="machine").dtype == expected


@pytest.mark.parametrize("value", ["machine", "auto"])
def test_cli_accepts_the_dtype_choices(value):
    from eda_adapters.cli import build_parser

    args = build_parser().parse_args(["regenerate", "--target", "m", "--prompts", "p", "--output-dir", "o",
                                      "--dtype", value])
    assert args.dtype == value
