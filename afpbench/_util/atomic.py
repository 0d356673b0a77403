"""Atomic file replacement that leaves nothing behind when it fails.

A file is written in full under a hidden temporary name beside its final path, then
renamed over it (``os.replace`` is atomic on one filesystem). When the write fails (disk
full, a file-size limit, Ctrl-C or SIGTERM) the temporary file is removed and the previous
file is untouched: a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator


def temp_name(path: Path, kind: str = "tmp") -> Path:
    """The hidden temporary path of ``path`` for this process (``.NAME.tmp-PID``)."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on failure it is removed."""
    path = Path(path)
    tmp = temp_name(path)
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


def write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically."""
    with replacing(path) as tmp:
        tmp.write_text(text)
