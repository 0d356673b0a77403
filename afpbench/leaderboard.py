"""Results files -> the leaderboard: ``leaderboard.json``, ``leaderboard.md``, ``index.html``.

Measured rows come from results files (validated against the schema); the paper's
reported rows (``recipes/profiles/results_<profile>.csv`` through the catalog) are added
as reference rows marked ``reported`` and are never mixed with measured numbers: they
have their own source field, badge and style, and no confidence intervals.

Measured rows are recomputed, not copied: every predictions file a results file lists
must be there with the sha256 the results file recorded, must belong to that results
file (set, rows, fingerprint, detector, evaluation id) and hold predictions that follow
its threshold; the metrics are then recomputed from those predictions with the recorded
real pool and bootstrap settings (the code path of ``evaluate`` and ``afpbench score``)
and must equal the file's to the last digit, and a calibrated threshold is recalibrated.
The schema itself refuses non-finite numbers and fractions outside [0, 1].

Refused, each with a one-line reason: results run with ``--limit``; results whose
dataset fingerprints differ for the same set; results of different profiles; files that
fail schema validation; two results for the same detector and perturbation; missing
predictions files or ones whose hash no longer matches their results file; numbers that
differ from the ones recomputed from the predictions.

The HTML page is self-contained (inline CSS, JS and base64 PNG plots from matplotlib's
Agg backend): sortable tables (click a header), one row per detector, one column per set
plus the two averages, a per-family summary, threshold-free metrics, one column group
per robustness suite, a plot of per-set accuracy and ROC curves.
"""

from __future__ import annotations

import base64
import html
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from afpbench import __version__
from afpbench._util.hashing import sha256_file
from afpbench._util.io import remove
from afpbench._util.locking import lock_scope
from afpbench.errors import AfpbenchError
from afpbench.results import (
    Leaderboard,
    LeaderboardEntry,
    LeaderboardSet,
    Metric,
    MetricsBlock,
    Predictions,
    ResultsFile,
    dump_json,
    load_results,
    read_predictions,
)
from afpbench.scoring import compute_metrics, label_name, predict

_PAIR_KEYS = ("auc", "ap", "eer", "tpr_at_fpr_1", "tpr_at_fpr_5")


@dataclass
class _Loaded:
    path: Path
    results: ResultsFile
    sha256: str
    #: Checked predictions of every listed set (test and calibration), by set name.
    predictions: dict[str, Predictions] = field(default_factory=dict)
    #: The metrics recomputed from them (equal to the file's, or the file is refused).
    metrics: MetricsBlock | None = None


def _results_path(p: str | Path) -> Path:
    p = Path(p)
    return p / "results.json" if p.is_dir() else p


def load_checked(results_files: Sequence[str | Path], profile: str | None = None) -> list[_Loaded]:
    """Load results files and refuse anything that cannot be published together."""
    if not results_files:
        raise AfpbenchError("No results files given; pass <results>/*/results.json.")
    loaded = []
    for f in results_files:
        path = _results_path(f)
        loaded.append(_Loaded(path, load_results(path), sha256_file(path) if path.is_file() else ""))
    for item in loaded:
        if item.results.run.limit is not None:
            raise AfpbenchError(f"{item.path} was run with --limit {item.results.run.limit}; evaluate without --limit to publish it.")
        if any(d.rows_evaluated != d.rows_total for d in item.results.datasets):
            raise AfpbenchError(f"{item.path} did not evaluate every row of its sets; evaluate them in full to publish it.")
    profiles = {item.results.profile for item in loaded}
    if len(profiles) > 1:
        by = ", ".join(f"{item.results.profile or 'custom'} ({item.path})" for item in loaded)
        raise AfpbenchError(f"Results mix profile versions: {by}; build one leaderboard per profile.")
    found = profiles.pop()
    if profile is not None and found != profile:
        raise AfpbenchError(f"The results were evaluated on profile {found or 'custom'}, not {profile}; pass --profile {found} or matching results.")
    seen: dict[str, tuple[str, int | None, Path]] = {}
    for item in loaded:
        for d in item.results.datasets:
            if d.name in seen and seen[d.name][0] != d.fingerprint:
                other = seen[d.name][2]
                raise AfpbenchError(
                    f"Set '{d.name}' has different data in {other} and {item.path} (fingerprints {seen[d.name][0][:12]}... vs {d.fingerprint[:12]}...); evaluate every detector on the same build of the set."
                )
            seen.setdefault(d.name, (d.fingerprint, d.recipe_version, item.path))
    names: dict[tuple[str, str | None], Path] = {}
    for item in loaded:
        key = (item.results.detector.full_name, item.results.perturbation.name if item.results.perturbation else None)
        if key in names:
            raise AfpbenchError(f"Two results for {key[0]}{'@' + key[1] if key[1] else ''} ({names[key]} and {item.path}); pass one of them.")
        names[key] = item.path
    _recompute_all(loaded)
    return loaded


