"""`eda extract-features`: cache the target's last hidden states of a tokenized dataset (sharded safetensors)."""

from __future__ import annotations

import argparse

from ._conventions import add_dtype, add_output_dir, add_target, count

HELP = "Extract and cache the target's last hidden states for every token of a dataset (input_ids, loss_mask)."


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "extract-features",
        help=HELP,
        description=HELP + " Writes OUTPUT_DIR/index.json + chunks/shard-*.safetensors; re-run to resume. Under "
        "`accelerate launch` every process extracts its share.",
    )
    add_target(parser, "The target the draft will serve")
    parser.add_argument("--dataset", required=True,
                        help="Tokenized dataset (e.g. an `eda regenerate` output directory or its data.jsonl).")
    add_output_dir(parser, "Feature directory (new, empty, or an unfinished same run).")
    parser.add_argument("--batch-size", type=count, default=8)
    add_dtype(parser, default="auto", help="dtype to load the target in; features are stored in the same dtype")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..data.feature_cache import extract_features
    from ..data.io import load_causal_lm
    from ..data.runs import process_state
    from ..validation import check_model_dir

    check_model_dir(args.target, "--target", "model")
    state = process_state()
    target = load_causal_lm(args.target, dtype=args.dtype, device=state.device)
    cached = extract_features(target, args.dataset, args.output_dir, batch_size=args.batch_size)
    if state.is_main_process:
        index = cached.index
        size = index["num_tokens"] * index["hidden_size"] * cached.dtype.itemsize
        print(f"cached {index['num_samples']} samples, {index['num_tokens']} tokens ({size / 2**20:.1f} MiB of "
              f"{index['dtype']} hidden states) -> {args.output_dir}")
    return 0
