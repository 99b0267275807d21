"""Property-based fuzzing of what users hand the library: every input kind, through its real entry point.

Each case starts from a valid input drawn by `hypothesis` and applies one mutation: a wrong type, a value out of
range, a wrong length, NaN/inf, an empty value, a duplicate key, a truncated file, a wrong encoding, a path that
is a file or overlaps the input. A mutation is *bad* (the input must be refused) or *harmless* (a BOM, CRLF line
endings, blank lines, an extra column, a 1-D tensor: it must be accepted, with the clean input's result). Each case
ends in one outcome:

| outcome | meaning | a failure? |
|---|---|---|
| `refused` | a bad input refused in one line (`EdaInputError`, or exit code 2) naming the field | no |
| `accepted` | a harmless input accepted, and its output passes the oracle | no |
| `unnamed` | refused in one line, but the line does not name the field | yes |
| `traceback` | any other exception, or a traceback printed | yes |
| `silent` | a bad input accepted, or a harmless one accepted with a wrong output | yes |
| `false refusal` | a harmless input refused | yes |
| `changed bytes` | a directory that existed before the case changed | yes |

The default test suite runs every kind derandomized with a small budget (`tests/test_fuzz_inputs.py`); this
script runs a long, random one and writes the table of cases per kind and outcome:

    python benchmarks/fuzz_inputs.py --markdown docs/reliability.md --json docs/benchmarks/fuzz_inputs.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import io
import json
import math
import shlex
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eda_adapters.errors import EdaInputError

GOOD_OUTCOMES = ("refused", "accepted")
VOCAB = 96


@dataclass(frozen=True)
class Mutation:
    """One way to corrupt (or harmlessly vary) a valid input."""

    name: str
    #: what a refusal must name (a column, a flag, an argument, a word of the problem)
    field: str
    #: True: the input must be refused; False: it must be accepted with the clean input's result
    bad: bool
    #: draws the mutated input from the clean one: `apply(draw, clean) -> mutated`
    apply: Callable[[Callable, Any], Any] = field(repr=False, compare=False)


@dataclass
class Result:
    """What one run of an entry point did."""

    ok: bool
    output: Any = None
    error: str | None = None  # the one line of a refusal
    traceback: str | None = None  # an exception that is not a refusal, or a traceback printed


def outcome(mutation: Mutation, result: Result, oracle: Callable[[Any], bool], changed: bool) -> str:
    """The outcome of a case (see the module docstring); `oracle(output)` says whether an accepted output is right."""
    if result.traceback is not None:
        return "traceback"
    if changed:
        return "changed bytes"
    if result.ok:
        return "silent" if mutation.bad or not oracle(result.output) else "accepted"
    if not mutation.bad:
        return "false refusal"
    one_line = result.error is not None and "\n" not in result.error.strip()
    return "refused" if one_line and mutation.field.lower() in result.error.lower() else "unnamed"


def call_api(fn: Callable[[], Any]) -> Result:
    """Run a Python API call: an `EdaInputError` is a refusal, any other exception a traceback."""
    try:
        return Result(ok=True, output=fn())
    except EdaInputError as err:
        return Result(ok=False, error=str(err))
    except Exception as err:  # noqa: BLE001 (the harness records what escaped)
        return Result(ok=False, traceback=f"{type(err).__name__}: {err}")


def call_cli(argv: list[str]) -> Result:
    """Run `eda ARGV` in this process: exit 2 with one `eda CMD: error:` line is a refusal."""
    from eda_adapters.cli import main

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except SystemExit as exit_:  # argparse refuses bad flags with exit 2
        code = exit_.code
    except Exception as exc:  # noqa: BLE001
        return Result(ok=False, traceback=f"{type(exc).__name__}: {exc}")
    text = err.getvalue()
    if "Traceback" in text:
        return Result(ok=False, traceback=text)
    if code == 0:
        return Result(ok=True)
    lines = [line for line in text.splitlines() if line.strip()]
    if code == 2 and lines:
        return Result(ok=False, error=lines[-1] if len(lines) == 1 or "usage:" in lines[0] else text)
    return Result(ok=False, traceback=f"exit code {code}: {text}")


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under `root` (relative path -> sha256): compared before and after a case."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------------ tokenized rows


@st.composite
def token_rows(draw, scores: bool = False) -> list[dict]:
    """3 to 6 valid tokenized rows (ids below VOCAB, a 0/1 loss mask, text; finite scores when `scores`)."""
    rows = []
    for index in range(draw(st.integers(3, 6))):
        ids = draw(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=8))
        row = {"prompt": f"prompt {index}", "response": f"answer {index}", "input_ids": ids,
               "loss_mask": draw(st.lists(st.integers(0, 1), min_size=len(ids), max_size=len(ids)))}
        if scores:
            row["shift_score"] = draw(st.floats(0, 1, allow_nan=False, width=32))
        rows.append(row)
    return rows


def _set_element(column: str, value: Any) -> Callable:
    """A mutation that sets one element of `column` in one row to `value`."""
    def apply(draw, rows):
        rows = json.loads(json.dumps(rows))
        row = draw(st.integers(0, len(rows) - 1))
        position = draw(st.integers(0, len(rows[row][column]) - 1))
        rows[row][column][position] = value
        return rows
    return apply


def _set_value(column: str, value: Any) -> Callable:
    """A mutation that sets `column` of one row to `value` (`...` removes the key)."""
    def apply(draw, rows):
        rows = json.loads(json.dumps(rows))
        row = draw(st.integers(0, len(rows) - 1))
        if value is ...:
            del rows[row][column]
        else:
            rows[row][column] = value(rows[row]) if callable(value) else value
        return rows
    return apply


def _extra_column(draw, rows):
    return [{**row, "note": f"kept {i}"} for i, row in enumerate(rows)]


ROW_MUTATIONS = [
    Mutation("input_ids: a float id", "input_ids", True, _set_element("input_ids", 3.5)),
    Mutation("input_ids: an integral float id", "input_ids", True, _set_element("input_ids", 7.0)),
    Mutation("input_ids: id == vocab size", "input_ids", True, _set_element("input_ids", VOCAB)),
    Mutation("input_ids: a huge id", "input_ids", True, _set_element("input_ids", 2 ** 40)),
    Mutation("input_ids: a negative id", "input_ids", True, _set_element("input_ids", -1)),
    Mutation("input_ids: a string id", "input_ids", True, _set_element("input_ids", "7")),
    Mutation("input_ids: a null id", "input_ids", True, _set_element("input_ids", None)),
    Mutation("input_ids: a boolean id", "input_ids", True, _set_element("input_ids", True)),
    Mutation("input_ids: a nested list", "input_ids", True, _set_element("input_ids", [1, 2])),
    Mutation("input_ids: an empty row", "input_ids", True, _set_value("input_ids", lambda r: [])),
    Mutation("input_ids: a null row", "input_ids", True, _set_value("input_ids", None)),
    Mutation("input_ids: a missing key", "input_ids", True, _set_value("input_ids", ...)),
    Mutation("input_ids: a string row", "input_ids", True, _set_value("input_ids", "1 2 3")),
    Mutation("loss_mask: one value short", "loss_mask", True, _set_value("loss_mask", lambda r: r["loss_mask"][:-1])),
    Mutation("loss_mask: one value long", "loss_mask", True, _set_value("loss_mask", lambda r: r["loss_mask"] + [1])),
    Mutation("loss_mask: a 2", "loss_mask", True, _set_element("loss_mask", 2)),
    Mutation("loss_mask: a -1", "loss_mask", True, _set_element("loss_mask", -1)),
    Mutation("loss_mask: a 0.5", "loss_mask", True, _set_element("loss_mask", 0.5)),
    Mutation("loss_mask: a null", "loss_mask", True, _set_element("loss_mask", None)),
    Mutation("prompt: a number", "prompt", True, _set_value("prompt", 12)),
    Mutation("response: a list", "response", True, _set_value("response", lambda r: ["a", "b"])),
    Mutation("an extra column", "", False, _extra_column),
]

SCORE_MUTATIONS = [
    Mutation("shift_score: NaN", "shift_score", True, _set_value("shift_score", math.nan)),
    Mutation("shift_score: inf", "shift_score", True, _set_value("shift_score", math.inf)),
    Mutation("shift_score: -inf", "shift_score", True, _set_value("shift_score", -math.inf)),
    Mutation("shift_score: a string", "shift_score", True, _set_value("shift_score", "0.5")),
    Mutation("shift_score: null", "shift_score", True, _set_value("shift_score", None)),
    Mutation("shift_score: a missing key", "shift_score", True, _set_value("shift_score", ...)),
    Mutation("shift_score: an integer", "", False, _set_value("shift_score", 1)),
]


def rows_bytes(rows: list[dict]) -> bytes:
    """Rows as a JSON Lines file (`json.dumps` writes NaN and Infinity as JavaScript does)."""
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def parse_rows(data: bytes) -> list[dict]:
    """The rows a careful reader finds in a JSON Lines file: BOM and blank lines dropped, CRLF accepted."""
    text = data.decode("utf-8-sig")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _truncate(draw, data: bytes) -> bytes:
    last = data.rstrip(b"\n").rfind(b"\n") + 1  # the start of the last row
    return data[: draw(st.integers(last + 1, len(data) - 3))]  # strictly inside it: never a whole object


def _latin1(draw, data: bytes) -> bytes:
    return data.replace(b'": "', b'": "caf\xe9 ', 1)  # an e-acute in Latin-1 opens the first text value


def _duplicate_key(draw, data: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    row = draw(st.integers(0, len(lines) - 1))
    key = next(iter(json.loads(lines[row])))
    lines[row] = lines[row].replace(b"{", b'{"' + key.encode() + b'": 0, ', 1)
    return b"".join(lines)


def _insert_line(line: bytes) -> Callable:
    def apply(draw, data: bytes) -> bytes:
        lines = data.splitlines(keepends=True)
        at = draw(st.integers(0, len(lines)))
        return b"".join(lines[:at] + [line] + lines[at:])
    return apply


FILE_MUTATIONS = [
    Mutation("a truncated file", "line", True, _truncate),
    Mutation("not UTF-8 (latin-1)", "UTF-8", True, _latin1),
    Mutation("an empty file", "empty", True, lambda draw, data: b""),
    Mutation("a line that is not an object", "line", True, _insert_line(b"[1, 2]\n")),
    Mutation("a duplicate key", "twice", True, _duplicate_key),
    Mutation("a BOM", "", False, lambda draw, data: b"\xef\xbb\xbf" + data),
    Mutation("CRLF line endings", "", False, lambda draw, data: data.replace(b"\n", b"\r\n")),
    Mutation("blank lines", "", False, _insert_line(b"  \n")),
]


def as_file_mutation(mutation: Mutation) -> Mutation:
    """A row mutation as one that returns the mutated file's bytes."""
    return Mutation(mutation.name, mutation.field, mutation.bad,
                    lambda draw, rows: rows_bytes(mutation.apply(draw, rows)))


