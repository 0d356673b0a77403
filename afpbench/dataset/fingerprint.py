"""The two identities of a set: its content fingerprint and its recipe fingerprint.

The **content fingerprint** hashes what a set holds: ids, labels, image bytes and row
fields, in row order. It does not depend on parquet encoding details (writer version,
row groups, shard cuts), so an interrupted-then-resumed build and a single-process build
compare equal.

A set's bytes depend on the device, the dtype and even the CPU thread count, so two
faithful rebuilds of one recipe rarely share a content fingerprint. The **recipe
fingerprint** is the identity they do share: a sha256 over the recipe (name, version,
resolved parameters), the generator actually loaded (model id and revision), the seed,
and every row's id, prompt, source and seed, in order. It leaves out what a faithful
rebuild may change: image bytes, device, dtype, thread counts, library versions, local
paths.

Both are fed table by table (``feed``), so shards can be hashed in parallel and folded
in, in order, afterwards; hashing the concatenation equals hashing row by row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from afpbench.dataset.schema import COLUMN_NAMES

#: Columns of every row that enter the recipe fingerprint.
RECIPE_COLUMNS = ("id", "prompt", "source", "seed")


class ContentFingerprint:
    """Content hash of a set: per row, sha256(image bytes) and the other fields."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, table: pa.Table) -> None:
        self._h.update(self.feed(table))

    def update_bytes(self, feed: bytes) -> None:
        """Fold in what :meth:`feed` returned for the next rows."""
        self._h.update(feed)

    @staticmethod
    def feed(table: pa.Table) -> bytes:
        """The bytes a table's rows add to the fingerprint: per row, sha256(image) + fields."""
        cols = {c: table.column(c).to_pylist() for c in COLUMN_NAMES if c != "image"}
        out = []
        i = 0
        for chunk in table.column("image").chunks:  # chunk by chunk: no combined copy
            images = chunk.field("bytes")
            for k in range(len(chunk)):
                out.append(hashlib.sha256(images[k].as_buffer()).digest())
                out.append(json.dumps([cols[c][i] for c in cols], ensure_ascii=False).encode())
                i += 1
        return b"".join(out)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def recipe_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """The part of a manifest that a faithful rebuild keeps (no paths, devices or versions)."""
    recipe = manifest.get("recipe") or {}
    gen = manifest.get("generator") or {}
    model = gen.get("model_id") or gen.get("model")
    # A local folder's path differs between labs; its content hash (the revision) does not.
    if isinstance(model, str) and (model.startswith(("/", ".", "~")) or "\\" in model):
        model = None
    return {
        "recipe": recipe.get("name") if isinstance(recipe, dict) else None,
        "version": recipe.get("version") if isinstance(recipe, dict) else None,
        "params": recipe.get("params") if isinstance(recipe, dict) else None,
        "model": model,
        "revision": gen.get("revision"),
        "seed": manifest.get("seed"),
    }


def _row_feed(rid: str, prompt: str | None, source: str | None, seed: int) -> bytes:
    return b"\x1e" + json.dumps([rid, prompt or "", source or "", int(seed)], ensure_ascii=False).encode()


class RecipeFingerprint:
    """The recipe fingerprint, fed with a manifest's identity and then the rows in order."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        self._h = hashlib.sha256(json.dumps(recipe_identity(manifest), sort_keys=True, default=str).encode())

    def update(self, table: pa.Table) -> None:
        self._h.update(self.feed(table))

    def update_bytes(self, feed: bytes) -> None:
        self._h.update(feed)

    def update_rows(self, rows: Iterable[tuple[str, str, str, int]]) -> None:
        for rid, prompt, source, seed in rows:
            self._h.update(_row_feed(rid, prompt, source, seed))

    @staticmethod
    def feed(table: pa.Table) -> bytes:
        """The bytes a table's rows add: per row, its (id, prompt, source, seed)."""
        cols = [table.column(c).to_pylist() for c in RECIPE_COLUMNS]
        return b"".join(_row_feed(*row) for row in zip(*cols))

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def recipe_fingerprint(manifest: dict[str, Any], rows: Iterable[tuple[str, str, str, int]]) -> str:
    """sha256 of the recipe identity and every row's (id, prompt, source, seed), in row order."""
    fp = RecipeFingerprint(manifest)
    fp.update_rows(rows)
    return fp.hexdigest()


__all__ = ["ContentFingerprint", "RecipeFingerprint", "RECIPE_COLUMNS", "recipe_identity", "recipe_fingerprint"]
