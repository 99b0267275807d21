"""Run one of the library's writers in this process, optionally under a file-size limit: the child side of
`tests/test_fs_faults.py`.

    python tests/fs_fault_writers.py WRITER OUTPUT_DIR [--seed S] [--limit BYTES]

With `--limit`, `RLIMIT_FSIZE` is set (and `SIGXFSZ` ignored, so an oversize write fails with `EFBIG` instead of
killing the process) only once the models are built, right before the write. Errors go through the CLI's error
boundary (`print_input_error`): one line and exit code 2, or a traceback and exit code 1 for anything else.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from conftest import make_target  # noqa: E402
from datasets import Dataset  # noqa: E402
from test_data_common import PROMPTS, make_tokenizer  # noqa: E402

from eda_adapters import EagleDraftModel, EagleTrainer, EagleTrainingConfig, EdaConfig, EdaTrainer  # noqa: E402
from eda_adapters import EdaTrainingConfig  # noqa: E402
from eda_adapters.errors import print_input_error  # noqa: E402


def trainer_args(cls, output_dir: str):
    return cls(output_dir=output_dir, report_to=[], use_cpu=True, disable_tqdm=True, max_steps=1, save_strategy="no")


def rows(count: int = 6) -> Dataset:
    ids = torch.randint(4, 97, (count, 12), generator=torch.Generator().manual_seed(0))
    return Dataset.from_dict({"input_ids": ids.tolist(), "loss_mask": [[0] * 4 + [1] * 8] * count})


def build(writer: str, output_dir: str, seed: int):
    """The models, then a function that writes `writer`'s output to `output_dir`."""
    target = make_target("llama")
    torch.manual_seed(seed)
    draft = EagleDraftModel.from_target(target)
    if writer == "draft":
        trainer = EagleTrainer(model=draft, target_model=target, args=trainer_args(EagleTrainingConfig, output_dir))
        return trainer.save_model
    if writer == "adapter":
        trainer = EdaTrainer(model=draft, target_model=target, args=trainer_args(EdaTrainingConfig, output_dir),
                             peft_config=EdaConfig(num_private_experts=1))
        return trainer.save_model
    if writer == "export":
        from eda_adapters import export_draft

        return lambda: export_draft(draft, output_dir, overwrite=True)
    if writer == "regenerate":
        from eda_adapters.data import regenerate

        return lambda: regenerate(target, make_tokenizer(), PROMPTS[:6], output_dir, max_new_tokens=6, batch_size=2,
                                  show_progress=False)
    if writer == "features":
        from eda_adapters.data import extract_features

        return lambda: extract_features(target, rows(), output_dir, batch_size=2, show_progress=False)
    raise SystemExit(f"unknown writer {writer}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("writer")
    parser.add_argument("output_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    write = build(args.writer, args.output_dir, args.seed)
    if args.limit is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.limit, resource.RLIM_INFINITY))
    try:
        write()
    except Exception as err:
        if not print_input_error(args.writer, err):
            raise
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
