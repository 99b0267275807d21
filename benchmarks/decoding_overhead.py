"""Decoding overhead, side by side in one run: our generate hook (chain), transformers' own assisted loop with a
same-cost assistant, and EAGLE-2 tree decoding, each split into the time spent in model forwards and the rest.

    python benchmarks/decoding_overhead.py --json docs/benchmarks/decoding_overhead_cpu.json
    python benchmarks/decoding_overhead.py --profile tree          # cProfile of one run, top functions by own time

The target is a randomly initialised 4-layer Llama (hidden 256, byte-sized vocabulary by default); the assistant of
transformers' loop is the same Llama with 1 layer, which costs about what our 1-layer EAGLE draft costs per token.
Random weights make nearly every drafted token rejected, so every loop runs about one step per new token: the step
is then all drafting, verifying and bookkeeping, which is what this measures.

Per-step times come from two runs of different lengths (`--lengths`): their difference, divided by the difference in
steps, cancels prefill and set-up. The time inside model forwards is clocked the same way, with forward hooks on the
target and the draft (or assistant); CPU work is synchronous, so the clock is exact there. The **overhead** of a loop
is its step time minus its forwards: the bookkeeping this issue is about (the goals: chain step <= 1.0x transformers'
loop, tree overhead <= 2x the chain's, at an equal number of verified tokens). The loops are measured in rounds, one
pair of runs of each per round, and each ratio is the median of its ratios within a round, so that a change of
machine load between loops cancels. Host reads per step (each a device sync on a GPU) are counted, not timed.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

import eda_adapters
from eda_adapters import EagleDraftModel, TreeConfig
from eda_adapters.atomic import atomic_write_text
from eda_adapters.compute_dtype import machine_key

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_costs import chain_runner, tree_runner  # noqa: E402  (the same loops the GPU cost check times)


class ForwardClock:
    """Seconds spent inside the forwards of some modules (outermost calls only), through forward hooks."""

    def __init__(self, modules: Sequence[torch.nn.Module]) -> None:
        self.seconds = 0.0
        self._depth = 0
        self._begin = 0.0
        self._handles = []
        for module in modules:
            self._handles.append(module.register_forward_pre_hook(self._enter))
            self._handles.append(module.register_forward_hook(self._exit))

    def _enter(self, *_: Any) -> None:
        if self._depth == 0:
            self._begin = time.perf_counter()
        self._depth += 1

    def _exit(self, *_: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.seconds += time.perf_counter() - self._begin

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class HostReadCounter:
    """Counts the calls that read a tensor's values on the host (each a device sync on a GPU): `item`, `tolist`,
    `int()`/`float()`/`bool()`/`__index__` of a tensor, `nonzero`, and indexing with a boolean mask. On a CPU run they
    cost little, but each of them stalls a GPU until its queue drains, so their count per step is the CPU-measurable
    part of the GPU overhead. All code counts, transformers' included."""

    METHODS = ("item", "tolist", "__int__", "__float__", "__bool__", "__index__", "nonzero")

    def __init__(self) -> None:
        self.count = 0
        self._saved: dict[str, Any] = {}

    def _counted(self, name: str) -> Any:
        original = self._saved[name]

        def method(tensor, *args, **kwargs):
            self.count += 1
            return original(tensor, *args, **kwargs)

        return method

    def _getitem(self, tensor, index):
        indices = index if isinstance(index, tuple) else (index,)
        if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices):
            self.count += 1
        return self._saved["__getitem__"](tensor, index)

    def __enter__(self) -> HostReadCounter:
        for name in (*self.METHODS, "__getitem__"):
            self._saved[name] = getattr(torch.Tensor, name)
        for name in self.METHODS:
            setattr(torch.Tensor, name, self._counted(name))
        torch.Tensor.__getitem__ = lambda tensor, index: self._getitem(tensor, index)
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)


