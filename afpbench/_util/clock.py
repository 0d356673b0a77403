"""Timestamps written into files: one format, always UTC."""

from __future__ import annotations

import time

#: ISO 8601 in UTC, to the second (what manifests, results and leaderboards record).
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_timestamp(seconds: float | None = None) -> str:
    """``seconds`` since the epoch (default: now) as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime(UTC_FORMAT, time.gmtime(seconds))


__all__ = ["UTC_FORMAT", "utc_timestamp"]
