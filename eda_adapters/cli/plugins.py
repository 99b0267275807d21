"""What the `eda` command takes from the research side, found through entry points rather than imports.

The research side (`eda_adapters.research`) declares in `pyproject.toml`:
- `eda_adapters.commands`: extra subcommands (`demo`, `experiment`), modules with `add_parser` and `run`;
- `eda_adapters.bench_fixtures`: the module `eda bench` runs on without `--target`, and its `--prompt-kinds` sets.

A reinstall (`pip install -e .`) refreshes them; without the package's metadata they are simply absent.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from types import ModuleType

from ..errors import MissingExtraError

COMMANDS_GROUP = "eda_adapters.commands"
BENCH_FIXTURES_GROUP = "eda_adapters.bench_fixtures"


def plugin_commands() -> dict[str, str]:
    """Subcommand name -> module name, as the installed distributions declare them."""
    return {ep.name: ep.value for ep in entry_points(group=COMMANDS_GROUP)}


def bench_fixtures(needed_for: str) -> ModuleType:
    """The module that provides `build_tiny_setup`, `PROMPT_KINDS` and `benchmark_chat_prompts`."""
    found = list(entry_points(group=BENCH_FIXTURES_GROUP))
    if not found:
        raise MissingExtraError(
            f"{needed_for} needs the research side of eda_adapters, which this install does not declare: reinstall "
            "the package (pip install -e '.[research]'), or pass --target and --prompts."
        )
    return found[0].load()
