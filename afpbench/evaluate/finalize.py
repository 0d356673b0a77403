"""From the scores of one job to its files: threshold, predictions files, results file.

:func:`finalize_job` merges the cached and newly gathered scores, applies the threshold
policy (:func:`threshold_policy`), writes one predictions file per set with its
:class:`~afpbench.results.PredictionsMeta` and the :class:`~afpbench.results.ResultsFile`
that checksums them, all replaced together (:class:`Staging`), and then drops the cache.
Runs on the main process only.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from afpbench._util.clock import utc_timestamp
from afpbench.errors import AfpbenchError
from afpbench.evaluate.cache import remove_cache
from afpbench.evaluate.config import EvalConfig, Job
from afpbench.metrics import BootstrapConfig, calibrate_threshold
from afpbench.results import (
    BootstrapInfo,
    DatasetInfo,
    Environment,
    GitInfo,
    PerturbationInfo,
    Predictions,
    PredictionsFileInfo,
    PredictionsMeta,
    ResultsFile,
    RunInfo,
    ThresholdPolicy,
    ViewInfo,
    dump_json,
    write_predictions,
)
from afpbench.scoring import compute_metrics, label_name, predict

if TYPE_CHECKING:  # pragma: no cover
    from afpbench.detectors.base import Scorer
    from afpbench.evaluate.pipeline import RowPlan
    from afpbench.evaluate.sets import EvalSet


@dataclass
class ProcessReport:
    """What one process sends the main process after its pass."""

    #: (job, set) -> (row indices, scores) this process scored
    scores: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]
    scored: int
    wall: float
    threads: int
    score_seconds: list[float]
    rss: int
    gpu: int | None


@dataclass
class RunContext:
    """What every job of one evaluate call shares."""

    cfg: EvalConfig
    profile: str | None
    roles: dict[str, str]
    bootstrap: BootstrapConfig
    device: str
    num_processes: int
    n_detectors: int
    workers: int
    #: One id per evaluate call, recorded in its results file and every predictions file
    #: it writes, so that `score` and `leaderboard` never combine files of different runs.
    evaluation_id: str
    verify_seconds: float | None


class Staging:
    """Files written under temporary names, then renamed into place together.

    A results folder is a set of predictions files and a results file that checksums
    them: replacing them one by one, a full disk halfway would leave a results file that
    no longer matches its predictions. Every file is first written in full; only then are
    they renamed (renames need no space), and on any failure the temporaries are removed.
    """

    def __init__(self) -> None:
        self.pairs: list[tuple[Path, Path]] = []

    def path(self, final: Path) -> Path:
        from afpbench._util.io import tmp_name

        tmp = tmp_name(final, "new")
        self.pairs.append((tmp, final))
        return tmp

    def commit(self) -> None:
        for tmp, final in self.pairs:
            os.replace(tmp, final)
        self.pairs = []

    def discard(self) -> None:
        from afpbench._util.io import remove

        for tmp, _ in self.pairs:
            remove(tmp)
        self.pairs = []


def remove_stale_temporaries(folder: Path) -> None:
    """Temporary files a killed run left half-written (the caller's lock says no one is writing them)."""
    from afpbench._util.io import remove

    for pattern in ("cache/*/.part-*.tmp*", "predictions/.*.tmp-*", "predictions/.*.new-*", "predictions/*.parquet.tmp", ".results.json.*-*", "results.json.tmp"):
        for path in folder.glob(pattern):
            remove(path)


@dataclass
class _Kept:
    """A set as a job's view scores it (its kept rows' labels), for the threshold policy."""

    s: EvalSet
    labels: np.ndarray

    @property
    def role(self) -> str:
        return self.s.role

    @property
    def name(self) -> str:
        return self.s.name


def threshold_policy(det: Scorer, sets: dict[str, EvalSet], scores: dict[str, np.ndarray]) -> ThresholdPolicy:
    """Calibrated on the calibration sets when there are any, else the detector's own threshold."""
    cal = [s for s in sets.values() if s.role == "calibration"]
    if cal:
        y = np.concatenate([s.labels for s in cal])
        sc = np.concatenate([scores[s.name] for s in cal])
        thr = calibrate_threshold(y, sc)
        return ThresholdPolicy(kind="calibrated", value=thr, source="maximum balanced accuracy (Youden's J) on the calibration sets", calibration_sets=[s.name for s in cal])
    raw = det.threshold
    thr = 0.5 if raw is None else float(raw)
    source = det.threshold_policy or ("the detector's threshold" if raw is not None else "default 0.5 (the detector declares none)")
    return ThresholdPolicy(kind="fixed", value=thr, source=str(source))


def merged_scores(j: int, job: Job, sets: dict[str, EvalSet], cached: dict[tuple[int, str], dict[int, float]], reports: list[ProcessReport],
                  kept: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every kept row's score per set: cached ones plus what each process scored (each row
    once). Rows the job's view left out (``kept`` False) stay NaN and are dropped later."""
    scores: dict[str, np.ndarray] = {}
    for s in sets.values():
        keep = kept[s.name] if kept is not None else np.ones(s.n_eff, dtype=bool)
        full = np.full(s.n_eff, np.nan)
        seen = np.zeros(s.n_eff, dtype=np.int64)
        for i, v in cached[(j, s.name)].items():
            if i < s.n_eff:
                full[i] = v
        for r in reports:
            if (j, s.name) in r.scores:
                idx, sc = r.scores[(j, s.name)]
                np.add.at(seen, idx, 1)
                full[idx] = sc
        if (seen > 1).any():
            raise AfpbenchError(f"{int((seen > 1).sum())} rows of '{s.name}' were scored by more than one process; this is a bug, please report it.")
        if np.isnan(full[keep]).any():
            raise AfpbenchError(f"{int(np.isnan(full[keep]).sum())} rows of '{s.name}' were never scored for {job.name}; run the same command again to finish them.")
        scores[s.name] = full
    return scores


def _environment() -> Environment:
    """Versions (the one package list of afpbench.envinfo) and hardware; torch's view only if it is loaded."""
    from afpbench.envinfo import PACKAGES, environment

    env = environment()
    cuda, gpu = None, None
    if "torch" in sys.modules:
        import torch

        cuda = torch.version.cuda
        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(torch.cuda.current_device())
    return Environment(python=env["python"], platform=env["platform"], packages={p: env[p] for p in PACKAGES}, cuda=cuda, gpu_name=gpu)


def _git() -> GitInfo:
    from afpbench.envinfo import git_state

    commit, dirty = git_state()
    return GitInfo(commit=commit, dirty=dirty)


def finalize_job(j: int, job: Job, sets: dict[str, EvalSet], cached: dict[tuple[int, str], dict[int, float]], reports: list[ProcessReport],
                 rows_cached: int, ctx: RunContext, plan: RowPlan | None = None) -> ResultsFile:
    """Merge the scores, apply the threshold, write the predictions and results files.

    The previous predictions and results of the folder stay as they were until every new
    file is complete (see :class:`Staging`); the score cache is removed only after that.
    """
    staging = Staging()
    try:
        kept = {s.name: plan.kept_rows(j, s.name, s.n_eff) for s in sets.values()} if plan is not None else None
        result = _write_files(j, job, sets, cached, reports, rows_cached, ctx, staging, kept)
        staging.commit()
    except BaseException:
        staging.discard()
        raise
    for s in sets.values():
        # The final files now hold every score: the partial cache is obsolete.
        remove_cache(job.folder, s.name)
    return result


def _write_files(j: int, job: Job, sets: dict[str, EvalSet], cached: dict[tuple[int, str], dict[int, float]], reports: list[ProcessReport],
                 rows_cached: int, ctx: RunContext, staging: Staging, kept: dict[str, np.ndarray] | None = None) -> ResultsFile:
    cfg = ctx.cfg
    kept = kept or {s.name: np.ones(s.n_eff, dtype=bool) for s in sets.values()}
    full = merged_scores(j, job, sets, cached, reports, kept)
    # The rows each set is scored on under this job's view (crop:N leaves out smaller images).
    scores = {n: full[n][kept[n]] for n in full}
    ids = {s.name: [rid for rid, k in zip(s.ids, kept[s.name]) if k] for s in sets.values()}
    labels = {s.name: s.labels[kept[s.name]] for s in sets.values()}
    excluded = [s.name for s in sets.values() if not kept[s.name].any()]
    live = {n: s for n, s in sets.items() if n not in excluded}
    lost_pool = [n for n in (cfg.real_pool or []) if n in excluded]
    if lost_pool:
        raise AfpbenchError(f"View {job.view.name} leaves out every image of the real pool set(s) {', '.join(lost_pool)}; pick a smaller crop or another --real-pool.")
    if not any(s.role != "calibration" for s in live.values()):
        raise AfpbenchError(f"View {job.view.name if job.view else 'native'} leaves no image of any set for {job.name}; pick a smaller crop or another view.")
    policy = threshold_policy(job.det, {n: _Kept(s, labels[n]) for n, s in live.items()}, scores)
    info = job.det.describe()
    pert = PerturbationInfo(**job.perturbation.record()) if job.perturbation else None
    view = None
    if job.viewed:
        view = ViewInfo(**job.view.record(), **({"excluded_sets": excluded} if excluded else {}))
    chain = job.perturbation is not None and job.perturbation.name == "chain"
    boot = BootstrapInfo(n_resamples=ctx.bootstrap.n_resamples, seed=ctx.bootstrap.seed, confidence=ctx.bootstrap.confidence)
    preds_by_set: dict[str, Predictions] = {}
    infos: list[DatasetInfo] = []
    cal_infos: list[DatasetInfo] = []
    for position, s in enumerate(sets.values()):
        if s.name in excluded:
            continue
        n = len(ids[s.name])
        refused = [rid for rid, k in zip(s.ids, kept[s.name]) if not k] or None
        pred = predict(scores[s.name], policy.value)
        recipe = s.reader.manifest.get("recipe") or {}  # the manifest's optional recipe reference
        meta = PredictionsMeta(
            dataset=s.name, position=position, role=s.role, label=label_name(labels[s.name]), family=s.family, fingerprint=s.fingerprint,
            recipe=recipe, rows_total=s.reader.num_rows, rows_evaluated=n, limit=cfg.limit, detector=info.full_name,
            weights_sha256=info.weights_sha256, perturbation=pert, view=view, threshold=policy, real_pool=cfg.real_pool, bootstrap=boot,
            profile=ctx.profile, cache_key=job.keys[s.name], evaluation_id=ctx.evaluation_id,
        )
        # The chain suite draws each image's operations: the draw is recorded beside its score.
        conditions = [job.perturbation.condition(rid) for rid in ids[s.name]] if chain else None
        path = job.folder / "predictions" / f"{s.name}.parquet"
        digest = write_predictions(staging.path(path), ids[s.name], labels[s.name], scores[s.name], pred, meta, conditions)
        dinfo = DatasetInfo(
            name=s.name, role=s.role, label=meta.label, family=s.family,
            recipe_name=recipe.get("name") if isinstance(recipe, dict) else None,
            recipe_version=recipe.get("version") if isinstance(recipe, dict) else None,
            fingerprint=s.fingerprint, recipe_fingerprint=s.reader.manifest.get("recipe_fingerprint"),
            rows_total=s.reader.num_rows, rows_evaluated=n, refused=refused,
            predictions=PredictionsFileInfo(path=f"predictions/{s.name}.parquet", sha256=digest, rows=n),
        )
        if s.role == "calibration":
            cal_infos.append(dinfo)
        else:
            infos.append(dinfo)
            preds_by_set[s.name] = Predictions(ids[s.name], labels[s.name], scores[s.name], pred, meta, conditions)

    metrics = compute_metrics(preds_by_set, ctx.roles, cfg.real_pool, ctx.bootstrap)
    scored = sum(r.scored for r in reports)
    wall = max(r.wall for r in reports)
    gpu = [r.gpu for r in reports if r.gpu is not None]
    run = RunInfo(
        device=ctx.device, dtype=cfg.dtype, batch_size=cfg.batch_size, num_processes=ctx.num_processes,
        num_workers=ctx.workers, torch_threads=reports[0].threads, detectors_in_pass=ctx.n_detectors, limit=cfg.limit, rows_scored=scored,
        rows_cached=rows_cached, rows_per_process=[r.scored for r in reports], wall_seconds=wall, images_per_second=(scored / wall if scored and wall > 0 else None),
        score_seconds=sum(r.score_seconds[j] for r in reports), peak_rss_bytes=max(r.rss for r in reports),
        peak_gpu_memory_bytes=max(gpu) if gpu else None, evaluation_id=ctx.evaluation_id or None, verify_seconds=ctx.verify_seconds,
    )
    from afpbench import __version__

    result = ResultsFile(
        created=utc_timestamp(),
        afpbench_version=__version__,
        git=_git(),
        command=cfg.command,
        environment=_environment(),
        # The results file records the weights as the user gave them (null for a
        # detector's released default), beside the sha256 of the file actually loaded.
        detector=info.model_copy(update={"weights": str(job.weights) if job.weights else None}),
        profile=ctx.profile,
        perturbation=pert,
        view=view,
        threshold=policy,
        bootstrap=boot,
        run=run,
        datasets=infos,
        calibration=cal_infos,
        metrics=metrics,
    )
    dump_json(result, staging.path(job.folder / "results.json"))
    return result


__all__ = ["ProcessReport", "RunContext", "Staging", "finalize_job", "merged_scores", "remove_stale_temporaries", "threshold_policy"]
