"""Writing files and directories so that a crash never leaves half of one: write beside the destination, then
rename (`os.replace` is atomic on one filesystem), so readers see the old version or the new one.

The one home of these helpers; `eda_adapters.data.io` re-exports them. It imports nothing heavy, so every layer of
the package may use it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "DiskFullError",
    "atomic_directory",
    "atomic_files",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_jsonl",
    "atomic_write_text",
    "room_checked",
]

#: What a write that ran out of room raises: no space, a file over the size limit (RLIMIT_FSIZE), a quota.
_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class DiskFullError(OSError):
    """A write ran out of room (disk full, file too large, quota) part-way; what was there before is intact."""

    def __init__(self, destination: str | os.PathLike, code: int) -> None:
        super().__init__(code, f"disk full or file too large while writing {destination}; nothing was replaced "
                               f"({os.strerror(code)})")

    def __str__(self) -> str:
        return self.strerror


def _out_of_room(err: BaseException) -> int | None:
    """The errno of a write that ran out of room, from an `OSError` or from a writer in Rust that reports
    `(os error N)` in its message (safetensors); `None` for anything else."""
    code = err.errno if isinstance(err, OSError) else None
    if code is None:
        found = re.search(r"\(os error (\d+)\)", str(err))
        code = int(found.group(1)) if found else None
    return code if code in _FULL else None


@contextmanager
def room_checked(destination: str | os.PathLike) -> Iterator[None]:
    """Re-raise a write that ran out of room inside the block as a [`DiskFullError`] naming `destination`."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        code = _out_of_room(err)
        if code is None:
            raise
        raise DiskFullError(destination, code) from err


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to (same suffix, for writers that pick a format from it); only
    if the block succeeds is it renamed onto `path`. The temporary file is removed either way."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        with room_checked(path):
            yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` (UTF-8) atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON with sorted keys, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write `rows` as JSON lines, atomically."""
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


@contextmanager
def atomic_directory(output_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `output_dir`; only if the block succeeds is it moved into place (replacing
    what was there), so a crash never leaves a half-written directory."""
    out = Path(output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with room_checked(out):
            yield tmp
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_files(output_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `output_dir`; only if the block succeeds is each file written there moved
    into `output_dir` (created if needed; other files there are kept), one `os.replace` each. For saving a model into
    a folder that holds more (a trainer's state, its checkpoints): a crash or a full disk while writing leaves every
    file of `output_dir` as it was, never half a weights file."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with room_checked(out):
            yield tmp
        for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
            target = out / file.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
