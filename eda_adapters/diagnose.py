"""`diagnose`: before any training, how much a shared draft loses on a fine-tuned target, and where.

It measures the shared draft's greedy acceptance (tau, tokens per target forward) serving the base target and
serving the fine-tuned one as it is (direct transfer): chain tau with `num_draft_tokens` drafted per step, pooled
over verification steps exactly as `target.generate(assistant_model=draft)` records it, computed by replay
(`eda_adapters.generation.replay`), and the EAGLE-2 tree tau; both over all prompts and per prompt kind, with 95%
bootstrap intervals over prompts (the drop's interval resamples prompts paired between the two targets). It also
scores the representation shift between the two targets on the fine-tuned target's answers, the signal selection
reads. The verdict is one sentence: whether an adapter is worth training, and which kinds lose most.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .data.io import DatasetLike, describe_source, load_rows
from .data.prompts import find_prompt_column, render_prompt, resolve_chat_template
from .data.selection import check_same_tokens, representation_shift
from .errors import EdaInputError
from .generation.drafts import as_eagle_draft
from .generation.replay import greedy_references
from .generation.tau_report import percentile_interval, prompt_sums, replayed_lengths, report_lengths
from .generation.tree import TreeConfig
from .plotting import pyplot
from .schemas.prompt_items import prompt_conversations

#: A fine-tune that costs the shared draft at least this share of its tau (percent) is worth an adapter: the paper's
#: direct-transfer losses are larger, and below it an adapter's gain rarely pays for training it.
WORTH_ADAPTING_DROP = 20.0
#: Between this and `WORTH_ADAPTING_DROP` an adapter may pay, on the kinds that lose most.
MAY_PAY_DROP = 10.0
ALL = "all"


@dataclass
class KindDiagnosis:
    """The draft's chain and tree tau on one group of prompts, on the base and on the fine-tuned target."""

    num_prompts: int
    tau_base: float
    tau_direct: float
    drop_percent: float
    drop_ci95: tuple[float, float]
    tree_tau_base: float
    tree_tau_direct: float
    tree_drop_percent: float
    mean_shift: float


@dataclass
class Diagnosis:
    """What [`diagnose`] measured; `to_dict()` is what `eda diagnose --json` writes.

    Attributes:
        overall: All prompts (`tau_base`, `tau_direct`, `drop_percent` with its 95% interval, the tree's, the mean
            shift).
        by_kind: The same per prompt kind (empty when the prompts have no `kind`).
        shift_scores: One representation-shift score (1 - cosine) per prompt, on the fine-tuned target's answer.
        kinds: Each prompt's kind (`"all"` when the prompts have none).
        reports: The full tau reports (`tau_report`): `{"base": ..., "direct": ...}`, with intervals and the chain's
            acceptance by position.
        settings: How it was measured (prompts, tokens, chain length, tree shape).
        verdict: One sentence a user can act on.
        worth_adapting: Whether the drop reaches `WORTH_ADAPTING_DROP`.
    """

    overall: KindDiagnosis
    by_kind: dict[str, KindDiagnosis]
    shift_scores: list[float]
    kinds: list[str]
    reports: dict[str, Any]
    settings: dict[str, Any]
    verdict: str = ""
    worth_adapting: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_prompts(rows: Dataset, source: str = "the prompt file") -> Dataset:
    """`rows`, or a one-line error when `source` holds no prompt."""
    if len(rows) == 0:
        raise EdaInputError(f"{source} holds no prompt: pass a .jsonl with one {{\"prompt\": ...}} per line")
    return rows


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: DatasetLike
                   ) -> tuple[list[torch.LongTensor], list[str]]:
    """Prompts (text or chat messages, optional `kind`) rendered as regeneration renders them, and their kinds."""
    rows = check_prompts(load_rows(prompts))
    column = find_prompt_column(rows)
    use_template = resolve_chat_template(tokenizer, None)
    encoded = [torch.tensor(render_prompt(tokenizer, messages, use_template)[1])
               for messages in prompt_conversations(rows[column], describe_source(prompts, "prompts"))]
    kinds = [str(k) for k in rows["kind"]] if "kind" in rows.column_names else [ALL] * len(rows)
    return encoded, kinds


def _pooled(per_prompt: Sequence[Sequence[int]]) -> tuple[int, int]:
    sums = prompt_sums(per_prompt)
    return sum(tokens for tokens, _ in sums), sum(steps for _, steps in sums)


