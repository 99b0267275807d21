"""Up-front checks of what users hand the library: files that must parse, configs that must type-check, models that
must be decoder-only causal LMs, output directories that must be safe to write. Each raises a one-line
[`EdaInputError`] naming the input and the fix, before any expensive work starts.
"""

from __future__ import annotations

import json
import os
import struct
import types
import typing
from pathlib import Path
from collections.abc import Iterable
from typing import Any

from .errors import EdaInputError

# ------------------------------------------------------------------------------------------------------ text files


def find_json_lines_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a JSON Lines (or JSON) file, naming the file and the line; `None` if it reads fine."""
    path = Path(path)
    try:
        check_utf8(path)
    except EdaInputError as err:
        return str(err)
    text = path.read_text(encoding="utf-8-sig")  # a BOM is not an error
    if not text.strip():
        return f"{path} is empty: it needs one JSON object per line"
    if path.suffix.lower() == ".json":
        try:
            json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
            return None
        except _DuplicateKey as err:
            return f"{path}: the key {err.args[0]!r} appears twice in one object; keep one"
        except json.JSONDecodeError:
            pass  # a .json file may hold JSON lines too: check them one by one
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_refuse_duplicate_keys)
        except json.JSONDecodeError as err:
            return f"{path}, line {number}: not valid JSON ({err.msg} at column {err.colno}); fix or remove that row"
        except _DuplicateKey as err:
            return f"{path}, line {number}: the key {err.args[0]!r} appears twice in one object; keep one"
        if not isinstance(row, dict):
            return f"{path}, line {number}: a {type(row).__name__}, not a JSON object of columns; fix that row"
    return None


class _DuplicateKey(Exception):
    pass


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique (readers disagree on which of two values wins: Python keeps the last,
    Arrow refuses the file)."""
    row = dict(pairs)
    if len(row) != len(pairs):
        raise _DuplicateKey(next(key for i, (key, _) in enumerate(pairs) if key in dict(pairs[:i])))
    return row


def check_utf8(path: str | os.PathLike, what: str = "") -> None:
    """Refuse a file that is not UTF-8 text, naming it and the line of the first bad byte (read in chunks)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = lines = 0
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(1 << 20)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                bad = err.start - len(err.object) + len(chunk)  # the decoder prepends an unfinished sequence
                bad = max(bad, 0)
                line = lines + chunk[:bad].count(b"\n") + 1
                raise EdaInputError(
                    f"{(what + ' ') if what else ''}{path} is not UTF-8 text: line {line} holds byte "
                    f"{chunk[bad:bad + 1]!r} (offset {offset + bad}); save the file as UTF-8"
                ) from None
            if not chunk:
                return
            lines += chunk.count(b"\n")
            offset += len(chunk)


def read_text_file(path: str | os.PathLike, what: str) -> str:
    """The UTF-8 text of `path` without a BOM, with a one-line error naming the file (and `what` it is) if it is
    missing or not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise EdaInputError(f"{what}: no file at {path}")
    check_utf8(path, what)
    return path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors write one) is not part of the text


# ------------------------------------------------------------------------------------------------------ safetensors


