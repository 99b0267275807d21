"""Side-by-side speculative-decoding benchmark: plain greedy `generate`, our EAGLE chain hook, our EAGLE-2 tree
decoding, transformers' assisted generation with a small vanilla assistant, and prompt lookup decoding, on the same
target and prompts, in one run."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from .atomic import atomic_path, atomic_write_text
from .generation.stats import SpeculativeStats, active_recorders, track_acceptance
from .generation.tree import TreeConfig, speculative_generate


@dataclass
class BenchResult:
    """One decoding method over all prompts."""

    method: str
    wall_time_s: float
    new_tokens: int
    tokens_per_s: float
    speedup: float
    tau: float
    matches_plain: bool
    num_steps: int = 0  # target forwards (verification steps; plain decoding: one per token)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(
    target: PreTrainedModel,
    prompts: Sequence[torch.LongTensor],
    max_new_tokens: int,
    draft: Any = None,
    assistant: PreTrainedModel | None = None,
    num_draft_tokens: int = 5,
    tree: TreeConfig | None = None,
    prompt_lookup: bool = True,
    show_progress: bool = True,
    early_exit_layers: int | None = None,
) -> list[BenchResult]:
    """Time every available method on `prompts` (each `[1, seq]`), same target, same run. Greedy decoding.

    `draft` is one EAGLE draft or a dict `{label: draft}` (e.g. full and reduced vocabulary): each gets a chain and a
    tree row. `early_exit_layers=n` adds transformers' early-exit assisted generation (the target's first `n` layers
    and its head as the assistant).
    """
    device = target.get_input_embeddings().weight.device
    common = {"do_sample": False, "max_new_tokens": max_new_tokens}
    methods: dict[str, Callable[[torch.LongTensor], torch.LongTensor]] = {
        "plain generate": lambda ids: target.generate(ids, **common),
    }
    drafts = draft if isinstance(draft, dict) else ({} if draft is None else {"": draft})
    tree = tree or TreeConfig()
    for label, one_draft in drafts.items():
        suffix = f", {label}" if label else ""
        methods[f"EAGLE chain (generate hook{suffix})"] = _chain_runner(target, one_draft, num_draft_tokens, common)
        methods[f"EAGLE-2 tree (d{tree.depth} k{tree.top_k} n{tree.total_tokens}{suffix})"] = _tree_runner(
            target, one_draft, tree, max_new_tokens
        )
    if early_exit_layers is not None:
        methods[f"early-exit assistant ({early_exit_layers} target layers)"] = lambda ids: target.generate(
            ids, assistant_early_exit=early_exit_layers, num_assistant_tokens=num_draft_tokens, **common
        )
    if assistant is not None:
        assistant.generation_config.num_assistant_tokens = num_draft_tokens
        assistant.generation_config.num_assistant_tokens_schedule = "constant"
        methods["assisted generation (vanilla LM)"] = lambda ids: target.generate(
            ids, assistant_model=assistant, **common
        )
    if prompt_lookup:
        methods["prompt lookup decoding"] = lambda ids: target.generate(
            ids, prompt_lookup_num_tokens=num_draft_tokens, **common
        )

    prompts = [p.to(device) for p in prompts]
    with torch.no_grad():
        for run in methods.values():
            run(prompts[0])  # warm-up (kernels, allocator, lazy imports)
    # Methods take turns on each prompt, so that load from other processes hits them alike.
    elapsed = dict.fromkeys(methods, 0.0)
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in methods}
    stats = {name: SpeculativeStats() for name in methods}
    progress = tqdm(total=len(methods) * len(prompts), desc="bench", disable=not show_progress)
    for prompt in prompts:
        for name, run in methods.items():
            with track_acceptance() as step_stats, torch.no_grad():
                _synchronize(device)
                start = time.perf_counter()
                out = run(prompt)
                _synchronize(device)
                elapsed[name] += time.perf_counter() - start
            outputs[name].append(out)
            stats[name].accepted_lengths += step_stats.accepted_lengths
            stats[name].drafted_lengths += step_stats.drafted_lengths
            progress.update(1)
    progress.close()

    plain = next(iter(methods))
    results = []
    for name in methods:
        new_tokens = sum(out.shape[1] - prompt.shape[1] for out, prompt in zip(outputs[name], prompts))
        results.append(
            BenchResult(
                method=name,
                wall_time_s=elapsed[name],
                new_tokens=new_tokens,
                tokens_per_s=new_tokens / elapsed[name],
                speedup=elapsed[plain] / elapsed[name],
                tau=stats[name].tau if stats[name].num_steps else 1.0,  # plain decoding: one token per forward
                matches_plain=all(torch.equal(a, b) for a, b in zip(outputs[name], outputs[plain])),
                num_steps=stats[name].num_steps or new_tokens,
            )
        )
    return results


def _chain_runner(target: PreTrainedModel, draft: Any, num_draft_tokens: int, common: dict[str, Any]
                  ) -> Callable[[torch.LongTensor], torch.LongTensor]:
    return lambda ids: target.generate(ids, assistant_model=draft, num_assistant_tokens=num_draft_tokens, **common)


def _tree_runner(target: PreTrainedModel, draft: Any, tree: TreeConfig, max_new_tokens: int
                 ) -> Callable[[torch.LongTensor], torch.LongTensor]:
    def run_tree(ids: torch.LongTensor) -> torch.LongTensor:
        # tree decoding does not go through `generate`: report its steps to the active recorders ourselves
        out, stats = speculative_generate(target, draft, ids, tree=tree, max_new_tokens=max_new_tokens,
                                          return_stats=True)
        for recorder in active_recorders():
            for accepted, drafted in zip(stats.accepted_lengths, stats.drafted_lengths):
                recorder.record(accepted, drafted)
        return out

    return run_tree


def combine_results(parts: Sequence[Sequence[BenchResult]]) -> list[BenchResult]:
    """One result per method over several benchmark runs of the same methods (e.g. one run per prompt kind)."""
    combined = []
    for rows in zip(*parts):
        wall = sum(r.wall_time_s for r in rows)
        tokens = sum(r.new_tokens for r in rows)
        steps = sum(r.num_steps for r in rows)
        combined.append(BenchResult(
            method=rows[0].method, wall_time_s=wall, new_tokens=tokens, tokens_per_s=tokens / wall, speedup=0.0,
            tau=sum(r.tau * r.num_steps for r in rows) / steps if steps else 1.0,
            matches_plain=all(r.matches_plain for r in rows), num_steps=steps,
        ))
    plain_wall = combined[0].wall_time_s
    for result in combined:
        result.speedup = plain_wall / result.wall_time_s
    return combined


def format_table(results: Sequence[BenchResult]) -> str:
    """A Markdown table of the results."""
    lines = [
        "| method | wall time (s) | new tokens | tokens/s | speedup | tau | same output as plain |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.method} | {r.wall_time_s:.2f} | {r.new_tokens} | {r.tokens_per_s:.1f} | {r.speedup:.2f}x | "
            f"{r.tau:.2f} | {'yes' if r.matches_plain else 'no'} |"
        )
    return "\n".join(lines)


def save_bench_results(
    results: Sequence[BenchResult], output_dir: str | os.PathLike, info: dict[str, Any]
) -> list[Path]:
    """Write `bench.json`, `bench.md` and `bench.png` (speedup and tau per method) into `output_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"info": info, "results": [asdict(r) for r in results]}
    paths = [out / "bench.json", out / "bench.md", out / "bench.png"]

    atomic_write_text(paths[0], json.dumps(payload, indent=2) + "\n")
    atomic_write_text(paths[1], format_table(results) + "\n")
    with atomic_path(paths[2]) as tmp:
        names = [r.method for r in results]
        fig, axes = plt.subplots(1, 2, figsize=(11, 0.6 * len(names) + 1.6))
        axes[0].barh(names, [r.speedup for r in results], color="tab:blue")
        axes[0].axvline(1.0, color="gray", lw=0.8)
        axes[0].set_xlabel("speedup vs plain generate (wall time)")
        axes[1].barh(names, [r.tau for r in results], color="tab:orange")
        axes[1].set_xlabel("tau (tokens per target forward)")
        axes[1].set_yticklabels([])
        for ax in axes:
            ax.invert_yaxis()
        fig.suptitle(str(info.get("setup", ""))[:120], fontsize=8)
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
    return paths
