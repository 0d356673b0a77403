"""Results files -> the leaderboard: ``leaderboard.json``, ``leaderboard.md``, ``index.html``.

Measured rows come from results files (validated against the schema); the paper's
reported rows (``recipes/profiles/results_<profile>.csv`` through the catalog) are added
as reference rows marked ``reported`` and are never mixed with measured numbers: they
have their own source field, badge and style, and no confidence intervals.

Measured rows are recomputed, not copied: every predictions file a results file lists
must be there with the sha256 the results file recorded, must belong to that results
file (set, rows, fingerprint, detector, evaluation id, view) and hold predictions that
follow its threshold; the metrics are then recomputed from those predictions with the
recorded real pool and bootstrap settings (the code path of ``evaluate`` and ``afpbench
score``) and must equal the file's to the last digit, and a calibrated threshold is
recalibrated. The schema itself refuses non-finite numbers and fractions outside [0, 1].

Refused, each with a one-line reason: results run with ``--limit``; results whose
dataset fingerprints differ for the same set (unless ``same_recipe`` and their recipe
fingerprints agree); results of different profiles; files that fail schema validation;
two results for the same detector, view and perturbation; missing predictions files or
ones whose hash no longer matches their results file; numbers that differ from the ones
recomputed from the predictions; an audit or gallery data of another build of a set.

The package is split by job: this module checks and loads results and builds the typed
:class:`~afpbench.results.Leaderboard` (every number, every mean, computed once here and
in :mod:`._summaries`); :mod:`.plots` draws with matplotlib; :mod:`.markdown` and
:mod:`.html` are pure functions of the model that format numbers but never compute one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from afpbench import __version__
from afpbench._util.clock import utc_timestamp
from afpbench._util.hashing import sha256_file
from afpbench._util.io import remove, tmp_name
from afpbench._util.locking import lock_scope
from afpbench.errors import AfpbenchError
from afpbench.leaderboard import _summaries as S
from afpbench.leaderboard.html import render_html
from afpbench.leaderboard.markdown import render_markdown, render_text_table
from afpbench.results import (
    DatasetInfo,
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

logger = logging.getLogger(__name__)


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


def _view_name(r: ResultsFile) -> str:
    return r.view.name if r.view is not None else "native"


def _label(r: ResultsFile) -> str:
    """detector[@perturbation][ under view] as messages name an entry."""
    view = _view_name(r)
    return f"{r.detector.full_name}{'@' + r.perturbation.name if r.perturbation else ''}{'' if view == 'native' else ' under view ' + view}"


def load_checked(results_files: Sequence[str | Path], profile: str | None = None, same_recipe: bool = False) -> list[_Loaded]:
    """Load results files and refuse anything that cannot be published together.

    ``same_recipe``: accept results on different builds of a set when the builds share
    their recipe fingerprint (the entries are marked); otherwise every result must have
    been evaluated on the same build (content fingerprint) of each set.
    """
    if not results_files:
        raise AfpbenchError("No results files given; pass <results>/*/results.json.")
    loaded = []
    for f in results_files:
        path = _results_path(f)
        loaded.append(_Loaded(path, load_results(path), sha256_file(path) if path.is_file() else ""))
    for item in loaded:
        if item.results.run.limit is not None:
            raise AfpbenchError(f"{item.path} was run with --limit {item.results.run.limit}; evaluate without --limit to publish it.")
        if any(d.rows_evaluated + len(d.refused or ()) != d.rows_total for d in item.results.datasets):
            raise AfpbenchError(f"{item.path} did not evaluate every row of its sets; evaluate them in full to publish it.")
    profiles = {item.results.profile for item in loaded}
    if len(profiles) > 1:
        by = ", ".join(f"{item.results.profile or 'custom'} ({item.path})" for item in loaded)
        raise AfpbenchError(f"Results mix profile versions: {by}; build one leaderboard per profile.")
    found = profiles.pop()
    if profile is not None and found != profile:
        raise AfpbenchError(f"The results were evaluated on profile {found or 'custom'}, not {profile}; pass --profile {found} or matching results.")
    _check_builds(loaded, same_recipe)
    names: dict[tuple[str, str, str | None], Path] = {}
    for item in loaded:
        r = item.results
        key = (r.detector.full_name, _view_name(r), r.perturbation.name if r.perturbation else None)
        if key in names:
            raise AfpbenchError(f"Two results for {_label(r)} ({names[key]} and {item.path}); pass one of them.")
        names[key] = item.path
    _recompute_all(loaded)
    return loaded


def _check_builds(loaded: list[_Loaded], same_recipe: bool) -> None:
    """Every result of a set on the same build, or (``same_recipe``) on builds of one recipe."""
    seen: dict[str, tuple[DatasetInfo, Path]] = {}
    for item in loaded:
        for d in item.results.datasets:
            first, first_path = seen.setdefault(d.name, (d, item.path))
            if first.fingerprint == d.fingerprint:
                continue
            if not same_recipe:
                raise AfpbenchError(
                    f"Set '{d.name}' has different data in {first_path} and {item.path} (fingerprints {first.fingerprint[:12]}... vs {d.fingerprint[:12]}...); "
                    "evaluate every detector on the same build of the set, or pass --same-recipe to combine builds of the same recipe."
                )
            for info, path in ((first, first_path), (d, item.path)):
                if info.recipe_fingerprint is None:
                    raise AfpbenchError(
                        f"{path} does not record the recipe fingerprint of set '{d.name}', which --same-recipe compares; "
                        "evaluate it again on a set whose manifest records its recipe fingerprint (sets built or imported by this afpbench do)."
                    )
            if first.recipe_fingerprint != d.recipe_fingerprint:
                raise AfpbenchError(
                    f"Set '{d.name}' in {first_path} and {item.path} comes from different recipes (recipe fingerprints "
                    f"{first.recipe_fingerprint[:12]}... vs {d.recipe_fingerprint[:12]}...); evaluate every detector on builds of the same recipe (afpbench compare A B shows what differs)."
                )


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
        # Predictions written before views existed carry no view: they are native.
        raw_view = meta.view.model_dump() if meta.view is not None else None
        pred_view = raw_view.get("name", "native") if isinstance(raw_view, dict) else (raw_view or "native")
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
        elif pred_view != _view_name(r):
            problem = f"holds predictions under view {pred_view}, the results file says {_view_name(r)}"
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


# -- the model -----------------------------------------------------------------------------
def _profile_obj(name: str | None) -> Any:
    if not name:
        return None
    from afpbench import catalog

    return catalog.get_profile(name)


def _noncommercial(card: Any) -> bool:
    """The card's noncommercial flag (the card is recorded as a dict or as the card model)."""
    if card is None:
        return False
    return bool(card.get("noncommercial", False) if isinstance(card, dict) else getattr(card, "noncommercial", False))


