"""Results of an EDA experiment: the table (markdown) and the two plots (PNG)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...atomic import atomic_path, atomic_write_text
from ...plotting import pyplot

#: Display order and labels of the compared methods.
METHOD_LABELS: dict[str, str] = {
    "base_on_base": "base draft, base target",
    "direct_transfer": "base draft, fine-tuned target (direct transfer)",
    "full_retrain_converged": "full retraining from scratch, whole pool (own converged budget)",
    "full_retrain": "full retraining from scratch",
    "full_finetune": "full fine-tuning of the shared draft (warm start)",
    "lora": "LoRA on the draft (params matched to EDA)",
    "eda_shift": "EDA, regenerated + shift-selected",
    "eda_weighted": "EDA, regenerated + shift-weighted sampling",
    "eda_cluster": "EDA, regenerated + top shift within clusters",
    "eda_random": "EDA, regenerated + random selection",
    "eda_original": "EDA, original texts (the fine-tune's data source; no test of regeneration)",
    "eda_official": "EDA official design (joint stage 1, fc trained, random init, length-scaled noise)",
}

#: The EDA rows that differ only by how the data is selected: row -> its selection strategy
#: (`eda_adapters.data.selection_strategies`); the budget curve has one line per row present.
SELECTION_ROWS: dict[str, str] = {
    "eda_shift": "topk", "eda_weighted": "weighted", "eda_cluster": "cluster", "eda_random": "random",
}

#: How the intervals of the tables are computed (written under them and into results.json).
INTERVAL_METHOD = (
    "95% intervals: bootstrap over held-out prompts (1000 resamples); for a row trained with several seeds, nested: "
    "each resample draws seeds with replacement, then prompts with replacement within each drawn seed, and pools "
    "their verification steps. Every trained row but the converged retraining sees the same number of training "
    "tokens."
)

#: Rows trained at their own budget rather than at the experiment's equal-token budget.
OWN_BUDGET_METHODS = ("base_on_base", "full_retrain_converged")


@dataclass
class MethodResult:
    """One row of the results table: one method on one domain.

    `tau_chain` / `tau_tree`: tokens per target forward (bonus included) with chain / EAGLE-2 tree drafting at T=0 on
    the held-out prompts, `ci95_*` their 95% bootstrap intervals over prompts, `acceptance_*[i]` the share of
    verification steps that accepted at least `i + 1` drafted tokens. `train_flops` is an estimate (see
    `evaluation.training_flops`); `budget` says which token budget the row was trained at. A trained row runs once per
    seed in `seeds`: tau pools all of them, its interval is a nested bootstrap (seeds, then prompts; see
    `evaluation.summarize_seeds`), `tau_chain_per_seed` holds each seed's chain tau and the costs are one seed's
    (the mean over seeds).
    """

    domain: str
    method: str
    tau_chain: float
    ci95_chain: tuple[float, float] = (0.0, 0.0)
    tau_tree: float | None = None
    ci95_tree: tuple[float, float] | None = None
    acceptance_chain: list[float] = field(default_factory=list)
    acceptance_tree: list[float] = field(default_factory=list)
    num_eval_prompts: int = 0
    trainable_params: int = 0
    samples: int = 0
    steps: int = 0
    train_tokens: int = 0
    train_seconds: float = 0.0
    train_flops: float = 0.0
    budget: str = "equal tokens"
    seeds: list[int] = field(default_factory=list)
    tau_chain_per_seed: list[float] = field(default_factory=list)
    #: held-out prompt kind -> [chain tau, low, high] (when the domain's prompts have a `kind`)
    tau_chain_by_kind: dict[str, list[float]] = field(default_factory=dict)

    @property
    def tau(self) -> float:
        """The chain tau (the number older results called tau)."""
        return self.tau_chain


@dataclass
class BudgetPoint:
    """One point of the tau-vs-budget curve (chain tau, with its 95% bootstrap interval)."""

    domain: str
    selection: str
    budget: float
    samples: int
    tau: float
    ci95: tuple[float, float] = (0.0, 0.0)
    tau_tree: float | None = None


def _interval(tau: float | None, ci: Sequence[float] | None) -> str:
    if tau is None:
        return "-"
    return f"{tau:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{tau:.2f}"


def _display_order(rows: Sequence[MethodResult]) -> list[MethodResult]:
    """Rows by domain, then methods in `METHOD_LABELS` order (unknown methods last)."""
    order = {m: i for i, m in enumerate(METHOD_LABELS)}
    return sorted(rows, key=lambda r: (r.domain, order.get(r.method, len(order))))


def results_table(rows: Sequence[MethodResult]) -> str:
    """A markdown table, domains as row groups, methods in `METHOD_LABELS` order."""
    lines = [
        "| domain | method | tau chain [95% CI] | tau tree [95% CI] | chain per seed | trainable params | samples | "
        "tokens seen | train FLOPs | train time (s) | budget |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in _display_order(rows):
        lines.append(
            f"| {row.domain} | {METHOD_LABELS.get(row.method, row.method)} | "
            f"{_interval(row.tau_chain, row.ci95_chain)} | {_interval(row.tau_tree, row.ci95_tree)} | "
            f"{' / '.join(f'{t:.2f}' for t in row.tau_chain_per_seed) or '-'} | "
            f"{row.trainable_params:,} | {row.samples:,} | "
            f"{row.train_tokens:,} | {row.train_flops:.2e} | {row.train_seconds:.1f} | "
            f"{row.budget if row.trainable_params else '-'} |"
        )
    return "\n".join(lines)


def acceptance_table(rows: Sequence[MethodResult]) -> str:
    """Per-position acceptance: the share of verification steps that accepted at least i drafted tokens."""
    depth = max((len(r.acceptance_chain) for r in rows), default=0)
    tree_depth = max((len(r.acceptance_tree) for r in rows), default=0)
    header = [f"chain >={i}" for i in range(1, depth + 1)] + [f"tree >={i}" for i in range(1, tree_depth + 1)]
    lines = ["| domain | method | " + " | ".join(header) + " |", "|---|---|" + "---:|" * len(header)]
    for row in _display_order(rows):
        values = [f"{v:.2f}" for v in row.acceptance_chain] + ["-"] * (depth - len(row.acceptance_chain))
        values += [f"{v:.2f}" for v in row.acceptance_tree] + ["-"] * (tree_depth - len(row.acceptance_tree))
        lines.append(f"| {row.domain} | {row.method} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def kind_table(rows: Sequence[MethodResult]) -> str:
    """Chain tau [95% CI] per held-out prompt kind, a column per kind, for the domains whose prompts have kinds."""
    rows = [r for r in rows if r.tau_chain_by_kind]
    if not rows:
        return ""
    kinds = list(dict.fromkeys(k for r in rows for k in r.tau_chain_by_kind))
    lines = ["| domain | method | " + " | ".join(f"tau chain, {k}" for k in kinds) + " |",
             "|---|---|" + "---:|" * len(kinds)]
    for row in _display_order(rows):
        cells = [_interval(v[0], v[1:]) if (v := row.tau_chain_by_kind.get(k)) else "-" for k in kinds]
        lines.append(f"| {row.domain} | {row.method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selected_kinds_table(selected: dict[str, dict[str, dict[str, float]]]) -> str:
    """The share of each prompt kind in each domain's pool and in each strategy's main-budget selection."""
    if not selected:
        return ""
    kinds = list(dict.fromkeys(k for shares in selected.values() for s in shares.values() for k in s))
    lines = ["| domain | selection | " + " | ".join(kinds) + " |", "|---|---|" + "---:|" * len(kinds)]
    for domain, shares in selected.items():
        for name, share in shares.items():
            lines.append(f"| {domain} | {name} | " + " | ".join(f"{share.get(k, 0.0):.0%}" for k in kinds) + " |")
    return "\n".join(lines)


def budget_table(points: Sequence[BudgetPoint]) -> str:
    lines = [
        "| domain | selection | budget | samples | tau chain [95% CI] | tau tree |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for p in sorted(points, key=lambda p: (p.domain, p.selection, p.budget)):
        tree = f"{p.tau_tree:.2f}" if p.tau_tree is not None else "-"
        lines.append(
            f"| {p.domain} | {p.selection} | {p.budget:g} | {p.samples:,} | {_interval(p.tau, p.ci95)} | {tree} |"
        )
    return "\n".join(lines)


def results_by_domain(rows: Sequence[MethodResult]) -> dict[str, dict[str, dict]]:
    """`{domain: {method: row fields}}`, the machine-readable form of the table."""
    out: dict[str, dict[str, dict]] = {}
    for row in rows:
        fields = asdict(row)
        del fields["domain"], fields["method"]
        out.setdefault(row.domain, {})[row.method] = fields
    return out


def _method_colors() -> dict[str, Any]:
    """One colour per method, the same in every plot."""
    import matplotlib.pyplot as plt

    palette = plt.get_cmap("tab10" if len(METHOD_LABELS) <= 10 else "tab20")
    return {method: palette(i) for i, method in enumerate(METHOD_LABELS)}


def plot_tau_by_method(rows: Sequence[MethodResult], path: str | os.PathLike) -> Path:
    """Grouped bars with 95% intervals: tau per method, one group per domain; chain and (when measured) tree."""
    plt = pyplot("The tau-by-method plot")

    domains = sorted({r.domain for r in rows})
    methods = [m for m in METHOD_LABELS if any(r.method == m for r in rows)]
    colors = _method_colors()
    kinds = [("chain", "tau_chain", "ci95_chain")]
    if any(r.ci95_tree is not None for r in rows):
        kinds.append(("tree", "tau_tree", "ci95_tree"))
    fig, axes = plt.subplots(len(kinds), 1, figsize=(max(7, 3 * len(domains) + 2), 3.2 * len(kinds) + 1.6),
                             squeeze=False)
    width = 0.8 / max(1, max(sum(1 for r in rows if r.domain == d) for d in domains))
    for ax, (kind, value_key, ci_key) in zip(axes[:, 0], kinds):
        for d, domain in enumerate(domains):
            present = [r for m in methods for r in rows if r.domain == domain and r.method == m
                       and getattr(r, ci_key) is not None]
            for i, row in enumerate(present):  # only the rows this domain has, packed around its tick
                value, (low, high) = getattr(row, value_key), getattr(row, ci_key)
                x = d + (i - (len(present) - 1) / 2) * width
                ax.bar(x, value, width, yerr=[[value - low], [high - value]], capsize=2, color=colors[row.method],
                       label=METHOD_LABELS[row.method])
        ax.set_xticks(range(len(domains)), domains)
        ax.set_ylabel(f"tau, {kind}")
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    axes[0, 0].set_title("Tokens per target forward per method (95% bootstrap intervals over held-out prompts)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axes[-1, 0].legend(unique.values(), unique.keys(), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12),
                       ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def plot_tau_vs_cost(rows: Sequence[MethodResult], path: str | os.PathLike) -> Path:
    """Scatter per domain: tau (chain, with 95% interval) against the estimated training FLOPs of each trained row."""
    plt = pyplot("The tau-vs-cost plot")

    trained = [r for r in rows if r.train_flops and r.method != "base_on_base"]
    domains = sorted({r.domain for r in trained})
    colors = _method_colors()
    fig, axes = plt.subplots(1, max(1, len(domains)), figsize=(5 * max(1, len(domains)), 4.2), squeeze=False)
    for ax, domain in zip(axes[0], domains):
        for row in (r for r in trained if r.domain == domain):
            low, high = row.ci95_chain
            ax.errorbar(row.train_flops, row.tau_chain, yerr=[[row.tau_chain - low], [high - row.tau_chain]],
                        fmt="o", capsize=3, color=colors[row.method], label=METHOD_LABELS[row.method])
        ax.set_xscale("log")
        ax.set_xlabel("estimated training FLOPs")
        ax.set_ylabel("tau, chain")
        ax.set_title(domain)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=2)
    fig.tight_layout(rect=(0, 0.22, 1, 1))
    return _save(fig, path)


def plot_tau_vs_budget(points: Sequence[BudgetPoint], path: str | os.PathLike) -> Path:
    """Lines: tau against the data budget, shift-based vs random selection, one panel per domain."""
    plt = pyplot("The tau-vs-budget plot")

    domains = sorted({p.domain for p in points})
    fig, axes = plt.subplots(1, len(domains), figsize=(4.5 * len(domains), 3.6), squeeze=False)
    for ax, domain in zip(axes[0], domains):
        for selection, style in (("shift", "o-"), ("weighted", "^-"), ("cluster", "D-"), ("random", "s--")):
            pts = sorted((p for p in points if p.domain == domain and p.selection == selection), key=lambda p: p.budget)
            if pts:
                errors = [[p.tau - p.ci95[0] for p in pts], [p.ci95[1] - p.tau for p in pts]]
                ax.errorbar([p.samples for p in pts], [p.tau for p in pts], yerr=errors, fmt=style, capsize=3,
                            label=selection)
        ax.set_title(domain)
        ax.set_xlabel("training samples (budget)")
        ax.set_ylabel("tau")
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def save_results(
    rows: Sequence[MethodResult], points: Sequence[BudgetPoint], output_dir: str | os.PathLike,
    run: dict[str, Any] | None = None, selected_kinds: dict[str, dict[str, dict[str, float]]] | None = None,
) -> dict[str, Path]:
    """Write `results.json`, `results.md` and the two PNG plots into `output_dir`; returns their paths.

    `run` (optional) is stored as `results.json["run"]`: the configuration, machine, versions and wall time.
    `selected_kinds` (optional): per domain, the share of each prompt kind in the pool and in each strategy's
    selection."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": output_dir / "results.json",
        "markdown": output_dir / "results.md",
        "tau_by_method": output_dir / "tau_by_method.png",
        "tau_vs_budget": output_dir / "tau_vs_budget.png",
        "tau_vs_cost": output_dir / "tau_vs_cost.png",
    }
    payload = {
        "domains": results_by_domain(rows),
        "methods": [{**asdict(r), "tau": r.tau_chain} for r in rows],
        "budgets": [asdict(p) for p in points],
        "labels": {m: METHOD_LABELS[m] for m in METHOD_LABELS if any(r.method == m for r in rows)},
        "interval_method": INTERVAL_METHOD,
        "selected_kinds": selected_kinds or {},
        **({"run": run} if run is not None else {}),
    }
    atomic_write_text(paths["json"], json.dumps(payload, indent=2))
    atomic_write_text(
        paths["markdown"],
        "\n\n".join(part for part in (
            results_table(rows), INTERVAL_METHOD, kind_table(rows), selected_kinds_table(selected_kinds or {}),
            acceptance_table(rows), budget_table(points),
        ) if part) + "\n",
    )
    plot_tau_by_method(rows, paths["tau_by_method"])
    if any(r.train_flops and r.method != "base_on_base" for r in rows):
        plot_tau_vs_cost(rows, paths["tau_vs_cost"])
    else:
        del paths["tau_vs_cost"]
    if points:
        plot_tau_vs_budget(points, paths["tau_vs_budget"])
    else:
        del paths["tau_vs_budget"]
    return paths


def _save(fig, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path
