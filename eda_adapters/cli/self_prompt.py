"""`eda self-prompt`: the chat target writes its own user prompts (resumable; shards across `accelerate launch`)."""

from __future__ import annotations

import argparse

from ._conventions import add_dtype, add_output_dir, add_target, count, fraction, non_negative, seed

HELP = "Have the chat target write its own user prompts: data without a prompt dataset."


def add_self_prompt_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    """The self-prompting options, shared with `eda regenerate --self-prompts N`."""
    group = parser.add_argument_group("self-prompting")
    if required:
        group.add_argument("--num-prompts", type=count, required=True, help="Distinct prompts (conversations) to keep.")
    group.add_argument("--turns", type=count, default=1,
                       help="User turns per conversation; the target answers greedily between them (default 1).")
    group.add_argument("--prompt-temperature", type=non_negative, default=1.0,
                       help="Sampling temperature of the user turns.")
    group.add_argument("--prompt-top-p", type=fraction, default=0.95)
    group.add_argument("--max-prompt-tokens", type=count, default=128,
                       help="Cap per user turn; turns the target has not closed by then are dropped.")
    group.add_argument("--min-words", type=count, default=4, help="Shortest user turn kept, in words.")
    group.add_argument("--max-words", type=count, default=200, help="Longest user turn kept, in words.")
    group.add_argument("--near-duplicate-threshold", type=fraction, default=0.7,
                       help="Word-3-gram Jaccard similarity from which a prompt repeats a kept one.")
    group.add_argument("--max-candidates", type=count,
                       help="Give up after sampling this many candidates (default 20 x the prompts wanted).")


def self_prompt_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of `eda_adapters.data.self_prompts` that the options above set."""
    from ..data import PromptFilter

    return dict(
        num_turns=args.turns,
        temperature=args.prompt_temperature,
        top_p=args.prompt_top_p,
        max_prompt_tokens=args.max_prompt_tokens,
        prompt_filter=PromptFilter(min_words=args.min_words, max_words=args.max_words),
        near_duplicate_threshold=args.near_duplicate_threshold,
        max_candidates=args.max_candidates,
    )


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "self-prompt",
        help=HELP,
        description=HELP + " The target is sampled from its chat template's opening of a user turn; turns that are "
        "cut off, too short, repetitive or (near) duplicates are dropped. Writes OUTPUT_DIR/data.jsonl (a `messages` "
        "column, for `eda regenerate --prompts`) and stats.json; re-run the same command to resume, or with a larger "
        "--num-prompts to extend the run.",
    )
    add_target(parser, "The chat target")
    parser.add_argument("--tokenizer", help="Tokenizer path or Hub id, with a chat template (default: the model's).")
    add_output_dir(parser, "Run directory (new, empty, or the same run to resume).")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--batch-size", type=count, default=16)
    parser.add_argument("--answer-max-new-tokens", type=count, default=256,
                        help="Length of the target's answers between the turns of a multi-turn conversation.")
    add_dtype(parser, default="machine")
    add_self_prompt_arguments(parser, required=True)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..data import self_prompts
    from ..data.io import load_causal_lm
    from ..data.runs import process_state
    from ..validation import check_model_dir

    state = process_state()
    check_model_dir(args.target, "--target", "model")
    model = load_causal_lm(args.target, dtype=args.dtype, device=state.device)
    dataset = self_prompts(
        model, args.tokenizer or args.target, args.output_dir, args.num_prompts, seed=args.seed,
        batch_size=args.batch_size, answer_max_new_tokens=args.answer_max_new_tokens, **self_prompt_kwargs(args),
    )
    if state.is_main_process:
        print(f"wrote {len(dataset)} self-written prompts -> {args.output_dir}/data.jsonl")
    return 0
