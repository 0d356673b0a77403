"""``leaderboard.md`` and the terminal table: pure functions of the leaderboard model."""

from __future__ import annotations

from typing import Any

from afpbench.leaderboard._format import (
    DASH,
    NONCOMMERCIAL,
    OTHER_BUILD,
    counts,
    measured,
    metric3,
    noncommercial,
    num,
    ordered,
    pct,
    robustness_groups,
    signed,
    tau_text,
)
from afpbench.leaderboard._summaries import PAIR_KEYS
from afpbench.results import Leaderboard, LeaderboardEntry

_PAIR_HEADS = {"auc": "AUC", "ap": "AP", "eer": "EER", "tpr_at_fpr_1": "TPR@1%FPR", "tpr_at_fpr_5": "TPR@5%FPR"}


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _rule(n: int) -> str:
    return "|" + "---|" * n


def _detector(e: LeaderboardEntry) -> str:
    return e.detector + (" (NC)" if e.noncommercial else "")


def _source(e: LeaderboardEntry, n_all: int) -> str:
    text = e.source + (f" ({e.n_sets}/{n_all} sets)" if e.n_sets < n_all else "")
    if e.other_build:
        text += f", {OTHER_BUILD}: {', '.join(e.other_build)}"
    return text


def _name(det: str, nc: set[str]) -> str:
    return det + (" (NC)" if det in nc else "")


def _column(board: Leaderboard, name: str) -> str:
    return f"[{name}]({board.gallery}#set-{name})" if board.gallery else name


def render_markdown(board: Leaderboard) -> str:
    n_all, n_held = counts(board)
    lines = [
        f"# afpbench leaderboard{' (' + board.profile + ')' if board.profile else ''}",
        "",
        f"Built {board.created} by afpbench {board.afpbench_version}. Accuracy in %; rows marked *reported* are the paper's numbers, not measured here.",
        "",
    ]
    if any(e.noncommercial for e in board.entries):
        lines += [f"(NC): the detector's {NONCOMMERCIAL}.", ""]
    if board.gallery:
        lines += [f"Every set's images: [the sets gallery]({board.gallery}) (column headers link to each set).", ""]
    head = ["Detector", "Source", *[_column(board, s.name) for s in board.sets], f"Avg ({n_all})", f"Held-out ({n_held})"]
    lines += [_row(head), _rule(len(head))]
    for e in ordered(board):
        lines.append(_row([_detector(e), _source(e, n_all), *[pct(e.per_set.get(s.name)) for s in board.sets], pct(e.average_all), pct(e.average_held_out)]))
    lines += ["", "## Per family (mean accuracy, %)", "", _row(["Detector", "Source", *board.families]), _rule(len(board.families) + 2)]
    for e in ordered(board):
        lines.append(_row([_detector(e), e.source, *[f"{100 * e.families[f]:.2f}" if f in e.families else DASH for f in board.families]]))
    rows = measured(board)
    if rows:
        lines += [
            "", "## Threshold-free (fake set vs real pool; means over fake sets)", "",
            _row(["Detector", "View", "Perturbation", *[_PAIR_HEADS[k] for k in PAIR_KEYS]]), _rule(3 + len(PAIR_KEYS)),
        ]
        for e in rows:
            means = e.pair_means
            lines.append(_row([_detector(e), e.view.name if e.view else "native", e.perturbation or "clean", *[metric3(getattr(means, k) if means else None) for k in PAIR_KEYS]]))
    lines += _views(board)
    if board.suites:
        lines += ["", "## Robustness (afpbench extension)", ""]
        head = ["Detector"] + [f"{s} avg / held-out / AUC" for s in ["clean", *board.suites]]
        lines += [_row(head), _rule(len(head))]
        for det, groups in robustness_groups(board).items():
            lines.append(_row([_name(det, noncommercial(board))] + [" / ".join(groups.get(s, (DASH, DASH, DASH))) for s in ["clean", *board.suites]]))
    if board.robustness:
        lines += [
            "", "## Clean vs robust AUC (mean over fake sets; chain = chained degradations)", "",
            _row(["Detector", "Suite", "Clean AUC", "Robust AUC", "Drop"]), _rule(5),
        ]
        lines += [_row([_name(r.detector, noncommercial(board)), r.suite, num(r.clean_auc), num(r.robust_auc), signed(r.drop)]) for r in board.robustness]
        lines += ["", "![Clean vs robust AUC](robustness.png)"]
    lines += _audit(board)
    if board.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in board.notes]
    return "\n".join(lines) + "\n"


