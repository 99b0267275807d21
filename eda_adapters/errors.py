"""The library's own error and warning types, and the one-line reading of the errors bad input raises elsewhere.

This module imports nothing heavy: the CLI's error boundary uses it before (and whether or not) torch, datasets or
safetensors were ever imported.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


class EdaInputError(ValueError):
    """Bad input (a file, a model, a config value), reported in one line that names the input and the fix."""


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the install command."""


class DraftMismatchWarning(UserWarning):
    """An EDA adapter was loaded onto a draft other than the one it was trained with (same shapes, other weights)."""


@contextmanager
def draft_mismatch_refused(allow: bool = False, override: str = "--allow-fingerprint-mismatch") -> Iterator[None]:
    """Within the block, an adapter loaded onto another draft ([`DraftMismatchWarning`]) raises [`EdaInputError`]
    naming `override`; with `allow=True` it loads without a word."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if allow else "error", DraftMismatchWarning)
        try:
            yield
        except DraftMismatchWarning as err:
            raise EdaInputError(f"{err} Or pass {override} if you know the shared weights are equivalent.") from None


#: Foreign exception types raised by bad input while loading it, by `module.QualName` (matched along the MRO, imported
#: by nobody). Nothing else from outside the library counts as bad input: a `ValueError` or `TypeError` raised inside
#: torch, transformers or our own code is a bug and keeps its traceback.
_FOREIGN_INPUT_ERRORS = {
    "yaml.error.YAMLError": "malformed YAML",
    "json.decoder.JSONDecodeError": "malformed JSON",
    "builtins.UnicodeDecodeError": "not UTF-8 text",
    "safetensors._safetensors_rust.SafetensorError": "a safetensors file is damaged (truncated or not safetensors)",
    "datasets.exceptions.DatasetGenerationError": "cannot read the dataset",
    "huggingface_hub.errors.HFValidationError": "not a local path nor a valid Hub id",
}
#: Always bad input: our own checks (`EdaInputError`, `MissingExtraError`) and what the OS or the Hub clients raise
#: about a file or a repository (`OSError`: missing, unreadable, not a directory, no connection).
_INPUT_ERRORS = (EdaInputError, MissingExtraError, OSError)


def _foreign_kind(err: BaseException) -> str | None:
    for cls in type(err).__mro__:
        kind = _FOREIGN_INPUT_ERRORS.get(f"{cls.__module__}.{cls.__qualname__}")
        if kind is not None:
            return kind
    return None


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


def describe_input_error(err: BaseException) -> str | None:
    """One line describing `err` if it is an anticipated failure caused by bad input, else `None` (a bug: keep the
    traceback). Errors wrapped by a foreign library (e.g. datasets' `DatasetGenerationError`) are read through to
    their cause."""
    kind = _foreign_kind(err)
    if kind is None and not isinstance(err, _INPUT_ERRORS):
        return None
    if kind == _FOREIGN_INPUT_ERRORS["datasets.exceptions.DatasetGenerationError"]:
        cause = err.__cause__ or err.__context__
        inner = describe_input_error(cause) if cause is not None else None
        return f"{kind}: {inner}" if inner else kind
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.strerror}: {err.filename}"
    if isinstance(err, UnicodeDecodeError):
        return f"{kind} ({err.reason}, byte {err.object[err.start:err.start + 1]!r} at offset {err.start})"
    message = _one_line(str(err))
    if kind is not None:
        mark = getattr(err, "problem_mark", None)  # YAML errors carry the position
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{kind}{where}: {message}" if message else f"{kind}{where}"
    return message or type(err).__name__


def print_input_error(command: str, err: BaseException, file=None) -> bool:
    """Print `eda COMMAND: error: ...` for anticipated failures; `False` (nothing printed) for bugs."""
    line = describe_input_error(err)
    if line is None:
        return False
    print(f"eda {command}: error: {line}", file=file or sys.stderr)
    return True


__all__ = ["DraftMismatchWarning", "EdaInputError", "draft_mismatch_refused", "describe_input_error", "print_input_error"]
