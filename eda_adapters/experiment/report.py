"""Results of an EDA experiment: the table (markdown) and the two plots (PNG)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import atomic_path, atomic_write_text

#: Display order and labels of the compared methods.
METHOD_LABELS: dict[str, str] = {
    "base_on_base": "base draft, base target",
    "direct_transfer": "base draft, fine-tuned target (direct transfer)",
    "eda_shift": "EDA, regenerated + shift-selected",
    "eda_random": "EDA, regenerated + random selection",
    "eda_original": "EDA, original (not regenerated) texts",
    "full_retrain": "full draft retraining, regenerated data",
}


@dataclass
class MethodResult:
    """One row of the results table: one method on one domain."""

    domain: str
    method: str
    tau: float
    trainable_params: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    step_seconds: float = 0.0


@dataclass
class BudgetPoint:
    """One point of the tau-vs-budget curve."""

    domain: str
    selection: str
    budget: float
    samples: int
    tau: float


def results_table(rows: Sequence[MethodResult]) -> str:
    """A markdown table, domains as row groups, methods in `METHOD_LABELS` order."""
    lines = [
        "| domain | method | tau | trainable params | samples | train time (s) | s/step |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    order = {m: i for i, m in enumerate(METHOD_LABELS)}
    for row in sorted(rows, key=lambda r: (r.domain, order.get(r.method, len(order)))):
        lines.append(
            f"| {row.domain} | {METHOD_LABELS.get(row.method, row.method)} | {row.tau:.3f} | "
            f"{row.trainable_params:,} | {row.samples:,} | {row.train_seconds:.1f} | {row.step_seconds:.3f} |"
        )
    return "\n".join(lines)


def budget_table(points: Sequence[BudgetPoint]) -> str:
    lines = ["| domain | selection | budget | samples | tau |", "|---|---|---:|---:|---:|"]
    for p in sorted(points, key=lambda p: (p.domain, p.selection, p.budget)):
        lines.append(f"| {p.domain} | {p.selection} | {p.budget:g} | {p.samples:,} | {p.tau:.3f} |")
    return "\n".join(lines)


def plot_tau_by_method(rows: Sequence[MethodResult], path: str | os.PathLike) -> Path:
    """Grouped bars: tau per method, one group per domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = sorted({r.domain for r in rows})
    methods = [m for m in METHOD_LABELS if any(r.method == m for r in rows)]
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(6, 2.5 * len(domains) + 2), 4))
    for i, method in enumerate(methods):
        values = [next((r.tau for r in rows if r.domain == d and r.method == method), 0.0) for d in domains]
        xs = [d + (i - (len(methods) - 1) / 2) * width for d in range(len(domains))]
        ax.bar(xs, values, width, label=METHOD_LABELS[method])
    ax.set_xticks(range(len(domains)), domains)
    ax.set_ylabel("tau (tokens per target forward)")
    ax.set_title("Acceptance length per method")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def plot_tau_vs_budget(points: Sequence[BudgetPoint], path: str | os.PathLike) -> Path:
    """Lines: tau against the data budget, shift-based vs random selection, one panel per domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = sorted({p.domain for p in points})
    fig, axes = plt.subplots(1, len(domains), figsize=(4.5 * len(domains), 3.6), squeeze=False)
    for ax, domain in zip(axes[0], domains):
        for selection, style in (("shift", "o-"), ("random", "s--")):
            pts = sorted((p for p in points if p.domain == domain and p.selection == selection), key=lambda p: p.budget)
            if pts:
                ax.plot([p.samples for p in pts], [p.tau for p in pts], style, label=selection)
        ax.set_title(domain)
        ax.set_xlabel("training samples (budget)")
        ax.set_ylabel("tau")
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def save_results(
    rows: Sequence[MethodResult], points: Sequence[BudgetPoint], output_dir: str | os.PathLike
) -> dict[str, Path]:
    """Write `results.json`, `results.md` and the two PNG plots into `output_dir`; returns their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": output_dir / "results.json",
        "markdown": output_dir / "results.md",
        "tau_by_method": output_dir / "tau_by_method.png",
        "tau_vs_budget": output_dir / "tau_vs_budget.png",
    }
    atomic_write_text(
        paths["json"],
        json.dumps({"methods": [asdict(r) for r in rows], "budgets": [asdict(p) for p in points]}, indent=2),
    )
    atomic_write_text(paths["markdown"], results_table(rows) + "\n\n" + budget_table(points) + "\n")
    plot_tau_by_method(rows, paths["tau_by_method"])
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
