"""The two checks every reader of a versioned JSON or YAML file makes (manifests, results,
predictions, leaderboards, training results, audits, catalog files); each reader words its
own one-line error and names its own fix."""

from __future__ import annotations

from typing import Any


def newer_version(data: Any, current: int) -> int | None:
    """The file's ``schema_version`` when it is newer than ``current``, else None (a bool
    is not a version, though Python counts it as an int)."""
    version = data.get("schema_version") if isinstance(data, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) and version > current else None


def first_error(exc: Any) -> tuple[str, str, int]:
    """A pydantic ValidationError as (where: the dotted path of its first error, or
    "(top level)"; that error's message on one line; how many errors there are)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return where, " ".join(str(first["msg"]).split()), exc.error_count()