def check_safetensors_file(path: str | os.PathLike, what: str = "weights") -> None:
    """Refuse a truncated or corrupt `.safetensors` file (reads only its header)."""
    path = Path(path)
    size = path.stat().st_size
    problem = None
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            problem = f"{size} bytes, shorter than a safetensors header"
        else:
            (header_size,) = struct.unpack("<Q", head)
            if header_size > size - 8:
                problem = f"its header claims {header_size} bytes, the file has {size}"
            else:
                try:
                    header = json.loads(handle.read(header_size))
                    end = max(
                        (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0
                    )
                    if 8 + header_size + end > size:
                        problem = f"its tensors need {8 + header_size + end} bytes, the file has {size}"
                except (ValueError, KeyError, TypeError, IndexError, AttributeError):
                    problem = "its header is not readable"
    if problem:
        raise EdaInputError(
            f"{what} file {path} is damaged ({problem}: truncated or not safetensors); re-download or re-save it"
        )


def check_weight_files(directory: str | os.PathLike, what: str) -> None:
    """Check every `.safetensors` file directly inside `directory` (a model, draft or adapter directory)."""
    directory = Path(directory)
    if directory.is_dir():
        for file in sorted(directory.glob("*.safetensors")):
            check_safetensors_file(file, what)


def check_model_dir(
    path: str | os.PathLike | None, flag: str, what: str, required: bool = False, config_file: str = "config.json"
) -> None:
    """Refuse damaged weights in a model, draft or adapter directory before anything is loaded; with `required`, the
    directory must exist and hold `config_file` (drafts and adapters are directories, never Hub ids or single files)."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        if required and not (path / config_file).is_file():
            found = "an EDA adapter" if (path / "adapter_config.json").is_file() else (
                "a model or draft" if (path / "config.json").is_file() else "no saved model")
            raise EdaInputError(f"{flag}: {path} has no {config_file} (it holds {found}); pass the directory of a saved "
                                f"{what}")
        check_weight_files(path, flag)
    elif required:
        state = "is a file, not a directory" if path.exists() else "does not exist"
        raise EdaInputError(f"{flag}: {path} {state}; pass the directory of a saved {what}")


# ------------------------------------------------------------------------------------------------------ directories


def check_output_path(path: str | os.PathLike, flag: str) -> None:
    """An output directory must not be a file, nor lie under one (checked before any work, not when saving)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                where = "is a file" if candidate == path else f"lies under the file {candidate}"
                raise EdaInputError(f"{flag} {path} {where}: pass a directory path")
            return


def check_disjoint(output: str | os.PathLike, inputs: dict[str, str | os.PathLike | None], flag: str) -> None:
    """Refuse an output directory that is, contains or lies inside one of `inputs` ({flag: path}): writing it would
    delete or mix with the input."""
    out = Path(output).resolve()
    for name, source in inputs.items():
        if source is None or not Path(source).exists():
            continue
        src = Path(source).resolve()
        if out == src or src in out.parents or out in src.parents:
            relation = "is" if out == src else ("lies inside" if src in out.parents else "contains")
            raise EdaInputError(
                f"{flag} {output} {relation} the input {name} {source}: writing it would destroy the input; choose "
                "another output directory"
            )


# ------------------------------------------------------------------------------------------------------ models


def check_causal_lm(model: Any, what: str = "the model") -> None:
    """Require a decoder-only causal LM: a masked LM (e.g. BERT) also loads through `AutoModelForCausalLM`
    (as `BertLMHeadModel`), but attends both ways and cannot generate or serve as a target."""
    from .models.eagle.modeling_eagle import _check_causal_lm

    try:
        _check_causal_lm(model)
    except TypeError as err:
        raise EdaInputError(f"{what}: {err}") from None


def load_adapter_checked(
    draft: Any, adapter_path: str | os.PathLike, flag: str = "--adapter", allow_fingerprint_mismatch: bool = False,
    **kwargs: Any,
) -> Any:
    """`PeftModel.from_pretrained(draft, adapter_path, **kwargs)` for user input: damaged weights, an
    `adapter_config.json` that disagrees with its weights and an adapter of another draft (unless
    `allow_fingerprint_mismatch`) are refused in one line naming the adapter."""
    from peft import PeftModel

    from .errors import draft_mismatch_refused

    check_model_dir(adapter_path, flag, "adapter (PeftModel.save_pretrained)", True, "adapter_config.json")
    with draft_mismatch_refused(allow_fingerprint_mismatch):
        try:
            return PeftModel.from_pretrained(draft, str(adapter_path), **kwargs)
        except EdaInputError as err:  # e.g. weights that disagree with adapter_config.json: name the adapter
            raise EdaInputError(f"{flag} {adapter_path}: {err}") from None


# ------------------------------------------------------------------------------------------------------ YAML configs


def read_yaml_mapping(path: str | os.PathLike, what: str = "config") -> dict[str, Any]:
    """The mapping of a YAML file; malformed YAML is reported with its file, line and column."""
    import yaml

    if not os.path.isfile(path):
        state = "is a directory, not a file" if os.path.isdir(path) else "does not exist"
        raise FileNotFoundError(f"{what} file {path} {state}")
    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle)
    except UnicodeDecodeError:
        raise EdaInputError(f"{what} file {path} is not UTF-8 text; save it as UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise EdaInputError(f"{what} file {path}{where}: malformed YAML ({problem}); fix the file") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise EdaInputError(
            f"{what} file {path} must hold a YAML mapping of names to values, got a {type(values).__name__}"
        )
    return values


_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _coerce(value: Any, hint: Any) -> Any:
    """`value` as type `hint` the way a command-line flag would be converted; raises ValueError if it cannot be."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        for option in options:  # the first type the value converts to, in declaration order (as HfArgumentParser)
            try:
                return _coerce(value, option)
            except (ValueError, TypeError):
                continue
        raise ValueError
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLS:
            return _BOOLS[value.strip().lower()]
        raise ValueError
    if hint is int:
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value) if isinstance(value, (int, float)) else int(str(value).strip())
    if hint is float:
        if isinstance(value, bool):
            raise ValueError
        return value if isinstance(value, (int, float)) else float(str(value).strip())  # an int stays a count
    if hint is str:
        if isinstance(value, (dict, list)):
            raise ValueError
        return value if isinstance(value, str) else str(value)
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(hint) or (Any,)
        return [_coerce(v, item) for v in value]
    return value  # other types (enums, dicts, Any): left to the config class's own checks


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(args[0]).removeprefix('an ').removeprefix('a ')}s" if args else "a list"
    return _TYPE_NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def coerce_config_values(values: dict[str, Any], hints: dict[str, Any], source: str) -> dict[str, Any]:
    """Convert YAML values to the types of the fields they set, as the same values given as flags would be (PyYAML
    reads `1e-3` as a string); a value that does not convert names its key and the expected type."""
    out = dict(values)
    for key, value in values.items():
        hint = hints.get(key)
        if hint is None:
            continue
        if value is None:
            if type(None) not in typing.get_args(hint) and hint is not Any:
                raise EdaInputError(f"{source}: {key} has no value; give it {_type_name(hint)} or remove the key")
            continue
        try:
            out[key] = _coerce(value, hint)
        except (ValueError, TypeError):
            raise EdaInputError(f"{source}: {key} must be {_type_name(hint)}, got {value!r}") from None
    return out


def dataclass_hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of a dataclass's init fields."""
    import dataclasses

    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


__all__ = [
    "check_causal_lm",
    "check_disjoint",
    "check_model_dir",
    "check_output_path",
    "check_safetensors_file",
    "check_utf8",
    "check_weight_files",
    "coerce_config_values",
    "dataclass_hints",
    "find_json_lines_problem",
    "load_adapter_checked",
    "read_text_file",
    "read_yaml_mapping",
]


def check_positive_numbers(settings: Any, names: Iterable[str]) -> None:
    """Refuse any of `names` on `settings` that is not a number > 0 (booleans included), naming the class field."""
    for name in names:
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise EdaInputError(f"{type(settings).__name__}.{name} must be a number > 0, got {value!r}")
