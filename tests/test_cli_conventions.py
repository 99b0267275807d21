"""One CLI convention: --target / --base-target / --output-dir everywhere, dtype choices from one constant, and the
spellings of earlier releases accepted for one release with a deprecation line."""

from __future__ import annotations

import argparse

import pytest

from eda_adapters.cli import SUBCOMMANDS, build_parser
from eda_adapters.models.loading import DTYPES


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def test_no_subcommand_takes_model_and_every_output_flag_is_output_dir():
    for name, parser in _subparsers().items():
        options = _options(parser)
        primary = {action.option_strings[0] for action in parser._actions if action.option_strings}
        assert "--model" not in primary and "--out" not in primary, name
        writes = {o for o in options if o.startswith("--out")}
        assert not writes or "--output-dir" in writes, (name, writes)
        dtype = next((a for a in parser._actions if "--dtype" in a.option_strings), None)
        if dtype is not None and name != "export":  # export casts weights: the concrete dtypes only
            assert tuple(dtype.choices) == DTYPES, name
    assert set(SUBCOMMANDS) <= set(_subparsers())


@pytest.mark.parametrize(
    "argv,dest,value,old",
    [
        (["regenerate", "--model", "m", "--prompts", "p", "--output-dir", "o"], "target", "m", "--model"),
        (["self-prompt", "--model", "m", "--num-prompts", "3", "--output-dir", "o"], "target", "m", "--model"),
        (["extract-features", "--model", "m", "--dataset", "d", "--output-dir", "o"], "target", "m", "--model"),
        (["select", "--dataset", "d", "--budget", "2", "--base", "b", "--output-dir", "o"], "base_target", "b",
         "--base"),
        (["select", "--dataset", "d", "--budget", "2", "--finetuned", "f", "--output-dir", "o"], "target", "f",
         "--finetuned"),
        (["export", "--draft", "d", "--out", "o"], "output_dir", "o", "--out"),
    ],
)
def test_old_spellings_still_work_with_one_deprecation_line(argv, dest, value, old, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and old in err[0] and "deprecated" in err[0]


def test_new_spellings_are_silent_and_trainers_take_both_spellings(capsys):
    args = build_parser().parse_args(["regenerate", "--target", "m", "--prompts", "p", "--output-dir", "o"])
    assert (args.target, args.output_dir) == ("m", "o")
    for spelling in ("--output-dir", "--output_dir"):
        args = build_parser().parse_args(["train-draft", "--target", "t", spelling, "x", "--learning-rate", "0.5"])
        assert (args.output_dir, args.learning_rate) == ("x", 0.5)
    assert capsys.readouterr().err == ""
