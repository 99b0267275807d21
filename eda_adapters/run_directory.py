"""Run provenance: is this output directory the same run?

Every job that writes a directory it may later resume (regeneration, feature extraction, both trainers, the
experiment, the recipe's fine-tunes) records what made it in a small JSON *key* there, and checks that key before it
touches anything:

- a missing or empty directory is a new run: the key is written and the job starts;
- a directory whose key matches is this run: the job resumes (or finds its work done);
- a directory with another key, with files but no key, or that is a file, is refused with one
  [`RunMismatchError`] naming every difference (`field: X there, Y now`) and the fix; nothing there is changed.

Jobs that never resume (export, selection) only ask for an empty directory ([`RunDirectory.require_empty`]).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .atomic import atomic_write_json
from .errors import EdaInputError

#: The key file of a run directory unless a job names its own.
RUN_KEY_FILE = "run.json"
#: The fix a refusal names unless a job names its own.
DEFAULT_FIX = "use another output directory, or delete this one to start over"
#: How many differences a refusal lists before `...`.
_SHOWN = 6


class RunMismatchError(EdaInputError):
    """An output directory holds another run (or files that no run of this kind wrote); nothing there was changed."""


def _plain(value: Any) -> Any:
    """`value` as JSON reads it back (tuples -> lists, paths -> strings), so a key compares equal after a save."""
    return json.loads(json.dumps(value, default=str))


def key_differences(recorded: Any, current: Any, prefix: str = "") -> list[str]:
    """`field: X there, Y now` for every leaf that differs between two keys; nested mappings are walked with dotted
    names (`target.fingerprint`), in sorted order."""
    if isinstance(recorded, Mapping) and isinstance(current, Mapping):
        diffs = []
        for name in sorted(set(recorded) | set(current)):
            diffs += key_differences(recorded.get(name), current.get(name), f"{prefix}{name}.")
        return diffs
    if _plain(recorded) != _plain(current):
        return [f"{prefix.rstrip('.')}: {_plain(recorded)!r} there, {_plain(current)!r} now"]
    return []


class RunDirectory:
    """An output directory of one `kind` of run (`"regeneration"`, `"training"`, ...), recognised by its key file.

    Args:
        path: the directory (it need not exist yet).
        kind: what runs there, as the refusals name it.
        key_file: the name of the key file inside the directory.
        fix: what a refusal tells the user to do.
    """

    def __init__(self, path: str | os.PathLike, kind: str, key_file: str = RUN_KEY_FILE, fix: str = DEFAULT_FIX):
        self.path = Path(path)
        self.kind = kind
        self.key_path = self.path / key_file
        self.fix = fix

    def _is_empty(self) -> bool:
        # one listing, no exists-then-isdir pair: under DDP another rank may create the directory between two calls
        try:
            return not os.listdir(self.path)
        except FileNotFoundError:
            return True
        except NotADirectoryError:
            raise RunMismatchError(f"{self.path} is a file: pass a directory path for the {self.kind} output") \
                from None

    def recorded_key(self) -> dict[str, Any] | None:
        """The key this directory records, `None` when it is missing or empty; [`RunMismatchError`] when it is a
        file, holds files but no key, or its key cannot be read."""
        if self._is_empty():
            return None
        if not self.key_path.is_file():
            raise RunMismatchError(
                f"{self.path} is not empty and holds no {self.key_path.name}: it is not a {self.kind} run made here; "
                "choose a new or empty output directory (nothing there was changed)"
            )
        try:
            recorded = json.loads(self.key_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RunMismatchError(
                f"{self.key_path} is unreadable ({type(err).__name__}); {self.fix} (nothing there was changed)"
            ) from None
        if not isinstance(recorded, dict):
            raise RunMismatchError(f"{self.key_path} is not a {self.kind} key (not a JSON object); {self.fix}")
        return recorded

    def compare(self, recorded: Mapping[str, Any], key: Mapping[str, Any], fields: Iterable[str] | None = None
                ) -> None:
        """Raise [`RunMismatchError`] listing every difference between `recorded` and `key` (on `fields` only, when
        given: the top-level names that decide whether it is the same run)."""
        if fields is not None:
            names = list(fields)
            recorded = {name: recorded.get(name) for name in names}
            key = {name: key.get(name) for name in names}
        diffs = key_differences(recorded, key)
        if diffs:
            shown = "; ".join(diffs[:_SHOWN]) + ("; ..." if len(diffs) > _SHOWN else "")
            raise RunMismatchError(
                f"{self.path} holds another {self.kind} run ({shown}); {self.fix} (nothing there was changed)"
            )

    def check(self, key: Mapping[str, Any], fields: Iterable[str] | None = None) -> bool:
        """`True` when the directory holds this run (its key matches `key`, on `fields` if given), `False` when it is
        missing or empty (a new run); [`RunMismatchError`] otherwise."""
        recorded = self.recorded_key()
        if recorded is None:
            return False
        self.compare(recorded, key, fields)
        return True

    def write_key(self, key: Mapping[str, Any]) -> None:
        """Record `key` (atomically), creating the directory."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.key_path, dict(key))

    def claim(self, key: Mapping[str, Any], fields: Iterable[str] | None = None) -> bool:
        """[`check`](RunDirectory.check), then record `key` if the run is new. Returns whether it resumes one."""
        resumed = self.check(key, fields)
        if not resumed:
            self.write_key(key)
        return resumed

    def require_empty(self, overwrite: bool = False, overwrite_hint: str | None = None) -> Path:
        """For jobs that never resume: the directory must be missing or empty, or `overwrite` given;
        `overwrite_hint` (e.g. `"pass overwrite=True (--overwrite)"`) is how the refusal names that option."""
        if not overwrite and not self._is_empty():
            hint = f", or {overwrite_hint}" if overwrite_hint else ""
            raise RunMismatchError(
                f"{self.path} is not empty: choose a new or empty directory for the {self.kind} output{hint}"
            )
        return self.path


__all__ = ["DEFAULT_FIX", "RUN_KEY_FILE", "RunDirectory", "RunMismatchError", "key_differences"]
