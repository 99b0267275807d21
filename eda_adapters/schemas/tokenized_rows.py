"""The schema of tokenized rows: regenerated data, selections and scores files, whoever reads them.

| column | type | rule |
|---|---|---|
| `input_ids` | list of integers | every id in `[0, vocab)` of the target that reads them; at least one per row |
| `loss_mask`, `attention_mask` | list of 0/1 integers or booleans | as long as the row's `input_ids` |
| `shift_score` | number | finite |
| `base_embedding` | list of numbers | finite, one width for every row |
| `prompt`, `response` | string (a `prompt` may be a chat message list) | not missing |

Floats that happen to load as ids (`3.0` in a JSON file) are refused: a file that holds them was not written by a
tokenizer. Every rule is one `pyarrow.compute` pass over a whole column (min, max, lengths, is-finite, null counts),
never a Python loop per token; the rows at fault are looked up only once a rule has failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import EdaInputError

TOKEN_COLUMN = "input_ids"
MASK_COLUMNS = ("loss_mask", "attention_mask")
#: Where `add_shift_scores` stores each sample's representation shift.
SCORE_COLUMN = "shift_score"
#: Where `add_shift_scores` stores each sample's base-target embedding (see `selection.pool_embeddings`).
EMBEDDING_COLUMN = "base_embedding"
TEXT_COLUMNS = ("prompt", "response")
#: The fix every refusal of the scores or embeddings names.
RESCORE = "recompute the scores (eda select --recompute, or select_by_shift(recompute=True))"
#: How many offending rows a message names before it gives only the count.
SHOWN_ROWS = 5


def check_tokenized_rows(
    rows: Any,
    *,
    vocab_size: int | None = None,
    source: str = "the dataset",
    required: Sequence[str] = (TOKEN_COLUMN,),
) -> None:
    """Refuse `rows` (a `datasets.Dataset` or a `pyarrow.Table`) unless every column this schema knows obeys its rule
    (see the module docstring); `vocab_size` bounds the token ids, `required` names the columns that must exist.
    Columns the schema does not know are left alone. Raises [`EdaInputError`] naming `source`, the column, the
    first rows at fault with their count, and the fix."""
    table = arrow_table(rows)
    missing = [column for column in required if column not in table.column_names]
    if missing:
        raise EdaInputError(f"{source} needs column(s) {missing}; it has columns {table.column_names}")
    lengths = None
    if TOKEN_COLUMN in table.column_names:
        column = _integer_lists(table[TOKEN_COLUMN], TOKEN_COLUMN, source, "write token ids as integers, as a "
                                "tokenizer returns them")
        lengths = pc.list_value_length(column)
        _refuse_rows(pc.equal(lengths, 0), source, TOKEN_COLUMN, "is empty",
                     "drop rows without tokens")
        low, high = _min_max(column)
        if low is not None and low < 0:
            _refuse_elements(column, lambda v: pc.less(v, 0), source, TOKEN_COLUMN,
                             f"holds negative ids (down to {low})", "token ids are >= 0: regenerate the rows")
        if vocab_size is not None and high is not None and high >= vocab_size:
            _refuse_elements(column, lambda v: pc.greater_equal(v, vocab_size), source, TOKEN_COLUMN,
                             f"holds ids outside [0, {vocab_size}) (up to {high})",
                             "the rows were tokenized for another model: regenerate them with this target")
    for name in MASK_COLUMNS:
        if name in table.column_names:
            _check_mask(table[name], lengths, name, source)
    if SCORE_COLUMN in table.column_names:
        _check_scores(table[SCORE_COLUMN], source)
    if EMBEDDING_COLUMN in table.column_names:
        _check_embeddings(table[EMBEDDING_COLUMN], source)
    for name in TEXT_COLUMNS:
        if name in table.column_names:
            _check_text(table[name], name, source)


def arrow_table(rows: Any) -> pa.Table:
    """The Arrow table behind a `datasets.Dataset` (its selected rows, zero-copy when it holds no index mapping)."""
    if isinstance(rows, pa.Table):
        return rows
    return rows.with_format("arrow")[:]


# ------------------------------------------------------------------------------------------------------ columns


def _integer_lists(column: pa.ChunkedArray, name: str, source: str, fix: str) -> pa.ChunkedArray:
    """`column` if it is a list of integers (or booleans, for masks) without nulls, else a refusal."""
    kind = column.type
    if not _is_list(kind):
        raise EdaInputError(f"{source}: column {name!r} holds {_describe(kind)}, not lists of integers; {fix}")
    values = kind.value_type
    _refuse_rows(column.is_null(), source, name, "is missing (null)", "give every row a list")
    if pa.types.is_null(values):  # only empty lists: no element type was inferred
        return column
    if not (pa.types.is_integer(values) or pa.types.is_boolean(values)):
        raise EdaInputError(f"{source}: column {name!r} holds lists of {_describe(values)}, not integers; {fix}")
    if pc.list_flatten(column).null_count:  # a count Arrow keeps: no pass over the values
        _refuse_elements(column, pc.is_null, source, name, "holds a missing (null) value", fix)
    return column


def _check_mask(column: pa.ChunkedArray, lengths: pa.ChunkedArray | None, name: str, source: str) -> None:
    fix = "a mask holds 0 or 1 for each token of input_ids"
    column = _integer_lists(column, name, source, fix)
    if lengths is not None:
        own = pc.list_value_length(column)
        _refuse_rows(pc.not_equal(own, lengths), source, name, "is not as long as input_ids", fix,
                     detail=lambda row: f"row {row} has {lengths[row]} input_ids and {own[row]} {name} values")
    if not pa.types.is_boolean(column.type.value_type):
        low, high = _min_max(column)
        if low is not None and (low < 0 or high > 1):
            _refuse_elements(column, lambda v: pc.or_(pc.less(v, 0), pc.greater(v, 1)), source, name,
                             f"holds values other than 0 and 1 (from {low} to {high})", fix)


def _check_scores(column: pa.ChunkedArray, source: str) -> None:
    fix = RESCORE
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise EdaInputError(f"{source}: column {SCORE_COLUMN!r} holds {_describe(column.type)}, not numbers; {fix}")
    _refuse_rows(column.is_null(), source, SCORE_COLUMN, "is missing (null)", fix)
    if pa.types.is_floating(column.type):
        _refuse_rows(pc.invert(pc.is_finite(column)), source, SCORE_COLUMN, "is not finite (NaN or inf)", fix)


def _check_embeddings(column: pa.ChunkedArray, source: str) -> None:
    fix = RESCORE
    kind = column.type
    if not _is_list(kind) or not (pa.types.is_integer(kind.value_type) or pa.types.is_floating(kind.value_type)):
        raise EdaInputError(f"{source}: column {EMBEDDING_COLUMN!r} holds {_describe(kind)}, not lists of numbers; "
                            f"{fix}")
    _refuse_rows(column.is_null(), source, EMBEDDING_COLUMN, "is missing (null)", fix)
    lengths = pc.list_value_length(column)
    if len(column):
        width = lengths[0].as_py()
        _refuse_rows(pc.not_equal(lengths, width), source, EMBEDDING_COLUMN,
                     f"is not {width} wide like the first row's", fix)
    if pa.types.is_floating(kind.value_type):
        _refuse_elements(column, lambda v: pc.invert(pc.is_finite(v)), source, EMBEDDING_COLUMN,
                         "holds a value that is not finite (NaN or inf)", fix)
    if pc.list_flatten(column).null_count:
        _refuse_elements(column, pc.is_null, source, EMBEDDING_COLUMN, "holds a missing (null) value", fix)


def _check_text(column: pa.ChunkedArray, name: str, source: str) -> None:
    kind = column.type
    is_messages = name == "prompt" and (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and pa.types.is_struct(
        kind.value_type)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or is_messages):
        raise EdaInputError(f"{source}: column {name!r} holds {_describe(kind)}, not text; write each {name} as a "
                            "string" + (" or a list of chat messages" if name == "prompt" else ""))
    _refuse_rows(column.is_null(), source, name, "is missing (null)", f"give every row a {name}")


# ------------------------------------------------------------------------------------------------------ reporting


def _min_max(column: pa.ChunkedArray) -> tuple[Any, Any]:
    """The smallest and largest element of a list column (None, None when it holds none)."""
    result = pc.min_max(pc.list_flatten(column))
    return result["min"].as_py(), result["max"].as_py()


def _refuse_rows(bad: pa.ChunkedArray | pa.Array, source: str, column: str, problem: str, fix: str,
                 detail: Callable[[int], str] | None = None) -> None:
    """Raise naming the rows where the boolean `bad` is true, if any (`detail(first row)` adds what is wrong there)."""
    bad = pc.fill_null(bad, False)
    if not pc.any(bad).as_py():
        return
    rows = pc.indices_nonzero(bad).to_numpy()
    _raise(rows, source, column, problem, fix if detail is None else f"{detail(int(rows[0]))}: {fix}")


def _refuse_elements(column: pa.ChunkedArray, predicate: Callable[[Any], Any], source: str, name: str,
                     problem: str, fix: str) -> None:
    """Raise naming the rows of the list `column` holding an element for which `predicate` is true, if any."""
    if not pc.any(pc.fill_null(predicate(pc.list_flatten(column)), True)).as_py():
        return
    rows, offset = [], 0
    for chunk in column.chunks:  # only once a rule has failed: which rows hold the bad elements
        parents = pc.list_parent_indices(chunk).to_numpy()
        flags = pc.fill_null(predicate(pc.list_flatten(chunk)), True).to_numpy(zero_copy_only=False)
        rows.append(np.unique(parents[flags]) + offset)
        offset += len(chunk)
    _raise(np.concatenate(rows), source, name, problem, fix)


def _raise(rows: np.ndarray, source: str, column: str, problem: str, fix: str) -> None:
    shown = ", ".join(str(int(row)) for row in rows[:SHOWN_ROWS])
    more = f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else ""
    plural = "rows" if len(rows) > 1 else "row"
    raise EdaInputError(f"{source}: column {column!r} {problem} in {len(rows)} {plural} ({plural} {shown}{more}); "
                        f"{fix}")


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def _describe(kind: pa.DataType) -> str:
    if pa.types.is_floating(kind):
        return "floats"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "strings"
    if pa.types.is_null(kind):
        return "only nulls"
    return str(kind)


__all__ = ["EMBEDDING_COLUMN", "SCORE_COLUMN", "arrow_table", "check_tokenized_rows"]
