"""Where shift selection loses to random selection in the SmolLM2 math domain: tau per kind of held-out problem.

Reads a finished `recipes/eda-experiment/smollm2.yaml` run (default `runs/smollm2/experiment`) and measures the
shift- and random-selected EDA adapters at the main budget on the held-out math prompts split by kind (shopping vs
counting problems), with the same replayed chain/tree tau and 95% intervals as the experiment; it also prints which
kinds each selection picked from the pool. Prints a table and writes `selection_by_kind.json` into the run folder.

    python benchmarks/smollm2_selection_by_kind.py [--run runs/smollm2/experiment] [--budget 90] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch
from datasets import Dataset
from peft import PeftModel

from eda_adapters import EagleDraftModel, load_target
from eda_adapters.data import load_regenerated
from eda_adapters.data.selection import select_by_shift
from eda_adapters.research.experiment.evaluation import measure_tau
from eda_adapters.generation import TreeConfig
from eda_adapters.generation.replay import greedy_reference
from eda_adapters.training.acceptance import prompts_from_dataset


def kind(prompt: str) -> str:
    return "shopping" if " costs $" in prompt else ("counting" if " has " in prompt and "How many" in prompt else "general")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/smollm2/experiment")
    parser.add_argument("--budget", type=int, default=90, help="the main budget's sample count (folder suffix)")
    parser.add_argument("--seed", type=int, default=0, help="which training seed's adapters to measure")
    args = parser.parse_args()
    run = Path(args.run)
    config = json.loads((run / "results.json").read_text())["run"]["config"]
    domain = next(d for d in config["domains"] if d["name"] == "math")
    target = load_target(domain["target"], dtype="float32")

    held = load_regenerated(run / "math" / "eval-regenerated")
    prompts = prompts_from_dataset(held, len(held))
    kinds = [kind(row["prompt"]) for row in held]
    steps = config["eval_max_new_tokens"]
    refs = [greedy_reference(target, p, steps) for p in prompts]
    tree = TreeConfig(depth=config["tree_depth"], top_k=config["tree_top_k"], total_tokens=config["tree_total_tokens"])

    scored = Dataset.from_json(str(run / "math" / "scores.jsonl"))
    picked = {s: Counter(kind(r["prompt"]) for r in select_by_shift(scored, args.budget, strategy=s, seed=config["seed"]))
              for s in ("shift", "random")}
    result = {"pool": dict(Counter(kind(r["prompt"]) for r in scored)), "picked": picked, "tau": {}}
    for selection in ("shift", "random"):
        draft = EagleDraftModel.from_pretrained(run / "stage1" / "draft", target_model=target)
        model = PeftModel.from_pretrained(draft, run / "math" / f"eda-{selection}-{args.budget}-s{args.seed}").eval()
        for name in ("shopping", "counting"):
            index = [i for i, k in enumerate(kinds) if k == name]
            sub, sub_refs = [prompts[i] for i in index], [refs[i] for i in index]
            common = dict(max_new_tokens=steps, method="replay", references=sub_refs)
            chain = measure_tau(model, target, sub, num_draft_tokens=config["num_draft_tokens"], **common)
            tree_tau = measure_tau(model, target, sub, tree=tree, **common)
            result["tau"][f"{selection}/{name}"] = {
                "prompts": len(index), "tau_chain": chain.tau, "ci95_chain": chain.ci95, "tau_tree": tree_tau.tau,
                "ci95_tree": tree_tau.ci95,
            }
    print(f"pool kinds: {result['pool']}; picked at {args.budget}: {picked}")
    print("| selection | held-out kind | prompts | tau chain [95% CI] | tau tree [95% CI] |\n|---|---|---:|---:|---:|")
    for key, row in result["tau"].items():
        selection, name = key.split("/")
        print(f"| {selection} | {name} | {row['prompts']} | {row['tau_chain']:.2f} [{row['ci95_chain'][0]:.2f}, "
              f"{row['ci95_chain'][1]:.2f}] | {row['tau_tree']:.2f} [{row['ci95_tree'][0]:.2f}, {row['ci95_tree'][1]:.2f}] |")
    (run / "selection_by_kind.json").write_text(json.dumps(result, indent=2, default=dict))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
