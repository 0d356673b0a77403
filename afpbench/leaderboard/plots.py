"""The leaderboard's plots (matplotlib, Agg): accuracy per set, ROC curves, clean vs perturbed AUC.

Curves and areas come from :mod:`afpbench.metrics` (``roc_curve``, ``roc_auc``), the code
the metrics tables use; everything else is drawn from the leaderboard model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from afpbench.results import Leaderboard


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def accuracy_plot(board: Leaderboard, path: Path) -> Path:
    """Per-set accuracy of every clean, native measured entry, over the paper's rows in grey."""
    plt = _pyplot()
    names = [s.name for s in board.sets]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 4.2), dpi=100)

    def ys(e: Any) -> list[float]:
        return [100 * e.per_set[n].value if n in e.per_set and e.per_set[n].value is not None else np.nan for n in names]

    for e in board.entries:
        if e.source == "reported":
            ax.plot(x, ys(e), color="0.75", linewidth=0.8, zorder=1)
    for e in board.entries:
        if e.source == "measured" and not e.perturbation and e.view is None:
            ax.plot(x, ys(e), marker="o", linewidth=1.4, label=e.detector, zorder=3)
    if any(e.source == "reported" for e in board.entries):
        ax.plot([], [], color="0.75", linewidth=0.8, label="reported (paper)")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("Accuracy per set")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return _save(plt, fig, path)


def roc_inputs(results: Any, predictions: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Pooled labels and scores of every pair of a results file (None if unavailable)."""
    members = set(results.metrics.pairing.real_pool) | {p.fake for p in results.metrics.pairs}
    if not results.metrics.pairs:
        return None
    ys, ss = [], []
    for d in results.datasets:
        if d.name not in members:
            continue
        p = predictions.get(d.name)
        if p is None:  # only for results that did not go through load_checked
            return None
        ys.append(p.labels)
        ss.append(p.scores)
    y, s = np.concatenate(ys), np.concatenate(ss)
    if y.min() == y.max():
        return None
    return y, s


def roc_plot(loaded: Sequence[Any], path: Path) -> Path | None:
    """ROC of every clean, native results file: all its fake sets pooled against its real pool."""
    from afpbench.metrics import roc_auc, roc_curve

    curves = []
    for item in loaded:
        r = item.results
        if r.perturbation or (r.view is not None and r.view.name != "native"):
            continue
        data = roc_inputs(r, item.predictions)
        if data is not None:
            fpr, tpr, _ = roc_curve(*data)
            curves.append((r.detector.full_name, fpr, tpr, roc_auc(*data)))
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.4), dpi=100)
    for name, fpr, tpr, auc in curves:
        ax.plot(fpr, tpr, linewidth=1.4, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=0.8)
    ax.set_xlabel("false-positive rate (real called fake)")
    ax.set_ylabel("true-positive rate (fake called fake)")
    ax.set_title("ROC: every fake set vs the real pool")
    ax.legend(fontsize=7, loc="lower right")
    return _save(plt, fig, path)


def robustness_plot(board: Leaderboard, path: Path) -> Path | None:
    """Grouped bars per detector: clean mean AUC, then its mean AUC under each suite."""
    if not board.robustness:
        return None
    suites = list(dict.fromkeys(r.suite for r in board.robustness))
    detectors = list(dict.fromkeys(r.detector for r in board.robustness))
    clean = {r.detector: r.clean_auc for r in board.robustness}
    robust = {(r.detector, r.suite): r.robust_auc for r in board.robustness}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(detectors) * (len(suites) + 1) / 2 + 2), 4.0), dpi=100)
    width = 0.8 / (len(suites) + 1)
    x = np.arange(len(detectors))

    def bar(values: list[float | None], offset: int, label: str) -> None:
        ax.bar(x + (offset - len(suites) / 2) * width, [np.nan if v is None else v for v in values], width, label=label)

    bar([clean[d] for d in detectors], 0, "clean")
    for i, s in enumerate(suites, start=1):
        bar([robust.get((d, s)) for d in detectors], i, s)
    ax.axhline(0.5, color="0.6", linestyle="--", linewidth=0.8)
    ax.set_xticks(x, detectors, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean AUC over fake sets")
    ax.set_ylim(0, 1.02)
    ax.set_title("Clean vs perturbed (robust) AUC")
    ax.legend(fontsize=7, loc="lower right")
    return _save(plt, fig, path)


def draw(board: Leaderboard, loaded: Sequence[Any], out_dir: Path) -> dict[str, Path]:
    """Every plot the site shows, written into ``out_dir``; name -> file."""
    out = {"accuracy": accuracy_plot(board, out_dir / "accuracy_per_set.png")}
    roc = roc_plot(loaded, out_dir / "roc.png")
    if roc is not None:
        out["roc"] = roc
    rob = robustness_plot(board, out_dir / "robustness.png")
    if rob is not None:
        out["robustness"] = rob
    return out