def _views(board: Leaderboard) -> list[str]:
    """Native and each view side by side (mean AUC per detector), the rank correlation, the drops."""
    if not board.views:
        return []
    lines = ["", "## Views: native vs harmonised (mean AUC over fake sets; afpbench extension)", ""]
    dets = list(dict.fromkeys(d.detector for c in board.views for d in c.detectors))
    head = ["Detector", "native"]
    for c in board.views:
        head += [c.view.name, "drop"]
    lines += [_row(head), _rule(len(head))]
    for det in dets:
        native = next((d.native_auc for c in board.views for d in c.detectors if d.detector == det), None)
        cells = [_name(det, noncommercial(board)), num(native)]
        for c in board.views:
            row = next((d for d in c.detectors if d.detector == det), None)
            if row is None:
                cells += [DASH, DASH]
            else:
                cells += [num(row.view_auc) + (" ▼" if row.flagged else ""), signed(row.drop)]
        lines.append(_row(cells))
    lines.append("")
    for c in board.views:
        lines.append(
            f"- Kendall τ native vs {c.view.name}: {tau_text(c)} ({c.kendall_tau.confidence:.0%} bootstrap over the fake sets "
            f"{', '.join(c.fake_sets)}; {c.kendall_tau.n_resamples} resamples, seed {c.kendall_tau.seed})."
        )
        flagged = [d.detector for d in c.detectors if d.flagged]
        if flagged:
            lines.append(f"- ▼ under {c.view.name} (mean AUC drops by more than {c.drop_flag}): {', '.join(flagged)}.")
    return lines


def _audit(board: Leaderboard) -> list[str]:
    a = board.audit
    if a is None:
        return []
    lines = [
        "", "## Shortcut audit", "",
        (
            f"Real pool {', '.join(a.real_pool) or '(none)'}; AUC of a classifier that sees only the named file property "
            f"(afpbench audit, {a.file}); ⚑ = the whole interval lies above {a.flag_auc}."
        ),
        "",
    ]
    flagged = [p for p in a.pairs if p.flagged]
    if flagged:
        lines += [f"- **{p.fake}** vs {'+'.join(p.real)}: {p.summary}" for p in flagged]
    else:
        lines.append("No pair is flagged: no file property alone separates the fakes from the reals.")
    lines += ["", _row(["Fake set", *a.shortcuts]), _rule(len(a.shortcuts) + 1)]
    for p in a.pairs:
        cells = [p.fake]
        for k in a.shortcuts:
            s = p.shortcuts.get(k)
            cells.append(DASH if s is None else f"{s.value:.3f} [{s.ci_low:.3f}, {s.ci_high:.3f}]" + (" ⚑" if s.flagged else ""))
        lines.append(_row(cells))
    plots = [(p.fake, rel) for p in a.pairs for rel in p.plots]
    if plots:
        lines += [""] + [f"![{fake}: {rel.rsplit('/', 1)[-1]}]({rel})" for fake, rel in plots]
    return lines


def render_text_table(board: Leaderboard | dict[str, Any]) -> str:
    """The clean-image table as aligned plain text (accuracy %, averages, mean AUC), for terminals."""
    if isinstance(board, dict):
        board = Leaderboard.model_validate(board)
    n_all, n_held = counts(board)
    head = ["detector", "source", *[s.name for s in board.sets], f"avg({n_all})", f"held-out({n_held})", "mean AUC"]
    rows = [head]
    for e in ordered(board):
        rows.append([_detector(e).replace(" ", ""), e.source, *[pct(e.per_set.get(s.name)) for s in board.sets], pct(e.average_all), pct(e.average_held_out), num(e.mean_auc)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
