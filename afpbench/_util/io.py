"""Atomic file writes: one temporary-name rule for the whole project.

A file is written to ``.{name}.tmp-{pid}`` beside its target and renamed over it, so a
reader (or a crash, or a full disk) never sees half a file, and two processes never share
a temporary name. A failed write removes its temporary file and leaves the target as it was.
"""

from __future__ import annotations

import os
from pathlib import Path


def tmp_name(path: Path) -> Path:
    """The temporary sibling a write of ``path`` goes through."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


__all__ = ["atomic_write_bytes", "atomic_write_text", "tmp_name"]
