"""Ranges of config fields, declared once where the field is declared and checked by one function.

A config dataclass gives a numeric field its range in the field's metadata (`ranged(...)`, or
`metadata={"range": COUNT, ...}` beside a `help`), and its `__post_init__` calls `check_ranges(self)`. The check
refuses, in one `EdaInputError` line naming the class, the field, the rule and the value:

- a value outside the range, and NaN or an infinity always (a comparison with NaN is false, so `x < 0` lets it by);
- a float, or a bool, in an integer field (`max_new_tokens=2.5`, `True`);
- text where a number belongs (a YAML file's `"3"`, when nothing converted it).

A CLI flag takes its argparse type from one of the same named ranges (`flag_type`), so a subcommand never restates a
rule; the trainers' flags and YAML values are checked by their configs. `None` passes (a field that is optional says
so in its type).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import EdaInputError

__all__ = [
    "COUNT",
    "FRACTION",
    "NON_NEGATIVE",
    "NON_NEGATIVE_INT",
    "POSITIVE",
    "PROBABILITY",
    "RANGE_KEY",
    "Range",
    "check_ranges",
    "flag_type",
    "ranged",
]


@dataclass(frozen=True)
class Range:
    """Allowed values of a number: `low`/`high` bounds (`None`: unbounded), each closed unless `*_open`, and whether
    the number must be an integer."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    @property
    def rule(self) -> str:
        """The range in words, e.g. `an integer >= 1`, `a finite number > 0` or `a number in (0, 1]`."""
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{kind} in {opening}{self.low:g}, {self.high:g}{closing}"
        kind = kind if self.integer else "a finite number"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {self.high:g}"
        return kind

    def admits(self, value: Any) -> bool:
        """Whether `value` is a number of the right kind, finite, and within the bounds."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


COUNT = Range(1, integer=True)
NON_NEGATIVE_INT = Range(0, integer=True)
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
FRACTION = Range(0, 1, low_open=True)
PROBABILITY = Range(0, 1)

#: the metadata key of a field's range
RANGE_KEY = "range"


def ranged(default: Any, rng: Range, help: str | None = None, **kwargs: Any) -> Any:
    """A dataclass field with `default` whose values must lie in `rng` (and `help`, for `HfArgumentParser`)."""
    metadata = {RANGE_KEY: rng, **({"help": help} if help is not None else {})}
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def check_ranges(config: Any, extra: Mapping[str, Range] | None = None) -> None:
    """Raise `EdaInputError` for the first field of the dataclass `config` outside its declared range; `extra` gives
    ranges to fields declared elsewhere (a parent class's, e.g. `TrainingArguments.learning_rate`)."""
    ranges = {f.name: f.metadata[RANGE_KEY] for f in dataclasses.fields(config) if RANGE_KEY in f.metadata}
    ranges.update(extra or {})
    for name, rng in ranges.items():
        value = getattr(config, name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if item is not None and not rng.admits(item):
                raise EdaInputError(f"{type(config).__name__}.{name} must be {rng.rule}, got {value!r}.")


def flag_type(rng: Range) -> Callable[[str], int | float]:
    """An argparse `type` that parses a flag's text and refuses it (exit 2, naming the rule) unless it lies in
    `rng`."""

    def parse(text: str) -> int | float:
        try:
            value = int(text) if rng.integer else float(text)
        except ValueError:
            value = None
        if value is None or not rng.admits(value):
            raise argparse.ArgumentTypeError(f"must be {rng.rule}, got {text!r}")
        return value

    parse.__name__ = "integer" if rng.integer else "number"  # argparse names the type in its messages
    parse.range = rng  # type: ignore[attr-defined]  # what the flag admits, for tools that list the flags
    return parse
