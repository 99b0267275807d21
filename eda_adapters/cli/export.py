"""`eda export`: merge EDA adapters into their draft and write servable drafts (EAGLE-1 layout or our own format)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._conventions import CAST_DTYPES, add_output_dir

from ..export import (
    EXPORT_FORMATS,
    SERVING_ENGINES,
    ExportOptions,
    check_export_dir,
    export_adapters,
    export_draft,
)
from ..errors import EdaInputError

HELP = "Merge EDA adapters into their shared draft and write drafts vLLM/SGLang/speculators load (one per adapter)."


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help=HELP,
        description=HELP
        + " With several adapters (PEFT saves adapter NAME under ADAPTER/NAME/), OUTPUT_DIR gets one directory per adapter"
        " (OUTPUT_DIR/NAME/); with one, OUTPUT_DIR is the servable draft.",
    )
    parser.add_argument(
        "--draft", required=True, help="Directory of the shared draft (EagleDraftModel/Eagle3DraftModel.save_pretrained)."
    )
    parser.add_argument(
        "--adapter", help="Directory written by PeftModel.save_pretrained; omit to export the shared draft alone."
    )
    parser.add_argument(
        "--adapter-name", action="append", dest="adapter_names", metavar="NAME",
        help="Export only this adapter (repeatable; default: every adapter found under --adapter).",
    )
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="eagle", help="eagle: an engine's layout; hf: ours.")
    parser.add_argument(
        "--engine", choices=SERVING_ENGINES, default="vllm",
        help="Engine whose layout is written: vllm or sglang (EAGLE-1 and EAGLE-3 drafts), speculators (EAGLE-3; "
        "vLLM's speculators format). Default: vllm.",
    )
    add_output_dir(parser, "Output directory (must be missing or empty).", deprecated=("--out",))
    parser.add_argument("--overwrite", action="store_true", help="Replace a non-empty output directory.")
    parser.add_argument("--dtype", choices=CAST_DTYPES, help="Cast the written weights.")
    parser.add_argument(
        "--include-embeddings", action="store_true",
        help="Also write the target's embed_tokens.weight (needs --target).",
    )
    parser.add_argument(
        "--target",
        help="The target model (local path or name): its embedding with --include-embeddings; recorded as the "
        "verifier of a speculators export.",
    )
    parser.add_argument(
        "--fold-fc-bias", action="store_true",
        help="vLLM: fold a non-zero fc bias exactly into layer 0's attention biases instead of refusing.",
    )
    parser.add_argument(
        "--allow-fingerprint-mismatch", action="store_true",
        help="Export adapters that record another draft's fingerprint (only if the shared weights are equivalent).",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from ..models.draft_loading import load_draft
    from ..validation import check_disjoint, check_model_dir

    draft_dir = Path(args.draft)
    if not (draft_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"No draft at {draft_dir} (no config.json): pass the directory of draft.save_pretrained."
        )
    check_export_dir(args.output_dir, args.overwrite)  # fail before loading anything
    check_disjoint(
        args.output_dir, {"--draft": args.draft, "--adapter": args.adapter, "--target": args.target}, "--output-dir"
    )
    check_model_dir(draft_dir, "--draft", "draft")
    if args.target and not args.include_embeddings and args.engine != "speculators":
        raise EdaInputError(
            "--target is only used with --include-embeddings or --engine speculators: drop it, or add one of them."
        )
    target = None
    if args.include_embeddings and args.target:
        from ..models.loading import load_target

        target = load_target(args.target)
    draft = load_draft(draft_dir, target_model=target)
    options = ExportOptions(
        format=args.format,
        engine=args.engine,
        include_embeddings=args.include_embeddings,
        dtype=args.dtype,
        fold_fc_bias=args.fold_fc_bias,
        overwrite=args.overwrite,
        allow_fingerprint_mismatch=args.allow_fingerprint_mismatch,
        verifier=args.target if args.engine == "speculators" else None,
    )
    if args.adapter is None:
        if args.adapter_names:
            raise EdaInputError("--adapter-name needs --adapter DIR (the directory the adapters were saved in).")
        written = {"(shared draft)": export_draft(draft, args.output_dir, options=options)}
    else:
        written = export_adapters(
            draft, args.adapter, args.output_dir, adapter_names=args.adapter_names, options=options
        )
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0
