"""`eda diagnose`: before any training, how much the shared draft loses on a fine-tuned target, and where."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import EdaInputError
from ._conventions import add_base_target, add_dtype, add_target, add_tree_options, count, tree_config

HELP = "Measure, before training, how much the shared draft loses on a fine-tuned target and whether to adapt it."


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "diagnose",
        help=HELP,
        description=HELP + " Replays greedy chain and tree decoding of --draft on --base-target and on --target "
        "(tau, per prompt kind when the prompts have a `kind`), scores the representation shift between the two "
        "targets, and ends with one sentence: whether an adapter is worth training and which kinds lose most.",
    )
    add_base_target(parser, "The base target the draft was trained for")
    add_target(parser, "The fine-tuned target")
    parser.add_argument("--draft", required=True, help="The shared EAGLE-1 or EAGLE-3 draft (save_pretrained folder).")
    parser.add_argument("--prompts", required=True,
                        help="A .jsonl of prompts: a `prompt` (text or chat messages) per line, optional `kind`.")
    parser.add_argument("--json", help="Also write the full diagnosis here (JSON).")
    parser.add_argument("--plot", help="Save the plot here (PNG; default: beside --json, same name).")
    parser.add_argument("--max-new-tokens", type=count, default=64, help="Greedy answer length (default: 64).")
    parser.add_argument("--num-prompts", type=count, default=None, help="Use the first N prompts (default: all).")
    parser.add_argument("--num-draft-tokens", type=count, default=5, help="Chain length k (default: 5).")
    add_tree_options(parser)
    parser.add_argument("--batch-size", type=count, default=8, help="Prompts decoded together (default: 8).")
    add_dtype(parser, default="auto")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..atomic import atomic_write_json
    from ..data.io import load_causal_lm, load_rows, load_tokenizer
    from ..data.runs import process_state
    from ..diagnose import check_prompts, diagnose
    from ..models import load_draft
    from ..validation import check_model_dir

    if not args.base_target:
        raise EdaInputError("eda diagnose needs --base-target (the base target the draft was trained for)")
    tree = tree_config(args)
    prompts = load_rows(args.prompts)  # an empty or unreadable prompt file fails before any model loads
    if args.num_prompts is not None:
        prompts = prompts.select(range(min(args.num_prompts, len(prompts))))
    check_prompts(prompts, args.prompts)
    check_model_dir(args.base_target, "--base-target", "model")
    check_model_dir(args.target, "--target", "model")
    check_model_dir(args.draft, "--draft", "draft", required=True)
    device = process_state().device
    base_tokenizer, target_tokenizer = load_tokenizer(args.base_target), load_tokenizer(args.target)
    base = load_causal_lm(args.base_target, dtype=args.dtype, device=device)
    target = load_causal_lm(args.target, dtype=args.dtype, device=device)
    draft = load_draft(args.draft, target_model=base, dtype=base.dtype).to(device).eval()
    plot = args.plot or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    result = diagnose(base, target, draft, prompts, base_tokenizer, target_tokenizer=target_tokenizer,
                      max_new_tokens=args.max_new_tokens, num_draft_tokens=args.num_draft_tokens, tree=tree,
                      batch_size=args.batch_size, plot=plot)
    rows = {"all": result.overall, **result.by_kind}
    print("| prompts | n | chain tau base | chain tau fine-tuned | drop [95% CI] | tree base | tree fine-tuned | "
          "mean shift |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, row in rows.items():
        print(f"| {kind} | {row.num_prompts} | {row.tau_base:.2f} | {row.tau_direct:.2f} | {row.drop_percent:.0f}% "
              f"[{row.drop_ci95[0]:.0f}, {row.drop_ci95[1]:.0f}] | {row.tree_tau_base:.2f} | "
              f"{row.tree_tau_direct:.2f} | {row.mean_shift:.4f} |")
    if args.json:
        record = result.to_dict()
        record["command"] = {"base_target": args.base_target, "target": args.target, "draft": args.draft,
                             "prompts": args.prompts, "dtype": str(base.dtype).replace("torch.", "")}
        atomic_write_json(Path(args.json), record)
        print(f"wrote {args.json}" + (f" and {plot}" if plot else ""))
    elif plot:
        print(f"wrote {plot}")
    print(result.verdict)
    return 0
