"""``index.html``: a pure function of the leaderboard model and its plot files.

The page is one self-contained file: the CSS and JS (package files in ``static/``, shipped
in the wheel) are inlined and the plots embedded as base64 PNGs. The only links out of it
go to the sets gallery beside it (``sets.html``), when the site has one.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from afpbench.leaderboard._format import (
    DASH,
    NONCOMMERCIAL,
    OTHER_BUILD,
    counts,
    measured,
    noncommercial,
    num,
    ordered,
    robustness_groups,
    signed,
    tau_text,
)
from afpbench.leaderboard._summaries import PAIR_KEYS
from afpbench.results import Leaderboard, LeaderboardEntry, Metric

_PAIR_HEADS = {"auc": "AUC", "ap": "AP", "eer": "EER", "tpr_at_fpr_1": "TPR@1%FPR", "tpr_at_fpr_5": "TPR@5%FPR"}
esc = html.escape


@cache
def static(name: str) -> str:
    """A file of ``afpbench/leaderboard/static`` (the page's CSS and JS)."""
    return resources.files("afpbench.leaderboard").joinpath("static", name).read_text(encoding="utf-8")


def _td(text: str, value: Any = None, cls: str = "", title: str = "") -> str:
    attrs = ""
    if value is not None:
        attrs += f' data-value="{esc(str(value))}"'
    if cls:
        attrs += f' class="{cls}"'
    if title:
        attrs += f' title="{esc(title)}"'
    return f"<td{attrs}>{esc(text)}</td>"


def _num_td(v: float | None, text: str | None = None, cls: str = "") -> str:
    return _td(DASH, "", cls) if v is None else _td(text if text is not None else f"{v:.3f}", f"{v:.6f}", cls)


def _metric_td(m: Metric | None, cls: str = "") -> str:
    if m is None or m.value is None:
        return _td(DASH, "", cls)
    title = f"95% CI {100 * m.ci_low:.2f}–{100 * m.ci_high:.2f}" if m.ci_low is not None and m.ci_high is not None else "reported (no interval)"
    return _td(f"{100 * m.value:.2f}", f"{m.value:.6f}", cls, title)


def _img(data: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}" alt="{esc(alt)}">'


def _table(table_id: str, head: str, rows: list[str], sort_col: int | None = None) -> str:
    sort = f' data-sort-col="{sort_col}"' if sort_col is not None else ""
    return f'<div class="wrap"><table id="{table_id}" class="sortable"{sort}><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table></div>'


def _detector_td(e: LeaderboardEntry, title: str = "") -> str:
    nc = f'<span class="badge nc" title="{NONCOMMERCIAL}">NC</span>' if e.noncommercial else ""
    attr = f' title="{esc(title)}"' if title else ""
    return f'<td class="text" data-value="{esc(e.detector.lower())}"{attr}>{esc(e.detector)}{nc}</td>'


def _name_td(det: str, board: Leaderboard) -> str:
    """A detector cell of the tables keyed by detector name (views, robustness)."""
    nc = f'<span class="badge nc" title="{NONCOMMERCIAL}">NC</span>' if det in noncommercial(board) else ""
    return f'<td class="text" data-value="{esc(det.lower())}">{esc(det)}{nc}</td>'


def _source_td(e: LeaderboardEntry, n_all: int = 0) -> str:
    partial = (
        f' <span class="partial" title="averages cover only the sets this entry was evaluated on">{e.n_sets}/{n_all} sets</span>'
        if n_all and e.n_sets < n_all else ""
    )
    build = f'<span class="badge build" title="{OTHER_BUILD}: {esc(", ".join(e.other_build))}">other build</span>' if e.other_build else ""
    return f'<td class="text" data-value="{e.source}"><span class="badge {e.source}">{e.source}</span>{partial}{build}</td>'


def _threshold_title(e: LeaderboardEntry) -> str:
    return f"{e.threshold.kind} {e.threshold.value:g}" if e.threshold else ""


def render_html(board: Leaderboard, plots: Mapping[str, Path]) -> str:
    """The page. ``plots``: plot name (accuracy, roc, robustness) or site-relative audit plot
    path -> the PNG file to embed."""
    n_all, n_held = counts(board)
    nav = [("leaderboard", "Accuracy"), ("families", "Families")]
    if measured(board):
        nav.append(("threshold-free", "Threshold-free"))
    if board.views:
        nav.append(("views", "Views"))
    if board.suites:
        nav.append(("robustness", "Robustness"))
    if board.audit:
        nav.append(("audit", "Shortcut audit"))
    links = "".join(f'<a href="#{i}">{t}</a>' for i, t in nav) + (f'<a href="{esc(board.gallery)}">Sets</a>' if board.gallery else "")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>afpbench leaderboard{esc(' ' + board.profile) if board.profile else ''}</title>",
        '<link rel="icon" href="data:,">',
        f"<style>{static('leaderboard.css')}</style></head><body>",
        f"<h1>afpbench leaderboard{esc(' — profile ' + board.profile) if board.profile else ''}</h1>",
        f'<nav class="sections">{links}</nav>',
        f'<p class="meta">Built {esc(board.created)} by afpbench {esc(board.afpbench_version)}. Accuracy in %, hover a number for its 95% bootstrap interval. '
        'Click a column header to sort. <span class="badge measured">measured</span> rows were computed by afpbench from per-image predictions; '
        '<span class="badge reported">reported</span> rows are the paper\'s published numbers.'
        + (f' <span class="badge nc">NC</span>: the detector\'s {NONCOMMERCIAL}.' if any(e.noncommercial for e in board.entries) else "")
        + "</p>",
    ]
    parts += _main(board, n_all, n_held)
    parts += _families(board)
    parts += _threshold_free(board)
    parts += _views(board)
    parts += _robustness(board, plots)
    parts += _audit(board, plots)
    shown = [(k, alt) for k, alt in (("accuracy", "accuracy per set"), ("roc", "ROC curves")) if k in plots]
    if shown:
        parts.append('<h2 id="plots">Plots</h2><div class="plots">' + "".join(_img(plots[k].read_bytes(), alt) for k, alt in shown) + "</div>")
    if board.notes:
        parts.append('<h2 id="notes">Notes</h2><ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in board.notes) + "</ul>")
    parts += [f"<script>{static('leaderboard.js')}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


def _main(board: Leaderboard, n_all: int, n_held: int) -> list[str]:
    """One row per clean, native detector, one column per set, the two averages."""
    def header(s: Any) -> str:
        name = f'<a href="{esc(board.gallery)}#set-{esc(s.name)}">{esc(s.name)}</a>' if board.gallery else esc(s.name)
        return f'<th class="{"heldin" if s.role == "held-in" else ""}" title="{esc(s.role)}, {esc(s.label)}, {esc(s.family or "")}">{name}</th>'

    head = ['<th class="text">Detector</th>', '<th class="text">Source</th>', *[header(s) for s in board.sets]]
    head += [f'<th class="avg">Avg ({n_all})</th>', f'<th class="avg">Held-out ({n_held})</th>']
    rows = []
    for e in ordered(board):
        cells = [_detector_td(e, _threshold_title(e)), _source_td(e, n_all)]
        cells += [_metric_td(e.per_set.get(s.name)) for s in board.sets]
        cells += [_metric_td(e.average_all, "avg"), _metric_td(e.average_held_out, "avg")]
        rows.append(f'<tr class="{e.source}" data-source="{e.source}" data-detector="{esc(e.detector)}">{"".join(cells)}</tr>')
    note = "Held-in sets (used for training AntifakePrompt) have purple headers." + (" A set's name links to its images in the sets gallery." if board.gallery else "")
    return ["<h2>Accuracy per set</h2>", f'<p class="meta">{note}</p>', _table("leaderboard", f"<tr>{''.join(head)}</tr>", rows, len(head) - 1)]


def _families(board: Leaderboard) -> list[str]:
    rows = []
    for e in ordered(board):
        cells = [_detector_td(e), _source_td(e)]
        cells += [_td(f"{100 * e.families[f]:.2f}", f"{e.families[f]:.6f}") if f in e.families else _td(DASH, "") for f in board.families]
        rows.append(f'<tr class="{e.source}">{"".join(cells)}</tr>')
    head = '<tr><th class="text">Detector</th><th class="text">Source</th>' + "".join(f"<th>{esc(f)}</th>" for f in board.families) + "</tr>"
    return ['<h2 id="family-means">Per family (mean accuracy over the family\'s sets)</h2>', _table("families", head, rows)]


def _threshold_free(board: Leaderboard) -> list[str]:
    entries = measured(board)
    if not entries:
        return []
    rows = []
    for e in entries:
        view = e.view.name if e.view else "native"
        cells = [_detector_td(e), _td(view, view, "text"), _td(e.perturbation or "clean", e.perturbation or "", "text")]
        for k in PAIR_KEYS:
            m = getattr(e.pair_means, k) if e.pair_means else None
            cells.append(_num_td(m.value if m is not None else None))
        cells.append(_num_td(e.images_per_second, f"{e.images_per_second:.1f}" if e.images_per_second else None))
        rows.append(f'<tr class="measured">{"".join(cells)}</tr>')
    head = '<tr><th class="text">Detector</th><th class="text">View</th><th class="text">Perturbation</th>' + "".join(f"<th>{_PAIR_HEADS[k]}</th>" for k in PAIR_KEYS) + "<th>images/s</th></tr>"
    return ['<h2 id="threshold-free-metrics">Threshold-free metrics (each fake set vs the real pool; means over fake sets)</h2>', _table("threshold-free", head, rows)]


def _views(board: Leaderboard) -> list[str]:
    if not board.views:
        return []
    dets = list(dict.fromkeys(d.detector for c in board.views for d in c.detectors))
    top = '<tr><th class="text"></th><th></th>' + "".join(f'<th colspan="2" style="text-align:center">{esc(c.view.name)}</th>' for c in board.views) + "</tr>"
    sub = '<tr><th class="text">Detector</th><th>native</th>' + "<th>AUC</th><th>drop</th>" * len(board.views) + "</tr>"
    rows = []
    for det in dets:
        native = next((d.native_auc for c in board.views for d in c.detectors if d.detector == det), None)
        cells = [_name_td(det, board), _num_td(native)]
        for c in board.views:
            row = next((d for d in c.detectors if d.detector == det), None)
            if row is None:
                cells += [_td(DASH, ""), _td(DASH, "")]
                continue
            mark = " ▼" if row.flagged else ""
            title = f"drops by more than {c.drop_flag}" if row.flagged else ""
            cells.append(_td(DASH, "") if row.view_auc is None else _td(f"{row.view_auc:.3f}{mark}", f"{row.view_auc:.6f}", "drop" if row.flagged else "", title))
            cells.append(_num_td(row.drop, signed(row.drop)))
        rows.append(f'<tr class="measured" data-detector="{esc(det)}">{"".join(cells)}</tr>')
    taus = "".join(
        f"<li>Kendall τ native vs <strong>{esc(c.view.name)}</strong>: <span class=\"tau\" data-view=\"{esc(c.view.name)}\">{esc(tau_text(c))}</span> "
        f"({c.kendall_tau.confidence:.0%} bootstrap over the fake sets {esc(', '.join(c.fake_sets))}; {c.kendall_tau.n_resamples} resamples, seed {c.kendall_tau.seed})"
        + (f"; ▼ mean AUC drops by more than {c.drop_flag}: {esc(', '.join(d.detector for d in c.detectors if d.flagged))}" if any(d.flagged for d in c.detectors) else "")
        + "</li>"
        for c in board.views
    )
    return [
        '<h2 id="views">Views: native vs harmonised (afpbench extension)</h2>',
        '<p class="meta">Mean AUC over the fake sets, native and with the encoding harmonised before decoding; ▼ marks a detector whose AUC drops by more than 0.1.</p>',
        _table("views-table", top + sub, rows),
        f'<ul class="notes">{taus}</ul>',
    ]


def _robustness(board: Leaderboard, plots: Mapping[str, Path]) -> list[str]:
    out: list[str] = []
    if board.suites:
        groups = ["clean", *board.suites]
        top = '<tr><th class="text"></th>' + "".join(f'<th colspan="3" style="text-align:center">{esc(g)}</th>' for g in groups) + "</tr>"
        sub = '<tr><th class="text">Detector</th>' + "<th>Avg</th><th>Held-out</th><th>AUC</th>" * len(groups) + "</tr>"
        rows = []
        for det, g in robustness_groups(board).items():
            cells = [_name_td(det, board)]
            for name in groups:
                cells += [_td(v, "" if v == DASH else v) for v in g.get(name, (DASH, DASH, DASH))]
            rows.append(f'<tr class="measured">{"".join(cells)}</tr>')
        out += ['<h2 id="robustness">Robustness (afpbench extension; not in the paper)</h2>', _table("robustness-table", top + sub, rows)]
    if board.robustness:
        rows = [
            f'<tr class="measured">{_name_td(r.detector, board)}{_td(r.suite, r.suite, "text")}'
            f"{_num_td(r.clean_auc)}{_num_td(r.robust_auc)}{_num_td(r.drop, signed(r.drop))}</tr>"
            for r in board.robustness
        ]
        head = '<tr><th class="text">Detector</th><th class="text">Suite</th><th>Clean AUC</th><th>Robust AUC</th><th>Drop</th></tr>'
        out += [
            '<h3 id="robust-auc">Clean vs robust AUC (mean over fake sets; chain = chained degradations)</h3>',
            _table("robust-auc-table", head, rows),
        ]
        if "robustness" in plots:
            out.append('<div class="plots">' + _img(plots["robustness"].read_bytes(), "clean vs robust AUC") + "</div>")
    return out


def _audit(board: Leaderboard, plots: Mapping[str, Path]) -> list[str]:
    a = board.audit
    if a is None:
        return []
    flagged = [p for p in a.pairs if p.flagged]
    items = (
        '<ul class="flagged">' + "".join(f'<li><strong>{esc(p.fake)}</strong> vs {esc("+".join(p.real))}: {esc(p.summary)}</li>' for p in flagged) + "</ul>"
        if flagged else '<p class="meta">No pair is flagged: no file property alone separates the fakes from the reals.</p>'
    )
    head = '<tr><th class="text">Fake set</th>' + "".join(f"<th>{esc(k)}</th>" for k in a.shortcuts) + '<th class="text">Flag</th></tr>'
    rows = []
    for p in a.pairs:
        cells = [_td(p.fake, p.fake, "text")]
        for k in a.shortcuts:
            s = p.shortcuts.get(k)
            if s is None:
                cells.append(_td(DASH, ""))
            else:
                cells.append(_td(f"{s.value:.3f}" + (" ⚑" if s.flagged else ""), f"{s.value:.6f}", "drop" if s.flagged else "", f"{s.ci_low:.3f}–{s.ci_high:.3f}"))
        cells.append(f'<td class="text" data-value="{int(p.flagged)}">' + ('<span class="badge flag">flagged</span>' if p.flagged else "") + "</td>")
        rows.append(f'<tr class="measured" data-fake="{esc(p.fake)}">{"".join(cells)}</tr>')
    images = "".join(_img(plots[rel].read_bytes(), f"{p.fake}: {rel.rsplit('/', 1)[-1]}") for p in a.pairs for rel in p.plots if rel in plots)
    return [
        '<h2 id="audit">Shortcut audit</h2>',
        (
            f'<p class="meta">AUC of a classifier that sees only the named file property (format, JPEG quality, size...) of each fake set against the real pool '
            f'{esc(", ".join(a.real_pool) or "(none)")}; hover for the interval. ⚑: the whole interval lies above {num(a.flag_auc, 2)}: a detector can score by reading the file. '
            f"From {esc(a.file)}.</p>"
        ),
        items,
        _table("audit-table", head, rows),
        f'<div class="plots">{images}</div>' if images else "",
    ]
