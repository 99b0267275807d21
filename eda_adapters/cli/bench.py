"""`eda bench`: plain greedy vs EAGLE chain hook vs EAGLE-2 tree vs vanilla assisted generation vs prompt lookup."""

from __future__ import annotations

from ._conventions import add_dtype, add_output_dir, add_tree_options, count, seed, tree_config

import argparse
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any
from ..errors import EdaInputError

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
    parser.add_argument("--draft", action="append", default=[],
                        help="EAGLE-1 or EAGLE-3 draft directory (save_pretrained). Repeatable: every draft gets a "
                             "chain and a tree row, and each reduced-vocabulary draft is compared with the first "
                             "full-vocabulary one (draft step cost ratio, tau drop).")
    parser.add_argument("--draft-label", action="append", default=[],
                        help="Row label of the n-th --draft (repeatable; default: its directory name).")
    parser.add_argument("--adapter", help="Optional EDA adapter directory (PeftModel.save_pretrained) on --draft "
                                          "(one --draft only).")
    parser.add_argument("--allow-fingerprint-mismatch", action="store_true",
                        help="Use --adapter even if it records another draft's fingerprint.")
    parser.add_argument("--assistant", action="append", default=[],
                        help="Small vanilla causal LM of the target's tokenizer for transformers' assisted generation "
                             "(repeatable; e.g. from benchmarks/fit_assistant.py).")
    parser.add_argument("--assistant-label", action="append", default=[],
                        help="Row label of the n-th --assistant (default: 'vanilla LM', or its directory name).")
    parser.add_argument("--assistant-confidence-threshold", action="append", default=[], type=_threshold,
                        help="Stop a vanilla assistant's chain below this confidence ('default': transformers' 0.4; "
                             "0 drafts all --num-draft-tokens every step, like the EAGLE chain). Once for every "
                             "--assistant, or once per --assistant, in order (the same path twice compares two).")
    parser.add_argument("--early-exit-layers", type=count, default=None,
                        help="Add transformers' early-exit assisted generation with the target's first N layers.")
    prompts = parser.add_mutually_exclusive_group()
    prompts.add_argument("--prompts", help="Text file, one prompt per line (with --target).")
    prompts.add_argument("--prompt-kinds",
                         help="Held-out chat prompts of these kinds, comma-separated from prose,code,math "
                              "(eda_adapters.research.bench_fixtures; with --target): results per "
                              "kind and over all.")
    parser.add_argument("--per-kind", type=count, default=11,
                        help="Prompts per kind with --prompt-kinds (default: 11).")
    parser.add_argument("--tokenizer", help="Tokenizer to encode the prompts (default: the one of --target).")
    parser.add_argument("--num-prompts", type=count, default=8, help="Prompts to decode (default: 8).")
    parser.add_argument("--max-new-tokens", type=count, default=64, help="Tokens generated per prompt (default: 64).")
    parser.add_argument("--num-draft-tokens", type=count, default=5, help="Chain length k for the chain methods.")
    add_tree_options(parser)
    tiny = parser.add_argument_group("tiny mode (no --target)")
    tiny.add_argument("--target-steps", type=count, default=300, help="Training steps of the byte-level target.")
    tiny.add_argument("--fit-steps", type=count, default=300, help="Fitting steps of the draft and of the assistant.")
    tiny.add_argument("--hidden-size", type=count, default=256, help="Hidden size of the tiny target.")
    tiny.add_argument("--num-layers", type=count, default=4, help="Layers of the tiny target.")
    parser.add_argument("--threads", type=count, default=None,
                        help="CPU threads for torch (default: 1 in tiny mode, where more threads do not pay off).")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add_dtype(parser, default="auto", help="auto: bfloat16 on CUDA, float32 on CPU; machine: as `eda regenerate`")
    parser.add_argument("--seed", type=seed, default=0)
    add_output_dir(parser, "Where bench.json/.md/.png go (default: bench_out).", required=False, default="bench_out")
    parser.add_argument("--json", help="Also write bench.json here (e.g. docs/benchmarks/real_cpu.json).")
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    return parser


def _resolve(args: argparse.Namespace):
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise EdaInputError("--device cuda but no CUDA device is available: use --device cpu.")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    dtype_name = args.dtype if args.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
    return device, getattr(torch, dtype_name)


def _labels(paths: list[str], labels: list[str], flag: str, single: str) -> list[str]:
    """One unique row label per path: the given ones, then `single` for a lone path, else directory names."""
    if len(labels) > len(paths):
        raise EdaInputError(f"{len(labels)} {flag}-label for {len(paths)} {flag}: give at most one label per {flag}.")
    defaults = [single] if len(paths) == 1 else [Path(p).name for p in paths]
    result = labels + defaults[len(labels):]
    if len(set(result)) < len(result):
        raise EdaInputError(f"Two {flag} rows would share a label ({result}): give each a distinct {flag}-label.")
    return result


