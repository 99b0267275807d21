"""The research subcommands of `eda` (`demo`, `experiment`).

Each module exposes `add_parser(subparsers)` and `run(args)` like the runtime's `eda_adapters.cli` modules; the `eda`
command finds them through the `eda_adapters.commands` entry-point group (see `pyproject.toml`), so the runtime CLI
never imports the research side.
"""
