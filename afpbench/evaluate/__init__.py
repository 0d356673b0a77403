"""Evaluation: datasets x detectors (x views x perturbations) -> predictions -> results.

One pass over the images serves every detector, view and perturbation: each row is read
once (in DataLoader workers), rewritten and decoded once per view (:mod:`afpbench.views`),
perturbed once per suite, preprocessed once per detector, and the main process scores the
batches (:mod:`.pipeline`). Per-image scores are appended to a resume cache as they come
(:mod:`.cache`); the final predictions are written as
``<out>/<detector[.tag]>[@<view>][@<perturbation>]/predictions/<set>.parquet`` and the
metrics (:func:`afpbench.scoring.compute_metrics`) into ``results.json`` beside them
(:mod:`.finalize`).

Resuming: scores are cached per (detector + arguments, weights sha256, dataset
fingerprint, view, perturbation). A killed run leaves flushed cache parts; running the same
command again scores only the rows that are missing.

Distributed: under ``torchrun``/``accelerate launch`` (WORLD_SIZE > 1) the rows still to
score are split across processes (:class:`afpbench._util.runtime.ProcessGroup`); each
process writes its own cache parts, and the main process gathers every score and writes
one predictions file per set, checking for duplicates and gaps.

Importing this package does not import torch; ``evaluate()`` does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from afpbench._util.locking import lock_scope
from afpbench.errors import AfpbenchError
from afpbench.evaluate.config import DetectorSpec, EvalConfig, Job, detector_options
from afpbench.evaluate.sets import EvalSet, locate_sets, open_sets, resolve_sets
from afpbench.results import ResultsFile

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from afpbench._util.runtime import ProcessGroup
    from afpbench.metrics import BootstrapConfig
    from afpbench.perturb import Perturbation
    from afpbench.views import View


@dataclass(frozen=True)
class Evaluation:
    """One results folder an evaluate call wrote: where its results file is, and what it says."""

    #: ``<out>/<detector[.tag]>[@<perturbation>]/results.json``
    path: Path
    results: ResultsFile

    def summary_line(self) -> str:
        """``<path>: average A (held-out H), N img/s``: what the CLI prints per results file."""
        a = self.results.metrics.averages

        def pct(m: Any) -> str:
            return f"{100 * m.value:.2f}" if m and m.value is not None else "-"

        ips = self.results.run.images_per_second
        return f"{self.path}: average {pct(a.all)} (held-out {pct(a.held_out)}), {f'{ips:.1f} img/s' if ips else 'all cached'}"


@lock_scope
def evaluate(cfg: EvalConfig) -> list[Evaluation]:
    """Evaluate every detector (x perturbation) on every set; return what was written.

    Each results folder is locked for the whole run (see :mod:`afpbench._util.locking`):
    a second evaluation of the same detector into the same ``out`` is refused. Under a
    multi-process launch only the main process returns the evaluations (the others get
    an empty list), and the process group is torn down before returning.
    """
    from afpbench._util.locking import check_output_dir
    from afpbench._util.runtime import process_group
    from afpbench.metrics import BootstrapConfig

    check_output_dir(cfg.out)  # a file or an unwritable folder is refused before any work
    bootstrap = BootstrapConfig(cfg.bootstrap, cfg.seed, cfg.confidence)
    with process_group() as pg:
        return _run(cfg, bootstrap, pg)


def _run(cfg: EvalConfig, bootstrap: BootstrapConfig, pg: ProcessGroup) -> list[Evaluation]:
    from afpbench._util.devices import resolve_device
    from afpbench.envinfo import peak_rss_bytes
    from afpbench.evaluate import pipeline
    from afpbench.evaluate.cache import CacheWriter, cache_key
    from afpbench.evaluate.finalize import ProcessReport, RunContext, finalize_job

    names, roles, profile = resolve_sets(cfg.data, cfg.datasets, cfg.profile, cfg.roles)
    _check_set_options(cfg, names)
    sets, verify_seconds = open_sets([(n, roles[n]) for n in names] + [(n, "calibration") for n in cfg.calibrate_on], cfg.data, cfg.limit, pg)
    perts = _perturbations(cfg)
    views = _views(cfg, sets, roles, pg)
    # Under a launcher, "cuda" means this rank's device, as "auto" does (CPU for a gloo launch).
    device = resolve_device("auto" if (pg.distributed and cfg.device == "cuda") else cfg.device, pg.device)
    detectors = pipeline.load_detectors(cfg.detectors, device, cfg.dtype)
    jobs = [
        Job(d, p, det, weights, pert, cfg.out, view_pos=v, view=view)
        for d, (det, weights) in enumerate(detectors) for v, view in enumerate(views) for p, pert in enumerate(perts)
    ]
    for job in jobs:
        job.folder = cfg.out / job.name
    if len({j.name for j in jobs}) != len(jobs):
        raise AfpbenchError("Two detectors would write to the same results folder; evaluate them separately or give them different tags.")
    for job in jobs:
        info = job.det.describe()
        job.keys = {s.name: cache_key(info, s.fingerprint, job.perturbation, job.view) for s in sets.values()}
    _lock_jobs(cfg, pg, jobs)

    plan = pipeline.plan_rows(jobs, sets, cfg.resume, pg, _kept_rows(jobs, sets, views))
    writer = CacheWriter(pg.rank, cfg.flush_every, cfg.flush_seconds)
    stats = pipeline.score_pass(pipeline.PassOptions(cfg.batch_size, cfg.num_workers, cfg.progress), pg, device, sets, jobs, perts, plan, writer, views)
    # Every process's new scores, timings and memory, on the main process.
    reports = pg.gather(ProcessReport(
        scores=writer.new_scores(), scored=stats.scored, wall=stats.wall, threads=stats.torch_threads,
        score_seconds=[job.score_seconds for job in jobs], rss=peak_rss_bytes(), gpu=pipeline.peak_gpu_memory(device),
    ))
    out: list[Evaluation] = []
    if pg.is_main:
        ctx = RunContext(cfg, profile, roles, bootstrap, device, pg.world, len(detectors), stats.workers, uuid.uuid4().hex, verify_seconds)
        for j, job in enumerate(jobs):
            result = finalize_job(j, job, sets, plan.cached, reports, plan.rows_cached(j, sets), ctx, plan)
            out.append(Evaluation(job.folder / "results.json", result))
    pg.barrier()
    return out


def _check_set_options(cfg: EvalConfig, names: list[str]) -> None:
    overlap = [n for n in cfg.calibrate_on if n in names]
    if overlap:
        raise AfpbenchError(f"Calibration set(s) {', '.join(overlap)} are also test sets; calibrate on a separate set (never the test set itself).")
    if cfg.real_pool is not None:
        outside = [n for n in cfg.real_pool if n not in names]
        if outside:
            raise AfpbenchError(f"Real pool set(s) {', '.join(outside)} are not evaluated; add them to --datasets or change --real-pool.")


def _perturbations(cfg: EvalConfig) -> list[Perturbation | None]:
    from afpbench.perturb import parse_perturbation

    perts = [parse_perturbation(p, cfg.perturb_seed) for p in (cfg.perturb or [None])]
    if len({p.spec if p else None for p in perts}) != len(perts):
        raise AfpbenchError("The same perturbation is listed twice; give each --perturb once.")
    return perts


def _views(cfg: EvalConfig, sets: dict[str, EvalSet], roles: dict[str, str], pg: ProcessGroup) -> list[View]:
    """The config's views; the matched ones get the real pool's codecs and sizes, read from
    the pool's stored headers once (main process) and shared with every process."""
    from afpbench.views import PoolStats, parse_views

    views = parse_views([v or "native" for v in (cfg.views or [None])], cfg.view_seed)
    if not any(v.needs_pool for v in views):
        return views
    stats = None
    if pg.is_main:
        from afpbench.scoring import default_real_pool, label_name

        test = {n: s for n, s in sets.items() if s.role != "calibration"}
        labels = {n: label_name(s.labels) for n, s in test.items()}
        pool = sorted(cfg.real_pool if cfg.real_pool is not None else default_real_pool(labels, roles)[0])
        if not pool:
            raise AfpbenchError("The matched views draw codecs and sizes from the real pool, and no real set is evaluated; add a real set (e.g. flickr) or --real-pool.")

        def blobs():
            for n in pool:
                for batch in test[n].reader.iter_batches(batch_size=256, columns=["image"], stop=test[n].n_eff):
                    for row in batch:
                        yield (row["image"] or {}).get("bytes") or b""

        stats = PoolStats.from_bytes(pool, blobs(), {n: test[n].fingerprint for n in pool})
    stats = pg.broadcast(stats)
    for v in views:
        if v.needs_pool:
            v.pool = stats
    return views