def host_reads_per_step(run: Callable[[int], int], lengths: tuple[int, int]) -> float:
    """Host reads per step of `run`, by the two-length difference (prefill and set-up cancel)."""
    measured = []
    for length in lengths:
        with HostReadCounter() as counter:
            steps = run(length)
        measured.append((counter.count, steps))
    (c0, s0), (c1, s1) = measured
    return (c1 - c0) / (s1 - s0)


def build_models(layers: int, hidden: int, vocab: int, seed: int = 0):
    """A random Llama target, our EAGLE-1 draft for it, and a 1-layer Llama assistant of the same width."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 64),
        max_position_embeddings=4096, eos_token_id=None, bos_token_id=None, pad_token_id=None,
    )
    target = LlamaForCausalLM(config).eval()
    assistant = LlamaForCausalLM(LlamaConfig(**{**config.to_dict(), "num_hidden_layers": 1})).eval()
    draft = EagleDraftModel.from_target(target).eval()
    return target, draft, assistant


def loop_runners(target, draft, assistant, prompt: torch.Tensor, k: int, tree: TreeConfig
                 ) -> dict[str, tuple[Callable[[int], int], list[torch.nn.Module]]]:
    """`name -> (run(max_new_tokens) -> steps, the modules whose forwards the step runs)` for each loop."""
    # transformers' loop reads the chain's length, schedule and confidence stop from the assistant's own generation
    # config (its default stops the assistant once its confidence falls under 0.4: on random weights, after one
    # token); our hook reads them from the call, where transformers' defaults mean constant and no stop
    assistant.generation_config.update(num_assistant_tokens=k, num_assistant_tokens_schedule="constant",
                                       assistant_confidence_threshold=0.0)
    return {
        "chain (our hook)": (chain_runner(target, draft, prompt, k), [target, draft]),
        "transformers assisted (1-layer Llama)": (chain_runner(target, assistant, prompt, k), [target, assistant]),
        "tree (EAGLE-2)": (tree_runner(target, draft, prompt, tree), [target, draft]),
    }


def setup_loops(args: argparse.Namespace):
    """The models, prompt and tree of a run (threads set), and its loops (see [`loop_runners`])."""
    torch.set_num_threads(args.threads)
    target, draft, assistant = build_models(args.layers, args.hidden, args.vocab)
    prompt = torch.randint(args.vocab, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(1))
    # equal verified tokens: the chain verifies k drafted tokens + 1, the tree `total_tokens` nodes + its root, and
    # both run k draft forwards per step (the tree: one over the accepted tokens and depth - 1 expansions)
    tree = TreeConfig(depth=args.k, top_k=args.tree_top_k, total_tokens=args.k)
    return loop_runners(target, draft, assistant, prompt, args.k, tree), tree


def step_sample(run: Callable[[int], int], modules: Sequence[torch.nn.Module], lengths: tuple[int, int]
                ) -> dict[str, float]:
    """Seconds per step of `run`, of its forwards, and of the rest (overhead), from one pair of runs: the difference
    between the two lengths, divided by the difference in steps."""
    clock = ForwardClock(modules)
    measured = []
    try:
        for length in lengths:
            clock.seconds = 0.0
            begin = time.perf_counter()
            steps = run(length)
            measured.append((time.perf_counter() - begin, clock.seconds, steps))
    finally:
        clock.remove()
    (t0, f0, s0), (t1, f1, s1) = measured
    if s1 <= s0:
        raise RuntimeError(f"Runs of {lengths} new tokens took {s0} and {s1} steps: use longer runs.")
    step, forwards = (t1 - t0) / (s1 - s0), (f1 - f0) / (s1 - s0)
    return {"step_s": step, "forwards_s": forwards, "overhead_s": step - forwards}


def interleaved_samples(runners: dict[str, tuple[Callable[[int], int], list[torch.nn.Module]]],
                        lengths: tuple[int, int], repeats: int) -> list[dict[str, dict[str, float]]]:
    """`repeats` rounds, each one sample of every loop in turn, so that a change of machine load between loops hits
    them all alike (their ratios are taken within a round)."""
    for run, _ in runners.values():
        run(lengths[0])  # warm-up
    return [{name: step_sample(run, modules, lengths) for name, (run, modules) in runners.items()}
            for _ in range(repeats)]


def profile(run: Callable[[int], int], length: int, top: int = 25) -> str:
    """cProfile of `run(length)` after a warm-up: the `top` functions by own time."""
    run(length)
    profiler = cProfile.Profile()
    profiler.runcall(run, length)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every loop's per-step costs on the same target and prompt, and the ratios the issue's goals are stated in."""
    runners, tree = setup_loops(args)
    rounds = interleaved_samples(runners, tuple(args.lengths), args.repeats)
    costs = {name: {metric: statistics.median(r[name][metric] for r in rounds) for metric in rounds[0][name]}
             for name in runners}
    for name, (run, _) in runners.items():
        costs[name]["host_reads"] = host_reads_per_step(run, tuple(args.lengths))
    chain, assisted, tree_ = runners  # the loops' names
    ratios = {  # medians of the ratios within each round
        "chain_step / transformers_assisted_step": [r[chain]["step_s"] / r[assisted]["step_s"] for r in rounds],
        "tree_step / chain_step": [r[tree_]["step_s"] / r[chain]["step_s"] for r in rounds],
        "tree_overhead / chain_overhead": [r[tree_]["overhead_s"] / max(r[chain]["overhead_s"], 1e-9)
                                           for r in rounds],
    }
    return {
        "command": "python benchmarks/decoding_overhead.py " + " ".join(args.argv),
        "machine": machine_key(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "eda_adapters": eda_adapters.__version__},
        "setup": {"target": f"random Llama, {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}",
                  "draft": "EagleDraftModel.from_target (1 layer)", "assistant": "1-layer Llama, same width",
                  "draft_tokens_per_step": args.k, "tree": vars(tree), "prompt_tokens": args.prompt_tokens,
                  "lengths": args.lengths, "repeats": args.repeats},
        "per_step": costs,
        "ratios": {name: statistics.median(values) for name, values in ratios.items()},
        "ratio_ranges": {name: [min(values), max(values)] for name, values in ratios.items()},
    }


