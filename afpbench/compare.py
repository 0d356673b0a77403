"""Two builds of one recipe: the same recipe, how far apart are the pixels?

A set's bytes depend on the device, the dtype and even the CPU thread count, so two labs
that rebuild ``sd3`` faithfully never share a content fingerprint. The **recipe
fingerprint** (``afpbench.dataset.fingerprint``, stored in the manifest at finalize) is
the identity they do share.

``afpbench compare A B`` reports whether two builds share it, whether their content is
identical, and how far their pixels differ row by row (PSNR and SSIM from scikit-image,
summarised, and the rows that differ most).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def recipe_fingerprint_of(path: str | Path) -> str:
    """A set folder's recipe fingerprint: the one its manifest stores, computed from its
    manifest and rows for sets written before it existed."""
    from afpbench.dataset import open_dataset

    return open_dataset(path).recipe_fingerprint


@dataclass
class RowDiff:
    id: str
    psnr: float  # inf for identical pixels
    ssim: float
    same_bytes: bool


@dataclass
class CompareReport:
    a: Path
    b: Path
    recipe_fingerprints: tuple[str, str]
    content_fingerprints: tuple[str, str]
    rows_a: int
    rows_b: int
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    rows: list[RowDiff] = field(default_factory=list)

    @property
    def same_recipe(self) -> bool:
        return self.recipe_fingerprints[0] == self.recipe_fingerprints[1]

    @property
    def same_content(self) -> bool:
        return self.content_fingerprints[0] == self.content_fingerprints[1]

    def summary(self) -> dict[str, Any]:
        """PSNR/SSIM summary over the rows both builds hold at the same size."""
        psnr = np.array([r.psnr for r in self.rows], dtype=np.float64)
        ssim = np.array([r.ssim for r in self.rows], dtype=np.float64)
        finite = psnr[np.isfinite(psnr)]
        return {
            "compared": len(self.rows),
            "identical_bytes": int(sum(r.same_bytes for r in self.rows)),
            "identical_pixels": int(np.isinf(psnr).sum()),
            "psnr_median": float(np.median(finite)) if finite.size else math.inf,
            "psnr_min": float(finite.min()) if finite.size else math.inf,
            "ssim_mean": float(ssim.mean()) if ssim.size else 1.0,
            "ssim_min": float(ssim.min()) if ssim.size else 1.0,
        }

    def worst(self, k: int = 10) -> list[RowDiff]:
        return sorted(self.rows, key=lambda r: (r.psnr, r.ssim))[:k]

    def as_dict(self, k: int = 10) -> dict[str, Any]:
        return {
            "a": str(self.a), "b": str(self.b), "same_recipe": self.same_recipe, "same_content": self.same_content,
            "recipe_fingerprints": list(self.recipe_fingerprints), "content_fingerprints": list(self.content_fingerprints),
            "rows_a": self.rows_a, "rows_b": self.rows_b, "only_a": self.only_a[:k], "only_b": self.only_b[:k],
            "size_mismatch": self.size_mismatch[:k], "summary": self.summary(),
            "worst": [{"id": r.id, "psnr": r.psnr, "ssim": r.ssim} for r in self.worst(k)],
        }


def _pixels(cell: Any) -> np.ndarray:
    from afpbench.dataset import decode_image

    return np.asarray(decode_image(cell), dtype=np.uint8)


def compare(a: str | Path, b: str | Path) -> CompareReport:
    """Compare two set folders row by row (matched by id)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from afpbench.dataset import open_dataset

    ra, rb = open_dataset(a), open_dataset(b)
    report = CompareReport(
        Path(a), Path(b), (ra.recipe_fingerprint, rb.recipe_fingerprint), (ra.fingerprint, rb.fingerprint), ra.num_rows, rb.num_rows,
    )
    ids_a, ids_b = ra.ids(), rb.ids()
    pos_b = {rid: i for i, rid in enumerate(ids_b)}
    common = set(ids_a) & set(pos_b)
    report.only_a = [r for r in ids_a if r not in common]
    report.only_b = [r for r in ids_b if r not in common]
    # Stream A in order and fetch B's row by position (a rebuild keeps the order, so B reads sequentially too).
    b_rows = rb.rows(batch_size=64, columns=["id", "image"])
    b_buffer: dict[str, Any] = {}
    for row in ra.rows(batch_size=64, columns=["id", "image"]):
        rid = row["id"]
        if rid not in common:
            continue
        while rid not in b_buffer:
            nxt = next(b_rows)
            if nxt["id"] in common:
                b_buffer[nxt["id"]] = nxt["image"]
        other = b_buffer.pop(rid)
        x, y = _pixels(row["image"]), _pixels(other)
        if x.shape != y.shape:
            report.size_mismatch.append(rid)
            continue
        same = (row["image"] or {}).get("bytes") == (other or {}).get("bytes")
        if same or np.array_equal(x, y):
            report.rows.append(RowDiff(rid, math.inf, 1.0, same))
            continue
        psnr = float(peak_signal_noise_ratio(x, y, data_range=255))
        side = min(x.shape[0], x.shape[1])
        win = min(7, side if side % 2 else side - 1)
        ssim = float(structural_similarity(x, y, channel_axis=2, data_range=255, win_size=win)) if win >= 3 else float("nan")
        report.rows.append(RowDiff(rid, psnr, ssim, False))
    return report


__all__ = ["recipe_fingerprint_of", "compare", "CompareReport", "RowDiff"]
