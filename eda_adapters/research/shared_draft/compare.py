"""The comparison stage of the shared-draft recipe: both trained drafts on the held-out prompts, side by side, and
the better one exported (bfloat16 safetensors) as the committed shared draft."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...atomic import atomic_directory, atomic_write_json
from ...compute_dtype import machine_key
from ...data.prompts import render_prompt, resolve_chat_template
from ...generation import TreeConfig
from ...hub import build_model_card
from ...generation.replay import greedy_references
from ...models.draft_loading import load_draft
from ...plotting import pyplot
from .chunks import ChunkLog
from ...generation.tau_report import tau_report
from .evaluation import (
    CHAIN_TOKENS, TREE, TREE_SHAPES, chain_speedups, step_cost_ms, tree_shapes_report, tree_speedup,
    verify_cost_ms,
)
from .prompt_mix import BENCH_PER_KIND, HELD_OUT_PER_KIND, held_out_prompts


def comparison_prompts(per_kind: int, skip: int = BENCH_PER_KIND) -> list[dict[str, str]]:
    """`per_kind` held-out prompts (`{"kind", "prompt"}`) of each kind, after the first `skip`: those `eda bench
    --per-kind 11` times, so that the drafts, the chain length and the tree shape are chosen on other prompts than
    the speed is measured on."""
    seen: dict[str, int] = {}
    rows = []
    for row in held_out_prompts():
        seen[row["kind"]] = seen.get(row["kind"], 0) + 1
        if skip < seen[row["kind"]] <= skip + per_kind:
            rows.append(row)
    if len(rows) < per_kind * len(seen):
        raise ValueError(f"only {len(rows)} held-out prompts after the first {skip} of each kind: ask for at most "
                         f"{HELD_OUT_PER_KIND - skip} per kind")
    return rows


def held_out_ids(tokenizer: PreTrainedTokenizerBase, per_kind: int) -> tuple[list[torch.LongTensor], list[str]]:
    """The `comparison_prompts` rendered as the target sees them, and their kinds."""
    template = resolve_chat_template(tokenizer, None)
    rows = comparison_prompts(per_kind)
    ids = [torch.tensor(render_prompt(tokenizer, [{"role": "user", "content": row["prompt"]}], template)[1])
           for row in rows]
    return ids, [row["kind"] for row in rows]


def compare_drafts(target: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, drafts: dict[str, Path],
                   per_kind: int, max_new_tokens: int, log: ChunkLog,
                   tree_shapes: Sequence[TreeConfig] | None = TREE_SHAPES) -> dict[str, Any]:
    """tau (chain and tree, overall and per kind), the draft step cost and the predicted speedups of every draft, on
    the same references; the better draft (`"chosen"`) also gets the smaller `tree_shapes`."""
    started = time.perf_counter()
    prompts, kinds = held_out_ids(tokenizer, per_kind)
    loaded = {name: load_draft(path, target_model=target, dtype=target.dtype).eval() for name, path in drafts.items()}
    references: dict[tuple[int, ...], list] = {}
    rows = {}
    for name, draft in loaded.items():
        key = tuple(draft.hidden_state_indices)
        if key not in references:
            references[key] = greedy_references(target, prompts, max_new_tokens, hidden_state_indices=key)
        with torch.no_grad():
            rows[name] = tau_report(draft, target, references[key], kinds, tree=TREE, num_draft_tokens=CHAIN_TOKENS)
    costs = step_cost_ms(target, loaded)
    shapes = tree_shapes or ()
    verify = {1: costs["target_forward"], **verify_cost_ms(target, sorted({
        *range(2, CHAIN_TOKENS + 2), TREE.total_tokens, *(shape.total_tokens for shape in shapes)}))}
    for name, row in rows.items():
        row["draft_step_ms"] = costs[name]
        row["predicted_chain_speedup"] = chain_speedups(row["chain"]["acceptance_by_position"], costs[name], verify)
        row["best_chain_tokens"] = max(row["predicted_chain_speedup"], key=row["predicted_chain_speedup"].get)
        row["predicted_tree_speedup"] = tree_speedup(row["tree"]["tau"], TREE, costs[name], verify)
    best = better_draft(rows)
    if shapes:  # the better draft only: a CPU's best tree is small, and each shape is one more replay
        key = tuple(loaded[best].hidden_state_indices)
        with torch.no_grad():
            rows[best]["tree_shapes"] = tree_shapes_report(loaded[best], target, references[key], shapes,
                                                           costs[best], verify)
    seconds = time.perf_counter() - started
    log.record("compare", seconds, drafts=list(drafts))
    return {
        "rows": rows, "chosen": best, "target_forward_ms": costs["target_forward"], "verify_ms": verify,
        "setup": {"held_out_per_kind": per_kind, "max_new_tokens": max_new_tokens, "chain_tokens": CHAIN_TOKENS,
                  "tree": {"depth": TREE.depth, "top_k": TREE.top_k, "total_tokens": TREE.total_tokens},
                  "dtype": str(target.dtype).replace("torch.", ""), "machine": machine_key(),
                  "threads": torch.get_num_threads(), "seconds": round(seconds, 1)},
    }


def better_draft(rows: dict[str, Any]) -> str:
    """The draft with the higher held-out chain tau (the chain is what pays on a CPU, see docs/benchmarks.md)."""
    return max(rows, key=lambda name: rows[name]["chain"]["tau"])


def export_draft(path: Path, output_dir: Path, info: dict[str, Any] | None = None) -> None:
    """Save the draft at `path` in bfloat16 to `output_dir` with a model card (`info`: facts for its Details table),
    written whole or not at all."""
    # loaded without its target: attached, `.to()` would cast the target's own embedding too
    draft = load_draft(path).to(torch.bfloat16)  # floating tensors only: d2t/t2d keep their types
    with atomic_directory(output_dir) as tmp:
        draft.save_pretrained(tmp)
        build_model_card(draft, info=info).save(str(tmp / "README.md"))


def card_facts(results: dict[str, Any]) -> dict[str, Any]:
    """What the committed draft's model card states: how it was chosen and what it measured."""
    row = results["rows"][results["chosen"]]
    setup = results["setup"]
    return {
        "built by": f"`{results['command']}` (eda_adapters, recipes/smollm2/README.md)",
        "chosen over": ", ".join(name for name in results["rows"] if name != results["chosen"]) + " (higher chain tau)",
        "held-out chain tau (k=5), 95% CI": f"{row['chain']['tau']} [{row['chain']['ci95'][0]}, {row['chain']['ci95'][1]}]",
        "held-out tree tau, 95% CI": f"{row['tree']['tau']} [{row['tree']['ci95'][0]}, {row['tree']['ci95'][1]}]",
        "held-out prompts": f"{setup['held_out_per_kind']} per kind (prose, code, math), {setup['max_new_tokens']} tokens",
        "measured on": f"{setup['machine']['cpu']}, {setup['threads']} threads, {setup['dtype']}",
    }


def plot_comparison(results: dict[str, Any], path: Path) -> None:
    """Conditional acceptance by drafted position (left) and chain / tree tau with 95% intervals (right)."""
    plt = pyplot("the shared-draft comparison plot")
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for index, (name, row) in enumerate(results["rows"].items()):
        left.plot(range(1, CHAIN_TOKENS + 1), row["chain"]["conditional_acceptance"], marker="o", label=name)
        for offset, (kind, marker) in enumerate((("chain", "o"), ("tree", "s"))):
            tau, (low, high) = row[kind]["tau"], row[kind]["ci95"]
            right.errorbar([index + 0.15 * offset], [tau], yerr=[[tau - low], [high - tau]], fmt=marker, capsize=4,
                           color=f"C{offset}", label=kind if index == 0 else None)
    right.set_xticks(range(len(results["rows"])), list(results["rows"]))
    left.set(xlabel="drafted position", ylabel="P(accept | previous accepted)", title="chain, held-out prompts")
    left.legend(fontsize=8)
    right.set(ylabel="tau (tokens per target forward)", title="95% intervals over prompts")
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def write_results(results: dict[str, Any], json_path: Path) -> None:
    atomic_write_json(json_path, results)
    plot_comparison(results, json_path.with_suffix(".png"))