def _prompt_kinds(args: argparse.Namespace) -> list[str]:
    from .plugins import bench_fixtures

    known = bench_fixtures("--prompt-kinds").PROMPT_KINDS
    kinds = [kind.strip() for kind in args.prompt_kinds.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in known]
    if unknown or not kinds:
        raise EdaInputError(f"--prompt-kinds {args.prompt_kinds!r}: choose from {','.join(known)}.")
    return list(dict.fromkeys(kinds))


def _read_prompt_groups(args: argparse.Namespace) -> dict[str, list[str]]:
    """The prompt texts, grouped by kind (`--prompt-kinds`) or as one group `all` (`--prompts`)."""
    from ..validation import read_text_file

    if args.prompt_kinds:
        from .plugins import bench_fixtures

        rows = bench_fixtures("--prompt-kinds").benchmark_chat_prompts(args.per_kind)
        return {kind: [row["prompt"] for row in rows if row["kind"] == kind] for kind in _prompt_kinds(args)}
    if not args.prompts:
        raise EdaInputError("--target needs --prompts (a text file with one prompt per line) or --prompt-kinds.")
    prompts_path = Path(args.prompts)
    if not prompts_path.is_file():
        raise FileNotFoundError(f"No prompt file at {prompts_path}.")
    text = read_text_file(prompts_path, "--prompts")
    lines = [line.strip() for line in text.splitlines() if line.strip()][: args.num_prompts]
    if not lines:
        raise EdaInputError(f"{prompts_path} has no non-empty line.")
    return {"all": lines}


def _threshold(text: str) -> float | None:
    """An assistant confidence threshold: a number, or 'default' (transformers' own)."""
    if text == "default":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'default'") from None


def _assistant_thresholds(values: list[float | None], labels: list[str]) -> dict[str, float | None]:
    """One --assistant-confidence-threshold for every assistant, or one per assistant."""
    if not values:
        return {}
    if len(values) == 1:
        return dict.fromkeys(labels, values[0])
    if len(values) != len(labels):
        raise EdaInputError(f"{len(values)} --assistant-confidence-threshold for {len(labels)} --assistant: give one "
                            "for all, or one per --assistant.")
    return dict(zip(labels, values))


def _load_real(args: argparse.Namespace, device, dtype):
    from ..models import load_draft
    from ..models.loading import load_target, load_target_tokenizer
    from ..data.prompts import encode_chat_prompts
    from ..validation import check_model_dir, load_adapter_checked

    if not args.draft:
        raise EdaInputError("--target needs --draft (the EAGLE draft directory to benchmark).")
    if args.adapter and len(args.draft) > 1:
        raise EdaInputError("--adapter applies to one draft: pass a single --draft with it.")
    draft_labels = _labels(args.draft, args.draft_label, "--draft", "")
    assistant_labels = _labels(args.assistant, args.assistant_label, "--assistant", "vanilla LM")
    _assistant_thresholds(args.assistant_confidence_threshold, assistant_labels)  # refused before anything loads
    for path in args.draft:
        if not (Path(path) / "config.json").is_file():
            raise FileNotFoundError(f"No draft at {path} (no config.json): pass a draft.save_pretrained directory.")
    groups = _read_prompt_groups(args)  # everything that can fail is checked before any model loads
    checks = [("--target", args.target, "target")] + [("--draft", p, "draft") for p in args.draft]
    for flag, path, what in checks + [("--assistant", p, "assistant") for p in args.assistant]:
        check_model_dir(path, flag, what)
    tokenizer = load_target_tokenizer(args.tokenizer or args.target)
    target = load_target(args.target, dtype=dtype, device=device)  # refuses a masked LM, naming it
    if args.early_exit_layers is not None and not 1 <= args.early_exit_layers < target.config.num_hidden_layers:
        raise EdaInputError(f"--early-exit-layers must be between 1 and {target.config.num_hidden_layers - 1} (the "
                            "target's layers minus one).")
    drafts = {label: load_draft(path, target_model=target, dtype=dtype).to(device).eval()
              for label, path in zip(draft_labels, args.draft)}
    if args.adapter:
        label = draft_labels[0]
        drafts[label] = load_adapter_checked(drafts[label], args.adapter, "--adapter",
                                             args.allow_fingerprint_mismatch).eval()
    for label, draft in drafts.items():
        adapted = args.adapter and label == draft_labels[0]
        mismatch = None if adapted else draft.check_target(target)
        if mismatch:
            print(f"warning: {label}: {mismatch}", file=sys.stderr)
    assistants = {label: load_target(path, dtype=dtype, device=device)
                  for label, path in zip(assistant_labels, args.assistant)}
    prompt_groups = {}
    for kind, lines in groups.items():
        prompt_groups[kind] = encode_chat_prompts(tokenizer, lines)
        for line, ids in zip(lines, prompt_groups[kind]):
            if ids.numel() == 0:
                raise EdaInputError(f"Prompt {line[:40]!r} encodes to no token with this tokenizer: check --tokenizer.")
    setup = f"{args.target} with draft {', '.join(args.draft)}" + (f" + adapter {args.adapter}" if args.adapter else "")
    return target, drafts, assistants, prompt_groups, setup