def paired_drop(base: Sequence[Sequence[int]], direct: Sequence[Sequence[int]], *, seed: int = 0,
                resamples: int = 1000) -> tuple[float, tuple[float, float]]:
    """The drop of pooled tau from `base` to `direct` (percent; accepted lengths per prompt, the same prompts in the
    same order) and its 95% interval from resampling prompts, the same picks for both targets."""
    def drop(indices: Sequence[int]) -> float | None:
        tokens_b, steps_b = _pooled([base[i] for i in indices])
        tokens_d, steps_d = _pooled([direct[i] for i in indices])
        if not (steps_b and steps_d):
            return None
        return 100.0 * (1.0 - (tokens_d / steps_d) / (tokens_b / steps_b))

    rng = random.Random(seed)
    point = drop(range(len(base)))
    stats = [d for d in (drop([rng.randrange(len(base)) for _ in base]) for _ in range(resamples)) if d is not None]
    if point is None or not stats:
        raise EdaInputError("no verification step ran on the prompts: raise max_new_tokens")
    return point, percentile_interval(stats)


def _kind_diagnosis(index: Sequence[int], per_prompt: dict[str, dict[str, list[list[int]]]],
                    shift: Sequence[float]) -> KindDiagnosis:
    def pooled_tau(target: str, mode: str) -> float:
        tokens, steps = _pooled([per_prompt[target][mode][i] for i in index])
        return tokens / steps if steps else float("nan")

    chain_drop, chain_ci = paired_drop([per_prompt["base"]["chain"][i] for i in index],
                                       [per_prompt["direct"]["chain"][i] for i in index])
    tree_base, tree_direct = pooled_tau("base", "tree"), pooled_tau("direct", "tree")
    return KindDiagnosis(
        num_prompts=len(index), tau_base=round(pooled_tau("base", "chain"), 4),
        tau_direct=round(pooled_tau("direct", "chain"), 4), drop_percent=round(chain_drop, 2),
        drop_ci95=(round(chain_ci[0], 2), round(chain_ci[1], 2)), tree_tau_base=round(tree_base, 4),
        tree_tau_direct=round(tree_direct, 4), tree_drop_percent=round(100.0 * (1 - tree_direct / tree_base), 2),
        mean_shift=round(sum(shift[i] for i in index) / len(index), 6),
    )


def _signed(percent: float) -> str:
    """`-12%`, `+3%`, and `0%` for anything that rounds to zero (never `-0%`)."""
    rounded = round(percent)
    return f"{rounded:+d}%" if rounded else "0%"


def verdict(overall: KindDiagnosis, by_kind: dict[str, KindDiagnosis]) -> str:
    """One sentence: is an adapter worth training, and on which kinds does the shared draft lose most."""
    losing = sorted((k for k, d in by_kind.items() if d.drop_percent >= MAY_PAY_DROP),
                    key=lambda k: -by_kind[k].drop_percent)
    most = ", ".join(f"{k} (-{by_kind[k].drop_percent:.0f}%)" for k in losing[:3])
    change = (f"the shared draft's chain tau goes from {overall.tau_base:.2f} on the base target to "
              f"{overall.tau_direct:.2f} on the fine-tune ({_signed(-overall.drop_percent)}, 95% interval "
              f"[{_signed(-overall.drop_ci95[1])}, {_signed(-overall.drop_ci95[0])}])")
    if overall.drop_percent >= WORTH_ADAPTING_DROP:
        return f"Train an adapter: {change}" + (f"; the kinds that lose most are {most}." if most else ".")
    if overall.drop_percent >= MAY_PAY_DROP:
        return f"An adapter may pay: {change}" + (f", most on {most}." if most else ".")
    if most:
        return f"No adapter needed overall ({change}), but {most} lose more: adapt if those prompts matter."
    return f"No adapter needed: {change}."


