"""Held-out evaluation of trained drafts: chain and tree tau with 95% intervals, overall and per prompt kind,
per-position acceptance, and the cost of one draft step next to a target forward."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Sequence

import torch
from torch import nn
from transformers import PreTrainedModel

from ...generation import TreeConfig
from ...generation.replay import GreedyReference, replay_acceptance
from ...generation.tau_report import rounded, summarize

CHAIN_TOKENS = 5
TREE = TreeConfig(depth=5, top_k=10, total_tokens=60)
#: Smaller trees for a CPU, where verifying 60 tokens costs about twice one (see docs/benchmarks.md).
TREE_SHAPES = (TreeConfig(depth=4, top_k=4, total_tokens=8), TreeConfig(depth=5, top_k=4, total_tokens=16),
               TreeConfig(depth=5, top_k=8, total_tokens=32))


def _median_ms(step: Callable[[], Any], repeats: int) -> float:
    for _ in range(10):
        step()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return 1000 * statistics.median(samples)


@torch.no_grad()
def step_cost_ms(target: PreTrainedModel, drafts: dict[str, nn.Module], repeats: int = 200) -> dict[str, float]:
    """Median milliseconds of one drafted token on a 64-token cache, per draft, and of a one-token target forward
    (`"target_forward"`), measured side by side."""
    ids = torch.randint(0, target.config.vocab_size, (1, 65), generator=torch.Generator().manual_seed(0))
    out = target(ids[:, :64], output_hidden_states=True)
    timings = {"target_forward": verify_cost_ms(target, [1], repeats)[1]}
    for name, draft in drafts.items():
        prefill = draft(input_ids=ids[:, 1:65], hidden_states=draft.target_features(out.hidden_states), use_cache=True)
        draft_cache, hidden = prefill.past_key_values, prefill.last_hidden_state[:, -1:]
        size = draft_cache.get_seq_length()

        def step(draft=draft, draft_cache=draft_cache, hidden=hidden, size=size):
            logits = draft(input_ids=ids[:, 64:], hidden_states=hidden, past_key_values=draft_cache,
                           use_cache=True).logits
            draft.target_vocab_logits(logits).argmax(-1)
            draft_cache.crop(size - draft_cache.get_seq_length())  # transformers 5 crops by a negative count

        timings[name] = _median_ms(step, repeats)
    return {name: round(ms, 3) for name, ms in timings.items()}


@torch.no_grad()
def verify_cost_ms(target: PreTrainedModel, new_tokens: Sequence[int], repeats: int = 50) -> dict[int, float]:
    """Median milliseconds of a target forward over `n` new tokens on a 64-token cache, for each `n`: what verifying
    a chain of `n - 1` drafted tokens (or a tree of `n` nodes) costs."""
    ids = torch.randint(0, target.config.vocab_size, (1, 64 + max(new_tokens)),
                        generator=torch.Generator().manual_seed(0))
    cache = target(ids[:, :64], use_cache=True).past_key_values
    costs = {}
    for n in new_tokens:
        def step(n=n):
            target(ids[:, 64:64 + n], past_key_values=cache, use_cache=True)
            cache.crop(64 - cache.get_seq_length())  # transformers 5 crops by a negative count

        costs[n] = round(_median_ms(step, repeats), 3)
    return costs


def chain_speedups(acceptance_by_position: Sequence[float], draft_step_ms: float,
                   verify_ms: dict[int, float]) -> dict[int, float]:
    """Predicted speed over plain greedy of a chain of `k` drafted tokens, for every `k` the acceptance covers:
    `tau(k) * t(1) / (k * draft step + t(k + 1))`, with `tau(k) = 1 + sum_{i <= k} P(at least i accepted)`
    (measured with the longest chain: a shorter one accepts the same prefixes)."""
    speedups = {}
    for k in range(1, len(acceptance_by_position) + 1):
        if k + 1 not in verify_ms:
            break
        tau = 1.0 + sum(acceptance_by_position[:k])
        speedups[k] = round(tau * verify_ms[1] / (k * draft_step_ms + verify_ms[k + 1]), 3)
    return speedups


def tree_speedup(tau: float, tree: TreeConfig, draft_step_ms: float, verify_ms: dict[int, float]) -> float:
    """Predicted speed over plain greedy of tree decoding: `tau * t(1) / (depth * draft step + t(total_tokens))`
    (one batched draft forward per depth level)."""
    return round(tau * verify_ms[1] / (tree.depth * draft_step_ms + verify_ms[tree.total_tokens]), 3)


def tree_shapes_report(draft: nn.Module, target: PreTrainedModel, references: Sequence[GreedyReference],
                       shapes: Sequence[TreeConfig], draft_step_ms: float,
                       verify_ms: dict[int, float]) -> list[dict[str, Any]]:
    """Replayed tau (with its interval) and predicted speedup of each tree shape, the best predicted first."""
    rows = []
    for shape in shapes:
        per_prompt = [replay_acceptance(draft, target, ref, tree=shape).accepted_lengths for ref in references]
        measured = rounded(summarize(per_prompt, shape.depth))
        rows.append({"depth": shape.depth, "top_k": shape.top_k, "total_tokens": shape.total_tokens, **measured,
                     "predicted_speedup": tree_speedup(measured["tau"], shape, draft_step_ms, verify_ms)})
    return sorted(rows, key=lambda row: -row["predicted_speedup"])
