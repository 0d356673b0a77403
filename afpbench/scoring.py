"""From per-image predictions to every metric: the one code path of evaluate, score and the leaderboard.

:func:`compute_metrics` turns the predictions of one detector on a list of sets into the
results file's :class:`~afpbench.results.MetricsBlock` (per-set accuracy, the paper's
averages, threshold-free metrics of each fake set against the real pool);
:func:`score_predictions` reads predictions files back and recomputes them with the
settings the evaluation recorded. The statistics themselves live in :mod:`afpbench.metrics`.
Imports numpy and pydantic only (pyarrow when files are read).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from afpbench import metrics
from afpbench.errors import AfpbenchError, DatasetError
from afpbench.results import Averages, Metric, MetricsBlock, Pairing, PairResult, Predictions, SetMetrics

log = logging.getLogger(__name__)


def predict(scores: Sequence[float] | np.ndarray, threshold: float) -> np.ndarray:
    """Predictions from P(fake) scores: 1 (fake) where ``score > threshold`` (a tie is real, as
    the authors' rule decides it), the rule every results file's threshold policy records
    (evaluate applies it, the leaderboard checks it)."""
    return (np.asarray(scores, dtype=np.float64) > threshold).astype(np.int8)


def label_name(labels: np.ndarray) -> str:
    """'real', 'fake' or 'mixed' from a set's labels."""
    u = set(np.unique(labels).tolist())
    return "mixed" if len(u) > 1 else ("fake" if u == {1} else "real")


def default_real_pool(labels: Mapping[str, str], roles: Mapping[str, str]) -> tuple[list[str], str]:
    """The real sets every fake set is paired with, and the rule that chose them.

    Rule: the held-out real sets (v3: flickr); when no real set is held out, every real
    set evaluated. ``coco`` (held-in) joins only when asked with ``real_pool``.
    """
    held = [n for n, lab in labels.items() if lab == "real" and roles.get(n) == "held-out"]
    if held:
        return held, "default: the held-out real sets"
    every = [n for n, lab in labels.items() if lab == "real"]
    return every, "default: every real set (none is held out)"


def compute_metrics(
    sets: Mapping[str, Predictions],
    roles: Mapping[str, str],
    real_pool: Sequence[str] | None = None,
    bootstrap: metrics.BootstrapConfig | None = None,
) -> MetricsBlock:
    """All metrics of one detector from its predictions (the code path of evaluate and score).

    ``sets`` maps test-set names to their predictions; ``real_pool`` names the real sets
    paired with every fake set (default: :func:`default_real_pool`). A mixed set is also
    scored threshold-free on its own.
    """
    bootstrap = bootstrap or metrics.BootstrapConfig()
    if not sets:
        raise AfpbenchError("No predictions to score; pass at least one predictions file.")
    for name, p in sets.items():
        if len(p.ids) == 0:
            raise AfpbenchError(f"Set '{name}' has no rows; build or import it again, or leave it out.")
        metrics.check_scores(p.scores, f"Predictions of set '{name}'")
    labels = {n: label_name(p.labels) for n, p in sets.items()}
    per_set_est, avg_est = metrics.accuracy_metrics({n: (p.labels, p.preds) for n, p in sets.items()}, roles, bootstrap)
    per_set = {n: SetMetrics(label=labels[n], n=len(sets[n].ids), accuracy=Metric.of(per_set_est[n])) for n in sets}
    held = [n for n in sets if roles[n] == "held-out"]
    averages = Averages(all=Metric.of(avg_est["all"]), held_out=Metric.of(avg_est["held_out"]), n_sets=len(sets), n_held_out=len(held))

    if real_pool is None:
        pool, rule = default_real_pool(labels, roles)
    else:
        pool, rule = list(real_pool), "explicit"
        for n in pool:
            if n not in sets:
                raise AfpbenchError(f"Real pool set '{n}' was not evaluated; add it to the evaluated sets or change --real-pool.")
            if labels[n] != "real":
                raise AfpbenchError(f"Real pool set '{n}' is {labels[n]}, not real; pair fake sets with real sets only (e.g. --real-pool flickr).")
    pairs: list[PairResult] = []
    # Sorted so the pooled order (and so each bootstrap stream) never depends on the
    # order the sets were evaluated or the files were passed in. With no real set
    # evaluated the pool is empty and only accuracies are reported.
    members_sorted = sorted(pool)
    for name in [n for n in sets if labels[n] in ("fake", "mixed")]:
        p = sets[name]
        members = members_sorted if labels[name] == "fake" else []
        if labels[name] == "fake" and not members:
            continue
        y = np.concatenate([p.labels] + [sets[r].labels for r in members])
        s = np.concatenate([p.scores] + [sets[r].scores for r in members])
        d = np.concatenate([p.preds] + [sets[r].preds for r in members])
        est = metrics.pair_metrics(y, s, d, bootstrap, key="|".join([name, *members]), what=f"Pair '{name}' vs {'+'.join(members) or 'itself'}")
        pairs.append(
            PairResult(fake=name, real=list(members), n_fake=int((y == 1).sum()), n_real=int((y == 0).sum()), **{k: Metric.of(v) for k, v in est.items()})
        )
    return MetricsBlock(per_set=per_set, averages=averages, pairing=Pairing(real_pool=list(pool), rule=rule), pairs=pairs)


def predictions_in(folder: Path) -> list[Path]:
    """The predictions files of a results folder: those its results.json lists (so a stale
    file of an earlier run left in predictions/ is never mixed in), else all of them."""
    from afpbench.results import load_results

    if (folder / "results.json").is_file():
        try:
            res = load_results(folder / "results.json")
        except AfpbenchError as exc:  # the predictions alone are what score needs
            log.warning("%s; scoring every file in %s/predictions instead", exc, folder)
        else:
            return [folder / d.predictions.path for d in [*res.datasets, *res.calibration]]
    sub = folder / "predictions" if (folder / "predictions").is_dir() else folder
    found = sorted(sub.glob("*.parquet"))
    if not found:
        raise AfpbenchError(f"No predictions files in {folder}; pass <results>/<detector>/predictions/*.parquet files or their folder.")
    return found


def score_predictions(
    paths: Sequence[str | Path], *, data: Sequence[Path] = (), real_pool: list[str] | None = None, bootstrap: int | None = None, seed: int | None = None
) -> tuple[MetricsBlock, list[Predictions]]:
    """Recompute every metric from predictions files alone (``afpbench score``).

    ``paths`` are predictions parquet files or result folders (the predictions files
    their ``results.json`` lists, else every file in their ``predictions/``). Roles, real
    pool and bootstrap settings are what evaluate recorded (``real_pool``, ``bootstrap``
    and ``seed`` override them), so the numbers equal the results file's. The files must
    come from one evaluation (evaluate records its id in each); files written without an
    id are accepted only with ``data``, which checks each file's dataset fingerprint
    against the set's current manifest.
    """
    from afpbench.results import read_predictions

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(predictions_in(p))
        else:
            files.append(p)
    preds = [read_predictions(f) for f in files]
    metas = [p.meta for p in preds]
    owners = {(m.detector, json.dumps(m.perturbation.model_dump(mode="json") if m.perturbation else None, sort_keys=True)) for m in metas}
    if len(owners) > 1:
        raise AfpbenchError("The predictions come from different detectors or perturbations; score one detector (one results folder) at a time.")
    runs = {m.evaluation_id for m in metas} - {None}
    if len(runs) > 1:
        raise AfpbenchError(
            f"The predictions come from {len(runs)} different evaluations (a set re-evaluated on its own, or files of different runs); "
            "pass the files of one evaluation (its results folder), or evaluate all the sets again in one run."
        )
    legacy = [f for f, m in zip(files, metas) if m.evaluation_id is None]
    if legacy and not data:
        raise DatasetError(
            f"{legacy[0]} records no evaluation id (written by an older afpbench), so it cannot be shown to come from the same run and data build as the other files; "
            "pass --data DIR to check every file against the sets' current fingerprints, or evaluate again."
        )
    by_set: dict[str, Predictions] = {}
    for f, p in zip(files, preds):
        if p.name in by_set:
            raise AfpbenchError(f"Two predictions files for set '{p.name}' ({f}); pass each set once.")
        if data:
            from afpbench.dataset import open_dataset
            from afpbench.evaluate.sets import find_set

            current = open_dataset(find_set(p.name, [Path(d) for d in data])).fingerprint
            if current != p.meta.fingerprint:
                raise DatasetError(
                    f"Predictions {f} were made on a different version of set '{p.name}' (fingerprint {p.meta.fingerprint[:12]}..., now {current[:12]}...); evaluate again."
                )
        by_set[p.name] = p
    ordered = sorted(by_set.items(), key=lambda kv: (kv[1].meta.position, kv[0]))
    test = {n: p for n, p in ordered if p.meta.role != "calibration"}
    roles = {n: p.meta.role for n, p in test.items()}
    first = metas[0]
    cfg = metrics.BootstrapConfig(
        n_resamples=bootstrap if bootstrap is not None else first.bootstrap.n_resamples,
        seed=seed if seed is not None else first.bootstrap.seed,
        confidence=first.bootstrap.confidence,
    )
    pool = real_pool if real_pool is not None else first.real_pool
    return compute_metrics(test, roles, pool, cfg), preds


__all__ = ["compute_metrics", "default_real_pool", "label_name", "predict", "predictions_in", "score_predictions"]