def _builds(loaded: list[_Loaded]) -> dict[str, DatasetInfo]:
    """Per set, the build a column shows: the one most results were evaluated on (ties: the first given)."""
    counts: dict[str, Counter[str]] = {}
    first: dict[tuple[str, str], DatasetInfo] = {}
    for item in loaded:
        for d in item.results.datasets:
            counts.setdefault(d.name, Counter())[d.fingerprint] += 1
            first.setdefault((d.name, d.fingerprint), d)
    # Counter.most_common keeps insertion order among equal counts.
    return {name: first[(name, c.most_common(1)[0][0])] for name, c in counts.items()}


def _used_builds(loaded: list[_Loaded]) -> dict[str, set[str]]:
    """Set name -> the content fingerprints the results were evaluated on."""
    used: dict[str, set[str]] = {}
    for item in loaded:
        for d in item.results.datasets:
            used.setdefault(d.name, set()).add(d.fingerprint)
    return used


def _audit_file(audit: str | Path) -> Path:
    path = Path(audit)
    return path / "audit.json" if path.is_dir() else path


def build_leaderboard(
    loaded: list[_Loaded],
    profile: str | None = None,
    reported: bool = True,
    *,
    audit: str | Path | None = None,
    gallery: str | None = None,
) -> Leaderboard:
    """The leaderboard model from checked results (plus the paper's rows for a profile).

    ``audit``: an ``afpbench audit`` folder or its ``audit.json``, summarised as the
    shortcut-audit section; ``gallery``: the sets page the column headers link to.
    """
    prof = _profile_obj(profile or (loaded[0].results.profile if loaded else None))
    builds = _builds(loaded)
    if prof is not None:
        outside = [n for n in builds if n not in prof.names]
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
        d = builds.get(name)
        if d is not None:
            sets.append(LeaderboardSet(
                name=name, role=role, label=d.label, family=d.family, recipe_version=d.recipe_version,
                fingerprint=d.fingerprint, recipe_fingerprint=d.recipe_fingerprint,
            ))
        else:
            # A profile column nobody measured: the profile names a catalog recipe, which
            # says what the set is (the reported rows have numbers for it).
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
        pairs = {p.fake: S.pair_summary(p) for p in m.pairs}
        means = S.pair_means(pairs)
        view = r.view if r.view is not None and r.view.name != "native" else None
        other = [d.name for d in r.datasets if d.fingerprint != builds[d.name].fingerprint]
        if len(per_set) < n_profile:
            notes.append(f"{_label(r)}: evaluated on {len(per_set)} of {n_profile} sets; its averages cover those sets only.")
        entries.append(
            LeaderboardEntry(
                detector=r.detector.full_name, source="measured", view=view, perturbation=r.perturbation.name if r.perturbation else None,
                per_set=per_set, average_all=m.averages.all, average_held_out=m.averages.held_out,
                families=S.families(per_set, sets), pairs=pairs, pair_means=means,
                mean_auc=means.auc.value if means is not None and means.auc is not None else None,
                threshold=r.threshold, noncommercial=_noncommercial(r.detector.card), other_build=other,
                weights_sha256=r.detector.weights_sha256, results_file=str(item.path), results_sha256=item.sha256,
                images_per_second=r.run.images_per_second, n_sets=len(per_set),
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
                    families=S.families(per_set, sets), n_sets=len(per_set),
                )
            )
        if rows:
            notes.append(f"Rows marked 'reported' are copied from the paper's table ({prof.reported}); they were not measured by afpbench.")
    suites = sorted({e.perturbation for e in entries if e.perturbation})
    if suites:
        notes.append("Robustness suites are an afpbench extension: the paper reports no perturbation experiments.")
    views = S.view_comparisons(entries, [s.name for s in sets])
    if views:
        notes.append(
            f"Views are an afpbench extension: the same sets with their encoding harmonised before decoding. A detector marked ▼ loses more than {S.DROP_FLAG} mean AUC under the view."
        )
    lonely = sorted({e.view.name for e in entries if e.view is not None and e.perturbation is None} - {v.view.name for v in views})
    if lonely:
        notes.append(f"View(s) {', '.join(lonely)} have no native results of the same detectors to compare with; evaluate them with --view native too.")
    if any(e.other_build for e in entries):
        notes.append("Rows marked 'other build' were evaluated on another build of the same recipe for the sets listed (--same-recipe): same rows, prompts and seeds, different pixels.")
    board_audit = None
    if audit is not None:
        from afpbench.audit import load_audit

        file = _audit_file(audit)
        board_audit = S.audit_summary(load_audit(file), file, _used_builds(loaded))
    return Leaderboard(
        created=utc_timestamp(), afpbench_version=__version__,
        profile=prof.name if prof is not None else None, sets=sets, families=sorted({s.family or "other" for s in sets}),
        suites=suites, entries=entries, views=views, robustness=S.robustness_rows(entries), audit=board_audit, gallery=gallery,
        same_recipe=any(e.other_build for e in entries), notes=notes,
    )


