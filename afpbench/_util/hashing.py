"""sha256 of bytes, files and folders: the one implementation every module uses."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """What ``sha256sum`` prints for the file (read 1 MB at a time)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_tree(folder: str | Path) -> str:
    """sha256 over a folder's relative file names and their contents, in sorted order."""
    folder = Path(folder)
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0")
        h.update(bytes.fromhex(sha256_file(f)))
    return h.hexdigest()


def revision_of(path: str | Path) -> str:
    """``sha256:<hex>`` of a file or a folder: the revision recorded for a locally loaded model."""
    path = Path(path)
    return "sha256:" + (sha256_file(path) if path.is_file() else sha256_tree(path))


__all__ = ["sha256_bytes", "sha256_file", "sha256_tree", "revision_of"]
