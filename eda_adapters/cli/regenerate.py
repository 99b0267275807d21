"""`eda regenerate`: the fine-tuned target answers the domain prompts (resumable; shards across `accelerate launch`)."""

from __future__ import annotations

import argparse

from ._conventions import add_dtype, add_output_dir, add_target, count, fraction, non_negative, seed

from ..errors import EdaInputError
from .self_prompt import add_self_prompt_arguments, self_prompt_kwargs

HELP = "Regenerate the responses of a prompt dataset with the (fine-tuned) target itself."


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "regenerate",
        help=HELP,
        description=HELP + " Writes OUTPUT_DIR/data.jsonl (prompt, response, input_ids, loss_mask, ...); re-run the "
        "same command to resume an interrupted run. Under `accelerate launch` every process answers its share.",
    )
    add_target(parser, "The fine-tuned target")
    parser.add_argument("--tokenizer", help="Tokenizer path or Hub id (default: the model's).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--prompts",
        help="Prompt dataset: .jsonl/.json/.parquet/.arrow file or dataset directory, with a prompt/messages/"
        "conversations column.",
    )
    source.add_argument(
        "--self-prompts", type=count, metavar="N",
        help="No prompt dataset: the target first writes N prompts itself (`eda self-prompt`, into "
        "OUTPUT_DIR-prompts/), then answers them.",
    )
    add_output_dir(parser, "Run directory (new, empty, or an unfinished same run).")
    parser.add_argument("--prompt-column", help="Column holding the prompts if not prompt/messages/conversations.")
    parser.add_argument("--max-new-tokens", type=count, default=256)
    parser.add_argument("--temperature", type=non_negative, default=0.0, help="0 = greedy (default).")
    parser.add_argument("--top-p", type=fraction, default=1.0)
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--batch-size", type=count, default=32,
                        help="Prompts per generate call (32: the fastest measured on CPU, docs/benchmarks.md).")
    template = parser.add_mutually_exclusive_group()
    template.add_argument("--chat-template", dest="chat_template", action="store_true", default=None,
                          help="Require the tokenizer's chat template (default: use it when there is one).")
    template.add_argument("--no-chat-template", dest="chat_template", action="store_false",
                          help="Feed the prompts as plain text.")
    parser.add_argument("--backend", choices=("transformers", "vllm"), default="transformers")
    add_dtype(parser, default="machine")
    parser.add_argument("--capture-features", action="store_true",
                        help="Keep the target's hidden states as it generates, in OUTPUT_DIR/features (train on that "
                             "directory: no second pass over the target).")
    parser.add_argument("--feature-layers", type=int, nargs="+", metavar="LAYER",
                        help="hidden_states entries to capture (default: the last, which EAGLE-1 drafts read).")
    add_self_prompt_arguments(parser, required=False)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..data.io import load_causal_lm
    from ..data.regenerate import regenerate
    from ..data.runs import process_state
    from ..validation import check_model_dir

    if args.feature_layers and not args.capture_features:
        raise EdaInputError("--feature-layers chooses what --capture-features keeps: add --capture-features")
    state = process_state()
    model = args.target
    if args.backend == "transformers":
        check_model_dir(args.target, "--target", "model")
        model = load_causal_lm(args.target, dtype=args.dtype, device=state.device)
    prompts = args.prompts
    if args.self_prompts is not None:
        if args.backend != "transformers":
            raise EdaInputError("--self-prompts samples with transformers: drop --backend vllm, or pass --prompts")
        from ..data import self_prompts

        prompts = f"{args.output_dir.rstrip('/')}-prompts"
        self_prompts(model, args.tokenizer or args.target, prompts, args.self_prompts, seed=args.seed,
                     batch_size=args.batch_size, answer_max_new_tokens=args.max_new_tokens, **self_prompt_kwargs(args))
        prompts = f"{prompts}/data.jsonl"
    try:
        dataset = regenerate(
            model,
            args.tokenizer or args.target,
            prompts,
            args.output_dir,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            batch_size=args.batch_size,
            prompt_column=args.prompt_column,
            use_chat_template=args.chat_template,
            backend=args.backend,
            capture_features=args.capture_features,
            feature_layers=args.feature_layers,
        )
    except ImportError as err:  # an optional backend that is not installed is bad input, not a crash
        raise EdaInputError(str(err)) from err
    if state.is_main_process:
        tokens = sum(dataset["num_response_tokens"])
        print(f"regenerated {len(dataset)} responses ({tokens} tokens) -> {args.output_dir}/data.jsonl")
        if args.capture_features:
            print(f"captured their features -> {args.output_dir}/features")
    return 0
