"""The compute dtype this machine runs fastest, chosen at run time, never hard-coded.

Machines differ by a factor of a hundred in bfloat16: a CPU with AVX512-BF16 (or AMX) multiplies bfloat16 matrices
about 2.5x faster than float32, a CPU with AVX2 only emulates bfloat16 about 100x *slower* than float32. So the
choice follows the machine:

- CUDA: bfloat16 where the GPU supports it, else float32;
- CPU without AVX-512 (`torch.backends.cpu.get_cpu_capability()` says `AVX2`, `DEFAULT`, ...): float32, no probe;
- CPU with AVX-512: a probe of a few milliseconds times one float32 and one bfloat16 matmul; bfloat16 when it is at
  least `BF16_MIN_SPEEDUP` times faster. The result is cached per machine (CPU model, capability, threads and torch
  version) under `~/.cache/eda_adapters/`, so later runs read it instead of probing.

`measure_matmul_peak` is also what the pipeline benchmark divides by to report each stage as a fraction of the
machine's peak.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .atomic import atomic_write_json

BF16_MIN_SPEEDUP = 1.2
CACHE_FILE = Path(os.environ.get("EDA_ADAPTERS_CACHE", Path.home() / ".cache" / "eda_adapters")) / "matmul-peak.json"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def matmul_gflops(dtype: torch.dtype, size: int = 512, seconds: float = 0.02, device: str = "cpu") -> float:
    """GFLOP/s of a square `size` matmul in `dtype` on `device`, best of the repeats that fit in `seconds`."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)  # warm-up (kernel choice, page faults)
    best, spent = float("inf"), 0.0
    while spent < seconds or best == float("inf"):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
        if elapsed > 1.0:  # emulated bfloat16 on an AVX2 CPU: one product says enough
            break
    return 2 * size**3 / best / 1e9


def measure_matmul_peak(size: int = 512, seconds: float = 0.02) -> dict[str, float]:
    """`{"float32": GFLOP/s, "bfloat16": GFLOP/s}` of torch's CPU matmul on this machine, at its thread count."""
    return {name: matmul_gflops(dtype, size, seconds) for name, dtype in _DTYPES.items()}


def machine_key() -> dict[str, str | int]:
    """What the matmul peak depends on: the CPU model, the instruction set torch uses, threads, torch version."""
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return {
        "cpu": model,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def cached_matmul_peak(probe: Callable[[], dict[str, float]] = measure_matmul_peak) -> dict[str, float]:
    """The matmul peak of this machine: read from the cache when this machine measured it, else probed and cached."""
    key = machine_key()
    try:
        cached = json.loads(CACHE_FILE.read_text(encoding="utf-8"))
        if cached.get("machine") == key:
            return {name: float(cached["gflops"][name]) for name in _DTYPES}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no cache, another machine's, or unreadable: probe again
    peak = probe()
    try:
        CACHE_FILE.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(CACHE_FILE, {"machine": key, "gflops": peak})
    except OSError:
        pass  # a read-only home only costs the probe next time
    return peak


def choose_dtype(
    device: torch.device | str = "cpu",
    *,
    capability: str | None = None,
    probe: Callable[[], dict[str, float]] | None = None,
) -> torch.dtype:
    """The compute dtype for `device` on this machine (see the module docstring).

    `capability` (default `torch.backends.cpu.get_cpu_capability()`) and `probe` (default: the cached probe) can be
    given to decide for another machine, e.g. in tests.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type != "cpu":
        return torch.float32
    capability = capability or torch.backends.cpu.get_cpu_capability()
    if "AVX512" not in capability.upper() and "AMX" not in capability.upper():
        return torch.float32  # bfloat16 is emulated here: about 100x slower
    peak = probe() if probe is not None else cached_matmul_peak()
    return torch.bfloat16 if peak["bfloat16"] >= BF16_MIN_SPEEDUP * peak["float32"] else torch.float32


__all__ = ["cached_matmul_peak", "choose_dtype", "machine_key", "matmul_gflops", "measure_matmul_peak"]