def on_file(mutation: Mutation) -> Mutation:
    """A file mutation applied to the file of valid rows."""
    return Mutation(mutation.name, mutation.field, mutation.bad,
                    lambda draw, rows: mutation.apply(draw, rows_bytes(rows)))


ROWS_FILE_MUTATIONS = [as_file_mutation(m) for m in ROW_MUTATIONS] + [on_file(m) for m in FILE_MUTATIONS]
SCORES_FILE_MUTATIONS = [as_file_mutation(m) for m in SCORE_MUTATIONS] + [on_file(m) for m in FILE_MUTATIONS]


# ------------------------------------------------------------------------------------------------------ input kinds


@dataclass
class InputKind:
    """One kind of input and the entry point it goes through."""

    name: str
    #: the entry point, for the report
    entry: str
    #: draws a valid input
    clean: Any
    mutations: list[Mutation]
    #: writes the input's files under the inputs folder (hashed before and after) and returns what `call` takes
    prepare: Callable[[Path, Any], Any]
    #: runs the entry point: `call(root, prepared) -> (Result, oracle)`; outputs go under `root / "out"`
    call: Callable[[Path, Any], tuple[Result, Callable[[Any], bool]]]


def _write_file(name: str) -> Callable[[Path, bytes], Path]:
    def prepare(inputs: Path, data: bytes) -> Path:
        (inputs / name).write_bytes(data)
        return inputs / name
    return prepare


def _known(rows: list[dict], columns=("prompt", "input_ids", "loss_mask")) -> list[tuple]:
    """Each row's identity (its prompt is unique) and token columns, comparable across readers."""
    return [tuple(json.dumps(row.get(c)) for c in columns) for row in rows]


def _load_api(root: Path, path: Path):
    from eda_adapters.data.io import load_tokenized_rows

    result = call_api(lambda: load_tokenized_rows(path, vocab_size=VOCAB))
    return result, lambda rows: _known(rows.to_list()) == _known(parse_rows(path.read_bytes()))