# -- the site ------------------------------------------------------------------------------
#: Files and folders a site build owns: replaced when the new site has them, removed when
#: it does not (the gallery's files are left alone without --data: ``afpbench gallery`` may
#: have written them).
SITE_FILES = ("leaderboard.json", "leaderboard.md", "index.html", "accuracy_per_set.png", "roc.png", "robustness.png", "audit")
GALLERY_FILES = ("sets.html", "sets")


def _copy_audit_plots(board: Leaderboard, audit_dir: Path, stage: Path) -> dict[str, Path]:
    """Copy the audit's plots of the shown pairs into ``stage/audit``; site path -> file."""
    out: dict[str, Path] = {}
    assert board.audit is not None
    for pair in board.audit.pairs:
        for rel in pair.plots:
            src = audit_dir / Path(rel).relative_to("audit")
            if not src.is_file():
                raise AfpbenchError(f"The audit in {audit_dir} lists the plot {src.name}, which is missing; run afpbench audit again.")
            dst = stage / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            out[rel] = dst
    return out


def _gallery(data: Sequence[str | Path], board: Leaderboard, loaded: list[_Loaded], stage: Path) -> None:
    """The sets gallery (sets.html, sets/) in ``stage``, refused when --data holds other builds."""
    from afpbench.gallery import GalleryConfig, build_gallery

    names = [s.name for s in board.sets if s.fingerprint is not None]
    gallery = build_gallery(GalleryConfig(data=[Path(d) for d in data], out=stage, datasets=names, profile=board.profile))
    used = _used_builds(loaded)
    for name, sg in gallery.sets.items():
        if sg.fingerprint not in used.get(name, {sg.fingerprint}):
            raise AfpbenchError(
                f"--data holds another build of set '{name}' (fingerprint {sg.fingerprint[:12]}...) than the results were evaluated on; pass the evaluated data."
            )


