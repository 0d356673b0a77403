"""Arrow memory discipline shared by the writer and the checks: bounded runs, freed pools."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa


def release_memory() -> None:
    """Hand freed Arrow buffers back to the OS.

    Arrow's default pool (mimalloc in current wheels) keeps freed pages for reuse, and
    with image-sized buffers of varying sizes the kept pages grow with the number of
    flushes and row groups: memory would grow with the set instead of staying flat.
    Called once per record batch of a flushed part, per written row group and per checked
    shard (a few MB each), where its cost is lost in the I/O.
    """
    pa.default_memory_pool().release_unused()


def runs(sizes: list[int], max_bytes: int, max_rows: int | None = None) -> Iterator[tuple[int, int]]:
    """Consecutive [lo, hi) runs whose byte sizes sum to at most ``max_bytes`` (and at most
    ``max_rows`` items); an item larger than ``max_bytes`` gets a run of its own."""
    lo, acc = 0, 0
    for i, n in enumerate(sizes):
        if i > lo and (acc + n > max_bytes or (max_rows is not None and i - lo >= max_rows)):
            yield lo, i
            lo, acc = i, 0
        acc += n
    if lo < len(sizes):
        yield lo, len(sizes)
