"""Atomic file writes: one temporary-name rule for the whole project.

A file is written in full under ``.{name}.tmp-{pid}`` beside its target and renamed over it
(``os.replace`` is atomic on one filesystem), so a reader sees the old file or the new one,
never half of one, and two processes never share a temporary name. When the write fails
(disk full, a file-size limit, Ctrl-C or SIGTERM) the temporary file is removed and the
previous file is untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def tmp_name(path: Path, kind: str = "tmp") -> Path:
    """The hidden temporary sibling of ``path`` for this process (``.NAME.tmp-PID``)."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on failure it is removed."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def remove(path: Path) -> None:
    """Delete a file or folder if it exists (cleanup: never raises)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except OSError:
        pass


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` by ``data`` atomically."""
    path = Path(path)
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Replace ``path`` by ``text`` (UTF-8) atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


__all__ = ["tmp_name", "replacing", "remove", "atomic_write_bytes", "atomic_write_text"]