def _recompute_all(loaded: list[_Loaded]) -> None:
    """Recompute every results file, in parallel processes when there are several: each
    recomputation redoes the file's bootstrap (seconds for a full profile), and files
    are independent."""
    jobs = [(item.path, item.results) for item in loaded]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(len(jobs), cpus)
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # fork: children start at once with afpbench imported (spawn elsewhere).
        ctx = multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            outs = list(pool.map(_recompute, jobs))  # the first file's error wins, as sequentially
    else:
        outs = [_recompute(job) for job in jobs]
    for item, (predictions, metrics) in zip(loaded, outs):
        item.predictions, item.metrics = predictions, metrics


def _first_difference(recorded: Any, recomputed: Any, where: str = "metrics") -> tuple[str, Any, Any] | None:
    """Where two JSON-like values first differ (None when equal)."""
    if isinstance(recorded, dict) and isinstance(recomputed, dict):
        for k in list(recorded) + [k for k in recomputed if k not in recorded]:
            if k not in recorded or k not in recomputed:
                return f"{where}.{k}", recorded.get(k, "(absent)"), recomputed.get(k, "(absent)")
            d = _first_difference(recorded[k], recomputed[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(recorded, list) and isinstance(recomputed, list):
        if len(recorded) != len(recomputed):
            return f"{where} (length)", len(recorded), len(recomputed)
        for i, (a, b) in enumerate(zip(recorded, recomputed)):
            d = _first_difference(a, b, f"{where}.{i}")
            if d:
                return d
        return None
    return None if recorded == recomputed else (where, recorded, recomputed)


def _recompute(job: tuple[Path, ResultsFile]) -> tuple[dict[str, Predictions], MetricsBlock]:
    """Check every predictions file of a results file and recompute its metrics from them.

    A measured row must be the leaderboard's own computation from checksummed
    predictions, never a number copied from an editable JSON file. Returns the checked
    predictions by set and the recomputed metrics (equal to the file's, or refused).
    """
    from afpbench.metrics import BootstrapConfig, calibrate_threshold

    results_path, r = job
    predictions: dict[str, Predictions] = {}
    fix = "evaluate again (or restore the original files)"
    for d in [*r.datasets, *r.calibration]:
        path = results_path.parent / d.predictions.path
        if not path.is_file():
            raise AfpbenchError(f"{results_path} lists predictions {path}, which is missing; a measured row is recomputed from its predictions: {fix}.")
        if sha256_file(path) != d.predictions.sha256:
            raise AfpbenchError(f"{path} changed since {results_path} was written (sha256 differs); {fix}.")
        p = read_predictions(path)
        meta = p.meta
        problem = None
        if p.name != d.name:
            problem = f"holds predictions of set '{p.name}', not '{d.name}'"
        elif len(p.ids) != d.predictions.rows:
            problem = f"holds {len(p.ids)} rows, the results file says {d.predictions.rows}"
        elif meta.fingerprint != d.fingerprint:
            problem = "was made on another build of the set (its fingerprint differs from the results file's)"
        elif meta.detector != r.detector.full_name:
            problem = f"holds predictions of detector {meta.detector}, not {r.detector.full_name}"
        elif r.run.evaluation_id and meta.evaluation_id != r.run.evaluation_id:
            problem = "comes from another evaluation than the results file (evaluation ids differ)"
        elif label_name(p.labels) != d.label:
            problem = f"holds {label_name(p.labels)} labels, the results file says {d.label}"
        elif not np.array_equal(p.preds, predict(p.scores, r.threshold.value)):
            problem = f"holds predictions that do not follow the recorded threshold ({r.threshold.kind} {r.threshold.value:g}, pred = score > threshold)"
        if problem:
            raise AfpbenchError(f"{path} {problem}; {fix}.")
        predictions[d.name] = p
    if r.threshold.kind == "calibrated":
        cal = [predictions[d.name] for d in r.calibration]
        if not cal:
            raise AfpbenchError(f"{results_path} has a calibrated threshold but lists no calibration sets; {fix}.")
        thr = calibrate_threshold(np.concatenate([c.labels for c in cal]), np.concatenate([c.scores for c in cal]))
        if thr != r.threshold.value:
            raise AfpbenchError(f"{results_path}: threshold {r.threshold.value!r} differs from {thr!r} recalibrated on its calibration predictions; {fix}.")
    test = {d.name: predictions[d.name] for d in r.datasets}
    roles = {d.name: d.role for d in r.datasets}
    pool = r.metrics.pairing.real_pool if r.metrics.pairing.rule == "explicit" else None
    boot = BootstrapConfig(r.bootstrap.n_resamples, r.bootstrap.seed, r.bootstrap.confidence)
    metrics = compute_metrics(test, roles, pool, boot)
    diff = _first_difference(r.metrics.model_dump(mode="json"), metrics.model_dump(mode="json"))
    if diff:
        where, recorded, recomputed = diff
        raise AfpbenchError(
            f"{results_path}: {where} is {json.dumps(recorded)} in the file but {json.dumps(recomputed)} recomputed from its predictions; "
            f"the file was edited or written by another afpbench version: {fix}."
        )
    return predictions, metrics


def _profile_obj(name: str | None) -> Any:
    if not name:
        return None
    from afpbench import catalog

    return catalog.get_profile(name)


def _family_of(name: str) -> str | None:
    from afpbench import catalog

    rec = catalog.recipes().get(name)
    return rec.family if rec else None


def _families(per_set: dict[str, Metric], sets: list[LeaderboardSet]) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for s in sets:
        m = per_set.get(s.name)
        if m is not None and m.value is not None:
            groups.setdefault(s.family or "other", []).append(m.value)
    return {fam: float(np.mean(v)) for fam, v in groups.items()}


def build_leaderboard(loaded: list[_Loaded], profile: str | None = None, reported: bool = True) -> Leaderboard:
    """The leaderboard model from checked results (plus the paper's rows for a profile)."""
    prof = _profile_obj(profile or (loaded[0].results.profile if loaded else None))
    info: dict[str, Any] = {}
    for item in loaded:
        for d in item.results.datasets:
            info.setdefault(d.name, d)
    if prof is not None:
        outside = [n for n in info if n not in prof.names]
        if outside:
            raise AfpbenchError(f"Set(s) {', '.join(outside)} are not in profile {prof.name}; evaluate with --profile {prof.name} only its sets.")
        order = [(e.name, e.role) for e in prof.sets]
    else:
        order = []
        for item in loaded:
            for d in item.results.datasets:
                if d.name not in [n for n, _ in order]:
                    order.append((d.name, d.role))
    sets = []
    for name, role in order:
        d = info.get(name)
        if d is not None:
            sets.append(LeaderboardSet(name=name, role=role, label=d.label, family=d.family or _family_of(name), recipe_version=d.recipe_version, fingerprint=d.fingerprint))
        else:
            from afpbench import catalog

            rec = catalog.get_recipe(name)
            sets.append(LeaderboardSet(name=name, role=role, label=rec.label, family=rec.family))

    entries: list[LeaderboardEntry] = []
    notes: list[str] = []
    n_profile = len(sets)
    for item in loaded:
        r = item.results
        m = item.metrics if item.metrics is not None else r.metrics  # recomputed by load_checked
        per_set = {n: s.accuracy for n, s in m.per_set.items()}
        pairs = {p.fake: {k: getattr(p, k) for k in _PAIR_KEYS} for p in m.pairs}
        aucs = [p.auc.value for p in m.pairs if p.auc.value is not None]
        name = r.detector.full_name
        if len(per_set) < n_profile:
            notes.append(f"{name}{'@' + r.perturbation.name if r.perturbation else ''}: evaluated on {len(per_set)} of {n_profile} sets; its averages cover those sets only.")
        entries.append(
            LeaderboardEntry(
                detector=name, source="measured", perturbation=r.perturbation.name if r.perturbation else None,
                per_set=per_set, average_all=m.averages.all, average_held_out=m.averages.held_out,
                families=_families(per_set, sets), pairs=pairs, mean_auc=float(np.mean(aucs)) if aucs else None,
                threshold=f"{r.threshold.kind} {r.threshold.value:g}", weights_sha256=r.detector.weights_sha256,
                results_file=str(item.path), results_sha256=item.sha256, images_per_second=r.run.images_per_second,
                n_sets=len(per_set),
            )
        )
    if reported and prof is not None:
        rows = prof.reported_rows()
        held = set(prof.held_out())
        for method, values in rows.items():
            per_set = {n: Metric(value=v / 100.0) for n, v in values.items()}
            all_v = [m.value for m in per_set.values()]
            held_v = [per_set[n].value for n in per_set if n in held]
            entries.append(
                LeaderboardEntry(
                    detector=method, source="reported", per_set=per_set,
                    average_all=Metric(value=float(np.mean(all_v))) if all_v else None,
                    average_held_out=Metric(value=float(np.mean(held_v))) if held_v else None,
                    families=_families(per_set, sets), n_sets=len(per_set),
                )
            )
        if rows:
            notes.append(f"Rows marked 'reported' are copied from the paper's table ({prof.reported}); they were not measured by afpbench.")
    suites = sorted({e.perturbation for e in entries if e.perturbation})
    if suites:
        notes.append("Robustness suites are an afpbench extension: the paper reports no perturbation experiments.")
    return Leaderboard(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), afpbench_version=__version__,
        profile=prof.name if prof is not None else None, sets=sets, suites=suites, entries=entries, notes=notes,
    )


# -- plots ------------------------------------------------------------------------------
def _roc_inputs(item: _Loaded) -> tuple[np.ndarray, np.ndarray] | None:
    """Pooled labels and scores of every pair of a results file (None if unavailable)."""
    r = item.results
    members = set(r.metrics.pairing.real_pool) | {p.fake for p in r.metrics.pairs}
    if not r.metrics.pairs:
        return None
    ys, ss = [], []
    for d in r.datasets:
        if d.name not in members:
            continue
        p = item.predictions.get(d.name)
        if p is None:  # only for a _Loaded that did not go through load_checked
            return None
        ys.append(p.labels)
        ss.append(p.scores)
    y, s = np.concatenate(ys), np.concatenate(ss)
    if y.min() == y.max():
        return None
    return y, s


def _plots(board: Leaderboard, loaded: list[_Loaded], out_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from afpbench.metrics import roc_curve

    out: dict[str, Path] = {}
    names = [s.name for s in board.sets]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 4.2), dpi=100)
    for e in board.entries:
        if e.source == "reported":
            y = [100 * e.per_set[n].value if n in e.per_set and e.per_set[n].value is not None else np.nan for n in names]
            ax.plot(x, y, color="0.75", linewidth=0.8, zorder=1)
    for e in board.entries:
        if e.source == "measured" and not e.perturbation:
            y = [100 * e.per_set[n].value if n in e.per_set and e.per_set[n].value is not None else np.nan for n in names]
            ax.plot(x, y, marker="o", linewidth=1.4, label=e.detector, zorder=3)
    if any(e.source == "reported" for e in board.entries):
        ax.plot([], [], color="0.75", linewidth=0.8, label="reported (paper)")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("Accuracy per set")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    out["accuracy"] = out_dir / "accuracy_per_set.png"
    fig.savefig(out["accuracy"])
    plt.close(fig)

    curves = []
    for item in loaded:
        if item.results.perturbation:
            continue
        data = _roc_inputs(item)
        if data is not None:
            fpr, tpr, _ = roc_curve(*data)
            auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
            curves.append((item.results.detector.full_name, fpr, tpr, auc))
    if curves:
        fig, ax = plt.subplots(figsize=(4.8, 4.4), dpi=100)
        for name, fpr, tpr, auc in curves:
            ax.plot(fpr, tpr, linewidth=1.4, label=f"{name} (AUC {auc:.3f})")
        ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=0.8)
        ax.set_xlabel("false-positive rate (real called fake)")
        ax.set_ylabel("true-positive rate (fake called fake)")
        ax.set_title("ROC: every fake set vs the real pool")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        out["roc"] = out_dir / "roc.png"
        fig.savefig(out["roc"])
        plt.close(fig)
    return out


