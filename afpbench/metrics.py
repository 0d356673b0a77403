"""Metrics of the benchmark: pure numpy functions on labels, scores and predictions.

Two families of numbers, both with 95% bootstrap confidence intervals:

* the paper's protocol: accuracy per single-class set (a real set's accuracy is the
  fraction called real, a fake set's the fraction called fake), then the plain mean over
  all sets of a profile and over its held-out sets;
* threshold-free metrics on explicit real/fake pairs (a fake set against a real pool):
  ROC AUC, average precision, equal error rate, TPR at 1% and 5% FPR, and balanced
  accuracy at the recorded threshold (plus an oracle balanced accuracy, always labelled).

Labels are 0 = real, 1 = fake; scores are P(fake). Fractions are returned in [0, 1]
(tables multiply by 100). Nothing here imports torch or sklearn; the tests check every
function against scikit-learn and against cases computed by hand.

Bootstrap: every curve metric is computed from one sort of the pooled scores; a
resample is a vector of integer multiplicities over the original samples, so a
resample costs cumulative sums instead of a new sort. Pairs are resampled stratified
(reals and fakes separately) so that every resample keeps both classes. Each number has
its own random stream derived from (seed, metric, set names), so a confidence interval
does not depend on which other sets were evaluated or in what order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from afpbench.errors import AfpbenchError
from afpbench.seeding import row_rng

#: False-positive rates at which the true-positive rate is reported.
FPR_TARGETS = (0.01, 0.05)
#: The threshold-free (and balanced-accuracy) metrics of a real/fake pair, in report order.
PAIR_METRICS = ("auc", "ap", "eer", "tpr_at_fpr_1", "tpr_at_fpr_5", "balanced_accuracy", "oracle_balanced_accuracy")
# Resamples are processed in chunks so memory stays at chunk x n floats.
_CHUNK = 128


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap confidence interval."""

    value: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high}


@dataclass(frozen=True)
class BootstrapConfig:
    """How confidence intervals are computed (recorded in every results file)."""

    n_resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.n_resamples < 1:
            raise AfpbenchError(f"The number of bootstrap resamples must be at least 1 (got {self.n_resamples}); pass a positive --bootstrap.")
        if not 0.0 < self.confidence < 1.0:
            raise AfpbenchError(f"The confidence level must lie strictly between 0 and 1 (got {self.confidence}); pass e.g. 0.95.")


