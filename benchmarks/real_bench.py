"""Speculative decoding on a real target, side by side in one run, split by prompt kind.

    python benchmarks/real_bench.py --draft DRAFT_DIR [--draft-label "reduced head"] [--draft OTHER --draft-label ...]
        [--target smollm2-135m-instruct] [--per-kind 11] [--max-new-tokens 128] [--json docs/benchmarks/real_cpu.json]

Held-out chat prompts of three kinds (`eda_adapters.demo.chat_prompts.benchmark_chat_prompts`: everyday prose
questions, code requests from HumanEval docstrings, generated arithmetic word problems; none of them is a prompt the
shared draft was trained on) are decoded greedily by plain `generate`, the EAGLE chain and EAGLE-2 tree with each
draft, prompt lookup and transformers' early-exit assistant (the target's first layers). Methods take turns on every
prompt. The JSON has, per method, an entry per prompt kind and one named `all`: tau, tokens/s, speedup, lossless.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict

import torch
import transformers

import eda_adapters
from eda_adapters import EagleDraftModel, TreeConfig, load_target, load_target_tokenizer
from eda_adapters.bench import benchmark, combine_results, format_table
from eda_adapters.demo.chat_prompts import PROMPT_KINDS, benchmark_chat_prompts
from eda_adapters.toys import encode_chat_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m-instruct")
    parser.add_argument("--draft", action="append", required=True, help="A draft directory (repeatable).")
    parser.add_argument("--draft-label", action="append", default=[], help="A label per --draft.")
    parser.add_argument("--per-kind", type=int, default=11)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--num-draft-tokens", type=int, default=4)
    parser.add_argument("--tree", default="5,4,16", help="depth,top_k,total_tokens of the EAGLE-2 tree")
    parser.add_argument("--early-exit-layers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    labels = args.draft_label + [f"draft {i}" for i in range(len(args.draft_label), len(args.draft))]

    target = load_target(args.target)
    tokenizer = load_target_tokenizer(args.target)
    drafts = {label: EagleDraftModel.from_pretrained(path, target_model=target).eval()
              for label, path in zip(labels, args.draft)}
    depth, top_k, total = (int(x) for x in args.tree.split(","))
    rows = benchmark_chat_prompts(args.per_kind)
    start = time.perf_counter()
    parts = {}
    for kind in PROMPT_KINDS:
        prompts = encode_chat_prompts(tokenizer, [row["prompt"] for row in rows if row["kind"] == kind])
        parts[kind] = benchmark(
            target, prompts, args.max_new_tokens, draft=drafts, num_draft_tokens=args.num_draft_tokens,
            tree=TreeConfig(depth, top_k, total), early_exit_layers=args.early_exit_layers,
        )
        print(f"\n## {kind}\n{format_table(parts[kind])}", flush=True)
    parts["all"] = combine_results([parts[kind] for kind in PROMPT_KINDS])
    print(f"\n## all\n{format_table(parts['all'])}")

    report = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads()},
        "dtype": str(target.dtype).removeprefix("torch."),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "eda_adapters": eda_adapters.__version__},
        "target": args.target,
        "drafts": {label: {"path": path, "draft_vocab_size": d.config.draft_vocab_size}
                   for (label, d), path in zip(drafts.items(), args.draft)},
        "prompts_per_kind": args.per_kind, "max_new_tokens": args.max_new_tokens,
        "num_draft_tokens": args.num_draft_tokens, "tree": {"depth": depth, "top_k": top_k, "total_tokens": total},
        "seconds": round(time.perf_counter() - start, 1),
        "methods": {
            result.method: {kind: {key: value for key, value in asdict(parts[kind][i]).items() if key != "method"}
                            | {"lossless": parts[kind][i].matches_plain} for kind in (*PROMPT_KINDS, "all")}
            for i, result in enumerate(parts["all"])
        },
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")


if __name__ == "__main__":
    main()