# -- rendering --------------------------------------------------------------------------
def _pct(m: Metric | None) -> str:
    return "–" if m is None or m.value is None else f"{100 * m.value:.2f}"


def _ordered(board: Leaderboard) -> list[LeaderboardEntry]:
    """Measured rows first, then reported; each by held-out average, best first."""

    def key(e: LeaderboardEntry) -> tuple[int, float]:
        v = e.average_held_out.value if e.average_held_out and e.average_held_out.value is not None else (e.average_all.value if e.average_all and e.average_all.value is not None else -1)
        return (0 if e.source == "measured" else 1, -v)

    return sorted([e for e in board.entries if not e.perturbation], key=key)


def _counts(board: Leaderboard) -> tuple[int, int]:
    return len(board.sets), sum(1 for s in board.sets if s.role == "held-out")


def render_markdown(board: Leaderboard) -> str:
    n_all, n_held = _counts(board)
    lines = [f"# afpbench leaderboard{' (' + board.profile + ')' if board.profile else ''}", "", f"Built {board.created} by afpbench {board.afpbench_version}. Accuracy in %; rows marked *reported* are the paper's numbers, not measured here.", ""]
    head = ["Detector", "Source", *[s.name for s in board.sets], f"Avg ({n_all})", f"Held-out ({n_held})"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in _ordered(board):
        source = e.source + (f" ({e.n_sets}/{n_all} sets)" if e.n_sets < n_all else "")
        cells = [e.detector, source, *[_pct(e.per_set.get(s.name)) for s in board.sets], _pct(e.average_all), _pct(e.average_held_out)]
        lines.append("| " + " | ".join(cells) + " |")
    families = sorted({s.family or "other" for s in board.sets})
    lines += ["", "## Per family (mean accuracy, %)", "", "| Detector | Source | " + " | ".join(families) + " |", "|" + "---|" * (len(families) + 2)]
    for e in _ordered(board):
        lines.append("| " + " | ".join([e.detector, e.source, *[f"{100 * e.families[f]:.2f}" if f in e.families else "–" for f in families]]) + " |")
    measured = sorted((e for e in board.entries if e.source == "measured" and e.pairs), key=lambda e: (e.detector, e.perturbation or ""))
    if measured:
        lines += ["", "## Threshold-free (fake set vs real pool; means over fake sets)", "", "| Detector | Perturbation | AUC | AP | EER | TPR@1%FPR | TPR@5%FPR |", "|---|---|---|---|---|---|---|"]
        for e in measured:
            means = {k: np.mean([v[k].value for v in e.pairs.values() if v[k].value is not None]) for k in _PAIR_KEYS}
            lines.append(f"| {e.detector} | {e.perturbation or 'clean'} | " + " | ".join(f"{means[k]:.3f}" for k in _PAIR_KEYS) + " |")
    if board.suites:
        lines += ["", "## Robustness (afpbench extension)", ""]
        head = ["Detector"] + [f"{s} avg / held-out / AUC" for s in ["clean", *board.suites]]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for det, groups in _robustness(board).items():
            cells = [det] + [" / ".join(groups.get(s, ("–", "–", "–"))) for s in ["clean", *board.suites]]
            lines.append("| " + " | ".join(cells) + " |")
    if board.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in board.notes]
    return "\n".join(lines) + "\n"