# -- input checks ---------------------------------------------------------------------
def _labels(labels: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise AfpbenchError(f"{what}: labels must be a flat list; pass one label per image.")
    if y.size == 0:
        raise AfpbenchError(f"{what} has no rows; build or import the set again, or leave it out of the evaluation.")
    if not np.isin(y, (0, 1)).all():
        raise AfpbenchError(f"{what}: labels must be 0 (real) or 1 (fake); fix the dataset's label column.")
    return y.astype(np.int8)


def check_scores(scores: Sequence[float] | np.ndarray, what: str = "scores") -> np.ndarray:
    """Scores as float64, refusing NaN and infinities (a broken detector, never a metric)."""
    s = np.asarray(scores, dtype=np.float64)
    bad = ~np.isfinite(s)
    if bad.any():
        raise AfpbenchError(
            f"{what}: {int(bad.sum())} of {s.size} scores are NaN or infinite; fix the detector (scores must be P(fake) in [0, 1]) and evaluate again."
        )
    return s


def _preds(preds: Sequence[int] | np.ndarray, n: int, what: str) -> np.ndarray:
    p = np.asarray(preds)
    if p.shape != (n,):
        raise AfpbenchError(f"{what}: {p.size} predictions for {n} labels; pass one prediction per image.")
    if not np.isin(p, (0, 1)).all():
        raise AfpbenchError(f"{what}: predictions must be 0 (real) or 1 (fake); recompute them from the scores.")
    return p.astype(np.int8)


def _require_both_classes(y: np.ndarray, what: str) -> None:
    n_fake = int(y.sum())
    if n_fake == 0 or n_fake == y.size:
        only = "fake" if n_fake else "real"
        raise AfpbenchError(
            f"{what} holds only {only} images, but AUC/AP/EER need both classes; pair the fake set with a real pool (e.g. --real-pool flickr)."
        )


# -- random streams ---------------------------------------------------------------------
def percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile bootstrap interval of the resampled values."""
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    return float(low), float(high)


# -- the paper's protocol -----------------------------------------------------------------
def set_accuracy(labels: Sequence[int], preds: Sequence[int], what: str = "the set") -> float:
    """Fraction of images whose prediction equals their label.

    For the benchmark's single-class sets this is the paper's per-set accuracy: the
    fraction called real on a real set, the fraction called fake on a fake set.
    """
    y = _labels(labels, what)
    p = _preds(preds, y.size, what)
    return float((y == p).mean())


def protocol_averages(per_set: Mapping[str, float], roles: Mapping[str, str]) -> dict[str, float | None]:
    """The paper's two averages: plain mean over all sets and over the held-out ones.

    ``roles`` maps each set to ``held-in`` or ``held-out``; ``held_out`` is None when
    no set is held out.
    """
    if not per_set:
        raise AfpbenchError("No per-set accuracies to average; evaluate at least one set.")
    missing = [n for n in per_set if n not in roles]
    if missing:
        raise AfpbenchError(f"No role (held-in/held-out) for {', '.join(missing)}; give one with --profile or EvalConfig.roles.")
    values = [per_set[n] for n in sorted(per_set)]
    held = [per_set[n] for n in sorted(per_set) if roles[n] == "held-out"]
    return {"all": float(np.mean(values)), "held_out": float(np.mean(held)) if held else None}


def accuracy_metrics(
    sets: Mapping[str, tuple[Sequence[int], Sequence[int]]],
    roles: Mapping[str, str],
    bootstrap: BootstrapConfig = BootstrapConfig(),
) -> tuple[dict[str, Estimate], dict[str, Estimate | None]]:
    """Per-set accuracy and the two protocol averages, each with a bootstrap interval.

    ``sets`` maps a set name to ``(labels, preds)``. Resampling a set's images with
    replacement makes its number of correct predictions Binomial(n, accuracy), so each
    set's resampled accuracies are drawn directly from that distribution (exactly the
    nonparametric bootstrap, without materialising the resamples). An average's
    interval uses the same per-set draws, resampling every set independently.
    """
    per_set: dict[str, Estimate] = {}
    draws: dict[str, np.ndarray] = {}
    for name, (labels, preds) in sets.items():
        y = _labels(labels, f"Set '{name}'")
        p = _preds(preds, y.size, f"Set '{name}'")
        acc = float((y == p).mean())
        d = row_rng(bootstrap.seed, "accuracy", name).binomial(y.size, acc, size=bootstrap.n_resamples) / y.size
        draws[name] = d
        per_set[name] = Estimate(acc, *percentile_interval(d, bootstrap.confidence))
    point = protocol_averages({n: per_set[n].value for n in sorted(per_set)}, roles)
    averages: dict[str, Estimate | None] = {}
    # Sorted members: floating-point sums must not depend on the order sets were given.
    for key, members in (("all", sorted(per_set)), ("held_out", sorted(n for n in per_set if roles[n] == "held-out"))):
        if not members:
            averages[key] = None
            continue
        mean_draws = np.mean([draws[n] for n in members], axis=0)
        averages[key] = Estimate(float(point[key]), *percentile_interval(mean_draws, bootstrap.confidence))
    return per_set, averages


# -- curves ----------------------------------------------------------------------------
class _SortedPair:
    """Scores sorted once (descending) with the ends of each run of tied scores."""

    def __init__(self, y: np.ndarray, s: np.ndarray):
        self.order = np.argsort(-s, kind="mergesort")
        self.y = y[self.order].astype(np.float64)
        sorted_s = s[self.order]
        # One ROC point per distinct score: tied scores move together.
        self.ends = np.r_[np.flatnonzero(np.diff(sorted_s)), sorted_s.size - 1]
        self.thresholds = sorted_s[self.ends]

    def counts(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative weighted (tp, fp) at each distinct threshold, shape (..., k)."""
        tp = np.cumsum(w * self.y, axis=-1)[..., self.ends]
        fp = np.cumsum(w * (1.0 - self.y), axis=-1)[..., self.ends]
        return tp, fp


