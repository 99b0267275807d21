"""Which deviation of the authors' EDA design moves tau: ablations on a finished `eda demo` cache.

Each variant is the experiment's `eda_official` row (joint stage 1, fc trained, random private init, length-scaled
noise) with one ingredient switched off, or our default EDA row (`eda_shift`) with one ingredient switched on; every
variant is trained at the main budget on the shift-selected data with the same steps x batch, and measured like the
experiment's rows (chain and tree tau, 95% bootstrap intervals, the same held-out prompts). Each variant works in a
copy of the demo's experiment directory, so the shared drafts, regenerations and scores are reused and only its
adapter is trained.

    eda demo --quick --cache-dir /tmp/demo                      # first, the demo itself
    python benchmarks/eda_ablation.py --cache-dir /tmp/demo --quick --json ablation.json
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

from eda_adapters.research.demo import DemoSize, build_demo
from eda_adapters.research.experiment import ExperimentConfig, run_experiment

OFFICIAL = {
    "modules_to_save": ["fc"], "init_private_weights": "random", "feature_noise_type": "length_scaled",
    "feature_noise_std": 0.2,
}
NO_NOISE = {k: v for k, v in OFFICIAL.items() if not k.startswith("feature_noise")}
VARIANTS: dict[str, dict] = {
    "official without fc": {"methods": ["eda_official"], "official": {**OFFICIAL, "modules_to_save": None}},
    "official with zero init": {"methods": ["eda_official"], "official": {**OFFICIAL, "init_private_weights": "zero"}},
    "official without length-scaled noise": {"methods": ["eda_official"], "official": NO_NOISE},
    "official, stage 2 copies the stage-1 expert": {
        "methods": ["eda_official"], "official": {**OFFICIAL, "init_private_weights": "copy"},
    },
    "ours + fc": {"methods": ["eda_shift"], "eda": {"modules_to_save": ["fc"]}},
    "ours + random init": {"methods": ["eda_shift"], "eda": {"init_private_weights": "random"}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", required=True, help="The --cache-dir of a finished `eda demo` run.")
    parser.add_argument("--quick", action="store_true", help="The demo ran with --quick.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="Write the rows here as JSON.")
    args = parser.parse_args()

    cache = Path(args.cache_dir) / ("quick" if args.quick else "default")
    config = build_demo(cache, DemoSize.quick() if args.quick else DemoSize(), args.seed, log=lambda _: None)
    done = Path(config.output_dir)
    if not (done / "results.json").exists():
        raise SystemExit(f"{done} holds no finished experiment: run `eda demo` with this --cache-dir first.")
    rows = []
    for name, overrides in VARIANTS.items():
        out = cache / "ablation" / name.replace(" ", "-").replace(",", "")
        if not out.exists():
            shutil.copytree(done, out)  # shared drafts, regenerations, scores: reused (their keys still match)
        variant: ExperimentConfig = replace(
            config, output_dir=str(out), budget_curve=[], general_eval_prompts=None, **overrides
        )
        print(f"== {name}", flush=True)
        for row in run_experiment(variant, log=print).methods:
            rows.append({"variant": name, **asdict(row)})
    print("\n| domain | variant | tau chain [95% CI] | tau tree [95% CI] | trainable params |")
    print("|---|---|---:|---:|---:|")
    for row in sorted(rows, key=lambda r: (r["domain"], r["variant"])):
        chain, tree = row["ci95_chain"], row["ci95_tree"]
        print(
            f"| {row['domain']} | {row['variant']} | {row['tau_chain']:.2f} [{chain[0]:.2f}, {chain[1]:.2f}] | "
            f"{row['tau_tree']:.2f} [{tree[0]:.2f}, {tree[1]:.2f}] | {row['trainable_params']:,} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
