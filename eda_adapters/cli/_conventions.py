"""The flags every `eda` subcommand spells the same way.

- `--target`: the model under test (the fine-tuned target in stage 2); `--base-target`: the base it was tuned from.
- `--output-dir`: where a command writes. Flags are spelled with dashes; the trainer commands also take
  `transformers`' underscore spelling (`--output_dir`), as `HfArgumentParser` and TRL users type it.
- `--dtype`: the choices of `eda_adapters.models.loading.DTYPES`.

Spellings used by earlier releases (`--model`, `--base`, `--finetuned`, `--out`) still work for one release and print
one deprecation line naming the new flag.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..models.loading import DTYPES
from ..schemas.config_ranges import COUNT, FRACTION, NON_NEGATIVE, NON_NEGATIVE_INT, flag_type

DTYPE_HELP = (
    "dtype to compute in: machine = bfloat16 where this machine multiplies it faster (probed once, cached), float32 "
    "elsewhere; auto = the checkpoint's dtype"
)
#: dtypes an output can be cast to (`eda export --dtype`): the concrete ones of DTYPES
CAST_DTYPES = tuple(dtype for dtype in DTYPES if dtype not in ("auto", "machine"))
TARGET_SOURCES = "HF folder, Hub id, .gguf file or smollm2-135m-instruct"


# argparse types of the numeric flags: the same ranges the config dataclasses declare (schemas/config_ranges.py)
count = flag_type(COUNT)  # sizes, batch sizes, numbers of tokens or prompts
seed = flag_type(NON_NEGATIVE_INT)  # random seeds
non_negative = flag_type(NON_NEGATIVE)  # a temperature, where 0 means greedy
fraction = flag_type(FRACTION)  # top-p, thresholds


class _StoreWithDeprecatedSpellings(argparse.Action):
    """`store`, plus one line on stderr when the value came through a deprecated option string."""

    def __init__(self, *args: Any, deprecated: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deprecated = deprecated

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if option_string in self.deprecated:
            print(
                f"eda: {option_string} is deprecated and will be removed in the next release; use "
                f"{self.option_strings[0]}.",
                file=sys.stderr,
            )
        setattr(namespace, self.dest, values)


def add_flag(parser: Any, flag: str, *, deprecated: tuple[str, ...] = (), **kwargs: Any) -> argparse.Action:
    """`parser.add_argument(flag, ...)` that also accepts the `deprecated` spellings, with a deprecation line."""
    if deprecated:
        kwargs["help"] = f"{kwargs.get('help', '')} ({', '.join(deprecated)}: deprecated spelling)".lstrip()
    return parser.add_argument(flag, *deprecated, action=_StoreWithDeprecatedSpellings, deprecated=deprecated,
                               **kwargs)


def add_target(parser: Any, help: str, required: bool = True, deprecated: tuple[str, ...] = ("--model",)) -> None:
    """`--target`: the model under test (`help` says which), from any source `load_causal_lm` takes."""
    add_flag(parser, "--target", deprecated=deprecated, required=required, help=f"{help}: {TARGET_SOURCES}.")


def add_base_target(parser: Any, help: str, deprecated: tuple[str, ...] = ("--base",)) -> None:
    """`--base-target`: the base model the target was fine-tuned from."""
    add_flag(parser, "--base-target", deprecated=deprecated, dest="base_target", help=f"{help}: {TARGET_SOURCES}.")


def add_output_dir(parser: Any, help: str, required: bool = True, default: str | None = None,
                   deprecated: tuple[str, ...] = ()) -> None:
    """`--output-dir`: where the command writes."""
    add_flag(parser, "--output-dir", deprecated=deprecated, dest="output_dir", required=required, default=default,
             help=help)


def add_dtype(parser: Any, default: str, help: str = DTYPE_HELP) -> None:
    """`--dtype`, with the choices `load_causal_lm` understands."""
    parser.add_argument("--dtype", choices=DTYPES, default=default, help=f"{help} (default: {default}).")


def add_tree_options(parser: Any) -> None:
    """`--tree-depth`, `--tree-top-k`, `--tree-total-tokens`: the EAGLE-2 tree shape, CPU-sized by default."""
    parser.add_argument("--tree-depth", type=int, default=6, help="EAGLE-2 tree depth (default: 6).")
    parser.add_argument("--tree-top-k", type=int, default=2, help="Branching per expanded node (default: 2).")
    parser.add_argument("--tree-total-tokens", type=int, default=12,
                        help="Tree nodes verified per target forward (default: 12, CPU-sized; 60 on GPUs).")


def tree_config(args: Any):
    """The `TreeConfig` of `add_tree_options`' flags (a one-line error for a bad shape)."""
    from ..generation.tree import TreeConfig

    return TreeConfig(depth=args.tree_depth, top_k=args.tree_top_k, total_tokens=args.tree_total_tokens)