def _selection_oracle(root: Path, path: Path, count: int, best_first: bool) -> Callable[[Any], bool]:
    """An accepted selection: `count` rows of the input in their order, valid rows, and for `best_first` no
    unselected row scoring above a selected one."""
    from eda_adapters.data.io import load_tokenized_rows

    def oracle(_: Any) -> bool:
        rows = parse_rows(path.read_bytes())
        chosen = load_tokenized_rows(root / "out" / "data.jsonl", required=()).to_list()
        keys = _known(rows)
        positions = [keys.index(key) for key in _known(chosen)] if set(_known(chosen)) <= set(keys) else None
        if positions is None or len(chosen) != count or positions != sorted(positions):
            return False
        if best_first:
            unselected = [r["shift_score"] for i, r in enumerate(rows) if i not in positions]
            # the input's scores: the output's are written to 10 digits (pandas' JSON writer), ties included
            return min(rows[i]["shift_score"] for i in positions) >= max(unselected, default=-math.inf)
        return True
    return oracle


def _select_cli(strategy: str, budget: str = "2", extra: tuple[str, ...] = ()) -> Callable:
    def call(root: Path, path: Path):
        argv = ["select", "--dataset", str(path), "--budget", budget, "--strategy", strategy,
                "--output-dir", str(root / "out"), *extra]
        return call_cli(argv), _selection_oracle(root, path, int(budget), strategy == "topk")
    return call


def _harmless(mutations: list[Mutation], names: set[str]) -> list[Mutation]:
    """`mutations`, those named in `names` harmless here (e.g. ids above a vocabulary this entry point cannot know)."""
    return [Mutation(m.name, "", False, m.apply) if m.name in names else m for m in mutations]


VOCAB_ONLY = {"input_ids: id == vocab size", "input_ids: a huge id"}


def _flag(flag: str, value: str, bad: bool, strategy: str = "topk", field_: str | None = None) -> Mutation:
    """A mutation of one `eda select` flag (the dataset stays valid)."""
    name = f"{flag} {value}"
    return Mutation(name, field_ or flag.lstrip("-"), bad, lambda draw, rows: (rows_bytes(rows), strategy, flag, value))


FLAG_MUTATIONS = [
    *[_flag("--budget", v, True) for v in ("0", "-3", "1.5", "nan", "inf", "abc", "10000", "")],
    *[_flag("--budget", v, False) for v in ("0.5", "1e-9", "2")],
    *[_flag("--temperature", v, True, "weighted") for v in ("0", "-1", "nan", "inf", "x")],
    _flag("--temperature", "0.25", False, "weighted"),
    *[_flag("--num-clusters", v, True, field_="clusters") for v in ("0", "-2", "1.5")],
    *[_flag("--seed", v, True, "random") for v in ("-1", "1.5")],
    *[_flag("--batch-size", v, True, field_="batch") for v in ("0", "-1")],
]


def _flags_prepare(inputs: Path, case: tuple) -> tuple:
    data, strategy, flag, value = case
    (inputs / "scores.jsonl").write_bytes(data)
    return inputs / "scores.jsonl", strategy, flag, value


def _flags_call(root: Path, case: tuple):
    path, strategy, flag, value = case
    argv = ["select", "--dataset", str(path), "--strategy", strategy, "--output-dir", str(root / "out")]
    argv += [flag, value] if flag == "--budget" else ["--budget", "2", flag, value]
    count = 0
    if flag == "--budget":
        with contextlib.suppress(ValueError, OverflowError):
            number = float(value)
            count = max(1, int(number * len(parse_rows(path.read_bytes())))) if "." in value or "e" in value else (
                int(number))
    else:
        count = 2
    return call_cli(argv), _selection_oracle(root, path, count, strategy == "topk")


def _output_path(name: str, where: Callable[[Path], Path], bad: bool) -> Mutation:
    return Mutation(name, "output", bad, lambda draw, rows: (rows_bytes(rows), where))


OUTPUT_MUTATIONS = [
    _output_path("the dataset file itself", lambda inputs: inputs / "scores.jsonl", True),
    _output_path("a path under the dataset file", lambda inputs: inputs / "scores.jsonl" / "out", True),
    _output_path("the folder holding the dataset", lambda inputs: inputs, True),
    _output_path("another run's folder (not empty)", lambda inputs: inputs / "previous", True),
    _output_path("climbing back into the inputs", lambda inputs: inputs / "previous" / ".." / ".." / "inputs", True),
    _output_path("a new nested folder", lambda inputs: inputs.parent / "out" / "a" / "b", False),
    _output_path("an existing empty folder", lambda inputs: inputs.parent / "empty", False),
]


def _paths_prepare(inputs: Path, case: tuple) -> tuple:
    data, where = case
    (inputs / "scores.jsonl").write_bytes(data)
    (inputs / "previous").mkdir()
    (inputs / "previous" / "keep.txt").write_text("another run's result\n")
    (inputs.parent / "empty").mkdir()
    return inputs / "scores.jsonl", where(inputs)


def _paths_call(root: Path, case: tuple):
    path, out = case
    result = call_cli(["select", "--dataset", str(path), "--budget", "2", "--strategy", "topk", "--output-dir",
                       str(out)])
    def oracle(_: Any) -> bool:
        rows = parse_rows(path.read_bytes())
        chosen = parse_rows((out / "data.jsonl").read_bytes())
        return len(chosen) == 2 and set(_known(chosen)) <= set(_known(rows))
    return result, oracle


def file_kinds() -> list[InputKind]:
    """The input kinds that need no model."""
    return [
        InputKind("tokenized rows file", "load_tokenized_rows (API)", token_rows(), ROWS_FILE_MUTATIONS,
                  _write_file("data.jsonl"), _load_api),
        InputKind("regenerated data file", "eda select --strategy random", token_rows(),
                  _harmless(ROWS_FILE_MUTATIONS, VOCAB_ONLY), _write_file("data.jsonl"), _select_cli("random")),
        InputKind("scores file", "eda select --strategy topk", token_rows(scores=True), SCORES_FILE_MUTATIONS,
                  _write_file("scores.jsonl"), _select_cli("topk")),
        InputKind("CLI numbers", "eda select flags", token_rows(scores=True), FLAG_MUTATIONS, _flags_prepare,
                  _flags_call),
        InputKind("output paths", "eda select --output-dir", token_rows(scores=True), OUTPUT_MUTATIONS,
                  _paths_prepare, _paths_call),
        InputKind("config fields", "the config dataclasses (API)", config_field(), CONFIG_MUTATIONS, _no_files,
                  _config_call),
        InputKind("CLI numbers of every subcommand", "eda COMMAND --FLAG (parsed)", st.sampled_from(cli_number_flags()),
                  CLI_NUMBER_MUTATIONS, _no_files, _cli_number_call),
    ]


