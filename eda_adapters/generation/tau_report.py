"""tau with 95% intervals: the pooled accepted lengths of verification steps, bootstrap intervals over prompts, and a
report of chain and tree tau over all prompts and per prompt kind (what `eda diagnose` and the experiments print)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from ..console import bar_options
from ..errors import EdaInputError
from .replay import GreedyReference, replay_acceptance
from .stats import compute_tau
from .tree import TreeConfig


@dataclass
class TauMeasurement:
    """tau of one draft on a set of prompts, with a 95% bootstrap interval over prompts.

    `tau` is the pooled mean over all verification steps (tokens per target forward, bonus included); `ci95` the 2.5
    and 97.5 percentiles of the same statistic over prompts resampled with replacement. `acceptance_by_position[i]`
    is the share of steps that accepted at least `i + 1` drafted tokens.
    """

    tau: float
    ci95: tuple[float, float]
    acceptance_by_position: list[float]
    num_prompts: int
    num_steps: int
    per_prompt: list[list[int]] = field(default_factory=list, repr=False)


def summarize(per_prompt: Sequence[Sequence[int]], depth: int, seed: int = 0, resamples: int = 1000) -> TauMeasurement:
    """Pool the accepted lengths of each prompt's verification steps into a [`TauMeasurement`]."""
    steps = [n for lengths in per_prompt for n in lengths]
    if not steps:
        raise EdaInputError("No verification step ran on the evaluation prompts: raise eval_max_new_tokens.")
    rng = random.Random(seed)
    sums = prompt_sums(per_prompt)
    stats = []
    for _ in range(resamples):
        picks = [sums[rng.randrange(len(sums))] for _ in sums]
        total = sum(count for _, count in picks)
        if total:
            stats.append(sum(tokens for tokens, _ in picks) / total)
    by_position = [sum(n >= i for n in steps) / len(steps) for i in range(1, depth + 1)]
    return TauMeasurement(compute_tau(steps), percentile_interval(stats), by_position, len(per_prompt), len(steps),
                          [list(lengths) for lengths in per_prompt])


def prompt_sums(per_prompt: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """Per prompt, `(tokens, verification steps)`: tokens are the accepted lengths plus the bonus token each."""
    return [(sum(n + 1 for n in lengths), len(lengths)) for lengths in per_prompt]


def percentile_interval(stats: Sequence[float]) -> tuple[float, float]:
    """The 95% percentile interval (2.5th and 97.5th) of bootstrap statistics."""
    ordered = sorted(stats)
    return ordered[int(0.025 * (len(ordered) - 1))], ordered[int(round(0.975 * (len(ordered) - 1)))]


def rounded(measurement: TauMeasurement) -> dict[str, Any]:
    """The JSON-friendly summary of a measurement: tau and its interval to 4 decimals, prompts and steps."""
    return {"tau": round(measurement.tau, 4), "ci95": [round(x, 4) for x in measurement.ci95],
            "num_prompts": measurement.num_prompts, "steps": measurement.num_steps}


def replayed_lengths(draft: nn.Module, target: PreTrainedModel, references: Sequence[GreedyReference], *,
                     tree: TreeConfig, num_draft_tokens: int = 5, show_progress: bool = False
                     ) -> dict[str, list[list[int]]]:
    """The accepted length of every verification step, per prompt, of chain (`"chain"`, `num_draft_tokens` per
    step) and tree (`"tree"`) decoding with `draft`, replayed from the target's greedy `references`."""
    modes = (("chain", {"num_draft_tokens": num_draft_tokens}), ("tree", {"tree": tree}))
    lengths: dict[str, list[list[int]]] = {name: [] for name, _ in modes}
    steps = [(name, kwargs, ref) for name, kwargs in modes for ref in references]
    for name, kwargs, ref in tqdm(steps, desc="replaying drafts", unit="prompt", **bar_options(show_progress)):
        lengths[name].append(replay_acceptance(draft, target, ref, **kwargs).accepted_lengths)
    return lengths


def report_lengths(lengths: dict[str, list[list[int]]], kinds: Sequence[str] | None = None, *, tree_depth: int,
                   num_draft_tokens: int = 5) -> dict[str, Any]:
    """[`tau_report`] from accepted lengths already replayed ([`replayed_lengths`])."""
    report: dict[str, Any] = {}
    for name, depth in (("chain", num_draft_tokens), ("tree", tree_depth)):
        per_prompt = lengths[name]
        overall = summarize(per_prompt, depth)
        report[name] = rounded(overall)
        if kinds is not None:
            report[name]["by_kind"] = {
                kind: rounded(summarize([p for p, k in zip(per_prompt, kinds) if k == kind], depth))
                for kind in dict.fromkeys(kinds)
            }
        if name == "chain":
            reached = [1.0] + overall.acceptance_by_position
            report[name]["acceptance_by_position"] = [round(x, 4) for x in overall.acceptance_by_position]
            report[name]["conditional_acceptance"] = [
                round(reached[i + 1] / reached[i], 4) if reached[i] else None for i in range(depth)
            ]
    return report


def tau_report(draft: nn.Module, target: PreTrainedModel, references: Sequence[GreedyReference],
               kinds: Sequence[str] | None = None, *, tree: TreeConfig, num_draft_tokens: int = 5,
               show_progress: bool = False) -> dict[str, Any]:
    """Chain and tree tau of `draft`, replayed from the target's greedy `references` (one per prompt; `kinds` names
    each prompt's kind), over all prompts and per kind, with 95% bootstrap intervals over prompts; and the chain's
    acceptance by position (`P(at least i accepted)`) and conditional on the previous position."""
    lengths = replayed_lengths(draft, target, references, tree=tree, num_draft_tokens=num_draft_tokens,
                               show_progress=show_progress)
    return report_lengths(lengths, kinds, tree_depth=tree.depth, num_draft_tokens=num_draft_tokens)