@torch.no_grad()
def diagnose(
    base: PreTrainedModel,
    target: PreTrainedModel,
    draft: Any,
    prompts: DatasetLike,
    tokenizer: PreTrainedTokenizerBase,
    *,
    target_tokenizer: PreTrainedTokenizerBase | None = None,
    max_new_tokens: int = 64,
    num_draft_tokens: int = 5,
    tree: TreeConfig | None = None,
    batch_size: int = 8,
    plot: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> Diagnosis:
    """How much the shared `draft` (trained for `base`) loses serving the fine-tuned `target`, before any training.

    Args:
        base: The base target the draft was trained for.
        target: The fine-tuned target (same tokens as `base`).
        draft: An EAGLE-1 or EAGLE-3 draft of `base` (or a `PeftModel` wrapping one). It is measured with each
            target's embedding and output head, as it serves each.
        prompts: Prompts (text or chat messages) with an optional `kind` column: a path to a .jsonl, a list of
            strings or dicts, or a `Dataset`. Rendered with the chat template when `tokenizer` has one.
        tokenizer: The base target's tokenizer; `target_tokenizer` (the fine-tune's) is compared with it when given.
        max_new_tokens: Greedy answer length per prompt.
        num_draft_tokens: Chain length k.
        tree: EAGLE-2 tree shape (default: `TreeConfig(depth=6, top_k=2, total_tokens=12)`, CPU-sized).
        batch_size: Prompts decoded together for the greedy answers.
        plot: Where to save a PNG (tau per kind on both targets, and the shift distribution).

    Returns:
        A [`Diagnosis`]; its `verdict` is one sentence saying whether an adapter is worth training.
    """
    check_same_tokens(base, target, tokenizer, target_tokenizer)
    shared = as_eagle_draft(draft)
    if shared is None:
        raise EdaInputError(f"the draft is a {type(draft).__name__}, not an EAGLE draft: load it with load_draft(path)")
    shared.check_compatible(base)
    mismatch = shared.check_target(base)
    if mismatch:
        raise EdaInputError(f"the draft is not one of the base target: {mismatch.split(':')[0]}; pass the base target "
                            "it was trained for as the base (--base-target)")
    tree = tree or TreeConfig(depth=6, top_k=2, total_tokens=12)
    encoded, kinds = encode_prompts(tokenizer, prompts)
    indices = tuple(int(i) for i in shared.hidden_state_indices)
    eos = getattr(tokenizer, "eos_token_id", None)
    reports, per_prompt, answers = {}, {}, None
    try:
        for name, model in (("base", base), ("direct", target)):
            refs = greedy_references(model, encoded, max_new_tokens, eos, batch_size=batch_size,
                                     show_progress=show_progress, hidden_state_indices=indices)
            shared.attach_target(model)  # the draft serves each target with that target's embedding and head
            per_prompt[name] = replayed_lengths(draft, model, refs, tree=tree, num_draft_tokens=num_draft_tokens,
                                                show_progress=show_progress)
            reports[name] = report_lengths(per_prompt[name], None if set(kinds) == {ALL} else kinds,
                                           tree_depth=tree.depth, num_draft_tokens=num_draft_tokens)
            if name == "direct":
                answers = [{"input_ids": r.sequence.tolist(),
                            "loss_mask": [0] * r.prompt_length + [1] * r.answer_length} for r in refs]
    finally:  # the caller's draft goes back to its base target, also when decoding fails or is interrupted
        shared.attach_target(base)
    shift = representation_shift(base, target, answers, batch_size=batch_size, show_progress=show_progress)
    everything = range(len(encoded))
    overall = _kind_diagnosis(everything, per_prompt, shift)
    by_kind = {} if set(kinds) == {ALL} else {
        kind: _kind_diagnosis([i for i, k in enumerate(kinds) if k == kind], per_prompt, shift)
        for kind in dict.fromkeys(kinds)
    }
    settings = {"num_prompts": len(encoded), "max_new_tokens": max_new_tokens, "num_draft_tokens": num_draft_tokens,
                "tree": asdict(tree), "shift_metric": "cosine", "drop_threshold_percent": WORTH_ADAPTING_DROP,
                "interval": "95% bootstrap over prompts (1000 resamples; the drop's paired between the targets)"}
    result = Diagnosis(overall, by_kind, [round(s, 6) for s in shift], kinds, reports, settings,
                       verdict=verdict(overall, by_kind), worth_adapting=overall.drop_percent >= WORTH_ADAPTING_DROP)
    if plot is not None:
        plot_diagnosis(result, plot)
    return result


def plot_diagnosis(result: Diagnosis, path: str | os.PathLike) -> None:
    """Save a PNG: chain and tree tau per kind on the base and the fine-tuned target, and the shift histogram."""
    plt = pyplot("The diagnosis plot")
    groups = {ALL: result.overall, **result.by_kind}
    fig, (bars, hist) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [max(2, len(groups)), 2]})
    width, names = 0.2, list(groups)
    for offset, (label, attr, color) in enumerate((
        ("chain, base", "tau_base", "#4a7"), ("chain, fine-tuned", "tau_direct", "#d62"),
        ("tree, base", "tree_tau_base", "#9cb"), ("tree, fine-tuned", "tree_tau_direct", "#eb9"),
    )):
        xs = [i + (offset - 1.5) * width for i in range(len(names))]
        bars.bar(xs, [getattr(groups[n], attr) for n in names], width, label=label, color=color)
    bars.set_xticks(range(len(names)), [f"{n}\n{_signed(-groups[n].drop_percent)} chain" for n in names])
    bars.set_ylabel("tau (tokens per target forward)")
    bars.set_title("Shared draft on the base vs the fine-tuned target")
    bars.legend(fontsize=8)
    import numpy as np

    edges = np.histogram_bin_edges(np.asarray(result.shift_scores, dtype=float), bins=20)
    for kind in dict.fromkeys(result.kinds):
        hist.hist([s for s, k in zip(result.shift_scores, result.kinds) if k == kind], bins=edges, alpha=0.6,
                  label=kind)
    hist.set_xlabel("shift (1 - cos) on the fine-tune's answers")
    hist.set_ylabel("prompts")
    if len(set(result.kinds)) > 1:
        hist.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
