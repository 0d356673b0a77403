"""The leaderboard's derived numbers, computed once from checked results.

Pair summaries and their means, family means, the native-vs-view comparisons (with
Kendall's tau and its bootstrap interval), the clean-vs-perturbed AUC rows and the audit
summary. The renderers only format what these return.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from afpbench._util.hashing import sha256_file
from afpbench.errors import AfpbenchError
from afpbench.metrics import PAIR_METRICS, mean_estimate, percentile_interval
from afpbench.results import (
    AuditPairSummary,
    AuditShortcut,
    LeaderboardAudit,
    LeaderboardEntry,
    LeaderboardSet,
    Metric,
    PairResult,
    PairSummary,
    RankCorrelation,
    RobustnessRow,
    ViewComparison,
    ViewDetector,
)

#: The threshold-free metrics a leaderboard shows: metrics.PAIR_METRICS without the two
#: balanced accuracies (the per-set accuracies already report the recorded threshold, and
#: the oracle one is never a detector's number).
PAIR_KEYS = tuple(k for k in PAIR_METRICS if not k.endswith("balanced_accuracy"))
#: A detector whose mean AUC falls by more than this under a view is marked.
DROP_FLAG = 0.1
#: Bootstrap of the rank correlation between native and a view.
TAU_RESAMPLES = 1000
TAU_SEED = 0
TAU_CONFIDENCE = 0.95
#: Suites shown first in the clean-vs-perturbed table: the chained degradations.
FIRST_SUITES = ("chain",)


def pair_summary(p: PairResult) -> PairSummary:
    return PairSummary(**{k: getattr(p, k) for k in PAIR_KEYS})


def pair_means(pairs: Mapping[str, PairSummary]) -> PairSummary | None:
    """Plain means over the fake sets of each threshold-free metric (values only: a mean of
    intervals is no interval)."""
    if not pairs:
        return None
    out: dict[str, Metric | None] = {}
    for k in PAIR_KEYS:
        v = mean_estimate(getattr(s, k).value for s in pairs.values() if getattr(s, k) is not None)
        out[k] = Metric(value=v) if v is not None else None
    return PairSummary(**out)


def families(per_set: Mapping[str, Metric], sets: Sequence[LeaderboardSet]) -> dict[str, float]:
    """Mean accuracy per family over the sets an entry has a number for."""
    groups: dict[str, list[float]] = {}
    for s in sets:
        m = per_set.get(s.name)
        if m is not None and m.value is not None:
            groups.setdefault(s.family or "other", []).append(m.value)
    return {fam: float(np.mean(v)) for fam, v in groups.items()}


def _clean(entries: Sequence[LeaderboardEntry]) -> dict[str, LeaderboardEntry]:
    """Measured native, unperturbed entries by detector."""
    return {e.detector: e for e in entries if e.source == "measured" and e.view is None and e.perturbation is None}


def _tau(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import kendalltau

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: tau is undefined (NaN), reported as null
        tau, _ = kendalltau(x, y)
    return float(tau)


def rank_correlation(native: np.ndarray, view: np.ndarray, fake_sets: list[str], seed: int, key: str) -> RankCorrelation:
    """Kendall's tau of the per-detector mean AUCs (rows: detectors, columns: fake sets), with
    a percentile interval over resamples of the fake sets (with replacement, seeded)."""
    from afpbench.seeding import row_rng

    n_det, n_sets = native.shape
    base: dict[str, Any] = {"n_detectors": n_det, "resampled": list(fake_sets), "n_resamples": TAU_RESAMPLES, "seed": seed, "confidence": TAU_CONFIDENCE}
    if n_det < 2 or n_sets == 0:
        return RankCorrelation(value=None, **base)
    value = _tau(native.mean(axis=1), view.mean(axis=1))
    rng = row_rng(seed, "kendall-tau", key)
    draws = np.empty(TAU_RESAMPLES)
    # A resample's means depend only on how often it drew each set, so equal draws share
    # one tau (few sets have few distinct resamples; many sets cost one call per resample).
    seen: dict[bytes, float] = {}
    for b in range(TAU_RESAMPLES):
        counts = np.bincount(rng.integers(n_sets, size=n_sets), minlength=n_sets)
        k = counts.tobytes()
        if k not in seen:
            seen[k] = _tau(native @ counts / n_sets, view @ counts / n_sets)
        draws[b] = seen[k]
    low, high = percentile_interval(draws, TAU_CONFIDENCE)

    def clip(v: float) -> float | None:
        return None if not math.isfinite(v) else min(max(v, -1.0), 1.0)

    return RankCorrelation(value=clip(value), ci_low=clip(low), ci_high=clip(high), **base)


def view_comparisons(entries: Sequence[LeaderboardEntry], set_order: Sequence[str], seed: int = TAU_SEED) -> list[ViewComparison]:
    """Native against each view, over the detectors measured both ways (unperturbed)."""
    native = _clean(entries)
    by_view: dict[str, dict[str, LeaderboardEntry]] = {}
    for e in entries:
        if e.source == "measured" and e.view is not None and e.perturbation is None:
            by_view.setdefault(e.view.name, {})[e.detector] = e
    out = []
    for name in sorted(by_view):
        views = by_view[name]
        dets = [d for d in views if d in native]
        if not dets:
            continue
        # The means run over the fake sets every compared detector has an AUC for both ways
        # (a crop view may leave a set out), so native and view numbers stay comparable.
        fake_sets = [
            s for s in set_order
            if all(_auc(native[d], s) is not None and _auc(views[d], s) is not None for d in dets)
        ]
        nat = np.array([[_auc(native[d], s) for s in fake_sets] for d in dets], dtype=np.float64).reshape(len(dets), len(fake_sets))
        vw = np.array([[_auc(views[d], s) for s in fake_sets] for d in dets], dtype=np.float64).reshape(len(dets), len(fake_sets))
        rows = []
        for i, d in enumerate(dets):
            n_auc = float(nat[i].mean()) if fake_sets else None
            v_auc = float(vw[i].mean()) if fake_sets else None
            drop = n_auc - v_auc if n_auc is not None and v_auc is not None else None
            rows.append(ViewDetector(detector=d, native_auc=n_auc, view_auc=v_auc, drop=drop, flagged=drop is not None and drop > DROP_FLAG))
        rows.sort(key=lambda r: (-(r.native_auc if r.native_auc is not None else -1.0), r.detector))
        tau = rank_correlation(nat, vw, fake_sets, seed, name)
        out.append(ViewComparison(view=views[dets[0]].view, fake_sets=fake_sets, drop_flag=DROP_FLAG, detectors=rows, kendall_tau=tau))
    return out


def _auc(e: LeaderboardEntry, fake: str) -> float | None:
    p = e.pairs.get(fake)
    return p.auc.value if p is not None and p.auc is not None else None


def robustness_rows(entries: Sequence[LeaderboardEntry]) -> list[RobustnessRow]:
    """Clean against perturbed mean AUC for every (detector, suite) measured (native view)."""
    clean = _clean(entries)
    rows = []
    for e in entries:
        if e.source != "measured" or e.view is not None or e.perturbation is None:
            continue
        c = clean.get(e.detector)
        c_auc = c.mean_auc if c is not None else None
        drop = c_auc - e.mean_auc if c_auc is not None and e.mean_auc is not None else None
        rows.append(RobustnessRow(detector=e.detector, suite=e.perturbation, clean_auc=c_auc, robust_auc=e.mean_auc, drop=drop))
    first = {s: i for i, s in enumerate(FIRST_SUITES)}
    rows.sort(key=lambda r: (first.get(r.suite, len(first)), r.suite, -(r.clean_auc if r.clean_auc is not None else -1.0), r.detector))
    return rows


def audit_summary(report: Any, file: Path, used: Mapping[str, set[str]]) -> LeaderboardAudit:
    """The audit's pairs whose fake set is a measured column, checked against the evaluated builds.

    ``used``: set name -> content fingerprints the results were evaluated on. An audit of
    another build would describe images nobody scored, so it is refused.
    """
    from afpbench.audit import ALL, SHORTCUTS

    where = str(file)
    for name, fp in report.fingerprints.items():
        if name in used and fp not in used[name]:
            raise AfpbenchError(
                f"{where} audited another build of set '{name}' (fingerprint {fp[:12]}...) than the results were evaluated on; run afpbench audit on the evaluated data."
            )
    pairs = [p for p in report.pairs if p.fake in used]
    if not pairs:
        raise AfpbenchError(f"{where} audits none of the leaderboard's fake sets ({', '.join(sorted(used))}); run afpbench audit on the evaluated data.")
    columns = [*SHORTCUTS, ALL]
    return LeaderboardAudit(
        file=where, sha256=sha256_file(file), created=report.created,
        real_pool=list(report.real_pool), flag_auc=report.flag_auc, shortcuts=[c for c in columns if any(c in p.shortcuts for p in pairs)],
        pairs=[
            AuditPairSummary(
                fake=p.fake, real=list(p.real), n_fake=p.n_fake, n_real=p.n_real, flagged=p.flagged, summary=p.summary,
                shortcuts={k: AuditShortcut(value=v.value, ci_low=v.ci_low, ci_high=v.ci_high, flagged=v.flagged) for k, v in p.shortcuts.items()},
                plots=[f"audit/{rel}" for rel in p.plots],
            )
            for p in pairs
        ],
    )