def _rates(tp: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) with the (0, 0) corner prepended, shape (..., k + 1)."""
    zeros = np.zeros(tp.shape[:-1] + (1,))
    tpr = np.concatenate([zeros, tp / tp[..., -1:]], axis=-1)
    fpr = np.concatenate([zeros, fp / fp[..., -1:]], axis=-1)
    return fpr, tpr


def _curve_metrics(tp: np.ndarray, fp: np.ndarray) -> dict[str, np.ndarray]:
    """AUC, AP, EER, TPR@FPR and oracle balanced accuracy from cumulative counts."""
    fpr, tpr = _rates(tp, fp)
    out: dict[str, np.ndarray] = {}
    # Trapezoids over the ROC points: equals the Mann-Whitney statistic with ties as 1/2.
    out["auc"] = np.sum(np.diff(fpr, axis=-1) * (tpr[..., 1:] + tpr[..., :-1]) / 2.0, axis=-1)
    # AP = sum over thresholds of (recall step) x precision (scikit-learn's definition,
    # no interpolation). A step with zero weight changes no recall and adds nothing.
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    out["ap"] = np.sum(np.diff(tpr, axis=-1) * precision, axis=-1)
    # EER: where the false-positive rate meets the miss rate, interpolated linearly
    # between the two ROC points that straddle it (the curve starts at FPR 0 < FNR 1 and
    # ends at FPR 1 > FNR 0, so the crossing always exists).
    gap = fpr - (1.0 - tpr)
    k = np.argmax(gap >= 0, axis=-1)[..., None]
    g0, g1 = np.take_along_axis(gap, k - 1, -1), np.take_along_axis(gap, k, -1)
    f0, f1 = np.take_along_axis(fpr, k - 1, -1), np.take_along_axis(fpr, k, -1)
    t = np.divide(-g0, g1 - g0, out=np.zeros_like(g0), where=(g1 - g0) > 0)
    out["eer"] = (f0 + t * (f1 - f0))[..., 0]
    # TPR at a target FPR: the best TPR of a threshold that actually exists with
    # FPR <= target (conservative: no interpolation beyond an achievable operating point).
    for target in FPR_TARGETS:
        out[f"tpr_at_fpr_{round(target * 100)}"] = np.max(np.where(fpr <= target + 1e-12, tpr, 0.0), axis=-1)
    # Best balanced accuracy over all thresholds chosen on the evaluated data itself:
    # an oracle, reported as such and never as the detector's accuracy.
    out["oracle_balanced_accuracy"] = np.max((tpr + 1.0 - fpr) / 2.0, axis=-1)
    return out


def roc_curve(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr, thresholds), one per distinct score, starting at (0, 0).

    The first threshold is +inf (nothing called fake); a sample is called fake when its
    score is >= the threshold.
    """
    y = _labels(labels, "ROC curve")
    s = check_scores(scores)
    _require_both_classes(y, "ROC curve")
    sp = _SortedPair(y, s)
    fpr, tpr = _rates(*sp.counts(np.ones(y.size)))
    return fpr, tpr, np.r_[np.inf, sp.thresholds]


def _single(name: str, labels: Sequence[int], scores: Sequence[float]) -> float:
    y = _labels(labels, name)
    s = check_scores(scores)
    if s.shape != y.shape:
        raise AfpbenchError(f"{name}: {s.size} scores for {y.size} labels; pass one score per image.")
    _require_both_classes(y, name)
    sp = _SortedPair(y, s)
    return float(_curve_metrics(*sp.counts(np.ones(y.size)))[name])


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (fake is the positive class)."""
    return _single("auc", labels, scores)


def average_precision(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Average precision with fake as the positive class (scikit-learn's definition)."""
    return _single("ap", labels, scores)


def equal_error_rate(labels: Sequence[int], scores: Sequence[float]) -> float:
    """The rate at which false positives equal misses, interpolated on the ROC curve."""
    return _single("eer", labels, scores)


def tpr_at_fpr(labels: Sequence[int], scores: Sequence[float], fpr: float) -> float:
    """Highest true-positive rate among thresholds whose false-positive rate is <= ``fpr``."""
    y = _labels(labels, "TPR at FPR")
    s = check_scores(scores)
    _require_both_classes(y, "TPR at FPR")
    f, t, _ = roc_curve(y, s)
    return float(np.max(np.where(f <= fpr + 1e-12, t, 0.0)))