# ------------------------------------------------------------------------------------------------------ config fields


@functools.cache
def config_classes() -> dict[str, tuple[Callable[..., Any], dict]]:
    """Each config dataclass with a declared range: how to build it, and the ranges of its fields (its own and, for
    the trainer configs, the `TrainingArguments` ones it checks)."""
    import dataclasses

    from eda_adapters import EagleTrainingConfig, EdaConfig, EdaTrainingConfig, TreeConfig
    from eda_adapters.data.prompt_filter import PromptFilter
    from eda_adapters.data.regenerate import DecodingSettings
    from eda_adapters.data.selection_strategies import SelectionStrategy
    from eda_adapters.schemas.config_ranges import RANGE_KEY
    from eda_adapters.training.eagle_config import INHERITED_RANGES

    def trainer(cls):
        return lambda **kw: cls(output_dir="unused", use_cpu=True, report_to=[], **kw)

    builders = [  # (class, how to build it, the inherited ranges it checks)
        (EagleTrainingConfig, trainer(EagleTrainingConfig), INHERITED_RANGES),
        (EdaTrainingConfig, trainer(EdaTrainingConfig), INHERITED_RANGES),
        (EdaConfig, lambda **kw: EdaConfig(**{"num_private_experts": 8, **kw}), {}),
        *[(cls, cls, {}) for cls in (DecodingSettings, SelectionStrategy, TreeConfig, PromptFilter)],
    ]
    out = {}
    for cls, build, inherited in builders:
        fields = {f.name: (f.metadata[RANGE_KEY], f.default) for f in dataclasses.fields(cls)
                  if RANGE_KEY in f.metadata and f.name != "aux_layer_ids"}  # a list, and EAGLE-3 only
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        fields.update({k: (rng, defaults.get(k)) for k, rng in inherited.items()})
        out[cls.__name__] = (build, fields)
    return out


@st.composite
def config_field(draw) -> tuple:
    """A config class and one of its ranged fields: `(class name, field, range, default)`."""
    classes = config_classes()
    name = draw(st.sampled_from(sorted(classes)))
    field_name = draw(st.sampled_from(sorted(classes[name][1])))
    rng, default = classes[name][1][field_name]
    return name, field_name, rng, default


def _in_range(draw, rng, default, name: str):
    """A value the field takes: from its default (or its lower bound) up, within the range; whole numbers for the
    `*_steps` fields (`TrainingArguments` takes a fraction of training below 1 and whole steps above)."""
    low = rng.low if rng.low is not None else 0
    start = default if isinstance(default, (int, float)) and not isinstance(default, bool) else low
    if rng.integer or name.endswith("_steps"):
        first = max(int(start), int(low) + int(rng.low_open))
        return draw(st.integers(first, int(rng.high) if rng.high is not None else first * 4 + 4))
    high = rng.high if rng.high is not None else float(start) * 4 + 4
    return draw(st.floats(float(start), high, allow_nan=False, exclude_min=rng.low_open and start == low,
                          exclude_max=rng.high_open))


def _outside(draw, rng, default, name: str):
    """A value outside the range: below it, or above it where it has a top; an unbounded side gets -inf."""
    if rng.high is not None and draw(st.booleans()):
        return rng.high + (1 if rng.integer else draw(st.floats(0.001, 10)))
    if rng.low is not None:
        return rng.low - (1 if rng.integer else draw(st.floats(0.001, 10))) + (0 if not rng.low_open else 1e-12)
    return float("-inf")


def _config_value(make: Callable) -> Callable:
    return lambda draw, case: (case, make(draw, *case[2:], case[1]))


CONFIG_MUTATIONS = [
    Mutation("a value in range", "", False, _config_value(lambda draw, rng, default, name: _in_range(
        draw, rng, default, name))),
    Mutation("a value outside the range", "", True, _config_value(_outside)),
    Mutation("NaN", "", True, _config_value(lambda draw, rng, default, name: float("nan"))),
    Mutation("inf", "", True, _config_value(lambda draw, rng, default, name: float("inf"))),
    Mutation("-inf", "", True, _config_value(lambda draw, rng, default, name: float("-inf"))),
    Mutation("a fraction in an integer field (else text)", "", True, _config_value(
        lambda draw, rng, default, name: 2.5 if rng.integer else "3")),
    Mutation("a bool", "", True, _config_value(lambda draw, rng, default, name: True)),
    Mutation("text", "", True, _config_value(lambda draw, rng, default, name: "1")),
]


def _config_call(root: Path, case: tuple):
    (cls_name, name, _rng, _default), value = case
    build = config_classes()[cls_name][0]
    result = call_api(lambda: build(**{name: value}))

    def oracle(config: Any) -> bool:
        return getattr(config, name) == value

    if not result.ok and result.error is not None and name not in result.error:
        result.error += f"\n(the refusal does not name {name})"  # the field varies per case: `outcome` sees two lines
    return result, oracle


def cli_number_flags() -> list[tuple[str, str, Any, Any]]:
    """`(subcommand, flag, range, default)` for every numeric flag of every `eda` subcommand: those typed by a
    declared range, and the trainers' flags that set a ranged config field (checked when the config is built)."""
    import dataclasses

    from eda_adapters.cli import build_parser
    from eda_adapters.cli.train import COMMANDS
    from eda_adapters.schemas.config_ranges import RANGE_KEY

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    found = []
    for command, sub in sorted(subparsers.choices.items()):
        if command in COMMANDS:
            config_fields = {f.name: f for f in dataclasses.fields(COMMANDS[command][2]) if RANGE_KEY in f.metadata}
            found += [(command, f"--{name}", f.metadata[RANGE_KEY], f.default) for name, f in config_fields.items()
                      if name != "aux_layer_ids"]
            continue
        found += [(command, a.option_strings[-1], a.type.range, a.default) for a in sub._actions
                  if getattr(a.type, "range", None) is not None]
    return found