def format_report(report: dict[str, Any]) -> str:
    ms = lambda s: f"{1000 * s:.2f}"  # noqa: E731
    lines = ["| loop | step (ms) | forwards (ms) | overhead (ms) | host reads |", "|---|---:|---:|---:|---:|"]
    for name, c in report["per_step"].items():
        lines.append(f"| {name} | {ms(c['step_s'])} | {ms(c['forwards_s'])} | {ms(c['overhead_s'])} "
                     f"| {c['host_reads']:.1f} |")
    lines += ["", "| ratio (median over rounds) | value | range over rounds |", "|---|---:|---:|"]
    for name, value in report["ratios"].items():
        low, high = report["ratio_ranges"][name]
        lines.append(f"| {name} | {value:.2f} | {low:.2f}-{high:.2f} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4, help="target layers")
    parser.add_argument("--hidden", type=int, default=256, help="target (and draft, assistant) width")
    parser.add_argument("--vocab", type=int, default=256, help="vocabulary size")
    parser.add_argument("--k", type=int, default=5, help="drafted tokens per step (the tree: depth and size)")
    parser.add_argument("--tree-top-k", type=int, default=3, help="the tree's branching")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--lengths", type=int, nargs=2, default=(20, 60), help="new tokens of the short and long run")
    parser.add_argument("--repeats", type=int, default=9, help="rounds (one pair of runs of each loop)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--profile", choices=("chain", "assisted", "tree"),
                        help="print a cProfile of one long run of this loop instead")
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.profile:
        runners, _ = setup_loops(args)
        name = next(n for n in runners if n.startswith(args.profile))
        print(profile(runners[name][0], args.lengths[1]))
        return None
    report = measure(args)
    print(format_report(report))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
