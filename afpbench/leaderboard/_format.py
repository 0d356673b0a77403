"""Formatting shared by the Markdown, text and HTML renderers (no number is computed here)."""

from __future__ import annotations

from afpbench.results import Leaderboard, LeaderboardEntry, Metric, ViewComparison

NONCOMMERCIAL = "licence does not allow commercial use"
OTHER_BUILD = "other build of the same recipe"
DASH = "–"


def pct(m: Metric | None) -> str:
    return DASH if m is None or m.value is None else f"{100 * m.value:.2f}"


def num(v: float | None, digits: int = 3) -> str:
    return DASH if v is None else f"{v:.{digits}f}"


def signed(v: float | None, digits: int = 3) -> str:
    return DASH if v is None else f"{v:+.{digits}f}"


def metric3(m: Metric | None) -> str:
    return DASH if m is None or m.value is None else f"{m.value:.3f}"


def ordered(board: Leaderboard) -> list[LeaderboardEntry]:
    """The main table's rows: clean, native entries; measured first, then reported; each by
    held-out average (else the overall one), best first."""

    def key(e: LeaderboardEntry) -> tuple[int, float]:
        if e.average_held_out and e.average_held_out.value is not None:
            v = e.average_held_out.value
        elif e.average_all and e.average_all.value is not None:
            v = e.average_all.value
        else:
            v = -1.0
        return (0 if e.source == "measured" else 1, -v)

    return sorted([e for e in board.entries if not e.perturbation and e.view is None], key=key)


def measured(board: Leaderboard) -> list[LeaderboardEntry]:
    """Every measured entry with pairs, by detector, view and perturbation."""
    return sorted(
        (e for e in board.entries if e.source == "measured" and e.pairs),
        key=lambda e: (e.detector, e.view.name if e.view else "", e.perturbation or ""),
    )


def noncommercial(board: Leaderboard) -> set[str]:
    """Detectors whose card says their licence does not allow commercial use."""
    return {e.detector for e in board.entries if e.noncommercial}


def counts(board: Leaderboard) -> tuple[int, int]:
    """Columns in the table and held-out columns (the two averages' headers)."""
    return len(board.sets), sum(1 for s in board.sets if s.role == "held-out")


def robustness_groups(board: Leaderboard) -> dict[str, dict[str, tuple[str, str, str]]]:
    """Detector -> suite ('clean' included) -> (avg, held-out, mean AUC) as text (native view)."""
    rows: dict[str, dict[str, tuple[str, str, str]]] = {}
    for e in board.entries:
        if e.source != "measured" or e.view is not None:
            continue
        rows.setdefault(e.detector, {})[e.perturbation or "clean"] = (pct(e.average_all), pct(e.average_held_out), num(e.mean_auc))
    return rows


def tau_text(c: ViewComparison) -> str:
    """Kendall's tau with its interval, or why it is undefined."""
    tau = c.kendall_tau
    if tau.value is None:
        return f"undefined ({tau.n_detectors} detector(s) compared)"
    ci = f" [{tau.ci_low:.3f}, {tau.ci_high:.3f}]" if tau.ci_low is not None and tau.ci_high is not None else ""
    return f"{tau.value:.3f}{ci}"