def render_text_table(board: Leaderboard | dict[str, Any]) -> str:
    """The clean-image table as aligned plain text (accuracy %, averages, mean AUC), for terminals."""
    if isinstance(board, dict):
        board = Leaderboard.model_validate(board)
    n_all, n_held = _counts(board)
    head = ["detector", "source", *[s.name for s in board.sets], f"avg({n_all})", f"held-out({n_held})", "mean AUC"]
    rows = [head]
    for e in _ordered(board):
        auc = "–" if e.mean_auc is None else f"{e.mean_auc:.3f}"
        rows.append([e.detector, e.source, *[_pct(e.per_set.get(s.name)) for s in board.sets], _pct(e.average_all), _pct(e.average_held_out), auc])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _robustness(board: Leaderboard) -> dict[str, dict[str, tuple[str, str, str]]]:
    rows: dict[str, dict[str, tuple[str, str, str]]] = {}
    for e in board.entries:
        if e.source != "measured":
            continue
        auc = "–" if e.mean_auc is None else f"{e.mean_auc:.3f}"
        rows.setdefault(e.detector, {})[e.perturbation or "clean"] = (_pct(e.average_all), _pct(e.average_held_out), auc)
    return rows


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1b1f24;background:#fff}
h1{font-size:1.5em;margin:0 0 4px}h2{font-size:1.15em;margin-top:28px}
.meta{color:#57606a;font-size:.9em}
.wrap{overflow-x:auto;border:1px solid #d0d7de;border-radius:6px}
table{border-collapse:collapse;font-size:12px;white-space:nowrap}
th,td{padding:4px 7px;border-bottom:1px solid #eaeef2;text-align:right}
th:first-child,td:first-child,th.text,td.text{text-align:left}
th{background:#f6f8fa;position:sticky;top:0;cursor:pointer;user-select:none}
th.sorted-desc::after{content:" \\25BE"}th.sorted-asc::after{content:" \\25B4"}
tr.reported td{color:#57606a;background:#fafbfc}
tr.measured td:first-child{font-weight:600}
.badge{display:inline-block;padding:0 6px;border-radius:10px;font-size:10px;font-weight:600}
.badge.measured{background:#dafbe1;color:#116329}.badge.reported{background:#eaeef2;color:#57606a}
th.avg,td.avg{background:#fff8c5}th.heldin{color:#8250df}
.plots img{max-width:100%;border:1px solid #d0d7de;border-radius:6px;margin:6px 12px 6px 0}
ul.notes{color:#57606a;font-size:.9em}
.partial{color:#9a6700;font-size:10px}
"""

_JS = """
(function(){
  function cellValue(td){var v=td.getAttribute('data-value');if(v===null||v===''){return null;}var n=Number(v);return isNaN(n)?v.toLowerCase():n;}
  function sortTable(table,col,desc){
    var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){var x=cellValue(a.cells[col]),y=cellValue(b.cells[col]);
      if(x===null&&y===null){return 0;}if(x===null){return 1;}if(y===null){return -1;}
      if(x<y){return desc?1:-1;}if(x>y){return desc?-1:1;}return 0;});
    rows.forEach(function(r){body.appendChild(r);});
    Array.prototype.forEach.call(table.tHead.rows[table.tHead.rows.length-1].cells,function(th){th.classList.remove('sorted-asc','sorted-desc');});
    var th=table.tHead.rows[table.tHead.rows.length-1].cells[col];th.classList.add(desc?'sorted-desc':'sorted-asc');
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'),function(table){
    var head=table.tHead.rows[table.tHead.rows.length-1];
    Array.prototype.forEach.call(head.cells,function(th,col){
      th.addEventListener('click',function(){var desc=!th.classList.contains('sorted-desc');sortTable(table,col,desc);});
    });
    var initial=table.getAttribute('data-sort-col');
    if(initial!==null){sortTable(table,Number(initial),true);}
  });
  document.body.setAttribute('data-ready','1');
  console.log('afpbench-leaderboard-ready');
})();
"""


def _td(text: str, value: Any = None, cls: str = "", title: str = "") -> str:
    attrs = ""
    if value is not None:
        attrs += f' data-value="{html.escape(str(value))}"'
    if cls:
        attrs += f' class="{cls}"'
    if title:
        attrs += f' title="{html.escape(title)}"'
    return f"<td{attrs}>{html.escape(text)}</td>"


def _metric_td(m: Metric | None, cls: str = "") -> str:
    if m is None or m.value is None:
        return _td("–", "", cls)
    title = f"95% CI {100 * m.ci_low:.2f}–{100 * m.ci_high:.2f}" if m.ci_low is not None and m.ci_high is not None else "reported (no interval)"
    return _td(f"{100 * m.value:.2f}", f"{m.value:.6f}", cls, title)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def render_html(board: Leaderboard, plots: dict[str, Path]) -> str:
    n_all, n_held = _counts(board)
    esc = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>afpbench leaderboard{esc(' ' + board.profile) if board.profile else ''}</title>",
        '<link rel="icon" href="data:,">',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>afpbench leaderboard{esc(' — profile ' + board.profile) if board.profile else ''}</h1>",
        f'<p class="meta">Built {esc(board.created)} by afpbench {esc(board.afpbench_version)}. Accuracy in %, hover a number for its 95% bootstrap interval. '
        'Click a column header to sort. <span class="badge measured">measured</span> rows were computed by afpbench from per-image predictions; '
        '<span class="badge reported">reported</span> rows are the paper\'s published numbers.</p>',
    ]
    # Main table: one row per detector, one column per set, the two averages.
    head = ['<th class="text">Detector</th>', '<th class="text">Source</th>']
    head += [f'<th class="{"heldin" if s.role == "held-in" else ""}" title="{esc(s.role)}, {esc(s.label)}, {esc(s.family or "")}">{esc(s.name)}</th>' for s in board.sets]
    head += [f'<th class="avg">Avg ({n_all})</th>', f'<th class="avg">Held-out ({n_held})</th>']
    rows = []
    for e in _ordered(board):
        partial = f' <span class="partial" title="averages cover only the sets this entry was evaluated on">{e.n_sets}/{n_all} sets</span>' if e.n_sets < n_all else ""
        cells = [_td(e.detector, e.detector.lower(), "text", e.threshold or ""), f'<td class="text" data-value="{e.source}"><span class="badge {e.source}">{e.source}</span>{partial}</td>']
        cells += [_metric_td(e.per_set.get(s.name)) for s in board.sets]
        cells += [_metric_td(e.average_all, "avg"), _metric_td(e.average_held_out, "avg")]
        rows.append(f'<tr class="{e.source}" data-source="{e.source}" data-detector="{esc(e.detector)}">{"".join(cells)}</tr>')
    sort_col = len(head) - 1
    parts += [
        "<h2>Accuracy per set</h2>",
        '<p class="meta">Held-in sets (used for training AntifakePrompt) have purple headers.</p>',
        f'<div class="wrap"><table id="leaderboard" class="sortable" data-sort-col="{sort_col}"><thead><tr>{"".join(head)}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>',
    ]
    # Families.
    families = sorted({s.family or "other" for s in board.sets})
    fam_rows = []
    for e in _ordered(board):
        cells = [_td(e.detector, e.detector.lower(), "text"), f'<td class="text" data-value="{e.source}"><span class="badge {e.source}">{e.source}</span></td>']
        cells += [_td(f"{100 * e.families[f]:.2f}", f"{e.families[f]:.6f}") if f in e.families else _td("–", "") for f in families]
        fam_rows.append(f'<tr class="{e.source}">{"".join(cells)}</tr>')
    parts += [
        "<h2>Per family (mean accuracy over the family's sets)</h2>",
        f'<div class="wrap"><table id="families" class="sortable"><thead><tr><th class="text">Detector</th><th class="text">Source</th>{"".join(f"<th>{esc(f)}</th>" for f in families)}</tr></thead><tbody>{"".join(fam_rows)}</tbody></table></div>',
    ]
    # Threshold-free metrics.
    measured = sorted((e for e in board.entries if e.source == "measured" and e.pairs), key=lambda e: (e.detector, e.perturbation or ""))
    if measured:
        tf_rows = []
        for e in measured:
            means = {k: [v[k].value for v in e.pairs.values() if v[k].value is not None] for k in _PAIR_KEYS}
            cells = [_td(e.detector, e.detector.lower(), "text"), _td(e.perturbation or "clean", e.perturbation or "", "text")]
            for k in _PAIR_KEYS:
                v = float(np.mean(means[k])) if means[k] else None
                cells.append(_td("–" if v is None else f"{v:.3f}", "" if v is None else f"{v:.6f}"))
            cells.append(_td(f"{e.images_per_second:.1f}" if e.images_per_second else "–", e.images_per_second or ""))
            tf_rows.append(f'<tr class="measured">{"".join(cells)}</tr>')
        parts += [
            "<h2>Threshold-free metrics (each fake set vs the real pool; means over fake sets)</h2>",
            '<div class="wrap"><table id="threshold-free" class="sortable"><thead><tr><th class="text">Detector</th><th class="text">Perturbation</th><th>AUC</th><th>AP</th><th>EER</th><th>TPR@1%FPR</th><th>TPR@5%FPR</th><th>images/s</th></tr></thead>'
            f'<tbody>{"".join(tf_rows)}</tbody></table></div>',
        ]
    # Robustness: one column group per suite.
    if board.suites:
        groups = ["clean", *board.suites]
        top = '<tr><th class="text"></th>' + "".join(f'<th colspan="3" style="text-align:center">{esc(g)}</th>' for g in groups) + "</tr>"
        sub = '<tr><th class="text">Detector</th>' + "<th>Avg</th><th>Held-out</th><th>AUC</th>" * len(groups) + "</tr>"
        rb_rows = []
        for det, g in _robustness(board).items():
            cells = [_td(det, det.lower(), "text")]
            for name in groups:
                vals = g.get(name, ("–", "–", "–"))
                cells += [_td(v, "" if v == "–" else v) for v in vals]
            rb_rows.append(f'<tr class="measured">{"".join(cells)}</tr>')
        parts += [
            "<h2>Robustness (afpbench extension; not in the paper)</h2>",
            f'<div class="wrap"><table id="robustness" class="sortable"><thead>{top}{sub}</thead><tbody>{"".join(rb_rows)}</tbody></table></div>',
        ]
    if plots:
        parts.append('<h2>Plots</h2><div class="plots">')
        if "accuracy" in plots:
            parts.append(_img(plots["accuracy"], "accuracy per set"))
        if "roc" in plots:
            parts.append(_img(plots["roc"], "ROC curves"))
        parts.append("</div>")
    if board.notes:
        parts.append('<h2>Notes</h2><ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in board.notes) + "</ul>")
    parts += [f"<script>{_JS}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


SITE_FILES = ("leaderboard.json", "leaderboard.md", "index.html", "accuracy_per_set.png", "roc.png")


@lock_scope
def build_site(results_files: Sequence[str | Path], out_dir: str | Path, profile: str | None = None, reported: bool = True) -> Path:
    """Write ``leaderboard.json``, ``leaderboard.md``, ``index.html`` and plots; return the JSON path.

    The site is replaced whole or not at all: every file is first written in full into a
    hidden staging folder inside ``out_dir``, then renamed into place (renames need no
    disk space). A failure on the way (disk full, Ctrl-C) removes the staging folder and
    leaves the previous site as it was, never a half-written page or a 0-byte plot.
    """
    from afpbench._util.locking import check_output_dir, ensure_output_dir, hold, lock_path

    out = check_output_dir(Path(out_dir))
    loaded = load_checked(results_files, profile)
    board = build_leaderboard(loaded, profile, reported)
    ensure_output_dir(out)
    hold(lock_path(out, "site"), out)
    for leftover in out.glob(".site.tmp-*"):  # of killed runs (we hold the lock)
        remove(leftover)
    stage = out / f".site.tmp-{os.getpid()}"
    try:
        stage.mkdir()
        plots = _plots(board, loaded, stage)
        dump_json(board, stage / "leaderboard.json")
        (stage / "leaderboard.md").write_text(render_markdown(board))
        (stage / "index.html").write_text(render_html(board, plots))
        for name in SITE_FILES:
            if (stage / name).exists():
                os.replace(stage / name, out / name)
            elif (out / name).exists():
                (out / name).unlink()  # a plot of the previous site that this one does not have
    finally:
        remove(stage)
    return out / "leaderboard.json"


__all__ = ["build_site", "build_leaderboard", "load_checked", "render_html", "render_markdown", "render_text_table"]
