"""Side-by-side speculative-decoding benchmark: plain greedy `generate`, our EAGLE chain hook, our EAGLE-2 tree
decoding, transformers' assisted generation with a small vanilla assistant, and prompt lookup decoding, on the same
target and prompts, in one run."""

from __future__ import annotations

import json
import os
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .console import bar_options
from transformers import PreTrainedModel

from .atomic import atomic_path, atomic_write_text
from .errors import MissingExtraError
from .plotting import pyplot
from .generation.drafts import as_eagle_draft
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
    draft: str | None = None  # label of the EAGLE draft the method ran with, if any
    draft_step_ms: float | None = None  # chain rows: median time of a one-token draft forward while decoding


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
    assistants: dict[str, PreTrainedModel] | None = None,
    measure_draft_steps: bool = True,
    assistant_confidence_threshold: float | Mapping[str, float | None] | None = None,
) -> list[BenchResult]:
    """Time every available method on `prompts` (each `[1, seq]`), same target, same run. Greedy decoding.

    `draft` is one EAGLE draft or a dict `{label: draft}` (e.g. full and reduced vocabulary): each gets a chain and a
    tree row. `assistant` (row "assisted generation (vanilla LM)") or `assistants={label: model}` are small vanilla
    causal LMs of the target's tokenizer (e.g. a target's first layers, distilled) for transformers'
    assisted generation, `k` tokens per step on a constant schedule. `early_exit_layers=n` adds transformers'
    early-exit assisted generation (the target's first `n` layers and its head as the assistant).
    `assistant_confidence_threshold` sets the vanilla assistants' early chain stop (transformers' default, 0.4, when
    None; 0 drafts all `k` tokens every step, as the EAGLE chain does): one value for all, or `{label: value}` per
    assistant (give the same model twice, loaded twice, to compare thresholds).

    With `measure_draft_steps`, each draft's chain row also gets `draft_step_ms`: the median time of its one-token
    forwards (head included) in one extra, untimed chain run on the first prompt, the cost that a reduced draft
    vocabulary cuts (see [`draft_vocab_comparison`]).
    """
    device = target.get_input_embeddings().weight.device
    common = {"do_sample": False, "max_new_tokens": max_new_tokens}
    methods: dict[str, Callable[[torch.LongTensor], torch.LongTensor]] = {
        "plain generate": lambda ids: target.generate(ids, **common),
    }
    drafts = draft if isinstance(draft, dict) else ({} if draft is None else {"": draft})
    draft_of: dict[str, str] = {}  # method -> draft label
    chain_of: dict[str, str] = {}  # draft label -> its chain method
    tree = tree or TreeConfig()
    for label, one_draft in drafts.items():
        suffix = f", {label}" if label else ""
        chain_of[label] = f"EAGLE chain (generate hook{suffix})"
        methods[chain_of[label]] = _chain_runner(target, one_draft, num_draft_tokens, common)
        tree_name = f"EAGLE-2 tree (d{tree.depth} k{tree.top_k} n{tree.total_tokens}{suffix})"
        methods[tree_name] = _tree_runner(target, one_draft, tree, max_new_tokens)
        draft_of[chain_of[label]] = draft_of[tree_name] = label
    if early_exit_layers is not None:
        methods[f"early-exit assistant ({early_exit_layers} target layers)"] = lambda ids: target.generate(
            ids, assistant_early_exit=early_exit_layers, num_assistant_tokens=num_draft_tokens, **common
        )
    for label, small_lm in (({"vanilla LM": assistant} if assistant is not None else {}) | (assistants or {})).items():
        small_lm.generation_config.num_assistant_tokens = num_draft_tokens
        small_lm.generation_config.num_assistant_tokens_schedule = "constant"
        threshold = (assistant_confidence_threshold.get(label) if isinstance(assistant_confidence_threshold, Mapping)
                     else assistant_confidence_threshold)
        if threshold is not None:
            small_lm.generation_config.assistant_confidence_threshold = threshold
        methods[f"assisted generation ({label})"] = _chain_runner(target, small_lm, num_draft_tokens, common)
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
    progress = tqdm(total=len(methods) * len(prompts), desc="bench", **bar_options(show_progress))
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
    step_ms = {chain_of[label]: _draft_step_ms(one_draft, methods[chain_of[label]], prompts[0], device)
               for label, one_draft in drafts.items()} if measure_draft_steps else {}

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
                draft=draft_of.get(name),
                draft_step_ms=step_ms.get(name),
            )
        )
    return results


