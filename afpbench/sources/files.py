"""The one walker of image folders, shared by the build's sources and ``afpbench import``.

``walk(root)`` visits a folder tree in a fixed order (entries sorted by name, depth
first) and reports what it cannot walk instead of skipping it: an unreadable folder or
entry, a dangling link, a link loop (a link that resolves to itself, or a folder link
that leads back to a folder containing it), a link to a folder inside the walked tree,
and a special file (named pipe, socket, device). Links to files are followed; a link to
a folder outside the tree is walked.

The two callers differ only in what they do with those reports:

* ``iter_image_files`` (image sources of ``afpbench build``) stops with one line at the
  first entry it cannot list, because a skipped file would silently change which images
  a seeded sample draws; special files are not images and are passed over, as are files
  without an image extension;
* ``afpbench import`` lists every report as a reject with its reason (see
  ``afpbench.importer``), and gives files without an image extension a reason too.

Hidden entries (names starting with '.') are left out unless ``include_hidden``: an
image folder's dotfiles are editor and OS droppings (``.DS_Store``), while an import
accounts for every entry it was given.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from afpbench.errors import AfpbenchError

#: File extensions read as images (compared in lower case), by sources and imports alike.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jfif")

# What a report is about; the importer words its reject reasons from these.
UNREADABLE_FOLDER = "unreadable folder"
UNREADABLE_ENTRY = "unreadable entry"
DANGLING_LINK = "dangling symbolic link"
LINK_LOOP = "symbolic link loop"
INNER_LINK = "symbolic link to a folder inside the input"
SPECIAL_FILE = "not a regular file"


def is_image_name(name: str) -> bool:
    """Whether a file name has an image extension (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


@dataclass(frozen=True)
class Entry:
    """One entry met by ``walk``: a regular file (``problem`` None) or a report.

    ``relpath`` is POSIX and relative to the root ("." for the root itself); ``path``
    is the path to open (through links). ``detail`` says more about a problem (the
    OS error, the link target, the special file's kind).
    """

    relpath: str
    path: Path
    size: int | None = None
    problem: str | None = None
    detail: str = ""


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def special_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "unknown file type"


def walk(root: str | Path, *, include_hidden: bool = False) -> Iterator[Entry]:
    """Every entry under ``root`` in a fixed order, regular files and reports alike (see the module doc)."""
    root = Path(root)
    try:
        st = root.stat()
    except OSError as exc:
        yield Entry(".", root, problem=UNREADABLE_FOLDER, detail=_why(exc))
        return
    yield from _walk(root, "", ((st.st_dev, st.st_ino),), Path(os.path.realpath(root)), include_hidden)


def _walk(folder: Path, prefix: str, ancestors: tuple[tuple[int, int], ...], root_real: Path, hidden: bool) -> Iterator[Entry]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield Entry(prefix.rstrip("/") or ".", folder, problem=UNREADABLE_FOLDER, detail=_why(exc))
        return
    for e in entries:
        if not hidden and e.name.startswith("."):
            continue
        rel = prefix + e.name
        path = Path(e.path)
        link = False
        try:
            link = e.is_symlink()
            st = os.stat(e.path) if link else e.stat(follow_symlinks=False)
        except OSError as exc:
            if link and isinstance(exc, FileNotFoundError):
                yield Entry(rel, path, problem=DANGLING_LINK, detail=os.readlink(e.path))
            elif link and exc.errno == errno.ELOOP:
                yield Entry(rel, path, problem=LINK_LOOP, detail="the link resolves to itself")
            else:
                yield Entry(rel, path, problem=UNREADABLE_ENTRY, detail=_why(exc))
            continue
        if stat.S_ISDIR(st.st_mode):
            real = Path(os.path.realpath(e.path))
            if (st.st_dev, st.st_ino) in ancestors or (link and real in root_real.parents):
                yield Entry(rel, path, problem=LINK_LOOP, detail=f"it leads back to the folder {real.name or real} that contains it")
            elif link and (real == root_real or root_real in real.parents):
                yield Entry(rel, path, problem=INNER_LINK, detail=real.relative_to(root_real).as_posix())
            else:
                yield from _walk(path, rel + "/", ancestors + ((st.st_dev, st.st_ino),), root_real, hidden)
        elif stat.S_ISREG(st.st_mode):
            yield Entry(rel, path, size=st.st_size)
        else:
            yield Entry(rel, path, problem=SPECIAL_FILE, detail=special_kind(st.st_mode))


def iter_image_files(root: str | Path, include_hidden: bool = False) -> Iterator[str]:
    """Image files under ``root`` (recursive), as relative POSIX paths, sorted; extensions in any case.

    Files without an image extension and special files are passed over. What cannot be
    listed stops with one line naming the entry (an unreadable folder, a link loop, a
    dangling link, a link to a folder inside ``root`` that would list its images twice).
    """
    root = Path(root)
    found: list[str] = []
    for entry in walk(root, include_hidden=include_hidden):
        if entry.problem is None:
            if is_image_name(entry.relpath):
                found.append(entry.relpath)
        elif entry.problem != SPECIAL_FILE:
            raise AfpbenchError(_listing_error(root, entry))
    yield from sorted(found)


def _listing_error(root: Path, e: Entry) -> str:
    where = root / e.relpath if e.relpath != "." else root
    if e.problem == UNREADABLE_FOLDER:
        return f"Cannot read the folder {where} ({e.detail}); fix its permissions or move it out of the image folder."
    if e.problem == INNER_LINK:
        return f"{where} is a symbolic link to {e.detail}, a folder inside {root}, whose images would be listed twice; remove the link, then re-run."
    if e.problem == LINK_LOOP:
        return f"{where} is a symbolic link loop ({e.detail}); remove it, then re-run."
    if e.problem == DANGLING_LINK:
        return f"{where} is a dangling symbolic link (its target {e.detail} does not exist); remove it or fix it, then re-run."
    return f"{where} is an {e.problem} ({e.detail}); remove it or fix it, then re-run."


__all__ = ["IMAGE_EXTENSIONS", "Entry", "walk", "iter_image_files", "is_image_name", "special_kind"]
