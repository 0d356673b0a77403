"""The scoring pass: one read of the rows serves every detector, view and perturbation.

DataLoader workers take work units (:func:`plan_work_units`) in turn; for each unit a
worker reads the rows and, per view, rewrites the stored file (:mod:`afpbench.views`) and
decodes it once, applies each perturbation once to that file, and preprocesses per
detector (:class:`PassDataset`). Row-level detectors (``format``, ``size``) get the row's
format, width, height and byte count of the file they are shown, not of the stored one. The main process scores the batches
and hands the scores to the resume cache (:func:`score_pass`). This module imports torch;
:mod:`afpbench.evaluate` imports it only inside ``evaluate()``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from afpbench.detectors.base import Scorer
from afpbench.errors import AfpbenchError, DatasetError
from afpbench.evaluate.cache import CacheWriter, cache_dir, read_cached
from afpbench.evaluate.config import DetectorSpec, Job

if TYPE_CHECKING:  # pragma: no cover
    from afpbench._util.runtime import ProcessGroup
    from afpbench.evaluate.sets import EvalSet
    from afpbench.perturb import Perturbation
    from afpbench.views import Encoded, View


# -- detectors --------------------------------------------------------------------------------
def load_detectors(specs: Sequence[str | DetectorSpec | Scorer], device: str, dtype: str | None = None) -> list[tuple[Scorer, str | None]]:
    """The detectors (names, specs or built objects), loaded on ``device``, with the weights the user gave each."""
    out: list[tuple[Scorer, str | None]] = []
    for spec in specs:
        if isinstance(spec, str):
            spec = DetectorSpec(spec)
        if isinstance(spec, DetectorSpec):
            from afpbench.detectors import load_detector

            det = load_detector(spec.name, weights=spec.weights, base=spec.base, device=device, dtype=dtype, options=spec.options)
            out.append((det, spec.weights))
        else:
            out.append((spec, None))
    for det, _ in out:
        if not isinstance(det, Scorer):
            missing = [m for m in ("name", "full_name", "threshold", "threshold_policy", "preprocess", "collate", "score", "describe") if not hasattr(det, m)]
            raise AfpbenchError(
                f"{type(det).__name__} is not a detector evaluate can run (no {', '.join(missing)}); implement afpbench.detectors.base.Scorer or subclass Detector."
            )
    return out


# -- work units and the dataset the workers run ----------------------------------------------------
def plan_work_units(needed: dict[str, np.ndarray], batch_size: int, small_first: int = 0) -> list[tuple[str, np.ndarray]]:
    """Work units: up to ``batch_size`` needed rows of one set, read as one contiguous span.

    Units come in set order; the first ``small_first`` units are a quarter batch, the next
    ``small_first`` half a batch (one of each per worker: workers take units in turn).
    Scoring cannot start before a worker has decoded a whole first unit. Ramping the unit
    size up lets the scorer start after a quarter batch and keeps the workers ahead of it
    from then on: the pipeline's start-up wait, paid by every run, shrinks from one full
    batch of decoding to a fraction of it.
    """
    units = []
    for name, rows in needed.items():
        start = 0
        while start < len(rows):
            ramp = len(units) // small_first if small_first else 2
            size = max(1, batch_size >> (2 - ramp)) if ramp < 2 else batch_size
            stop = start + 1
            # Grow while the batch has room and the span stays compact (resumed runs
            # leave holes; reading a few skipped rows beats many tiny reads).
            while stop < len(rows) and stop - start < size and rows[stop] - rows[start] < 4 * batch_size:
                stop += 1
            units.append((name, rows[start:stop]))
            start = stop
    return units


def file_fields(enc: Encoded) -> dict[str, Any]:
    """What a row says about the file a detector is shown (row-level detectors read these)."""
    return {"format": enc.format, "width": enc.width, "height": enc.height, "bytes": enc.nbytes}


class PassDataset(torch.utils.data.IterableDataset):
    """Yields one collated batch per work unit: each needed (detector, view, perturbation) input.

    Runs in DataLoader workers: a worker takes every k-th unit and reads its rows; per
    view it rewrites each row's stored file and decodes it once, applies each
    perturbation once to that file, and preprocesses per detector. A row that cannot be
    decoded ends the pass with ``{"error": message}``.
    """

    def __init__(self, sets: dict[str, EvalSet], units: list[tuple[str, np.ndarray]], jobs: list[Job],
                 perts: list[Perturbation | None], missing: dict[tuple[int, str], np.ndarray], views: list[View | None] | None = None):
        super().__init__()
        self.sets, self.units, self.jobs, self.perts, self.missing = sets, units, jobs, perts, missing
        self.views = views or [None]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for name, rows in self.units[wid::nw]:
            yield self._load(name, rows)

    def _load(self, name: str, rows: np.ndarray) -> dict[str, Any]:
        from afpbench.views import Encoded, decode

        s = self.sets[name]
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        want = set(rows.tolist())
        picked: list[tuple[int, dict[str, Any]]] = []
        pos = lo
        for batch in s.reader.iter_batches(batch_size=hi - lo, start=lo, stop=hi):
            for row in batch:
                if pos in want:
                    picked.append((pos, row))
                pos += 1
        per_job: dict[int, tuple[list[int], list[Any]]] = {j: ([], []) for j in range(len(self.jobs))}
        for k, (idx, row) in enumerate(picked):
            base = {c: v for c, v in row.items() if c != "image"}
            for v_pos, view in enumerate(self.views):
                jobs_v = [j for j, job in enumerate(self.jobs) if job.view_pos == v_pos and self.missing[(j, name)][idx]]
                if not jobs_v:
                    continue
                try:
                    enc = Encoded.from_row(row)
                    if view is not None and not view.native:
                        enc = view.apply(enc, int(row["label"]), row["id"])
                    image = decode(enc)
                except AfpbenchError as exc:
                    return {"error": f"Row {row.get('id')} of set '{name}': {exc}"}
                except Exception as exc:  # PIL raises many types for a corrupt file
                    return {"error": f"Row {row.get('id')} of set '{name}' cannot be decoded ({type(exc).__name__}: {exc}); run afpbench verify on the set and rebuild it."}
                for p_pos, pert in enumerate(self.perts):
                    needing = [j for j in jobs_v if self.jobs[j].pert_pos == p_pos]
                    if not needing:
                        continue
                    if pert is None:
                        img, shown = image, enc
                    else:
                        shown, img = pert.perturb_file(enc, row["id"], image)
                    meta_row = {**base, **file_fields(shown)}
                    for j in needing:
                        per_job[j][0].append(k)
                        per_job[j][1].append(self.jobs[j].det.preprocess(img, meta_row))
        inputs = {j: (np.asarray(ks, dtype=np.int64), self.jobs[j].det.collate(xs)) for j, (ks, xs) in per_job.items() if ks}
        return {"set": name, "idx": np.asarray([i for i, _ in picked], dtype=np.int64), "inputs": inputs}


def _identity(x: Any) -> Any:
    # DataLoader's default conversion would turn numpy index arrays into tensors.
    return x


def _worker_ignores_sigterm(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM to the main process.

    ``timeout`` and Slurm signal every process of the job, workers included; a worker that
    died of it would make the main process fail with "DataLoader worker killed" instead
    of flushing its scores and stopping cleanly. The main process shuts its workers down.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """DataLoader workers when none are asked for: one per spare core, at most 4."""
    return max(0, min(4, cpu_count() - 1))


# -- which rows to score ----------------------------------------------------------------------------
@dataclass
class RowPlan:
    """What is cached and what is left: the same on every process."""

    #: (job, set) -> cached scores by row index (read on the main process, broadcast)
    cached: dict[tuple[int, str], dict[int, float]]
    #: (job, set) -> mask of rows the job still misses
    missing: dict[tuple[int, str], np.ndarray]
    #: set -> rows this process reads (every row some job misses, split across processes)
    needed: dict[str, np.ndarray]
    #: (job, set) -> rows the job's view keeps (crop:N leaves out images smaller than N)
    kept: dict[tuple[int, str], np.ndarray] | None = None

    def kept_rows(self, j: int, set_name: str, n: int) -> np.ndarray:
        return self.kept[(j, set_name)] if self.kept is not None else np.ones(n, dtype=bool)

    def rows_cached(self, j: int, sets: dict[str, EvalSet]) -> int:
        return sum(int((~self.missing[(j, s.name)]).sum()) for s in sets.values())


def plan_rows(jobs: list[Job], sets: dict[str, EvalSet], resume: bool, pg: ProcessGroup, kept: dict[tuple[int, str], np.ndarray] | None = None) -> RowPlan:
    """Cached scores per (job, set), the rows each job still misses, and this process's share.

    The cache is read once, on the main process, and broadcast, so every process splits
    the very same list of rows (no gaps, no duplicates even on a non-shared filesystem).
    ``kept`` masks the rows a job's view leaves out: they are never missing.
    """
    cached = None
    if pg.is_main:
        cached = {(j, s.name): (read_cached(job.folder, s, job.keys[s.name]) if resume else {}) for j, job in enumerate(jobs) for s in sets.values()}
    cached = pg.broadcast(cached)
    missing: dict[tuple[int, str], np.ndarray] = {}
    needed: dict[str, np.ndarray] = {}
    for s in sets.values():
        any_missing = np.zeros(s.n_eff, dtype=bool)
        for j in range(len(jobs)):
            m = np.ones(s.n_eff, dtype=bool) if kept is None else kept[(j, s.name)].copy()
            done = np.fromiter(cached[(j, s.name)].keys(), dtype=np.int64)
            m[done[done < s.n_eff]] = False
            missing[(j, s.name)] = m
            any_missing |= m
        rows = np.flatnonzero(any_missing)
        if len(rows):
            needed[s.name] = np.asarray(pg.split(rows.tolist()), dtype=np.int64)
    return RowPlan(cached, missing, needed, kept)


# -- the pass -----------------------------------------------------------------------------------------
@dataclass
class PassOptions:
    """How the pass runs: batch size, DataLoader workers (None: one per spare core, max 4), progress bar."""

    batch_size: int = 32
    num_workers: int | None = None
    progress: bool = True
    label: str = "evaluate"  # the progress bar's name for the command running the pass


@dataclass
class PassStats:
    """What this process's pass did: rows scored, wall seconds, workers and torch threads used."""

    scored: int
    wall: float
    workers: int
    torch_threads: int