def _draft_step_ms(draft: Any, run: Callable[[torch.LongTensor], torch.LongTensor], prompt: torch.LongTensor,
                   device: torch.device) -> float | None:
    """Median milliseconds of the draft's one-token forwards during one (untimed) `run(prompt)`."""
    base = as_eagle_draft(draft)
    times: list[float] = []
    started: list[float] = []

    def before(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        _synchronize(device)
        started.append(time.perf_counter())

    def after(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        _synchronize(device)
        elapsed = time.perf_counter() - started.pop()
        if kwargs.get("input_ids", args[0] if args else None).shape[-1] == 1:
            times.append(elapsed)

    handles = [base.register_forward_pre_hook(before, with_kwargs=True),
               base.register_forward_hook(after, with_kwargs=True)]
    try:
        with torch.no_grad():
            run(prompt)
    finally:
        for handle in handles:
            handle.remove()
    return 1000 * statistics.median(times) if times else None


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
    """One result per method over several benchmark runs of the same methods (e.g. one run per prompt kind);
    `draft_step_ms` is the mean of the runs' medians."""
    combined = []
    for rows in zip(*parts):
        wall = sum(r.wall_time_s for r in rows)
        tokens = sum(r.new_tokens for r in rows)
        steps = sum(r.num_steps for r in rows)
        combined.append(BenchResult(
            method=rows[0].method, wall_time_s=wall, new_tokens=tokens, tokens_per_s=tokens / wall, speedup=0.0,
            tau=sum(r.tau * r.num_steps for r in rows) / steps if steps else 1.0,
            matches_plain=all(r.matches_plain for r in rows), num_steps=steps, draft=rows[0].draft,
            draft_step_ms=statistics.fmean(step_ms) if (step_ms := [r.draft_step_ms for r in rows
                                                                    if r.draft_step_ms is not None]) else None,
        ))
    plain_wall = combined[0].wall_time_s
    for result in combined:
        result.speedup = plain_wall / result.wall_time_s
    return combined


def draft_vocab_comparison(results: Sequence[BenchResult], vocab_sizes: dict[str, int | None]) -> list[dict[str, Any]]:
    """Each reduced-vocabulary draft against the first full-vocabulary one of the same run.

    `vocab_sizes` maps draft labels to their `draft_vocab_size` (`None` = full head). Per pair: the draft step cost
    ratio reduced / full (from the chain rows' `draft_step_ms`), and per decoding method (chain, tree) both taus and
    the tau drop in percent of the full draft's tau."""
    full = next((label for label, size in vocab_sizes.items() if size is None), None)
    rows = {(r.draft, r.method.split(" (")[0]): r for r in results if r.draft is not None}
    comparisons = []
    for label, size in vocab_sizes.items():
        if size is None or full is None:
            continue
        entry: dict[str, Any] = {"reduced": label, "full": full, "draft_vocab_size": size}
        steps = [rows.get((name, "EAGLE chain")) for name in (label, full)]
        if all(r is not None and r.draft_step_ms for r in steps):
            entry["draft_step_ms"] = {"reduced": steps[0].draft_step_ms, "full": steps[1].draft_step_ms}
            entry["step_cost_ratio"] = steps[0].draft_step_ms / steps[1].draft_step_ms
        for method in ("EAGLE chain", "EAGLE-2 tree"):
            reduced_row, full_row = rows.get((label, method)), rows.get((full, method))
            if reduced_row is not None and full_row is not None:
                entry[method] = {"tau_reduced": reduced_row.tau, "tau_full": full_row.tau,
                                 "tau_drop_percent": 100 * (full_row.tau - reduced_row.tau) / full_row.tau}
        comparisons.append(entry)
    return comparisons


def format_draft_vocab_comparison(comparisons: Sequence[dict[str, Any]]) -> str:
    """The [`draft_vocab_comparison`] entries as text, one line per reduced draft."""
    lines = []
    for c in comparisons:
        parts = [f"{c['reduced']} ({c['draft_vocab_size']} tokens) vs {c['full']}:"]
        if "step_cost_ratio" in c:
            ms = c["draft_step_ms"]
            parts.append(f"draft step {ms['reduced']:.2f} / {ms['full']:.2f} ms = cost ratio {c['step_cost_ratio']:.2f};")
        for method in ("EAGLE chain", "EAGLE-2 tree"):
            if method in c:
                m = c[method]
                parts.append(f"{method} tau {m['tau_reduced']:.2f} vs {m['tau_full']:.2f} "
                             f"(drop {m['tau_drop_percent']:.1f}%);")
        lines.append(" ".join(parts).rstrip(";"))
    return "\n".join(lines)


def per_kind_report(parts: dict[str, Sequence[BenchResult]]) -> dict[str, dict[str, dict[str, Any]]]:
    """`{method: {part: {tau, tokens_per_s, speedup, lossless, ...}}}` from results per part (e.g. per prompt kind
    and `all`), every part holding the same methods in the same order."""
    report: dict[str, dict[str, dict[str, Any]]] = {}
    for part, results in parts.items():
        for result in results:
            fields = {key: value for key, value in asdict(result).items() if key != "method"}
            report.setdefault(result.method, {})[part] = fields | {"lossless": result.matches_plain}
    return report


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


def format_report(
    results: Sequence[BenchResult],
    per_kind: dict[str, Sequence[BenchResult]] | None = None,
    comparisons: Sequence[dict[str, Any]] = (),
) -> str:
    """The results as Markdown: one table per prompt kind when given, then one over all prompts, then the
    [`draft_vocab_comparison`] lines."""
    if not per_kind:
        text = format_table(results)
    else:
        text = "\n\n".join(f"## {kind}\n{format_table(rows)}" for kind, rows in {**per_kind, "all": results}.items())
    if comparisons:
        text += "\n\nReduced vs full draft vocabulary (all prompts):\n" + format_draft_vocab_comparison(comparisons)
    return text


def save_bench_results(
    results: Sequence[BenchResult],
    output_dir: str | os.PathLike,
    info: dict[str, Any],
    per_kind: dict[str, Sequence[BenchResult]] | None = None,
    comparisons: Sequence[dict[str, Any]] = (),
) -> list[Path]:
    """Write `bench.json`, `bench.md` and `bench.png` (speedup and tau per method) into `output_dir`.

    `results` are over all prompts; with `per_kind` (results per prompt kind), `bench.json` also holds `methods`:
    [`per_kind_report`] over the kinds and `all`. `comparisons` ([`draft_vocab_comparison`]) go into both files."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"info": info, "results": [asdict(r) for r in results]}
    if per_kind:
        payload["methods"] = per_kind_report({**per_kind, "all": results})
    if comparisons:
        payload["draft_vocab_comparison"] = list(comparisons)
    paths = [out / "bench.json", out / "bench.md", out / "bench.png"]

    atomic_write_text(paths[0], json.dumps(payload, indent=2) + "\n")
    atomic_write_text(paths[1], format_report(results, per_kind, comparisons) + "\n")
    try:
        plt = pyplot("The benchmark plot (bench.png)")
    except MissingExtraError as err:  # the figures are in bench.json and bench.md already
        warnings.warn(f"{err} Skipped {paths[2]}.", stacklevel=2)
        return paths[:2]
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
