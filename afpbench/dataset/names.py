"""Set names and row ids: what may become a folder, and what may reach a terminal."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from afpbench.errors import DatasetError

# A set name becomes a folder under --out: one plain ASCII path component, never a path.
_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")


def check_set_name(name: Any, what: str = "The set name") -> str:
    """``name`` when it is a plain folder name, else a one-line DatasetError.

    No path separators, no '..', no control characters, no leading dot: a name is joined
    to --out, and anything else could write outside it or hide there.
    """
    if isinstance(name, str) and _SET_NAME.fullmatch(name) and ".." not in name:
        return name
    shown = str(name).encode("unicode_escape").decode("ascii")
    raise DatasetError(
        f"{what} '{shown}' is not a plain folder name; use letters, digits, '_', '-', '+' or '.' "
        f"(starting with a letter or digit, no '..', at most 100 characters)."
    )


def _is_control(ch: str) -> bool:
    # Cc: C0/C1 controls (newline, escape...); Cf: invisible format characters such as
    # the bidi overrides that make a name display as another; Zl/Zp: line separators.
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")


def clean_id(text: str) -> str:
    """``text`` with control and format characters percent-encoded (``%0A``), else unchanged.

    Row ids reach terminals, logs, CSV and HTML; a newline or an escape sequence in one
    would forge lines there. Printable text is kept as it is so ids stay readable.
    """
    if not any(_is_control(c) for c in text):
        return text
    return "".join("".join(f"%{b:02X}" for b in c.encode("utf-8")) if _is_control(c) else c for c in text)


def has_control(text: str) -> bool:
    return any(_is_control(c) for c in text)


def unique_ids(ids: Iterable[str]) -> list[str]:
    """``ids`` made unique deterministically: a repeat gets ``#2``, ``#3``... (first free).

    The input order decides which occurrence keeps the plain id, so callers pass ids in a
    fixed (sorted) order; unique inputs come back unchanged.
    """
    out: list[str] = []
    used: set[str] = set()
    for rid in ids:
        cand, k = rid, 1
        while cand in used:
            k += 1
            cand = f"{rid}#{k}"
        used.add(cand)
        out.append(cand)
    return out


def one_line(text: Any) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


__all__ = ["check_set_name", "clean_id", "has_control", "unique_ids", "one_line"]
