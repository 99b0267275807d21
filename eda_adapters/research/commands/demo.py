"""`eda demo`: the CPU miniature of the whole EDA pipeline (see `eda_adapters.research.demo`)."""

from __future__ import annotations

import argparse
import time


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="Run the whole EDA pipeline on tiny offline models (CPU, no download) and print the results table.",
        description=(
            "Trains a tiny base LM on the Python docs, fine-tunes it for code and math, trains the shared EAGLE draft, "
            "then compares direct transfer, full retraining (equal tokens and converged), full fine-tuning, LoRA, EDA "
            "(shift / random selection, original texts) and the authors' EDA design, with chain and tree tau and "
            "bootstrap intervals. "
            "Everything is cached under --cache-dir; a second run reuses it."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="Small sizes: a few minutes on 2 CPU cores.")
    parser.add_argument("--cache-dir", default="eda_cache/demo", help="Where models, data and results go.")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from ...validation import check_output_path

    check_output_path(args.cache_dir, "--cache-dir")

    start = time.perf_counter()
    results = run_demo(args.cache_dir, quick=args.quick, seed=args.seed, verbose=args._verbose)
    print()
    print(results.table())
    print()
    for name, path in results.files.items():
        print(f"{name}: {path}")
    print(f"total wall time: {time.perf_counter() - start:.0f}s")
    return 0