def _draft_vocab_sizes(drafts: dict[str, Any], vocab_size: int) -> dict[str, int | None]:
    """`draft_vocab_size` per draft label, `None` for a full-vocabulary head."""
    from ..generation.drafts import as_eagle_draft

    sizes = {}
    for label, draft in drafts.items():
        size = as_eagle_draft(draft).config.draft_vocab_size
        sizes[label] = size if size is not None and size < vocab_size else None
    return sizes


def _cpu_name() -> str:
    """The CPU model as the OS names it (`platform.processor()` is often empty on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _info(args: argparse.Namespace, setup: str, device, dtype, target, drafts, assistants, prompt_groups, tree
          ) -> dict[str, Any]:
    from importlib.metadata import version

    import peft
    import torch
    import transformers

    return {
        "setup": setup,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "machine": {"platform": platform.platform(), "processor": _cpu_name()},
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "eda_adapters": version("eda_adapters")},
        "target": args.target,
        "drafts": {label: {"path": path, "draft_vocab_size": size} for (label, size), path in
                   zip(_draft_vocab_sizes(drafts, target.config.vocab_size).items(), args.draft or ["tiny mode"])},
        "assistants": dict(zip(assistants, args.assistant or ["tiny mode"])),
        "prompts": sum(len(group) for group in prompt_groups.values()),
        "prompts_per_kind": {kind: len(group) for kind, group in prompt_groups.items()} if args.prompt_kinds else None,
        "max_new_tokens": args.max_new_tokens,
        "num_draft_tokens": args.num_draft_tokens,
        "tree": vars(tree),
    }


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench import benchmark, combine_results, draft_vocab_comparison, format_report, save_bench_results
    from ..validation import check_output_path

    check_output_path(args.output_dir, "--output-dir")  # not after the whole benchmark ran
    if args.json and Path(args.json).is_dir():
        raise EdaInputError(f"--json {args.json} is a directory: pass a file path such as {args.json}/bench.json.")

    if not args.target:
        for flag in ("draft", "adapter", "assistant", "prompt_kinds", "prompts", "early_exit_layers"):
            if getattr(args, flag):
                raise EdaInputError(f"--{flag.replace('_', '-')} needs --target (the tiny mode builds its own models).")
    tree = tree_config(args)
    device, dtype = _resolve(args)
    threads = args.threads or (None if args.target else 1)
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    if args.target:
        target, drafts, assistants, prompt_groups, setup = _load_real(args, device, dtype)
    else:
        from .plugins import bench_fixtures

        tiny = bench_fixtures("eda bench without --target (the tiny mode)").build_tiny_setup(
            num_prompts=args.num_prompts, target_steps=args.target_steps, fit_steps=args.fit_steps, seed=args.seed,
            hidden_size=args.hidden_size, num_layers=args.num_layers,
        )
        target, draft, assistant = (m.to(device=device, dtype=dtype) for m in (tiny.target, tiny.draft, tiny.assistant))
        drafts, assistants = {"": draft}, {"vanilla LM": assistant}
        prompt_groups, setup = {"all": tiny.prompts}, tiny.description

    thresholds = _assistant_thresholds(args.assistant_confidence_threshold, list(assistants))
    start = time.perf_counter()
    parts = {
        kind: benchmark(
            target, prompts, args.max_new_tokens, draft=drafts, assistants=assistants,
            num_draft_tokens=args.num_draft_tokens, tree=tree, early_exit_layers=args.early_exit_layers,
            show_progress=not args.no_progress, assistant_confidence_threshold=thresholds,
        )
        for kind, prompts in prompt_groups.items()
    }
    per_kind = parts if args.prompt_kinds else None
    results = combine_results(list(parts.values())) if per_kind else parts["all"]
    comparisons = draft_vocab_comparison(results, _draft_vocab_sizes(drafts, target.config.vocab_size))
    info = _info(args, setup, device, dtype, target, drafts, assistants, prompt_groups, tree)
    info["assistant_confidence_thresholds"] = {label: thresholds.get(label) for label in assistants}
    info["seconds"] = round(time.perf_counter() - start, 1)
    paths = save_bench_results(results, args.output_dir, info, per_kind=per_kind, comparisons=comparisons)
    if args.json:
        from ..atomic import atomic_path

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.json) as tmp:
            shutil.copyfile(paths[0], tmp)
        paths.append(Path(args.json))
    print(f"{setup}\ndevice {info['device']} ({info['dtype']}, {info['threads']} threads), {info['prompts']} prompts x "
          f"{args.max_new_tokens} new tokens, greedy\n")
    print(format_report(results, per_kind, comparisons))
    print(f"\nwrote {', '.join(str(p) for p in paths)}")
    return 0
