"""`eda select`: keep a budget of samples chosen by representation shift (a strategy), or a random baseline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import EdaInputError
from ._conventions import add_base_target, add_dtype, add_flag, add_output_dir, add_target, count

HELP = "Select training samples by representation shift between the base and the fine-tuned target."
STRATEGY_HELP = (
    "weighted (default): drawn with weights score**(1/--temperature); topk: the highest shift scores; cluster: the "
    "highest scores within --num-clusters clusters of the pool, each cluster's share in proportion to its total "
    "shift; random: a uniform sample (the baseline)."
)


def _budget(text: str) -> int | float:
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"budget must be a count (e.g. 500) or a fraction (e.g. 0.3), got {text!r}")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "select",
        help=HELP,
        description=HELP + " Writes OUTPUT_DIR/data.jsonl (the selection), OUTPUT_DIR/scores.jsonl (every sample with "
        "its shift_score: pass it back as --dataset to re-select without the models) and OUTPUT_DIR/selection.json.",
    )
    parser.add_argument("--dataset", required=True,
                        help="Tokenized dataset (input_ids, loss_mask): an `eda regenerate` output or a scores.jsonl.")
    parser.add_argument("--budget", required=True, type=_budget, help="Samples to keep: a count or a fraction.")
    add_flag(parser, "--strategy", deprecated=("--method",), default=None, help=STRATEGY_HELP)
    parser.add_argument("--temperature", type=float, default=1.0, help="Of --strategy weighted (> 0; default 1).")
    parser.add_argument("--num-clusters", type=int, default=8, help="Of --strategy cluster (>= 1; default 8).")
    parser.add_argument("--metric", choices=("cosine", "l2"), default=None,
                        help="Per-token shift: 1 - cosine similarity (default) or L2 distance of last hidden states. "
                        "Scores the dataset holds that another metric made are scored again (or refused without the "
                        "targets).")
    add_target(parser, "The fine-tuned target (needed unless the dataset has scores)", required=False,
               deprecated=("--finetuned",))
    add_base_target(parser, "The base target it was fine-tuned from (needed unless the dataset has scores)")
    add_output_dir(parser, "Directory for the selection (must be new or empty).")
    parser.add_argument("--plot", action="store_true", help="Also save OUTPUT_DIR/shift_hist.png.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the weighted, cluster and random strategies.")
    parser.add_argument("--batch-size", type=count, default=8)
    parser.add_argument("--recompute", action="store_true", help="Score again even if the dataset has scores.")
    add_dtype(parser, default="auto")
    return parser


def _tokenizer_or_none(path: str):
    """The tokenizer saved with a target, if any (the token check then compares vocabularies too)."""
    from ..data.io import load_tokenizer

    try:
        return load_tokenizer(path)
    except (FileNotFoundError, ValueError):
        return None


def check_not_a_selection(dataset: str, strategy: str) -> None:
    """Refuse to select with `strategy` from a selection another strategy made (`eda select`'s data.jsonl or its
    folder): it would stack two strategies. Its scores.jsonl, the whole scored pool, is the input to use."""
    from ..data.selection_strategies import canonical_strategy

    path = Path(dataset)
    folder = path if path.is_dir() else path.parent
    record = folder / "selection.json"
    if not record.is_file() or (path.is_file() and path.name != "data.jsonl"):
        return
    info = json.loads(record.read_text())
    recorded = info.get("strategy")  # selections made before strategies had names record a `method`
    previous = canonical_strategy(recorded["name"] if isinstance(recorded, dict) else info.get("method", "topk"))
    if previous != strategy:
        raise EdaInputError(
            f"{dataset} is a selection made with strategy {previous!r}; to select with {strategy!r}, pass the scored "
            f"pool {folder / 'scores.jsonl'} as --dataset"
        )


def run(args: argparse.Namespace) -> int:
    from ..data.io import atomic_write_json, load_causal_lm, load_tokenized_rows, save_dataset_jsonl
    from ..validation import check_model_dir
    from ..data.runs import process_state
    from ..data.selection import SCORE_COLUMN, add_shift_scores, missing_columns, resolve_budget, select_by_shift
    from ..data.selection_strategies import DEFAULT_STRATEGY, SelectionStrategy
    from ..data.scores_record import read_scores_record, scores_to_recompute
    from ..data.signature import target_signature
    from ..run_directory import RunDirectory

    # bad options fail before anything is read
    strategy = SelectionStrategy(args.strategy or DEFAULT_STRATEGY, temperature=args.temperature,
                                 num_clusters=args.num_clusters, seed=args.seed)
    check_not_a_selection(args.dataset, strategy.name)
    if bool(args.base_target) != bool(args.target):
        raise EdaInputError("--base-target and --target go together: pass both (to score), or neither")
    state = process_state()  # under `accelerate launch` every process scores a share; the main one writes
    out = RunDirectory(args.output_dir, "selection").require_empty()
    state.wait_for_everyone()
    rows = load_tokenized_rows(args.dataset, required=())  # ids, masks, and any scores it carries
    resolve_budget(args.budget, len(rows))  # fail before any model is loaded
    info: dict = {"strategy": strategy.to_dict(), "budget": args.budget, "num_samples": len(rows)}
    missing = missing_columns(strategy, rows.column_names)
    base = finetuned = None
    signatures: dict = {"base": None, "finetuned": None}
    if args.target:  # both are given (checked above): they score the dataset, or vouch for its scores
        check_model_dir(args.base_target, "--base-target", "model")
        check_model_dir(args.target, "--target", "model")
        base, finetuned = (load_causal_lm(path, dtype=args.dtype, device=state.device)
                           for path in (args.base_target, args.target))
        signatures = {"base": target_signature(base), "finetuned": target_signature(finetuned)}
    record = read_scores_record(args.dataset) if SCORE_COLUMN in rows.column_names else None
    reasons = []
    if SCORE_COLUMN in rows.column_names and not args.recompute:  # reusing scores: were they made as asked?
        reasons = scores_to_recompute(
            args.dataset, record, metric=args.metric, **signatures, can_score=base is not None,
            fix="pass --base-target and --target to score again, or drop --metric",
        )
    if args.recompute or missing or reasons or (args.target and SCORE_COLUMN not in rows.column_names):
        if not args.target:
            raise EdaInputError(
                f"{strategy.name} selection needs the dataset's {' and '.join(repr(c) for c in missing)} column(s) "
                f"(columns found: {rows.column_names}): pass --base-target and --target to score it, or --strategy "
                "random"
            )
        if reasons and state.is_main_process:
            print(f"eda select: scoring {args.dataset} again: {'; '.join(reasons)}")
        metric = args.metric or "cosine"
        rows = add_shift_scores(
            rows, base, finetuned, metric=metric, batch_size=args.batch_size,
            base_tokenizer=_tokenizer_or_none(args.base_target), finetuned_tokenizer=_tokenizer_or_none(args.target),
        )
        info.update(metric=metric, **signatures)
    elif record is not None:
        info.update(record.provenance())  # the scores copied into scores.jsonl keep saying what made them
    if not state.is_main_process:
        return 0
    if args.plot and SCORE_COLUMN not in rows.column_names:
        raise EdaInputError("--plot needs shift scores: pass --base-target and --target")
    out.mkdir(parents=True, exist_ok=True)
    selected = select_by_shift(rows, args.budget, strategy=strategy, plot=out / "shift_hist.png" if args.plot else None)
    if SCORE_COLUMN in rows.column_names:
        save_dataset_jsonl(rows, out / "scores.jsonl")
        chosen = selected[SCORE_COLUMN]
        info.update(min_selected_score=min(chosen), mean_selected_score=sum(chosen) / len(chosen),
                    mean_score=sum(rows[SCORE_COLUMN]) / len(rows))
    save_dataset_jsonl(selected, out / "data.jsonl")
    info["num_selected"] = len(selected)
    atomic_write_json(out / "selection.json", info)
    print(f"selected {len(selected)} of {len(rows)} samples ({strategy.name}) -> {out}/data.jsonl")
    return 0