def _required_args(command: str, flag: str) -> list[str]:
    """Placeholder values for `command`'s required flags besides `flag` (the first of a required either-or group
    that `flag` is not in)."""
    from eda_adapters.cli import build_parser

    from eda_adapters.cli.train import COMMANDS

    if command in COMMANDS:  # the trainers' script arguments are checked once the flags are parsed
        return ["--target", "t", "--dataset", "d", "--output-dir", "o"] + ["--draft", "r"] * (command == "adapt")
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    sub = subparsers.choices[command]
    actions = [a for a in sub._actions if a.required and a.option_strings]
    actions += [g._group_actions[0] for g in sub._mutually_exclusive_groups
                if g.required and not any(flag in a.option_strings for a in g._group_actions)]
    return [part for a in actions for part in (a.option_strings[-1], "x" if a.type in (None, str) else "1")]


def _flag_value(make: Callable) -> Callable:
    return lambda draw, case: (case, make(draw, case[2], case[3], case[1].lstrip("-")))


def _as_text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


CLI_NUMBER_MUTATIONS = [
    Mutation("a value in range", "", False, _flag_value(lambda draw, rng, default, name: _as_text(_in_range(
        draw, rng, default, name)))),
    Mutation("a value outside the range", "", True, _flag_value(lambda draw, rng, d, n: _as_text(_outside(
        draw, rng, d, n)))),
    *[Mutation(text, "", True, _flag_value(lambda draw, rng, d, n, text=text: text))
      for text in ("nan", "inf", "x", "")],
    Mutation("a fraction for an integer (else text)", "", True, _flag_value(
        lambda draw, rng, d, n: "2.5" if rng.integer else "1,5")),
]


def _cli_number_call(root: Path, case: tuple):
    """Parse the subcommand's flags (and build a trainer's configs), running nothing: a refusal names the flag."""
    from eda_adapters.cli import build_parser
    from eda_adapters.cli.train import COMMANDS, resolve_arguments

    (command, flag, _rng, _default), value = case
    argv = [command, *_required_args(command, flag), f"{flag}={value}"]

    def parse():
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                args = build_parser().parse_args(argv)
        except SystemExit as exit_:
            lines = [line for line in err.getvalue().splitlines() if line.strip()]
            raise EdaInputError(lines[-1] if exit_.code == 2 and lines else f"exit {exit_.code}") from None
        if command in COMMANDS:
            resolve_arguments(command, args)
        return getattr(args, flag.lstrip("-").replace("-", "_"))

    result = call_api(parse)
    names = {flag.lstrip("-"), flag.lstrip("-").replace("-", "_"), flag.lstrip("-").replace("_", "-")}
    if not result.ok and result.error is not None and not any(n in result.error for n in names):
        result.error += f"\n(the refusal does not name {flag})"
    return result, lambda parsed: parsed == (int(value) if isinstance(parsed, int) else float(value))


# ------------------------------------------------------------------------------------------------------ the harness


@dataclass
class Tally:
    """Cases per kind and outcome, and the first few failing cases."""

    counts: dict[str, Counter] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)

    def add(self, kind: str, mutation: Mutation, result: Result, verdict: str) -> None:
        self.counts.setdefault(kind, Counter())[verdict] += 1
        if verdict not in GOOD_OUTCOMES and len(self.failures) < 50:
            self.failures.append({"kind": kind, "mutation": mutation.name, "outcome": verdict,
                                  "detail": (result.traceback or result.error or "")[-400:]})


def run_case(kind: InputKind, data: Any) -> tuple[Mutation, Result, str]:
    """Draw one case of `kind` (from `hypothesis`' `data`), run it in a fresh folder and judge it."""
    clean = data.draw(kind.clean, label="clean input")
    mutation = data.draw(st.sampled_from(kind.mutations), label="mutation")
    mutated = mutation.apply(data.draw, clean)
    with tempfile.TemporaryDirectory(prefix="eda-fuzz-") as tmp:
        root = Path(tmp)
        inputs = root / "inputs"
        inputs.mkdir()
        prepared = kind.prepare(inputs, mutated)
        before = tree_digest(inputs)
        result, oracle = kind.call(root, prepared)
        after = tree_digest(inputs)
        changed = any(after.get(name) != digest for name, digest in before.items())
        try:
            verdict = outcome(mutation, result, oracle, changed)
        except Exception as err:  # noqa: BLE001 (an output the oracle cannot even read is a wrong output)
            result.error = f"{result.error or ''} (oracle: {type(err).__name__}: {err})"
            verdict = "silent"
    return mutation, result, verdict


def fuzz(kind: InputKind, cases: int, tally: Tally, derandomize: bool = False) -> None:
    """Run `cases` generated cases of `kind`, recording every outcome in `tally` (nothing is raised)."""

    @settings(max_examples=cases, derandomize=derandomize, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=("generate",))
    @given(st.data())
    def one(data):
        mutation, result, verdict = run_case(kind, data)
        tally.add(kind.name, mutation, result, verdict)

    one()


# ------------------------------------------------------------------------------------------------------ model kinds

WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "what", "is", "two", "plus", "three", "write", "code", "why"]
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>"]


class Models:
    """A tiny random Llama target (vocabulary VOCAB), its EAGLE draft and a word-level tokenizer, built offline once."""

    _built: "Models | None" = None

    def __init__(self) -> None:
        import torch
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

        from eda_adapters import EagleDraftModel

        torch.manual_seed(0)
        self.target = LlamaForCausalLM(LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, eos_token_id=3, bos_token_id=2, pad_token_id=0)).eval()
        self.draft = EagleDraftModel.from_target(self.target).eval()
        vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
        backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                                 bos_token="<s>", eos_token="</s>")

    @classmethod
    def get(cls) -> "Models":
        if cls._built is None:
            cls._built = cls()
        return cls._built


# prompts files, through regenerate ---------------------------------------------------------------------------------


@st.composite
def prompt_rows(draw) -> list[dict]:
    """2 to 4 valid prompts: plain text or a chat conversation ending with a user turn."""
    text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
    rows = []
    for _ in range(draw(st.integers(2, 4))):
        if draw(st.booleans()):
            rows.append({"prompt": draw(text)})
        else:
            turns = [{"role": "system", "content": draw(text)}] if draw(st.booleans()) else []
            rows.append({"prompt": turns + [{"role": "user", "content": draw(text)}]})
    return rows


def _set_prompt(value: Any) -> Callable:
    def apply(draw, rows):
        rows = json.loads(json.dumps(rows))
        row = draw(st.integers(0, len(rows) - 1))
        if value is ...:
            rows[row] = {"other": "x"}
        else:
            rows[row]["prompt"] = value(rows[row]["prompt"]) if callable(value) else value
        return rows
    return apply


