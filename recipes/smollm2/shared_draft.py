"""The shared draft for SmolLM2-135M-Instruct: data, EAGLE-1 and EAGLE-3 drafts, their comparison, the committed draft.

    python recipes/smollm2/shared_draft.py --max-minutes 90     # one chunk; run it again to go on

Every invocation does at most `--max-minutes` of work, stops between units of work (a part of answers, a training
checkpoint), logs what it did and what it cost to recipes/smollm2/data/chunks.jsonl, and writes its small durable
outputs into the repository (commit them). See recipes/smollm2/README.md, "The shared draft".
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from eda_adapters import load_target
from eda_adapters.cli import main as eda_main
from eda_adapters.compute_dtype import choose_dtype
from eda_adapters.data.io import load_tokenizer
from eda_adapters.research.recipe_runner import RecipeStopped, run_recipe_work
from eda_adapters.research.shared_draft.assistant import train_assistant
from eda_adapters.research.shared_draft.answers import AnswerSettings, answer_parts, build_prompts
from eda_adapters.research.shared_draft.chunks import ChunkBudget, ChunkLog
from eda_adapters.research.shared_draft.compare import card_facts, compare_drafts, export_draft, write_results
from eda_adapters.research.shared_draft.prompt_mix import BENCH_PER_KIND, HELD_OUT_PER_KIND, PromptMix
from eda_adapters.research.shared_draft.training import ARCHITECTURES, TrainSettings, draft_is_finished, feature_cache, \
    train_draft, training_plan

RECIPE = Path(__file__).resolve().parent
REPO = RECIPE.parents[1]
STAGES = ("prompts", "answers", "train", "compare", "bench")
BENCH_JSON = REPO / "docs" / "benchmarks" / "real_cpu.json"
BENCH_MINUTES = 45


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m-instruct", help="the target (packaged name or folder)")
    parser.add_argument("--max-minutes", type=float, default=90.0, help="work budget of this invocation")
    parser.add_argument("--data-dir", type=Path, default=RECIPE / "data", help="committed data (token ids, logs)")
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "eda_adapters" / "smollm2-shared",
                        help="cache of unfinished work")
    sizes = parser.add_argument_group("sizes (the defaults are the ones chosen for SmolLM2 on 2 cores)")
    sizes.add_argument("--self-prompts", type=int, default=PromptMix.self_written,
                       help="user turns the target writes itself")
    sizes.add_argument("--docs-prompts", type=int, help="documentation questions (default: all 737)")
    sizes.add_argument("--code-prompts", type=int, help="standard-library implement requests (default: all 358)")
    sizes.add_argument("--math-prompts", type=int, default=PromptMix.math, help="generated word problems")
    sizes.add_argument("--max-new-tokens", type=int, default=AnswerSettings.max_new_tokens, help="answer length cap")
    sizes.add_argument("--part-size", type=int, default=AnswerSettings.part_size, help="prompts per answer part")
    sizes.add_argument("--draft-vocab-size", type=int, default=TrainSettings.draft_vocab_size)
    sizes.add_argument("--train-minutes", type=float, default=TrainSettings.train_minutes,
                       help="training time of each draft and of the assistant")
    parser.add_argument("--draft-dir", type=Path, default=RECIPE / "shared-draft", help="the committed draft")
    parser.add_argument("--results", type=Path, default=REPO / "docs" / "benchmarks" / "shared_draft_smollm2.json",
                        help="the comparison's JSON (its plot goes beside it)")
    parser.add_argument("--held-out-per-kind", type=int, default=HELD_OUT_PER_KIND - BENCH_PER_KIND,
                        help="held-out prompts of each kind for tau (after the first 11, which eda bench times)")
    parser.add_argument("--eval-max-new-tokens", type=int, default=64)
    parser.add_argument("--until", choices=STAGES, default=STAGES[-1], help="the last stage to run")
    parser.add_argument("--report", action="store_true", help="print the time each chunk took (a table), and stop")
    parser.add_argument("--verbose", action="store_true", help="print everything transformers and datasets print")
    return parser.parse_args(argv)


def run_stages(args: argparse.Namespace, stages: tuple[str, ...], budget: ChunkBudget, log: ChunkLog) -> bool:
    """Every stage up to `stages[-1]` that is not done yet; `False` when the budget stopped one."""
    target = load_target(args.target, dtype=choose_dtype())
    tokenizer = load_tokenizer(args.target)
    mix = PromptMix(docs=args.docs_prompts, stdlib_code=args.code_prompts, math=args.math_prompts,
                    self_written=args.self_prompts)
    answers = AnswerSettings(max_new_tokens=args.max_new_tokens, part_size=args.part_size)
    if not build_prompts(target, tokenizer, args.data_dir, args.work_dir, mix, answers, budget, log):
        return False
    if "answers" in stages and not answer_parts(target, tokenizer, args.data_dir, args.work_dir, answers, budget, log):
        return False
    if "train" not in stages:
        return True
    settings = TrainSettings(train_minutes=args.train_minutes, draft_vocab_size=args.draft_vocab_size)
    # the finished drafts are committed: once both are, the features (in the cache only) are not needed again
    pending = [arch for arch in ARCHITECTURES if not draft_is_finished(args.data_dir, arch)]
    cache = feature_cache(target, args.data_dir, args.work_dir, settings, budget, log) if pending else None
    if pending and cache is None:
        return False
    # the drafts train on the features' target (bfloat16 where this machine runs it fast: mixed precision, float32
    # weights), and are compared against the float32 target, as `eda bench` serves it on a CPU
    plan = training_plan(target, cache, args.data_dir, args.work_dir, settings, log)
    drafts = {arch: train_draft(target, arch, cache, plan, args.data_dir, args.work_dir, settings, budget, log)
              for arch in ARCHITECTURES}
    if any(path is None for path in drafts.values()):
        return False
    if "compare" not in stages:
        return True
    served = load_target(args.target, dtype="float32")
    if not args.results.exists():
        compare_and_export(args, served, tokenizer, drafts, log)
    if "bench" not in stages or log.done("bench"):
        return True
    # the assistant is the bench's baseline only; it lives in the cache, so it is trained in the chunk that benches
    if train_assistant(served, args.data_dir, args.work_dir, settings, budget, log) is None:
        return False
    return run_bench(args, budget, log)


def compare_and_export(args: argparse.Namespace, served, tokenizer, drafts: dict[str, Path], log: ChunkLog) -> None:
    """Both drafts on the held-out prompts; the better one exported; the results and the bench command recorded."""
    results = compare_drafts(served, tokenizer, drafts, args.held_out_per_kind, args.eval_max_new_tokens, log)
    results["command"] = "python recipes/smollm2/shared_draft.py"
    export_draft(drafts[results["chosen"]], args.draft_dir, card_facts(results))
    results["bench_command"] = "eda " + shlex.join(
        bench_arguments(args, results, args.work_dir / "assistant-l2", relative=True))
    write_results(results, args.results)


def run_bench(args: argparse.Namespace, budget: ChunkBudget, log: ChunkLog) -> bool:
    """The speed side by side (`eda bench`, the command the comparison recorded), once."""
    if not budget.allows(BENCH_MINUTES * 60):
        return False
    results = json.loads(args.results.read_text())
    started = time.perf_counter()
    code = eda_main(bench_arguments(args, results, args.work_dir / "assistant-l2"))
    if code != 0:
        raise ValueError(f"eda bench failed (exit {code}); its command is in {args.results}")
    shutil.copyfile(args.work_dir / "bench" / "bench.png", BENCH_JSON.with_suffix(".png"))  # the plot beside it
    log.record("bench", time.perf_counter() - started)
    return True


def bench_arguments(args: argparse.Namespace, results: dict, assistant: Path, relative: bool = False) -> list[str]:
    """`eda bench` on the held-out prompts with the chain length and tree shape the cost model chose, the distilled
    assistant at transformers' confidence threshold and at 0, plain greedy and prompt lookup (`relative`: the
    repository's paths relative to its root, as the docs give them)."""
    def path(p: Path) -> str:
        return os.path.relpath(p, REPO) if relative else str(p)

    row = results["rows"][results["chosen"]]
    tree = row["tree_shapes"][0]
    return [
        "bench", "--target", args.target, "--draft", path(args.draft_dir),
        "--draft-label", "shared draft", "--assistant", str(assistant), "--assistant-label",
        "distilled assistant (0.4)", "--assistant", str(assistant), "--assistant-label", "distilled assistant (0)",
        "--assistant-confidence-threshold", "default", "--assistant-confidence-threshold", "0",
        "--prompt-kinds", "prose,code,math", "--per-kind", "11", "--max-new-tokens", "128",
        "--num-draft-tokens", str(row["best_chain_tokens"]), "--tree-depth", str(tree["depth"]),
        "--tree-top-k", str(tree["top_k"]), "--tree-total-tokens", str(tree["total_tokens"]), "--threads", "2",
        "--output-dir", str(args.work_dir / "bench"), "--json", path(BENCH_JSON),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget, log = ChunkBudget(args.max_minutes), ChunkLog(args.data_dir / "chunks.jsonl")
    if args.report:
        print(log.markdown())
        return 0
    started = time.perf_counter()
    stages = STAGES[:STAGES.index(args.until) + 1]
    try:
        done = run_recipe_work(
            lambda: run_stages(args, stages, budget, log), verbose=args.verbose,
            interrupted=f"finished parts are in {args.data_dir}, unfinished work in {args.work_dir}: run the same "
                        "command again",
        )
    except RecipeStopped as stopped:
        return stopped.exit_code
    minutes = (time.perf_counter() - started) / 60
    state = "every stage is done" if done else "stopped at the time budget: run the same command again"
    print(f"chunk {log.chunk}: {minutes:.1f} min; {state}; commit {args.data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
