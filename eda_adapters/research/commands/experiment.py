"""`eda experiment --config recipe.yaml`: the EDA comparison on real models (same code as `eda demo`)."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "experiment",
        help="Run the EDA comparison described by a YAML ExperimentConfig (see recipes/).",
    )
    parser.add_argument("--config", required=True, help="YAML file with ExperimentConfig fields.")
    parser.add_argument("--output-dir", help="Override output_dir of the config.")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..experiment import ExperimentConfig, run_experiment

    overrides = {"output_dir": args.output_dir} if args.output_dir else {}
    config = ExperimentConfig.from_yaml(args.config, **overrides)
    try:
        results = run_experiment(config, verbose=args._verbose)
    except KeyboardInterrupt:
        print(f"eda experiment: interrupted; finished stages are kept in {config.output_dir}: run the same command "
              "again to resume (an unfinished training row starts over)", file=sys.stderr)
        return 130
    print(results.table())
    for name, path in results.files.items():
        print(f"{name}: {path}")
    return 0
