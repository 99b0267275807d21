"""GPU cost check: the costs that decide speculative decoding's speed on a Qwen2.5-7B-shaped target, and the speedup
they predict at a given tau.

    python benchmarks/gpu_costs.py --json docs/benchmarks/gpu_costs_<device>.json [--tau 1.8]   # one GPU, bf16
    python benchmarks/gpu_costs.py --tiny                                                      # CPU smoke run

The target is a *randomly initialised* `Qwen2ForCausalLM` with Qwen2.5-7B's shape, built directly on the device
(nothing is downloaded); the drafts are `EagleDraftModel.from_target(target)` (full head) and the same with a reduced
draft vocabulary (`draft_vocab=torch.arange(N)`), or `Eagle3DraftModel`s with `--draft-arch eagle3`. Costs depend on shapes, not on weights, so random weights measure
them honestly; acceptance (tau) does depend on weights, so it is an input (`--tau`, plus the EAGLE papers' range).

Measured (median of `--repeats`, CUDA events on a GPU, after warm-up):
- target forward of 1, k+1 and N new tokens on a KV cache prefilled with `--context` tokens (N = tree size, also with
  the tree's 4D attention mask);
- one draft step (one token on its KV cache) and one tree draft step (`top_k` tokens at once, tree mask), full and
  reduced head;
- the wall time of one decoding step of the generate hook (chain) and of tree decoding, from two runs of different
  lengths (the difference cancels prefill and set-up), counted with `track_acceptance` / the tree's stats; the
  *overhead* is that step time minus the forwards it runs.

Predicted speedup over plain decoding at acceptance tau (tokens per target forward):
    chain: tau * t_target(1) / (t_target(k+1) + k * t_draft + overhead_chain)
    tree:  tau * t_target(1) / (t_target_tree(N) + (depth-1) * t_draft_tree + t_draft + overhead_tree)
(the tree runs depth-1 expansion forwards of `top_k` tokens and one forward over the accepted tokens per step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import PreTrainedModel, Qwen2Config, Qwen2ForCausalLM
from transformers.cache_utils import DynamicCache

import eda_adapters
from eda_adapters import Eagle3DraftModel, EagleDraftModel, TreeConfig, speculative_generate, track_acceptance
from eda_adapters.atomic import atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from param_counts import QWEN25_7B  # noqa: E402  (published Qwen2.5-7B sizes, shared with the other benchmark)

TINY = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False,
)
PAPER_TAUS = (3.0, 4.0, 4.79, 5.0)  # 4.79: the EDA paper's tau; EAGLE-2 reports about 4-5.5 on 7B targets


def median_time(
    fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2, reset: Callable[[], Any] | None = None
) -> float:
    """Median seconds of `fn()` over `repeats` calls after `warmup` calls; `reset()` runs untimed before each."""
    times = []
    for i in range(warmup + repeats):
        if reset is not None:
            reset()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            elapsed = start.elapsed_time(end) / 1000
        else:
            begin = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - begin
        if i >= warmup:
            times.append(elapsed)
    return statistics.median(times)


def _crop_to(cache: DynamicCache, length: int) -> None:
    """Drop the cache entries after the first `length` positions."""
    cache.crop(-(cache.get_seq_length() - length))


def _prefix_mask(num_new: int, context: int, causal: bool, device: torch.device) -> torch.Tensor:
    """`[num_new, context + num_new]` boolean mask (True = attend): the prefix, then a causal chain or only itself."""
    own = torch.ones(num_new, num_new, dtype=torch.bool, device=device)
    own = own.tril() if causal else own.diag().diag()
    return torch.cat((torch.ones(num_new, context, dtype=torch.bool, device=device), own), dim=1)


@torch.no_grad()
def target_forward_times(
    target: PreTrainedModel, context: int, new_tokens: Sequence[int], tree_tokens: int, repeats: int
) -> tuple[dict[str, float], float]:
    """Seconds of one target forward over `n` new tokens (each of `new_tokens`) on a `context`-token KV cache, and of
    one over `tree_tokens` tokens with a 4D tree mask (as tree decoding verifies)."""
    device = target.device
    vocab = target.config.vocab_size
    ids = torch.randint(vocab, (1, context + max(*new_tokens, tree_tokens)), device=device)
    cache = DynamicCache()
    target(input_ids=ids[:, :context], past_key_values=cache, use_cache=True)
    reset = lambda: _crop_to(cache, context)  # noqa: E731

    def forward(n: int, mask: torch.Tensor | None = None) -> Any:
        return target(
            input_ids=ids[:, context : context + n], attention_mask=mask, past_key_values=cache, use_cache=True,
            position_ids=torch.arange(context, context + n, device=device)[None], output_hidden_states=True,
        )

    times = {str(n): median_time(lambda n=n: forward(n), device, repeats, reset=reset) for n in new_tokens}
    allowed = _prefix_mask(tree_tokens, context, causal=True, device=device)
    additive = torch.zeros(allowed.shape, dtype=target.dtype, device=device)
    additive = additive.masked_fill_(~allowed, torch.finfo(target.dtype).min)[None, None]
    tree_time = median_time(lambda: forward(tree_tokens, additive), device, repeats, reset=reset)
    return times, tree_time


@torch.no_grad()
def draft_step_times(draft: Any, context: int, width: int, repeats: int) -> tuple[float, float]:
    """Seconds of one draft forward over one token (a chain step) and over `width` tokens with a tree mask (a tree
    expansion step), each on a draft KV cache of `context` positions, logits over the target vocabulary included.
    The features have the draft's width: an EAGLE-3 draft then reads them as its own previous state, as every
    draft step after the first of a decoding step does."""
    device, hidden = draft.device, draft.config.hidden_size
    ids = torch.randint(draft.config.vocab_size, (1, context + width), device=device)
    features = torch.randn(1, context + width, hidden, dtype=draft.dtype, device=device)
    cache = DynamicCache()
    draft(input_ids=ids[:, :context], hidden_states=features[:, :context], past_key_values=cache, use_cache=True)
    reset = lambda: _crop_to(cache, context)  # noqa: E731

    def forward(n: int, mask: torch.Tensor | None = None) -> Any:
        out = draft(
            input_ids=ids[:, context : context + n], hidden_states=features[:, context : context + n],
            attention_mask=mask, position_ids=torch.full((1, n), context, device=device),
            past_key_values=cache, use_cache=True,
        )
        return draft.target_vocab_logits(out.logits)  # decoding maps EAGLE-3's draft ids to target ids too

    step = median_time(lambda: forward(1), device, repeats, reset=reset)
    tree_mask = _prefix_mask(width, context, causal=False, device=device)[None, None]
    tree_step = median_time(lambda: forward(width, tree_mask), device, repeats, reset=reset)
    return step, tree_step


def decoding_step_time(
    run: Callable[[int], int], device: torch.device, lengths: tuple[int, int], repeats: int
) -> float:
    """Wall seconds of one decoding step: `run(max_new_tokens)` returns its number of steps; two lengths are timed and
    their difference divided by the difference in steps, so prefill and set-up cancel out. Median over `repeats`."""
    run(lengths[0])  # warm-up
    per_step = []
    for _ in range(repeats):
        timed = []
        for length in lengths:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            begin = time.perf_counter()
            steps = run(length)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timed.append((time.perf_counter() - begin, steps))
        (t_short, s_short), (t_long, s_long) = timed
        if s_long <= s_short:
            raise RuntimeError(f"Runs of {lengths} new tokens took {s_short} and {s_long} steps: use longer runs.")
        per_step.append((t_long - t_short) / (s_long - s_short))
    return statistics.median(per_step)


def chain_runner(target: PreTrainedModel, draft: EagleDraftModel, prompt: torch.Tensor, k: int) -> Callable[[int], int]:
    """`run(max_new_tokens) -> steps` for the generate hook (greedy chain of `k` drafted tokens)."""

    @torch.no_grad()
    def run(max_new_tokens: int) -> int:
        with track_acceptance() as stats:
            target.generate(prompt, assistant_model=draft, num_assistant_tokens=k, do_sample=False,
                            max_new_tokens=max_new_tokens)
        return stats.num_steps

    return run


def tree_runner(target: PreTrainedModel, draft: EagleDraftModel, prompt: torch.Tensor, tree: TreeConfig
                ) -> Callable[[int], int]:
    """`run(max_new_tokens) -> steps` for EAGLE-2 tree decoding."""

    def run(max_new_tokens: int) -> int:
        _, stats = speculative_generate(target, draft, prompt, tree=tree, max_new_tokens=max_new_tokens,
                                        return_stats=True)
        return stats.num_steps

    return run


def plain_runner(target: PreTrainedModel, prompt: torch.Tensor) -> Callable[[int], int]:
    """`run(max_new_tokens) -> steps` for plain greedy `generate` (one target forward per token)."""

    @torch.no_grad()
    def run(max_new_tokens: int) -> int:
        out = target.generate(prompt, do_sample=False, max_new_tokens=max_new_tokens)
        return out.shape[1] - prompt.shape[1]

    return run


def predict_speedups(costs: dict[str, Any], taus: Sequence[float], k: int, depth: int) -> list[dict[str, float]]:
    """Speedup over plain decoding at each tau, per method and draft head, from the measured costs (seconds)."""
    t1 = costs["target_forward_s"]["1"]
    rows = []
    for tau in taus:
        row = {"tau": tau}
        for head in ("full", "reduced"):
            draft = costs["draft_step_s"][head]
            chain = costs["target_forward_s"][str(k + 1)] + k * draft + costs["overhead_s"][f"chain_{head}"]
            tree = (costs["target_tree_forward_s"] + (depth - 1) * costs["draft_tree_step_s"][head] + draft
                    + costs["overhead_s"][f"tree_{head}"])
            row[f"chain_{head}"] = tau * t1 / chain
            row[f"tree_{head}"] = tau * t1 / tree
        rows.append(row)
    return rows


def build_draft(target: PreTrainedModel, arch: str, draft_vocab: torch.Tensor | None = None) -> Any:
    """An EAGLE-1 (`arch="eagle"`) or EAGLE-3 draft for `target`; an EAGLE-3 draft of a target with fewer than seven
    layers reads the states [0, L//2, L] (the default [2, L//2, L-3] repeats a layer below seven)."""
    if arch == "eagle3":
        layers = target.config.num_hidden_layers
        aux = None if layers >= 7 else [0, layers // 2, layers]
        return Eagle3DraftModel.from_target(target, draft_vocab=draft_vocab, aux_layer_ids=aux)
    return EagleDraftModel.from_target(target, draft_vocab=draft_vocab)


def build_models(tiny: bool, draft_vocab: int, device: torch.device, dtype: torch.dtype, target_name: str | None = None,
                 arch: str = "eagle") -> tuple[PreTrainedModel, Any, Any]:
    """A random Qwen2.5-7B-shaped (or tiny) target in eval mode, or the real `target_name` (anything
    `eda_adapters.load_target` accepts), and its full-head and reduced-head drafts of architecture `arch`."""
    config = Qwen2Config(**(TINY if tiny else QWEN25_7B))
    with torch.device(device):
        if target_name is not None:
            target = eda_adapters.load_target(target_name, dtype=dtype, device=device)
            config = target.config
        else:
            target = Qwen2ForCausalLM._from_config(config, dtype=dtype).eval()
        full = build_draft(target, arch).to(device=device, dtype=dtype).eval()
        reduced = build_draft(target, arch, torch.arange(min(draft_vocab, config.vocab_size)))
        reduced = reduced.to(device=device, dtype=dtype).eval()
    return target, full, reduced


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Build the models, take every measurement, and return the report (times in seconds)."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        torch.set_num_threads(args.threads)  # tiny CPU models: one thread is fastest and least hit by other load
    dtype = torch.float32 if args.tiny or (args.target and device.type == "cpu") else torch.bfloat16
    torch.manual_seed(0)
    target, full, reduced = build_models(args.tiny, args.draft_vocab, device, dtype, args.target, args.draft_arch)
    tree = TreeConfig(depth=args.tree_depth, top_k=args.tree_top_k, total_tokens=args.tree_total_tokens)
    k, repeats = args.k, args.repeats
    target_times, tree_time = target_forward_times(target, args.context, (1, k + 1, tree.total_tokens),
                                                   tree.total_tokens, repeats)
    draft_times = {name: draft_step_times(d, args.context, tree.top_k, repeats)
                   for name, d in (("full", full), ("reduced", reduced))}
    prompt = torch.randint(target.config.vocab_size, (1, args.context), device=device)
    lengths = (args.short_run, args.long_run)
    step_s = {"plain": decoding_step_time(plain_runner(target, prompt), device, lengths, args.generate_repeats)}
    for name, draft in (("full", full), ("reduced", reduced)):
        step_s[f"chain_{name}"] = decoding_step_time(chain_runner(target, draft, prompt, k), device, lengths,
                                                     args.generate_repeats)
        step_s[f"tree_{name}"] = decoding_step_time(tree_runner(target, draft, prompt, tree), device, lengths,
                                                    args.generate_repeats)
    overhead = {}
    for name, (draft_step, draft_tree_step) in draft_times.items():
        # a difference of medians: where the overhead is smaller than the noise it can come out negative; that is 0
        overhead[f"chain_{name}"] = max(0.0, step_s[f"chain_{name}"] - target_times[str(k + 1)] - k * draft_step)
        overhead[f"tree_{name}"] = max(0.0, step_s[f"tree_{name}"] - tree_time - (tree.depth - 1) * draft_tree_step
                                       - draft_step)
    costs = {
        "target_forward_s": target_times,
        "target_tree_forward_s": tree_time,
        "draft_step_s": {name: times[0] for name, times in draft_times.items()},
        "draft_tree_step_s": {name: times[1] for name, times in draft_times.items()},
        "decoding_step_s": step_s,
        "overhead_s": overhead,
    }
    taus = ([args.tau] if args.tau is not None else []) + [t for t in PAPER_TAUS if t != args.tau]
    config = target.config
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "eda_adapters": eda_adapters.__version__},
        "shapes": {
            "target": args.target or ("tiny (smoke test, not a speed figure)" if args.tiny
                                      else "Qwen2.5-7B (random weights)"),
            "hidden_size": config.hidden_size, "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads, "num_key_value_heads": config.num_key_value_heads,
            "intermediate_size": config.intermediate_size, "vocab_size": config.vocab_size,
            "draft_arch": args.draft_arch, "draft_layers": full.config.num_hidden_layers,
            "draft_vocab_size": reduced.config.draft_vocab_size,
            "context": args.context, "k": k, "tree": {"depth": tree.depth, "top_k": tree.top_k,
                                                      "total_tokens": tree.total_tokens},
        },
        "repeats": repeats,
        **costs,
        "formulas": {
            "chain": "tau * t_target(1) / (t_target(k+1) + k * t_draft + overhead_chain)",
            "tree": "tau * t_target(1) / (t_target_tree(N) + (depth-1) * t_draft_tree + t_draft + overhead_tree)",
        },
        "predicted_speedup": predict_speedups(costs, taus, k, tree.depth),
    }