def _kept_rows(jobs: list[Job], sets: dict[str, EvalSet], views: list[View]) -> dict[tuple[int, str], np.ndarray]:
    """Per (job, set), the rows the job's view keeps: crop:N leaves out images smaller than N
    (their stored width and height say so before anything is decoded)."""
    import numpy as np

    sizes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    kept: dict[tuple[int, str], np.ndarray] = {}
    for j, job in enumerate(jobs):
        for s in sets.values():
            view = job.view
            if view is None or view.kind != "crop":
                kept[(j, s.name)] = np.ones(s.n_eff, dtype=bool)
                continue
            if s.name not in sizes:
                sizes[s.name] = (np.asarray(s.reader.column("width")[: s.n_eff]), np.asarray(s.reader.column("height")[: s.n_eff]))
            w, h = sizes[s.name]
            kept[(j, s.name)] = (w >= view.param) & (h >= view.param)
    return kept


def _lock_jobs(cfg: EvalConfig, pg: ProcessGroup, jobs: list[Job]) -> None:
    """Lock every results folder of this run (main process), then clear what killed runs left.

    One lock per folder, not per ``out``: evaluations of different detectors into one
    ``out`` (one per GPU, say) run side by side.
    """
    from afpbench._util.locking import ensure_output_dir, hold, lock_path
    from afpbench.evaluate.finalize import remove_stale_temporaries

    if pg.is_main:
        ensure_output_dir(cfg.out)
    share = pg.broadcast if pg.distributed else None
    for job in sorted(jobs, key=lambda j: j.name):  # a fixed order: overlapping runs are refused alike
        hold(lock_path(cfg.out, job.name), job.folder, main=pg.is_main, share=share)
    if pg.is_main:
        for job in jobs:
            remove_stale_temporaries(job.folder)


__all__ = ["DetectorSpec", "EvalConfig", "EvalSet", "Evaluation", "detector_options", "evaluate", "locate_sets", "resolve_sets"]


# ``afpbench.evaluate(...)`` calls evaluate even after this module was imported (see afpbench._util.callable_module).
from afpbench._util.callable_module import make_callable  # noqa: E402

make_callable(__name__, evaluate)