PROMPT_MUTATIONS = [
    Mutation("prompt: a number", "prompt", True, _set_prompt(7)),
    Mutation("prompt: null", "prompt", True, _set_prompt(None)),
    Mutation("prompt: empty text", "prompt", True, _set_prompt("")),
    Mutation("prompt: only spaces", "prompt", True, _set_prompt("   ")),
    Mutation("prompt: an object", "prompt", True, _set_prompt({"text": "the cat"})),
    Mutation("prompt: a list of strings", "prompt", True, _set_prompt(["the", "cat"])),
    Mutation("prompt: a missing key", "prompt", True, _set_prompt(...)),
    Mutation("turn: unknown role", "role", True, _set_prompt([{"role": "robot", "content": "the cat"}])),
    Mutation("turn: no user turn", "user turn", True, _set_prompt([{"role": "assistant", "content": "the cat"}])),
    Mutation("turn: content a number", "content", True, _set_prompt([{"role": "user", "content": 12}])),
    Mutation("turn: empty conversation", "prompt", True, _set_prompt([])),
    Mutation("an extra column", "", False, lambda draw, rows: [{**r, "note": "x"} for r in rows]),
]
PROMPT_FILE_MUTATIONS = [as_file_mutation(m) for m in PROMPT_MUTATIONS] + [on_file(m) for m in FILE_MUTATIONS]


def _regenerate_api(root: Path, path: Path):
    from eda_adapters.data import regenerate
    from eda_adapters.data.io import load_tokenized_rows

    models = Models.get()
    out = root / "out"
    result = call_api(lambda: regenerate(models.target, models.tokenizer, path, out, max_new_tokens=2, batch_size=4,
                                         use_chat_template=False, show_progress=False))

    def oracle(rows: Any) -> bool:
        expected = len(parse_rows(path.read_bytes()))
        written = load_tokenized_rows(out, vocab_size=VOCAB)
        return len(rows) == expected and len(written) == expected
    return result, oracle


# tensors, through speculative_generate and the draft's forward ----------------------------------------------------


@st.composite
def prompt_tensor(draw) -> dict:
    """A valid call of `speculative_generate`: a `[1, seq]` prompt of ordinary ids, chain or tree drafting."""
    import torch

    ids = draw(st.lists(st.integers(4, VOCAB - 1), min_size=2, max_size=6))
    return {"input_ids": torch.tensor([ids]), "attention_mask": None, "tree": draw(st.booleans())}


def _tensor(change: Callable[[dict], dict]) -> Callable:
    return lambda draw, case: {**case, **change(case)}


def _tensor_ops():
    import torch

    def with_id(value):
        def change(case):
            ids = case["input_ids"].clone()
            ids[0, -1] = value
            return {"input_ids": ids}
        return change

    return [
        Mutation("input_ids: float dtype", "dtype", True, _tensor(lambda c: {"input_ids": c["input_ids"].float()})),
        Mutation("input_ids: bool dtype", "dtype", True, _tensor(lambda c: {"input_ids": c["input_ids"].bool()})),
        Mutation("input_ids: 3-D", "shape", True, _tensor(lambda c: {"input_ids": c["input_ids"][None]})),
        Mutation("input_ids: no token", "no token", True, _tensor(lambda c: {"input_ids": c["input_ids"][:, :0]})),
        Mutation("input_ids: id == vocab size", "vocabulary", True, _tensor(with_id(VOCAB))),
        Mutation("input_ids: a negative id", "vocabulary", True, _tensor(with_id(-1))),
        Mutation("input_ids: batch of 2", "batch size", True,
                 _tensor(lambda c: {"input_ids": c["input_ids"].repeat(2, 1)})),
        Mutation("input_ids: a list", "LongTensor", True, _tensor(lambda c: {"input_ids": c["input_ids"].tolist()})),
        Mutation("attention_mask: wrong length", "attention_mask", True,
                 _tensor(lambda c: {"attention_mask": torch.ones(1, c["input_ids"].shape[1] + 1, dtype=torch.long)})),
        Mutation("attention_mask: a 2", "attention_mask", True,
                 _tensor(lambda c: {"attention_mask": torch.full_like(c["input_ids"], 2)})),
        Mutation("input_ids: 1-D", "", False, _tensor(lambda c: {"input_ids": c["input_ids"][0]})),
        Mutation("input_ids: int32", "", False, _tensor(lambda c: {"input_ids": c["input_ids"].int()})),
        Mutation("attention_mask: all ones", "", False,
                 _tensor(lambda c: {"attention_mask": torch.ones_like(c["input_ids"])})),
    ]


def _generate_api(root: Path, case: dict):
    import torch

    from eda_adapters import TreeConfig, speculative_generate

    models = Models.get()
    tree = TreeConfig(depth=3, top_k=2, total_tokens=6) if case["tree"] else None
    result = call_api(lambda: speculative_generate(models.target, models.draft, case["input_ids"], tree=tree,
                                                   attention_mask=case["attention_mask"], max_new_tokens=4))

    def oracle(output: torch.Tensor) -> bool:
        prompt = torch.as_tensor(case["input_ids"]).long().reshape(1, -1)
        greedy = models.target.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4,
                                        do_sample=False, pad_token_id=0)
        return torch.equal(output, greedy)
    return result, oracle


@st.composite
def draft_inputs(draw) -> dict:
    """A valid call of the draft's forward: `[1, seq]` ids and `[1, seq, hidden]` target features."""
    import torch

    seq = draw(st.integers(1, 5))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 16)))
    return {"input_ids": torch.randint(4, VOCAB, (1, seq), generator=generator),
            "hidden_states": torch.randn(1, seq, 32, generator=generator)}


def _forward_ops():
    import torch

    return [
        Mutation("hidden_states: wrong width", "size", True,
                 _tensor(lambda c: {"hidden_states": c["hidden_states"][..., :16]})),
        Mutation("hidden_states: 2-D", "hidden_states", True,
                 _tensor(lambda c: {"hidden_states": c["hidden_states"][0]})),
        Mutation("hidden_states: integer dtype", "hidden_states", True,
                 _tensor(lambda c: {"hidden_states": c["hidden_states"].long()})),
        Mutation("hidden_states: one position short", "hidden_states", True,
                 _tensor(lambda c: {"hidden_states": torch.cat([c["hidden_states"]] * 2, 1)})),
        Mutation("hidden_states: batch of 2", "hidden_states", True,
                 _tensor(lambda c: {"hidden_states": c["hidden_states"].repeat(2, 1, 1)})),
        Mutation("hidden_states: missing", "hidden_states", True, _tensor(lambda c: {"hidden_states": None})),
        Mutation("input_ids: float dtype", "dtype", True, _tensor(lambda c: {"input_ids": c["input_ids"].float()})),
        Mutation("input_ids: 3-D", "shape", True, _tensor(lambda c: {"input_ids": c["input_ids"][None]})),
        Mutation("input_ids: 1-D", "", False, _tensor(lambda c: {"input_ids": c["input_ids"][0]})),
        Mutation("input_ids: int32", "", False, _tensor(lambda c: {"input_ids": c["input_ids"].int()})),
    ]


