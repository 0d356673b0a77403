"""Metrics: hand-computed cases, scikit-learn agreement, the paper's averages, bootstrap, errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from afpbench import metrics as M
from afpbench.catalog import get_profile
from afpbench.errors import AfpbenchError

# A 4-image pair small enough to work out on paper:
# sorted by score: 0.8 (fake), 0.4 (real), 0.35 (fake), 0.1 (real).
Y4 = [0, 0, 1, 1]
S4 = [0.1, 0.4, 0.35, 0.8]


def test_hand_computed_pair():
    # Of the 4 (fake, real) pairs, 3 are ordered correctly -> AUC 3/4.
    assert M.roc_auc(Y4, S4) == pytest.approx(0.75)
    # Recall 1/2 at precision 1, recall 1 at precision 2/3 -> AP = 0.5 + 0.5 * 2/3.
    assert M.average_precision(Y4, S4) == pytest.approx(0.5 + 1 / 3)
    # ROC points (0,0) (0,.5) (.5,.5) (.5,1) (1,1): FPR = FNR = 0.5 at the third point.
    assert M.equal_error_rate(Y4, S4) == pytest.approx(0.5)
    assert M.tpr_at_fpr(Y4, S4, 0.01) == pytest.approx(0.5)
    assert M.tpr_at_fpr(Y4, S4, 0.5) == pytest.approx(1.0)
    # Threshold 0.5: only 0.8 called fake -> TPR 1/2, TNR 1 -> 0.75.
    assert M.balanced_accuracy(Y4, [0, 0, 0, 1]) == pytest.approx(0.75)
    fpr, tpr, thr = M.roc_curve(Y4, S4)
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1]
    assert tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    assert thr[0] == np.inf and thr[1:].tolist() == [0.8, 0.4, 0.35, 0.1]


def test_separable_and_reversed():
    y = [0] * 5 + [1] * 5
    s = list(np.linspace(0, 0.4, 5)) + list(np.linspace(0.6, 1, 5))
    assert M.roc_auc(y, s) == 1.0 and M.equal_error_rate(y, s) == 0.0 and M.tpr_at_fpr(y, s, 0.01) == 1.0
    assert M.oracle_balanced_accuracy(y, s) == 1.0
    rev = [1 - v for v in s]
    assert M.roc_auc(y, rev) == 0.0 and M.equal_error_rate(y, rev) == 1.0


@pytest.mark.parametrize("n,seed", [(7, 0), (50, 1), (400, 2), (3000, 3)])
def test_agrees_with_sklearn(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    # Rounded scores give many ties, the hard case for curve code.
    s = np.round(rng.random(n) + 0.4 * y, 2)
    assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert M.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    fpr, tpr, thr = M.roc_curve(y, s)
    sf, st, sth = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sf)
    np.testing.assert_allclose(tpr, st)
    np.testing.assert_allclose(thr[1:], sth[1:])
    for target in (0.01, 0.05, 0.2):
        assert M.tpr_at_fpr(y, s, target) == pytest.approx(st[sf <= target].max())
    pred = (s >= 0.7).astype(int)
    assert M.balanced_accuracy(y, pred) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    # EER: interpolated crossing of FPR and FNR on sklearn's curve.
    fnr = 1 - st
    k = np.argmax(sf - fnr >= 0)
    g0, g1 = sf[k - 1] - fnr[k - 1], sf[k] - fnr[k]
    t = -g0 / (g1 - g0) if g1 != g0 else 0.0
    assert M.equal_error_rate(y, s) == pytest.approx(sf[k - 1] + t * (sf[k] - sf[k - 1]))
    # Oracle balanced accuracy = best over every threshold sklearn lists.
    assert M.oracle_balanced_accuracy(y, s) == pytest.approx(((st + 1 - sf) / 2).max())


def test_weighted_curve_equals_sklearn_sample_weight():
    # The bootstrap represents a resample by integer multiplicities; they must behave
    # exactly like replicated samples (scikit-learn's sample_weight).
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 2)
    w = rng.integers(0, 4, 200).astype(float)
    sp = M._SortedPair(y.astype(np.int8), s)
    got = M._curve_metrics(*sp.counts(w[sp.order]))
    assert float(got["auc"]) == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w))
    assert float(got["ap"]) == pytest.approx(skm.average_precision_score(y, s, sample_weight=w))


def test_eer_of_known_distributions():
    # Real ~ U(0,1), fake ~ U(0.5,1.5): FPR = 1 - t, FNR = t - 0.5 -> EER 0.25 at t = 0.75.
    rng = np.random.default_rng(0)
    n = 20000
    y = np.r_[np.zeros(n), np.ones(n)].astype(int)
    s = np.r_[rng.random(n), rng.random(n) + 0.5]
    assert M.equal_error_rate(y, s) == pytest.approx(0.25, abs=0.01)


def test_paper_averages_from_reported_table():
    prof = get_profile("v3")
    rows = prof.reported_rows()
    roles = {e.name: e.role for e in prof.sets}
    assert len(prof.names) == 23 and len(prof.held_out()) == 20
    afp = M.protocol_averages(rows["AntifakePrompt"], roles)
    assert round(afp["all"], 2) == 91.81
    assert round(afp["held_out"], 2) == 92.11
    assert round(M.protocol_averages(rows["AntifakePrompt-LaMa"], roles)["all"], 2) == 94.50
    # The abstract's best baseline on the held-out sets.
    assert round(M.protocol_averages(rows["LASTED-F"], roles)["held_out"], 2) == 71.06
    for method, expected in prof.paper_averages.items():
        got = M.protocol_averages(rows[method], roles)
        for key, value in expected.items():
            assert round(got[key], 2) == value


def test_set_accuracy_is_fraction_called_its_class():
    # A fake set: fraction called fake. A real set: fraction called real.
    assert M.set_accuracy([1, 1, 1, 1], [1, 0, 1, 1]) == 0.75
    assert M.set_accuracy([0, 0, 0, 0], [1, 0, 0, 0]) == 0.75


def test_accuracy_metrics_intervals():
    rng = np.random.default_rng(0)
    sets = {
        "real_a": (np.zeros(300, int), (rng.random(300) < 0.1).astype(int)),
        "fake_b": (np.ones(300, int), (rng.random(300) < 0.8).astype(int)),
        "fake_c": (np.ones(30, int), (rng.random(30) < 0.5).astype(int)),
    }
    roles = {"real_a": "held-in", "fake_b": "held-out", "fake_c": "held-out"}
    boot = M.BootstrapConfig(n_resamples=2000, seed=1)
    per_set, avg = M.accuracy_metrics(sets, roles, boot)
    for name, (y, p) in sets.items():
        e = per_set[name]
        assert e.value == pytest.approx(float((y == p).mean()))
        assert e.ci_low <= e.value <= e.ci_high
    # Fewer images -> a wider interval.
    width = {n: e.ci_high - e.ci_low for n, e in per_set.items()}
    assert width["fake_c"] > 2 * width["fake_b"]
    assert avg["all"].value == pytest.approx(np.mean([e.value for e in per_set.values()]))
    assert avg["held_out"].value == pytest.approx((per_set["fake_b"].value + per_set["fake_c"].value) / 2)
    assert avg["held_out"].ci_low <= avg["held_out"].value <= avg["held_out"].ci_high
    # Seeded and independent of which other sets are evaluated, or their order.
    again, _ = M.accuracy_metrics({"fake_c": sets["fake_c"], "real_a": sets["real_a"]}, roles, boot)
    assert again["fake_c"] == per_set["fake_c"] and again["real_a"] == per_set["real_a"]
    other, _ = M.accuracy_metrics(sets, roles, M.BootstrapConfig(n_resamples=2000, seed=2))
    assert other["fake_b"] != per_set["fake_b"]


def test_binomial_shortcut_matches_explicit_resampling():
    # The per-set interval draws Binomial(n, acc)/n; compare with resampling the 0/1 flags.
    rng = np.random.default_rng(3)
    correct = (rng.random(500) < 0.7).astype(int)
    per_set, _ = M.accuracy_metrics({"s": (np.ones(500, int), correct)}, {"s": "held-out"}, M.BootstrapConfig(n_resamples=4000, seed=0))
    explicit = correct[rng.integers(0, 500, size=(4000, 500))].mean(axis=1)
    lo, hi = np.percentile(explicit, [2.5, 97.5])
    assert per_set["s"].ci_low == pytest.approx(lo, abs=0.01)
    assert per_set["s"].ci_high == pytest.approx(hi, abs=0.01)


def test_pair_metrics_points_intervals_and_seeding():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(300), np.ones(200)].astype(int)
    s = np.clip(rng.normal(0.4 + 0.25 * y, 0.2), 0, 1)
    p = (s >= 0.5).astype(int)
    boot = M.BootstrapConfig(n_resamples=300, seed=0)
    est = M.pair_metrics(y, s, p, boot, key="fake|real")
    assert set(est) == set(M.PAIR_METRICS)
    assert est["auc"].value == pytest.approx(skm.roc_auc_score(y, s))
    assert est["ap"].value == pytest.approx(skm.average_precision_score(y, s))
    assert est["balanced_accuracy"].value == pytest.approx(skm.balanced_accuracy_score(y, p))
    assert est["eer"].value == pytest.approx(M.equal_error_rate(y, s))
    for k, e in est.items():
        assert e.ci_low <= e.value + 1e-12 and e.value - 1e-12 <= e.ci_high, k
        assert e.ci_high > e.ci_low, k
    assert M.pair_metrics(y, s, p, boot, key="fake|real") == est
    assert M.pair_metrics(y, s, p, boot, key="other|real")["auc"] != est["auc"]


def test_calibrate_threshold_maximises_balanced_accuracy():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    s = np.round(np.clip(rng.normal(0.3 + 0.3 * y, 0.15), 0, 1), 3)
    t = M.calibrate_threshold(y, s)
    cuts = np.r_[np.unique(s), -np.inf]  # every split pred = s > u, including "all fake"
    best = max(skm.balanced_accuracy_score(y, (s > u).astype(int)) for u in cuts)
    assert skm.balanced_accuracy_score(y, (s > t).astype(int)) == pytest.approx(best)
    # Separable: the threshold splits the classes exactly; it is the highest real score.
    y2, s2 = [0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9]
    t2 = M.calibrate_threshold(y2, s2)
    assert t2 == 0.2 and list(np.asarray(s2) > t2) == [False, False, True, True]
    # Tied scores move together: a real and a fake tied at the cut are both called real.
    y3, s3 = [0, 1, 0, 1, 1], [0.1, 0.5, 0.5, 0.8, 0.9]
    t3 = M.calibrate_threshold(y3, s3)
    assert t3 == 0.5 and list(np.asarray(s3) > t3) == [False, False, False, True, True]


def test_errors_are_one_line_and_name_the_fix():
    with pytest.raises(AfpbenchError, match="no rows"):
        M.set_accuracy([], [])
    with pytest.raises(AfpbenchError, match="no rows"):
        M.accuracy_metrics({"empty": ([], [])}, {"empty": "held-out"})
    with pytest.raises(AfpbenchError, match="only fake.*real pool"):
        M.roc_auc([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(AfpbenchError, match="both classes"):
        M.pair_metrics([0, 0], [0.1, 0.2], [0, 0])
    with pytest.raises(AfpbenchError, match="NaN or infinite"):
        M.roc_auc([0, 1, 1], [0.1, float("nan"), 0.3])
    with pytest.raises(AfpbenchError, match="NaN or infinite"):
        M.pair_metrics([0, 1], [0.1, float("inf")], [0, 1])
    with pytest.raises(AfpbenchError, match="0 \\(real\\) or 1 \\(fake\\)"):
        M.set_accuracy([0, 2], [0, 1])
    with pytest.raises(AfpbenchError, match="No role"):
        M.protocol_averages({"x": 0.5}, {})
    with pytest.raises(AfpbenchError, match="resamples"):
        M.BootstrapConfig(n_resamples=0)
    with pytest.raises(AfpbenchError) as exc:
        M.roc_auc([1, 1], [0.1, 0.2])
    assert "\n" not in str(exc.value)
