"""How a recipe script (`recipes/*/*.py`) runs its work: a quiet console, bad input as one line, Ctrl-C as a
sentence that says what is kept."""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

from ..console import quiet_console

T = TypeVar("T")


class RecipeStopped(Exception):
    """The work ended with an error line or an interruption; `exit_code` is what the script returns."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


def run_recipe_work(work: Callable[[], T], *, verbose: bool, interrupted: str) -> T:
    """`work()` under `quiet_console`; bad input (`ValueError`, `FileNotFoundError`, `ImportError`) prints
    `error: ...` and raises `RecipeStopped(2)`, Ctrl-C prints `interrupted; <interrupted>` and raises
    `RecipeStopped(130)`."""
    try:
        with quiet_console(verbose=verbose):
            return work()
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise RecipeStopped(2) from None
    except KeyboardInterrupt:
        print(f"interrupted; {interrupted}", file=sys.stderr)
        raise RecipeStopped(130) from None
