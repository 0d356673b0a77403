"""The resume cache: scores written as they come, so a killed run only scores what is missing.

Scores are cached per (detector + arguments, weights sha256, dataset fingerprint,
perturbation): :func:`cache_key`. While a run scores, :class:`CacheWriter` appends parquet
parts (index, id, score) under ``<folder>/cache/<set>-<key>/``; a rerun reads them back
(:func:`read_cached`) together with a finished predictions file of the same key. Once the
final files are written the parts are obsolete (:func:`remove_cache`).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from afpbench._util.hashing import sha256_bytes
from afpbench.errors import AfpbenchError
from afpbench.evaluate.config import DEFAULT_FLUSH_SECONDS

if TYPE_CHECKING:  # pragma: no cover
    from afpbench.evaluate.sets import EvalSet
    from afpbench.perturb import Perturbation
    from afpbench.results import DetectorInfo
    from afpbench.views import View

#: Perturbations act on the stored file (bytes, format and size of the row describe the
#: perturbed image); scores cached before they did are not reused.
PERTURBATION_SEMANTICS = 2


def cache_key(detector: DetectorInfo, fingerprint: str, perturbation: Perturbation | None, view: View | None = None) -> str:
    """Key of a (detector + arguments, weights, dataset, view, perturbation) score cache."""
    args = {k: v for k, v in detector.arguments.items() if k != "device"}  # a device move keeps the scores
    key = {
        "detector": detector.full_name,
        "arguments": args,
        "weights_sha256": detector.weights_sha256,
        "fingerprint": fingerprint,
        "perturbation": perturbation.record() if perturbation else None,
    }
    if perturbation is not None:
        key["perturbation_semantics"] = PERTURBATION_SEMANTICS
    if view is not None and not view.native:  # native keys stay what they always were
        key["view"] = view.record()
    return sha256_bytes(json.dumps(key, sort_keys=True, default=str).encode())[:16]


def cache_dir(folder: Path, set_name: str, key: str) -> Path:
    return folder / "cache" / f"{set_name}-{key}"


def read_cached(folder: Path, s: EvalSet, key: str) -> dict[int, float]:
    """Scores already computed for the results folder's set under ``key``: cache parts and
    a finished predictions file of the same key, by row index."""
    import pyarrow.parquet as pq

    from afpbench.results import read_predictions

    index_of = {rid: i for i, rid in enumerate(s.ids)}
    done: dict[int, float] = {}
    final = folder / "predictions" / f"{s.name}.parquet"
    if final.is_file():
        try:
            p = read_predictions(final)
        except AfpbenchError:
            p = None
        if p is not None and p.meta.cache_key == key:
            for rid, sc in zip(p.ids, p.scores):
                if rid in index_of:
                    done[index_of[rid]] = float(sc)
    parts = cache_dir(folder, s.name, key)
    if parts.is_dir():
        for part in sorted(parts.glob("part-*.parquet")):
            t = pq.read_table(part)
            for rid, sc in zip(t.column("id").to_pylist(), t.column("score").to_pylist()):
                if rid in index_of:
                    done[index_of[rid]] = float(sc)
    return done


def remove_cache(folder: Path, set_name: str) -> None:
    """Delete every cache of the set in the results folder (and ``cache/`` once empty)."""
    root = folder / "cache"
    for d in root.glob(f"{set_name}-*"):
        if d.is_dir() and d.name.rsplit("-", 1)[0] == set_name:
            shutil.rmtree(d, ignore_errors=True)
    try:
        root.rmdir()
    except OSError:
        pass


class CacheWriter:
    """Buffers (index, score) per (job, set) and writes parquet parts atomically.

    A part is written when a (job, set) buffer reaches ``flush_every`` rows, and every
    buffer is written when ``flush_seconds`` have passed since the last write: a run that
    is killed (SIGKILL, out of memory, power loss) loses at most that much work, however
    small or slow the set. ``new`` keeps every score this process added, for the gather.
    """

    def __init__(self, rank: int, flush_every: int, flush_seconds: float = DEFAULT_FLUSH_SECONDS):
        self.rank = rank
        self.flush_every = max(1, flush_every)
        self.flush_seconds = flush_seconds
        self.last_flush = time.monotonic()
        self.token = uuid.uuid4().hex[:8]  # unique per run: a resumed run never overwrites a part
        self.seq = 0
        self.buffers: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray]]] = {}
        self.targets: dict[tuple[int, str], tuple[Path, Sequence[str]]] = {}
        self.new: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray]]] = {}

    def add(self, key: tuple[int, str], folder: Path, ids: Sequence[str], idx: np.ndarray, scores: np.ndarray) -> None:
        """Scores of rows ``idx`` (of a set whose row ids are ``ids``) for cache folder ``folder``."""
        self.targets[key] = (folder, ids)
        self.buffers.setdefault(key, []).append((idx, scores))
        self.new.setdefault(key, []).append((idx, scores))
        if sum(len(i) for i, _ in self.buffers[key]) >= self.flush_every:
            self._flush(key)
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush_all()

    def _flush(self, key: tuple[int, str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from afpbench._util.io import replacing

        chunks = self.buffers.pop(key, [])
        if not chunks:
            return
        folder, ids = self.targets[key]
        idx = np.concatenate([c[0] for c in chunks])
        scores = np.concatenate([c[1] for c in chunks])
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-r{self.rank:03d}-{self.token}-{self.seq:06d}.parquet"
        self.seq += 1
        table = pa.table({"index": pa.array(idx, pa.int64()), "id": pa.array([ids[i] for i in idx], pa.string()), "score": pa.array(scores, pa.float64())})
        with replacing(folder / name) as tmp:
            pq.write_table(table, tmp)

    def flush_all(self) -> None:
        for key in list(self.buffers):
            self._flush(key)
        self.last_flush = time.monotonic()

    def new_scores(self) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]:
        """Every (index, score) this process added, concatenated per (job, set)."""
        return {k: (np.concatenate([c[0] for c in v]), np.concatenate([c[1] for c in v])) for k, v in self.new.items()}


__all__ = ["CacheWriter", "cache_dir", "cache_key", "read_cached", "remove_cache"]