def _forward_api(root: Path, case: dict):
    import torch

    models = Models.get()
    with torch.no_grad():
        result = call_api(lambda: models.draft(input_ids=case["input_ids"], hidden_states=case["hidden_states"]))

    def oracle(output: Any) -> bool:
        ids = torch.as_tensor(case["input_ids"]).long().reshape(1, -1)
        with torch.no_grad():
            clean = models.draft(input_ids=ids, hidden_states=case["hidden_states"])
        return torch.allclose(output.logits, clean.logits)
    return result, oracle


def _no_files(inputs: Path, case: Any) -> Any:
    return case


# ---------------------------------------------------------------------------------------------- cached features


class FeatureDir:
    """A feature directory extracted once from the tiny target (4 samples, 2 shards) and its first sample."""

    _built: "FeatureDir | None" = None

    def __init__(self) -> None:
        import torch
        from datasets import Dataset

        from eda_adapters.data import extract_features

        self._tmp = tempfile.TemporaryDirectory(prefix="eda-fuzz-features-")
        self.path = Path(self._tmp.name) / "features"
        ids = torch.randint(4, VOCAB, (4, 6), generator=torch.Generator().manual_seed(0)).tolist()
        rows = Dataset.from_dict({"input_ids": ids, "loss_mask": [[0, 0, 1, 1, 1, 1]] * 4})
        extract_features(Models.get().target, rows, self.path, batch_size=2, show_progress=False)
        self.index = json.loads((self.path / "index.json").read_text())
        self.first = self.read(self.path)

    @staticmethod
    def read(path: Path) -> dict:
        from eda_adapters.data import CachedFeatureDataset

        return {key: value.tolist() for key, value in CachedFeatureDataset(path)[0].items()}

    @classmethod
    def get(cls) -> "FeatureDir":
        if cls._built is None:
            cls._built = cls()
        return cls._built


def _index_edit(key: str, change: Callable[[Any, Any], Any]) -> Callable:
    """A mutation of the index: `change(draw, index)` edits a copy in place; the result is the file's bytes."""
    def apply(draw, index: dict) -> bytes:
        edited = json.loads(json.dumps(index))
        change(draw, edited)
        return (json.dumps(edited, indent=1) + "\n").encode()
    return apply


def _set_key(key: str, values: Any) -> Callable:
    """Set `key` to a value drawn from the strategy `values`."""
    return _index_edit(key, lambda draw, index: index.__setitem__(key, draw(values)))


def _shard_edit(change: Callable[[Any, dict], None]) -> Callable:
    """Edit one drawn shard entry: `change(draw, shard)`."""
    return _index_edit("shards", lambda draw, index: change(draw, draw(st.sampled_from(index["shards"]))))


def _resample(change: Callable[[Any, list], list]) -> Callable:
    return _shard_edit(lambda draw, shard: shard.__setitem__("samples", change(draw, shard["samples"])))


def _index_text(text: Callable[[Any, bytes], bytes]) -> Callable:
    return lambda draw, index: text(draw, (json.dumps(index, indent=1) + "\n").encode())


def _not(values: Any, *valid: Any) -> Any:
    return values.filter(lambda v: v not in valid or isinstance(v, bool))


_NOT_A_COUNT = st.one_of(st.integers(-5, 0), st.floats(), st.text(max_size=3), st.booleans(), st.none())
INDEX_MUTATIONS = [
    Mutation("another format", "format", True, _set_key("format", _not(st.text(max_size=20), "eda-features/1"))),
    *[Mutation(f"no {key}", key, True, _index_edit(key, lambda draw, index, key=key: index.pop(key)))
      for key in ("target", "hidden_size", "num_samples", "dtype", "shards")],
    Mutation("hidden_size not the target's", "hidden_size", True, _set_key("hidden_size", _not(st.one_of(
        _NOT_A_COUNT, st.integers(1, 4096)), 32))),
    Mutation("num_samples not a count", "num_samples", True, _set_key("num_samples", _NOT_A_COUNT)),
    Mutation("num_samples not the shards'", "num_samples", True, _set_key("num_samples", _not(st.integers(1, 99), 4))),
    Mutation("num_tokens below 0 or not a count", "num_tokens", True, _set_key("num_tokens", st.one_of(
        st.integers(max_value=-1), st.floats(), st.text(max_size=3), st.none()))),
    Mutation("dtype unknown", "dtype", True, _set_key("dtype", _not(st.text(max_size=9), "bfloat16", "float16",
                                                                    "float32"))),
    Mutation("layers out of range, repeated or not numbers", "layers", True, _set_key("layers", st.one_of(
        st.lists(st.integers(3, 99), min_size=1, max_size=3), st.just([]), st.just([1, 1]),
        st.lists(st.text(max_size=2), min_size=1, max_size=2), st.integers(), st.lists(st.integers(-9, -1),
                                                                                        min_size=1)))),
    Mutation("num_hidden_layers not a count", "num_hidden_layers", True, _set_key("num_hidden_layers", st.one_of(
        st.integers(max_value=-1), st.floats(), st.text(max_size=2)))),
    Mutation("source unknown", "source", True, _set_key("source", _not(st.text(max_size=9), "extraction",
                                                                       "generation"))),
    Mutation("target without an identity key", "target", True, _index_edit("target", lambda draw, index: index[
        "target"].pop(draw(st.sampled_from(["fingerprint", "hidden_size", "vocab_size"]))))),
    Mutation("shards empty or not a list", "shards", True, _set_key("shards", st.sampled_from([[], {}, "x", 3]))),
    Mutation("shard file outside, missing or not a path", "shards", True, _shard_edit(
        lambda draw, shard: shard.__setitem__("file", draw(st.one_of(
            st.sampled_from(["../index.json", "/etc/hostname", "", "chunks\\x.safetensors", "chunks/../../x"]),
            st.text("abc", min_size=1, max_size=5).map(lambda t: f"chunks/{t}.safetensors")))))),
    Mutation("a sample twice", "shards", True, _resample(lambda draw, samples: samples + [draw(st.sampled_from(
        samples))])),
    Mutation("a sample dropped", "shards", True, _resample(lambda draw, samples: samples[:-1])),
    Mutation("a sample beyond", "shards", True, _resample(lambda draw, samples: samples + [draw(st.integers(4,
                                                                                                       10**6))])),
    Mutation("samples not numbers", "shards", True, _resample(lambda draw, samples: [draw(st.one_of(
        st.text(max_size=2), st.floats(), st.integers(max_value=-1)))] + samples)),
    Mutation("a list, not an object", "object", True, lambda draw, index: b"[1, 2]\n"),
    Mutation("a truncated file", "json", True, _index_text(lambda draw, data: data[: draw(st.integers(
        1, len(data) - 3))])),
    Mutation("not UTF-8 (latin-1)", "UTF-8", True, _index_text(lambda draw, data: data.replace(
        b'"format"', b'"f\xe9"', 1))),
    Mutation("a key twice", "twice", True, _index_text(lambda draw, data: data.replace(b"{", b'{"' + draw(
        st.sampled_from([b"dtype", b"format", b"num_samples"])) + b'": 1, ', 1))),
    Mutation("a BOM", "", False, _index_text(lambda draw, data: b"\xef\xbb\xbf" + data)),
    Mutation("compact JSON", "", False, lambda draw, index: json.dumps(index, separators=(",", ":")).encode()),
    Mutation("an extra key", "", False, _index_edit("", lambda draw, index: index.__setitem__(
        draw(st.text("xyz_", min_size=1, max_size=8)), draw(st.integers())))),
]