def _publish(stage: Path, out: Path, name: str) -> None:
    """Move ``stage/name`` over ``out/name`` (a folder is swapped with a rename each way)."""
    src, dst = stage / name, out / name
    if src.is_dir():
        old = tmp_name(dst, "old")
        if dst.exists():
            os.replace(dst, old)
        os.replace(src, dst)
        remove(old)
    else:
        os.replace(src, dst)


@lock_scope
def build_site(
    results_files: Sequence[str | Path],
    out_dir: str | Path,
    profile: str | None = None,
    reported: bool = True,
    *,
    audit: str | Path | None = None,
    data: Sequence[str | Path] | None = None,
    same_recipe: bool = False,
) -> Path:
    """Write ``leaderboard.json``, ``leaderboard.md``, ``index.html`` and plots; return the JSON path.

    ``audit``: an ``afpbench audit`` folder or its ``audit.json``, shown as the shortcut
    audit section (its plots are copied into ``audit/``). ``data``: the data folders the
    results were evaluated on; the sets gallery (``sets.html``) is built into the site
    and every column header links to its set. ``same_recipe``: see :func:`load_checked`.

    The site is replaced whole or not at all: every file is first written in full into a
    hidden staging folder inside ``out_dir``, then renamed into place (renames need no
    disk space). A failure on the way (disk full, Ctrl-C) removes the staging folder and
    leaves the previous site as it was, never a half-written page or a 0-byte plot.
    """
    from afpbench._util.locking import (
        check_output_dir,
        ensure_output_dir,
        hold,
        lock_path,
    )
    from afpbench.gallery import PAGE

    out = check_output_dir(Path(out_dir))
    loaded = load_checked(results_files, profile, same_recipe)
    board = build_leaderboard(loaded, profile, reported, audit=audit, gallery=PAGE if data else None)
    ensure_output_dir(out)
    hold(lock_path(out, "site"), out)
    for leftover in [*out.glob(".site.tmp-*"), *(p for n in (*SITE_FILES, *GALLERY_FILES) for p in out.glob(f".{n}.old-*"))]:
        remove(leftover)  # of killed runs (we hold the lock)
    stage = out / f".site.tmp-{os.getpid()}"
    try:
        stage.mkdir()
        if data:
            _gallery(data, board, loaded, stage)
        from afpbench.leaderboard import plots as P

        images = P.draw(board, loaded, stage)
        if board.audit is not None and audit is not None:
            images.update(_copy_audit_plots(board, _audit_file(audit).parent, stage))
        dump_json(board, stage / "leaderboard.json")
        (stage / "leaderboard.md").write_text(render_markdown(board))
        (stage / "index.html").write_text(render_html(board, images))
        for name in (*SITE_FILES, *(GALLERY_FILES if data else ())):
            if (stage / name).exists():
                _publish(stage, out, name)
            elif (out / name).exists():
                remove(out / name)  # a plot (or audit) of the previous site that this one does not have
    finally:
        remove(stage)
    logger.info("leaderboard: %d entries, %d columns -> %s", len(board.entries), len(board.sets), out)
    return out / "leaderboard.json"


__all__ = ["build_leaderboard", "build_site", "load_checked", "render_html", "render_markdown", "render_text_table"]


# ``afpbench.leaderboard(...)`` calls build_site even after this module was imported (see afpbench._util.callable_module).
from afpbench._util.callable_module import make_callable  # noqa: E402

make_callable(__name__, build_site)
