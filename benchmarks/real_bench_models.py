"""Train what the side-by-side benchmark on a real target compares, from ONE cached regenerated dataset, alike:

- `draft_full/`: a stage-1 EAGLE draft with the full vocabulary head (`eda train-draft`);
- `draft_r<N>/`: its twin with a reduced head over the N most frequent training tokens (`--draft-vocab-size N`),
  same data, seed, batch size, learning rate and number of steps;
- `assistant_l<L>/`: a vanilla assistant for transformers' assisted generation, the target cut to its first L layers
  (`eda_adapters.research.toys.assistant_from_target`) and distilled on the same answers (`quick_fit_assistant`: KL to the
  target's next-token distribution on the response tokens) for as many steps of the same batch size.

    python benchmarks/real_bench_models.py --dataset regen_general --output-dir bench_models \
        [--target smollm2-135m-instruct] [--draft-vocab 8192] [--assistant-layers 2] [--epochs 2] [--threads 2]

Whatever already exists in `--output-dir` is kept (delete it to retrain); each model is written to a temporary
directory first. At the end it prints the `eda bench` command that benchmarks all of them side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from eda_adapters import load_target
from eda_adapters.atomic import atomic_directory
from eda_adapters.cli import main as eda
from eda_adapters.data.io import load_rows
from eda_adapters.research.toys import assistant_from_target, quick_fit_assistant
from eda_adapters.training.collator import DraftDataCollator


def train_drafts(args: argparse.Namespace, out: Path) -> dict[str, Path]:
    """The full-head and the reduced-head stage-1 drafts, trained by `eda train-draft` with the same settings."""
    common = [
        "train-draft", "--target", args.target, "--dataset", args.dataset, "--num-train-epochs", str(args.epochs),
        "--per-device-train-batch-size", str(args.batch_size), "--learning-rate", str(args.lr),
        "--lr-scheduler-type", "cosine", "--warmup-steps", str(args.warmup_steps), "--max-length",
        str(args.max_length), "--save-strategy", "no", "--report-to", "none", "--seed", str(args.seed),
        *args.train_arg,
    ]
    drafts = {"full head": out / "draft_full", f"{args.draft_vocab} head": out / f"draft_r{args.draft_vocab}"}
    for (label, path), extra in zip(drafts.items(), ([], ["--draft-vocab-size", str(args.draft_vocab)])):
        if (path / "config.json").is_file():
            print(f"keeping {path}")
            continue
        start = time.perf_counter()
        code = eda([*common, *extra, "--output-dir", str(path)])
        if code:
            raise SystemExit(code)
        print(f"trained the {label} draft in {time.perf_counter() - start:.0f} s")
    return drafts


def fit_assistant(args: argparse.Namespace, out: Path) -> Path:
    """The vanilla assistant, distilled on the drafts' data for as many steps as their trainer ran."""
    path = out / f"assistant_l{args.assistant_layers}"
    if (path / "config.json").is_file():
        print(f"keeping {path}")
        return path
    target = load_target(args.target)
    batch = DraftDataCollator(max_length=args.max_length)(list(load_rows(args.dataset)))
    rows = batch["input_ids"].shape[0]
    steps = args.epochs * math.ceil(rows / args.batch_size)  # what the draft trainer runs on the same data
    assistant = assistant_from_target(target, args.assistant_layers)
    start = time.perf_counter()
    losses = quick_fit_assistant(
        target, assistant, batch["input_ids"], steps=steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
        attention_mask=batch["attention_mask"], loss_mask=batch["loss_mask"],
    )
    seconds = time.perf_counter() - start
    with atomic_directory(path) as tmp:
        assistant.save_pretrained(tmp)
        summary = {"target": args.target, "dataset": args.dataset, "num_layers": args.assistant_layers,
                   "rows": rows, "steps": steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                   "fit_seconds": round(seconds, 1), "losses": losses}
        (tmp / "fit.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"fitted the {args.assistant_layers}-layer assistant in {seconds:.0f} s ({steps} steps, KL "
          f"{losses[0]:.3f} -> {losses[-1]:.3f})")
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smollm2-135m-instruct")
    parser.add_argument("--dataset", required=True,
                        help="Regenerated data: an `eda regenerate` directory (data.jsonl: input_ids, loss_mask).")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--draft-vocab", type=int, default=8192, help="Reduced head size (default: 8192).")
    parser.add_argument("--assistant-layers", type=int, default=2, help="Layers of the vanilla assistant.")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-assistant", action="store_true", help="Train the two drafts only.")
    parser.add_argument("--train-arg", action="append", default=[],
                        help="Extra argument for both `eda train-draft` runs (repeatable, e.g. --train-arg=--use_cpu).")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[str]:
    """Train what is missing; return the `eda bench` arguments that compare it all."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    bench = ["bench", "--target", args.target]
    for label, path in train_drafts(args, out).items():
        bench += ["--draft", str(path), "--draft-label", f"stage-1 draft, {label}"]
    if not args.skip_assistant:
        bench += ["--assistant", str(fit_assistant(args, out)),
                  "--assistant-label", f"vanilla LM, {args.assistant_layers} layers"]
    print("\nbenchmark them with:\n  eda " + shlex.join(bench) + " --prompt-kinds prose,code,math ...")
    return bench


if __name__ == "__main__":
    main()