def _features_prepare(inputs: Path, data: bytes) -> Path:
    import shutil

    path = inputs / "features"
    shutil.copytree(FeatureDir.get().path, path)
    (path / "index.json").write_bytes(data)
    return path


def _features_call(root: Path, path: Path):
    return call_api(lambda: FeatureDir.read(path)), lambda first: first == FeatureDir.get().first


def model_kinds() -> list[InputKind]:
    """The input kinds that run a (tiny, random) model."""
    return [
        InputKind("prompts file", "regenerate (API)", prompt_rows(), PROMPT_FILE_MUTATIONS,
                  _write_file("prompts.jsonl"), _regenerate_api),
        InputKind("prompt tensors", "speculative_generate (API)", prompt_tensor(), _tensor_ops(), _no_files,
                  _generate_api),
        InputKind("draft inputs", "EagleDraftModel.forward (API)", draft_inputs(), _forward_ops(), _no_files,
                  _forward_api),
        InputKind("cached features' index", "CachedFeatureDataset (API)", st.builds(lambda: FeatureDir.get().index),
                  INDEX_MUTATIONS, _features_prepare, _features_call),
    ]


def all_kinds() -> list[InputKind]:
    return file_kinds() + model_kinds()


# ------------------------------------------------------------------------------------------------------ the report


def markdown(tally: Tally, kinds: list[InputKind], command: str, seconds: float, machine: str) -> str:
    """The table of cases per kind and outcome, for `docs/reliability.md`."""
    columns = ["refused", "accepted", "unnamed", "traceback", "silent", "false refusal", "changed bytes"]
    lines = ["| input kind | entry point | mutations | " + " | ".join(columns) + " | cases |",
             "|---|---|---:|" + "---:|" * (len(columns) + 1)]
    total = Counter()
    for kind in kinds:
        counts = tally.counts.get(kind.name, Counter())
        total.update(counts)
        lines.append(f"| {kind.name} | `{kind.entry}` | {len(kind.mutations)} | "
                     + " | ".join(str(counts[c]) for c in columns) + f" | {sum(counts.values())} |")
    lines.append(f"| **all** | | {sum(len(k.mutations) for k in kinds)} | "
                 + " | ".join(f"**{total[c]}**" for c in columns) + f" | **{sum(total.values())}** |")
    return "\n".join([
        f"Command: `{command}`", f"({seconds:.0f} s on {machine}).", "", *lines, "",
        *([f"First failures: {json.dumps(tally.failures[:5])}"] if tally.failures else []),
    ])


def write_section(path: Path, table: str, script: str = "fuzz_inputs.py") -> None:
    """Replace `script`'s generated section of `path` (between its start and end markers) with `table`; a file
    without the markers gets the section appended."""
    start, end = f"<!-- {script}: start -->", f"<!-- {script}: end -->"
    text = path.read_text() if path.is_file() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = f"{head}{start}\n{table}\n{end}{rest.split(end, 1)[1]}"
    else:
        text = f"{text}{start}\n{table}\n{end}\n"
    path.write_text(text)


def command_and_machine(parser: argparse.ArgumentParser, args: argparse.Namespace, script: str) -> tuple[str, str]:
    """The command that repeats this run (its options that differ from the defaults) and the machine it ran on."""
    import platform

    import torch

    machine = f"{platform.machine()}, {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"
    options = " ".join(f"--{k} {shlex.quote(str(v))}" for k, v in vars(args).items()
                       if v is not None and v != parser.get_default(k))
    return f"python benchmarks/{script} {options}".strip(), machine


def publish(args: argparse.Namespace, script: str, table: str, record: dict) -> None:
    """Print `table`, write it as `script`'s section of `args.markdown` and `record` as `args.json`, where given."""
    print(table)
    if args.markdown:
        write_section(Path(args.markdown), table, script=script)
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1300, help="Generated cases per input kind (default 1300).")
    parser.add_argument("--kinds", default=None, help="Comma-separated kind names (default: all).")
    parser.add_argument("--json", default=None, help="Write the counts and the first failures here.")
    parser.add_argument("--markdown", default=None, help="Write the table here (a file of its own, or a section).")
    args = parser.parse_args()

    from datasets import disable_progress_bars
    from datasets.utils.logging import set_verbosity_error

    disable_progress_bars()
    set_verbosity_error()  # datasets logs each file it cannot parse before our one-line refusal
    kinds = [k for k in all_kinds() if args.kinds is None or k.name in args.kinds.split(",")]
    tally, start = Tally(), time.perf_counter()
    for kind in kinds:
        fuzz(kind, args.cases, tally)
        print(f"{kind.name}: {dict(tally.counts[kind.name])}", flush=True)
    seconds = time.perf_counter() - start
    command, machine = command_and_machine(parser, args, "fuzz_inputs.py")
    publish(args, "fuzz_inputs.py", markdown(tally, kinds, command, seconds, machine), {
        "counts": {k: dict(v) for k, v in tally.counts.items()}, "failures": tally.failures, "seconds": seconds,
        "machine": machine, "command": command})


if __name__ == "__main__":
    main()