def peak_gpu_memory(device: str) -> int | None:
    """Peak GPU memory torch allocated in this process (None off the GPU)."""
    return int(torch.cuda.max_memory_allocated()) if device.startswith("cuda") else None


def _to_numpy(scores: Any, n: int, job: Job, set_name: str) -> np.ndarray:
    arr = scores.detach().float().cpu().numpy() if hasattr(scores, "detach") else np.asarray(scores)
    arr = np.asarray(arr, dtype=np.float64).reshape(-1)
    if arr.size != n:
        raise AfpbenchError(f"{job.name} returned {arr.size} scores for a batch of {n} images of '{set_name}'; fix the detector's score().")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise AfpbenchError(f"{job.name} returned NaN or infinite scores on '{set_name}' ({int(bad.sum())} of {n}); fix the detector or its weights.")
    if (arr < 0).any() or (arr > 1).any():
        raise AfpbenchError(f"{job.name} returned scores outside [0, 1] on '{set_name}'; a detector's score must be P(fake).")
    return arr


def score_pass(cfg: PassOptions, pg: ProcessGroup, device: str, sets: dict[str, EvalSet], jobs: list[Job], perts: Sequence[Perturbation | None],
               plan: RowPlan, writer: CacheWriter, views: Sequence[View | None] | None = None) -> PassStats:
    """The one pass over this process's rows; every score goes to ``writer`` as it comes."""
    needed = {k: v for k, v in plan.needed.items() if len(v)}
    total = sum(len(v) for v in needed.values())
    workers = min(default_workers() if cfg.num_workers is None else cfg.num_workers, max(1, -(-total // cfg.batch_size)))
    units = plan_work_units(needed, cfg.batch_size, small_first=workers)
    threads_before = torch.get_num_threads()
    if device == "cpu" and workers:
        # Workers decode on their own cores; scoring threads that compete with them for
        # the same cores (oversubscription) stall OpenMP barriers, so leave them room.
        torch.set_num_threads(min(threads_before, max(1, cpu_count() - workers)))
    torch_threads = torch.get_num_threads()
    scored = 0
    t0 = time.perf_counter()
    if not units:
        return PassStats(0, 0.0, 0, torch_threads)
    from tqdm.auto import tqdm

    loader = torch.utils.data.DataLoader(
        PassDataset(sets, units, jobs, list(perts), plan.missing, list(views or [None])), batch_size=None, num_workers=workers, collate_fn=_identity,
        pin_memory=device.startswith("cuda"), prefetch_factor=4 if workers else None,
        # fork: workers inherit the opened readers and detectors without pickling them.
        multiprocessing_context=("fork" if workers and sys.platform.startswith("linux") else None),
        worker_init_fn=_worker_ignores_sigterm,
    )
    bar = tqdm(total=total, unit="img", desc=f"{cfg.label} {len(jobs)} job(s)", disable=not (cfg.progress and pg.is_main), dynamic_ncols=True)
    try:
        for item in loader:
            if "error" in item:
                raise DatasetError(item["error"])
            s = sets[item["set"]]
            for j, (pos, batch) in item["inputs"].items():
                job = jobs[j]
                t = time.perf_counter()
                with torch.inference_mode():
                    out = job.det.score(batch)
                arr = _to_numpy(out, len(pos), job, s.name)
                job.score_seconds += time.perf_counter() - t
                writer.add((j, s.name), cache_dir(job.folder, s.name, job.keys[s.name]), s.ids, item["idx"][pos], arr)
            scored += len(item["idx"])
            bar.update(len(item["idx"]))
    finally:
        # Keep every finished batch, even when interrupted or failing: the next run resumes.
        writer.flush_all()
        bar.close()
        torch.set_num_threads(threads_before)
    return PassStats(scored, time.perf_counter() - t0, workers, torch_threads)


__all__ = ["file_fields", "PassDataset", "PassOptions", "PassStats", "RowPlan", "cpu_count", "default_workers", "load_detectors", "peak_gpu_memory", "plan_rows", "plan_work_units", "score_pass"]
