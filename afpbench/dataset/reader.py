"""Reading a set folder: :class:`DatasetReader`, :func:`open_dataset`, the seeded row sample."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from afpbench.dataset.fingerprint import RECIPE_COLUMNS, RecipeFingerprint
from afpbench.dataset.manifest import Manifest, manifest_claims, read_manifest
from afpbench.dataset.names import one_line
from afpbench.errors import DatasetError


def _parquet(path: Path, folder: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"Shard {path} cannot be read ({one_line(exc)}); run 'afpbench verify {folder}' and rebuild the set.") from None


class DatasetReader:
    """Read a dataset folder written by ``DatasetWriter`` (or imported).

    Opening checks the manifest (schema, types, its own totals) and that every shard is
    there with its listed size; it does not hash the shards: :func:`check_contents`
    does, and ``evaluate`` calls it before scoring.

    ``manifest`` is the manifest's JSON value (a dict) and ``manifest_model`` the same
    manifest as the typed :class:`Manifest`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not self.path.is_dir():
            raise DatasetError(f"Dataset folder {self.path} does not exist; build or import it first (afpbench build / afpbench import).")
        if not mpath.exists():
            raise DatasetError(f"{self.path} has no manifest.json; it is not an afpbench dataset (build or import it first).")
        self.manifest: dict[str, Any]
        self.manifest_model: Manifest
        self.manifest, self.manifest_model = read_manifest(self.path)
        claims = manifest_claims(self.manifest)
        if claims:
            raise DatasetError(f"{mpath} contradicts itself ({claims[0].split(': ', 1)[1]}); run 'afpbench verify {self.path}' and rebuild the set.")
        self.shards = [self.path / s.path for s in self.manifest_model.shards]
        for s, p in zip(self.manifest_model.shards, self.shards):
            if not p.is_file():
                raise DatasetError(f"Shard {p} listed in the manifest is missing; re-download or rebuild the set.")
            if p.stat().st_size != s.bytes:
                raise DatasetError(f"Shard {p} has {p.stat().st_size} bytes, the manifest says {s.bytes}; run 'afpbench verify {self.path}' and rebuild.")

    name = property(lambda self: self.manifest_model.name)
    fingerprint = property(lambda self: self.manifest_model.fingerprint)
    num_rows = property(lambda self: self.manifest_model.num_rows)
    family = property(lambda self: self.manifest_model.family or "")

    @property
    def recipe_version(self) -> int | None:
        rec = self.manifest_model.recipe
        return rec.version if rec is not None else None

    @property
    def recipe_fingerprint(self) -> str:
        """The stored recipe fingerprint; computed from the rows for sets written before it existed."""
        stored = self.manifest_model.recipe_fingerprint
        if stored:
            return stored
        fp = RecipeFingerprint(self.manifest)
        for shard in self.shards:
            try:
                fp.update(pq.read_table(shard, columns=list(RECIPE_COLUMNS)))
            except (pa.ArrowException, OSError) as exc:
                raise DatasetError(f"Shard {shard} cannot be read ({one_line(exc)}); run 'afpbench verify {self.path}' and rebuild the set.") from None
        return fp.hexdigest()

    def __len__(self) -> int:
        return self.num_rows

    def shards_for(self, stop: int | None = None) -> list[int]:
        """Indices of the shards that hold rows ``[0, stop)`` (all shards for None)."""
        stop = self.num_rows if stop is None else min(stop, self.num_rows)
        out, pos = [], 0
        for i, s in enumerate(self.manifest_model.shards):
            if pos >= stop:
                break
            out.append(i)
            pos += s.num_rows
        return out

    def iter_batches(self, batch_size: int = 64, columns: Iterable[str] | None = None, start: int = 0, stop: int | None = None) -> Iterator[list[dict[str, Any]]]:
        """Rows ``[start, stop)`` in order, as lists of dicts, one shard row group at a time."""
        stop = self.num_rows if stop is None else min(stop, self.num_rows)
        cols = list(columns) if columns else None
        pos = 0
        pending: list[dict[str, Any]] = []
        for shard in self.shards:
            pf = _parquet(shard, self.path)
            n = pf.metadata.num_rows
            if pos + n <= start:
                pos += n
                continue
            if pos >= stop:
                break
            for rg in range(pf.num_row_groups):
                rg_rows = pf.metadata.row_group(rg).num_rows
                lo, hi = max(start - pos, 0), min(stop - pos, rg_rows)
                if hi > lo:
                    t = pf.read_row_group(rg, columns=cols).slice(lo, hi - lo)
                    pending.extend(t.to_pylist())
                    while len(pending) >= batch_size:
                        yield pending[:batch_size]
                        pending = pending[batch_size:]
                pos += rg_rows
                if pos >= stop:
                    break
        if pending:
            yield pending

    def column(self, name: str, stop: int | None = None) -> list[Any]:
        """One column of rows ``[0, stop)``, reading only the shards that hold them."""
        stop = self.num_rows if stop is None else min(stop, self.num_rows)
        tables = []
        for i in self.shards_for(stop):
            try:
                tables.append(pq.read_table(self.shards[i], columns=[name]))
            except (pa.ArrowException, OSError) as exc:
                raise DatasetError(f"Shard {self.shards[i]} cannot be read ({one_line(exc)}); run 'afpbench verify {self.path}' and rebuild the set.") from None
        if not tables:
            return []
        return pa.concat_tables(tables).column(name).to_pylist()[:stop]

    def ids(self, stop: int | None = None) -> list[str]:
        return self.column("id", stop)

    def labels(self, stop: int | None = None) -> list[int]:
        return self.column("label", stop)

    def rows(self, batch_size: int = 64, **kw: Any) -> Iterator[dict[str, Any]]:
        for batch in self.iter_batches(batch_size, **kw):
            yield from batch


def open_dataset(path: str | Path) -> DatasetReader:
    return DatasetReader(path)


def sample_rows(num_rows: int, k: int, seed: int, name: str) -> list[int]:
    """The seeded sample of a set's rows (sorted; the whole set when it is smaller than k).

    Drawn from (seed, set name) alone, so a set always shows the same rows: the gallery
    draws its thumbnails with it and the dataset card's preview grid shows the same rows.
    """
    from afpbench.seeding import row_rng

    if num_rows <= k:
        return list(range(num_rows))
    return sorted(int(i) for i in row_rng(seed, "gallery", name).choice(num_rows, size=k, replace=False))


__all__ = ["DatasetReader", "open_dataset", "sample_rows"]
