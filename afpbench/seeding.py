"""Per-row seeds.

A row's seed is derived from the recipe seed and the row id, never from a running RNG,
so a subset, a resumed build or a build split over K processes draws identical rows.
"""

from __future__ import annotations

import hashlib


def row_seed(base_seed: int, row_id: str) -> int:
    """A 31-bit seed for ``row_id`` (fits every RNG: numpy, torch, random)."""
    digest = hashlib.sha256(f"{int(base_seed)}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFFFFFF
