"""How much of the committed SmolLM2 drafts' tau is generalisation: tau on prompts they were trained on, by source,
measured exactly as `recipes/smollm2/shared_draft.py` measures the held-out prompts (chain of 5, tree d5 k10 n60,
64 greedy tokens of the float32 target, 95% bootstrap intervals over prompts), side by side with the held-out
figures of `docs/benchmarks/shared_draft_smollm2.json`.

    python benchmarks/shared_draft_generalisation.py [--per-source 29] \
        [--json docs/benchmarks/shared_draft_smollm2_train_prompts.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import torch

from eda_adapters import load_target
from eda_adapters.atomic import atomic_write_json
from eda_adapters.compute_dtype import machine_key
from eda_adapters.data.io import load_tokenizer
from eda_adapters.data.prompts import render_prompt, resolve_chat_template
from eda_adapters.generation.replay import greedy_references
from eda_adapters.models.draft_loading import load_draft
from eda_adapters.generation.tau_report import tau_report
from eda_adapters.research.shared_draft.evaluation import CHAIN_TOKENS, TREE

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "recipes" / "smollm2" / "data"


def training_prompts(per_source: int) -> tuple[list[list[dict[str, str]]], list[str]]:
    """`per_source` training conversations of each source, evenly spaced through the source, and their sources."""
    with gzip.open(DATA / "prompts.jsonl.gz", "rt") as handle:
        rows = [json.loads(line) for line in handle]
    chosen, sources = [], []
    for source in dict.fromkeys(row["source"] for row in rows):
        of_source = [row["messages"] for row in rows if row["source"] == source]
        step = max(1, len(of_source) // per_source)
        picked = of_source[::step][:per_source]
        chosen += picked
        sources += [source] * len(picked)
    return chosen, sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-source", type=int, default=29)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--held-out", type=Path, default=REPO / "docs" / "benchmarks" / "shared_draft_smollm2.json")
    parser.add_argument("--json", type=Path, default=REPO / "docs" / "benchmarks" / "shared_draft_smollm2_train_prompts.json")
    args = parser.parse_args()
    started = time.perf_counter()
    target = load_target("smollm2-135m-instruct", dtype="float32")
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    template = resolve_chat_template(tokenizer, None)
    conversations, sources = training_prompts(args.per_source)
    prompts = [torch.tensor(render_prompt(tokenizer, messages, template)[1]) for messages in conversations]
    held_out = json.loads(args.held_out.read_text())["rows"]
    rows = {}
    for arch in ("eagle", "eagle3"):
        draft = load_draft(DATA / "drafts" / arch, target_model=target, dtype=target.dtype).eval()
        references = greedy_references(target, prompts, args.max_new_tokens,
                                       hidden_state_indices=tuple(draft.hidden_state_indices))
        with torch.no_grad():
            report = tau_report(draft, target, references, sources, tree=TREE, num_draft_tokens=CHAIN_TOKENS)
        rows[arch] = {"training_prompts": report, "held_out": {k: held_out[arch][k]["tau"] for k in ("chain", "tree")}}
        print(f"{arch}: training prompts chain {report['chain']['tau']} tree {report['tree']['tau']} | held-out "
              f"chain {rows[arch]['held_out']['chain']} tree {rows[arch]['held_out']['tree']}")
        for source, row in report["chain"]["by_kind"].items():
            print(f"  {source}: chain {row['tau']} {row['ci95']}, tree {report['tree']['by_kind'][source]['tau']}")
    atomic_write_json(args.json, {
        "rows": rows, "per_source": args.per_source, "max_new_tokens": args.max_new_tokens,
        "machine": machine_key(), "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - started, 1),
        "command": "python benchmarks/shared_draft_generalisation.py",
    })


if __name__ == "__main__":
    main()