def balanced_accuracy(labels: Sequence[int], preds: Sequence[int]) -> float:
    """Mean of the accuracy on fakes (TPR) and on reals (TNR)."""
    y = _labels(labels, "balanced accuracy")
    _require_both_classes(y, "balanced accuracy")
    p = _preds(preds, y.size, "balanced accuracy")
    return float(((p[y == 1] == 1).mean() + (p[y == 0] == 0).mean()) / 2.0)


def oracle_balanced_accuracy(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Best balanced accuracy over thresholds picked on these very labels (an oracle)."""
    return _single("oracle_balanced_accuracy", labels, scores)


def calibrate_threshold(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Threshold maximising balanced accuracy (Youden's J) on a calibration set.

    Returns the score value t so that ``pred = score > t`` (a tie is real): the highest
    score still called real. On ties of J the highest such threshold wins (fewest images
    called fake). Never call this on the test set itself.
    """
    y = _labels(labels, "calibration set")
    s = check_scores(scores, "calibration set")
    _require_both_classes(y, "The calibration set")
    sp = _SortedPair(y, s)
    fpr, tpr = _rates(*sp.counts(np.ones(y.size)))
    j = tpr - fpr
    best = int(np.argmax(j))
    # ROC point k calls fake every score >= thresholds[k-1], i.e. every score > thresholds[k]
    # (the next lower distinct score); point 0 calls nothing fake (t = the top score). The
    # last point (all fake) has J = 0 like point 0, which argmax prefers, so best < k.
    return float(sp.thresholds[best])


def pair_metrics(
    labels: Sequence[int],
    scores: Sequence[float],
    preds: Sequence[int],
    bootstrap: BootstrapConfig = BootstrapConfig(),
    key: str = "",
    what: str = "pair",
) -> dict[str, Estimate]:
    """Every threshold-free metric (and balanced accuracy at ``preds``) of one pair.

    Intervals come from a stratified bootstrap: reals and fakes are resampled
    separately, so each resample keeps the pair's class sizes. ``key`` names the pair in
    the random stream (use the set names) so intervals are reproducible.
    """
    y = _labels(labels, what)
    s = check_scores(scores, what)
    if s.shape != y.shape:
        raise AfpbenchError(f"{what}: {s.size} scores for {y.size} labels; pass one score per image.")
    p = _preds(preds, y.size, what)
    _require_both_classes(y, what)
    sp = _SortedPair(y, s)
    point = {k: float(v) for k, v in _curve_metrics(*sp.counts(np.ones(y.size))).items()}
    point["balanced_accuracy"] = balanced_accuracy(y, p)

    rng = row_rng(bootstrap.seed, "pair", key)
    real_idx, fake_idx = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    yp_fake, yp_real = (p[fake_idx] == 1).astype(np.float64), (p[real_idx] == 0).astype(np.float64)
    draws: dict[str, list[np.ndarray]] = {k: [] for k in point}
    remaining = bootstrap.n_resamples
    while remaining > 0:
        b = min(_CHUNK, remaining)
        remaining -= b
        w_real = rng.multinomial(real_idx.size, np.full(real_idx.size, 1.0 / real_idx.size), size=b).astype(np.float64)
        w_fake = rng.multinomial(fake_idx.size, np.full(fake_idx.size, 1.0 / fake_idx.size), size=b).astype(np.float64)
        w = np.empty((b, y.size))
        w[:, real_idx] = w_real
        w[:, fake_idx] = w_fake
        for k, v in _curve_metrics(*sp.counts(w[:, sp.order])).items():
            draws[k].append(v)
        tpr = w_fake @ yp_fake / fake_idx.size
        tnr = w_real @ yp_real / real_idx.size
        draws["balanced_accuracy"].append((tpr + tnr) / 2.0)
    return {
        k: Estimate(point[k], *percentile_interval(np.concatenate(draws[k]), bootstrap.confidence)) for k in PAIR_METRICS
    }


def mean_estimate(values: Iterable[float]) -> float | None:
    """Plain mean of the finite values (None when there are none)."""
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None
