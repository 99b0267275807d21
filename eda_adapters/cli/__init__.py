"""The `eda` command line. Each subcommand lives in its own module exposing `add_parser(subparsers)` and `run(args)`.

Subcommands are imported lazily so that `eda --help` stays fast and one broken optional dependency does not take
the whole CLI down. The research side adds `eda demo` and `eda experiment` through the `eda_adapters.commands` entry
points (`cli/plugins.py`): this package never imports it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand name -> module (relative to this package) that implements it
SUBCOMMANDS: dict[str, str] = {
    "export": ".export",
    "self-prompt": ".self_prompt",
    "regenerate": ".regenerate",
    "extract-features": ".features",
    "select": ".select",
    "train-draft": ".train",
    "adapt": ".train",  # one module registers both trainer commands
    "bench": ".bench",
    "diagnose": ".diagnose",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eda", description="Efficient Draft Adaptation for EAGLE speculative decoding.")
    parser.add_argument(
        "--debug", action="store_true", dest="_debug", help="Show the full traceback of input errors too (before COMMAND)."
    )
    parser.add_argument(
        "--verbose", action="store_true", dest="_verbose",
        help="Print everything transformers, datasets and the trainers print (before COMMAND); by default the screen "
        "shows each stage, its progress bar and its summary, and the details go to the run's log files.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from .plugins import plugin_commands

    for name, module_name in {**plugin_commands(), **SUBCOMMANDS}.items():
        module = importlib.import_module(module_name, __name__)
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse printed the usage and a one-line error (2), or the help (0)
        return exit_.code if isinstance(exit_.code, int) else 2
    from ..console import quiet_console

    try:
        with quiet_console(verbose=args._verbose):
            return int(args._run(args) or 0)
    except Exception as err:
        # The one error boundary: bad input is reported in one line naming the fix (exit 2); programming errors, and
        # everything under --debug, keep their traceback.
        from ..errors import print_input_error

        if args._debug or not print_input_error(args.command, err):
            raise
        return 2


if __name__ == "__main__":
    sys.exit(main())