def format_report(report: dict[str, Any]) -> str:
    """Markdown tables of the costs (milliseconds) and of the predicted speedups."""
    ms = lambda s: f"{s * 1000:.2f}"  # noqa: E731
    shapes = report["shapes"]
    k, tree = shapes["k"], shapes["tree"]
    lines = [
        f"Device: {report['device']}, {report['dtype']}, target {shapes['target']}, context {shapes['context']}, "
        f"{'EAGLE-3' if shapes.get('draft_arch') == 'eagle3' else 'EAGLE-1'} drafts, draft vocab "
        f"{shapes['draft_vocab_size']} / {shapes['vocab_size']}",
        "",
        "| cost | ms |",
        "|---|---:|",
    ]
    for n, t in report["target_forward_s"].items():
        lines.append(f"| target forward, {n} new token(s) | {ms(t)} |")
    lines.append(f"| target forward, {tree['total_tokens']} tokens, tree mask | {ms(report['target_tree_forward_s'])} |")
    for head in ("full", "reduced"):
        lines.append(f"| draft step, 1 token, {head} head | {ms(report['draft_step_s'][head])} |")
        lines.append(f"| draft tree step, {tree['top_k']} tokens, {head} head | "
                     f"{ms(report['draft_tree_step_s'][head])} |")
    for name, t in report["decoding_step_s"].items():
        lines.append(f"| decoding step (wall), {name} | {ms(t)} |")
    for name, t in report["overhead_s"].items():
        lines.append(f"| overhead per step, {name} | {ms(t)} |")
    lines += [
        "",
        f"Predicted speedup over plain decoding (chain k={k}; tree depth {tree['depth']}, top-k {tree['top_k']}, "
        f"{tree['total_tokens']} nodes):",
        "",
        "| tau | chain, full head | chain, reduced head | tree, full head | tree, reduced head |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in report["predicted_speedup"]:
        lines.append(f"| {row['tau']:.2f} | {row['chain_full']:.2f}x | {row['chain_reduced']:.2f}x | "
                     f"{row['tree_full']:.2f}x | {row['tree_reduced']:.2f}x |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny float32 shapes (CPU smoke test; not a speed figure)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--target", default=None,
                        help="a real target instead of the random Qwen2.5-7B shape, e.g. smollm2-135m-instruct "
                             "(float32 on CPU)")
    parser.add_argument("--tau", type=float, default=None, help="a measured tau to predict the speedup for")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--k", type=int, default=5, help="draft tokens per chain step")
    parser.add_argument("--draft-vocab", type=int, default=32768, help="reduced draft vocabulary size")
    parser.add_argument("--draft-arch", choices=("eagle", "eagle3"), default="eagle",
                        help="EAGLE-1 drafts (default) or EAGLE-3 drafts (three target states, own head)")
    parser.add_argument("--tree-depth", type=int, default=6)
    parser.add_argument("--tree-top-k", type=int, default=10)
    parser.add_argument("--tree-total-tokens", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats of each forward")
    parser.add_argument("--generate-repeats", type=int, default=3, help="timed pairs of decoding runs")
    parser.add_argument("--short-run", type=int, default=8, help="new tokens of the short decoding run")
    parser.add_argument("--long-run", type=int, default=40, help="new tokens of the long decoding run")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (CPU runs only)")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    if args.tiny and args.draft_vocab == parser.get_default("draft_vocab"):
        args.draft_vocab = TINY["vocab_size"] // 4
    if not 0 < args.short_run < args.long_run:
        parser.error("--short-run must be positive and smaller than --long-run.")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the cost check, print the tables, write `--json`; returns the report."""
    args = parse_args(argv)
    report = measure(args)
    print(format_report(report))
    noisy = [name for name, t in report["overhead_s"].items() if t < 0]
    if noisy:
        print(f"warning: negative overhead for {', '.join(noisy)}: the step timings are noisy (other load?); rerun "
              "with more --repeats / --generate-repeats.")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
