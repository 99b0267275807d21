"""`eda bench`: plain greedy vs EAGLE chain hook vs EAGLE-2 tree vs vanilla assisted generation vs prompt lookup."""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

HELP = "Benchmark speculative decoding methods side by side (wall time, tokens/s, speedup, tau)."


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bench",
        help=HELP,
        description=HELP
        + " Without --target it builds a tiny random Llama target with a briefly fitted EAGLE draft and an equally"
        " fitted 1-layer vanilla assistant (CPU-friendly; tiny models make the draft overhead large).",
    )
    parser.add_argument("--target", help="Target causal LM: HF folder or Hub id, a .gguf file, or smollm2-135m-instruct.")
    parser.add_argument("--draft", help="EAGLE draft directory (EagleDraftModel.save_pretrained).")
    parser.add_argument("--adapter", help="Optional EDA adapter directory (PeftModel.save_pretrained) on --draft.")
    parser.add_argument("--allow-fingerprint-mismatch", action="store_true",
                        help="Use --adapter even if it records another draft's fingerprint.")
    parser.add_argument("--assistant", help="Optional small vanilla causal LM for transformers' assisted generation.")
    parser.add_argument("--prompts", help="Text file, one prompt per line (needed with --target).")
    parser.add_argument("--tokenizer", help="Tokenizer to encode the prompts (default: the one of --target).")
    parser.add_argument("--num-prompts", type=int, default=8, help="Prompts to decode (default: 8).")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="Tokens generated per prompt (default: 64).")
    parser.add_argument("--num-draft-tokens", type=int, default=5, help="Chain length k for the chain methods.")
    parser.add_argument("--tree-depth", type=int, default=6, help="EAGLE-2 tree depth (default: 6).")
    parser.add_argument("--tree-top-k", type=int, default=2, help="Branching per expanded node (default: 2).")
    parser.add_argument("--tree-total-tokens", type=int, default=12,
                        help="Tree nodes verified per target forward (default: 12, CPU-sized; 60 on GPUs).")
    tiny = parser.add_argument_group("tiny mode (no --target)")
    tiny.add_argument("--target-steps", type=int, default=300, help="Training steps of the byte-level target.")
    tiny.add_argument("--fit-steps", type=int, default=300, help="Fitting steps of the draft and of the assistant.")
    tiny.add_argument("--hidden-size", type=int, default=256, help="Hidden size of the tiny target.")
    tiny.add_argument("--num-layers", type=int, default=4, help="Layers of the tiny target.")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: 1 in tiny mode, where more threads do not pay off).")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                        help="auto: bfloat16 on CUDA, float32 on CPU.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="bench_out", help="Where bench.json/.md/.png go (default: bench_out).")
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    return parser


def _resolve(args: argparse.Namespace):
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but no CUDA device is available: use --device cpu.")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    dtype_name = args.dtype if args.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
    return device, getattr(torch, dtype_name)


def _load_real(args: argparse.Namespace, device, dtype):
    from ..models import EagleDraftModel
    from ..models.loading import load_target, load_target_tokenizer
    from ..toys import encode_chat_prompts
    from ..validation import check_model_dir, load_adapter_checked, read_text_file

    if not args.draft:
        raise ValueError("--target needs --draft (the EAGLE draft directory to benchmark).")
    if not args.prompts:
        raise ValueError("--target needs --prompts (a text file with one prompt per line).")
    prompts_path = Path(args.prompts)
    if not prompts_path.is_file():
        raise FileNotFoundError(f"No prompt file at {prompts_path}.")
    if not (Path(args.draft) / "config.json").is_file():
        raise FileNotFoundError(f"No draft at {args.draft} (no config.json): pass a draft.save_pretrained directory.")
    text = read_text_file(prompts_path, "--prompts")  # everything that can fail is checked before any model loads
    for flag, path, what in (("--target", args.target, "target"), ("--draft", args.draft, "draft"),
                             ("--assistant", args.assistant, "assistant")):
        check_model_dir(path, flag, what)
    tokenizer = load_target_tokenizer(args.tokenizer or args.target)
    target = load_target(args.target, dtype=dtype, device=device)  # refuses a masked LM, naming it
    draft = EagleDraftModel.from_pretrained(args.draft, target_model=target, dtype=dtype).to(device).eval()
    if args.adapter:
        draft = load_adapter_checked(draft, args.adapter, "--adapter", args.allow_fingerprint_mismatch).eval()
    assistant = None
    if args.assistant:
        assistant = load_target(args.assistant, dtype=dtype, device=device)
    lines = [line.strip() for line in text.splitlines() if line.strip()][: args.num_prompts]
    if not lines:
        raise ValueError(f"{prompts_path} has no non-empty line.")
    prompts = encode_chat_prompts(tokenizer, lines)
    for line, ids in zip(lines, prompts):
        if ids.numel() == 0:
            raise ValueError(f"Prompt {line[:40]!r} encodes to no token with this tokenizer: check --tokenizer.")
    return target, draft, assistant, prompts, f"{args.target} with draft {args.draft}" + (
        f" + adapter {args.adapter}" if args.adapter else "")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench import benchmark, format_table, save_bench_results
    from ..generation.tree import TreeConfig
    from ..toys import build_tiny_setup
    from ..validation import check_output_path

    check_output_path(args.output_dir, "--output-dir")  # not after the whole benchmark ran

    for name in ("num_prompts", "max_new_tokens", "num_draft_tokens", "target_steps", "fit_steps", "hidden_size",
                 "num_layers"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1.")
    tree = TreeConfig(depth=args.tree_depth, top_k=args.tree_top_k, total_tokens=args.tree_total_tokens)
    device, dtype = _resolve(args)
    threads = args.threads or (None if args.target else 1)
    if threads is not None:
        if threads < 1:
            raise ValueError("--threads must be >= 1.")
        torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    if args.target:
        target, draft, assistant, prompts, setup = _load_real(args, device, dtype)
    else:
        tiny = build_tiny_setup(
            num_prompts=args.num_prompts, target_steps=args.target_steps, fit_steps=args.fit_steps, seed=args.seed,
            hidden_size=args.hidden_size, num_layers=args.num_layers,
        )
        target, draft, assistant = (m.to(device=device, dtype=dtype) for m in (tiny.target, tiny.draft, tiny.assistant))
        prompts, setup = tiny.prompts, tiny.description
    results = benchmark(
        target, prompts, args.max_new_tokens, draft=draft, assistant=assistant, num_draft_tokens=args.num_draft_tokens,
        tree=tree, show_progress=not args.no_progress,
    )
    info = {
        "setup": setup,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "num_draft_tokens": args.num_draft_tokens,
        "tree": vars(tree),
        "platform": platform.platform(),
        "torch": torch.__version__,
    }
    paths = save_bench_results(results, args.output_dir, info)
    print(f"{setup}\ndevice {info['device']} ({info['dtype']}, {info['threads']} threads), {len(prompts)} prompts x "
          f"{args.max_new_tokens} new tokens, greedy\n")
    print(format_table(results))
    print(f"\nwrote {', '.join(str(p) for p in paths)}")
    return 0
