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


def row_rng(seed: int, *keys: str):
    """A numpy Generator seeded by ``seed`` and string keys (e.g. set names, a row id, a step).

    The keys are hashed, never drawn from a running stream, so the numbers a row (or a
    metric's bootstrap) gets do not depend on evaluation order, batching or process.
    """
    import numpy as np

    digest = hashlib.blake2b("\x1f".join(keys).encode(), digest_size=8).digest()
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int.from_bytes(digest, "little")])


def row_random(seed: int, *keys: object):
    """A stdlib ``random.Random`` seeded by ``seed`` and keys (train-time augmentations)."""
    import random

    digest = hashlib.sha256(":".join([str(seed), *map(str, keys)]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def permutation(n: int, seed: int) -> list[int]:
    """A seeded permutation of ``range(n)`` (numpy's PCG64: stable across platforms).

    Samplers take the first rows of it, which do not depend on how many are taken: a
    build of 10 rows is the prefix of a build of 3,000.
    """
    import numpy as np

    return np.random.default_rng(seed).permutation(n).tolist()
