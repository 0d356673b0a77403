"""Format: a detector that never looks at pixels, only at the file (format bias audit).

Generated test sets are often square PNGs at a multiple of 64 pixels while real photos
are JPEGs of camera sizes; a detector can score well by reading the container instead of
the image. ``format`` makes that bias measurable: its features are the file format
(JPEG / PNG / WebP / other), the pixel count, the bits per pixel of the encoded file,
squareness and whether both sides are multiples of 64. It needs the dataset row:
``preprocess(image, row)`` reads ``row["format"]``, ``row["width"]``, ``row["height"]``
and the encoded byte length (``row["bytes"]``, or ``len(row["image"]["bytes"])``).

Unfitted, it applies a fixed prior that encodes the usual bias (lossless and square,
multiple-of-64 files look generated; JPEGs look real). ``afpbench train --detector
format`` fits a logistic regression (scikit-learn) on your data instead; a set on which
the fitted ``format`` scores well has a format shortcut.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import torch

from afpbench.detectors.base import Detector, Preprocessing, Variant, bce_from_probs, check_state_dict, read_saved
from afpbench.errors import AfpbenchError

FEATURES = ("jpeg", "png", "webp", "other", "log_pixels", "bits_per_pixel", "square", "multiple_of_64")
# The unfitted prior (logit weights over FEATURES, then bias).
PRIOR_WEIGHT = (-2.0, 2.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0)
PRIOR_BIAS = -1.0


def file_features(fmt: str | None, width: int, height: int, num_bytes: int | None) -> list[float]:
    """The 8 features of one file (see FEATURES)."""
    f = (fmt or "").lower().lstrip(".")
    f = "jpeg" if f in ("jpg", "jpeg") else f
    one_hot = [float(f == "jpeg"), float(f == "png"), float(f == "webp"), float(f not in ("jpeg", "png", "webp"))]
    pixels = max(int(width) * int(height), 1)
    bpp = (num_bytes * 8.0 / pixels) if num_bytes and num_bytes > 0 else 0.0
    return one_hot + [
        math.log2(pixels) / 20.0,
        min(bpp / 24.0, 2.0),
        float(width == height),
        float(width % 64 == 0 and height % 64 == 0),
    ]


class FormatDetector(Detector):
    """Scores the file's format, size and compression, never its pixels."""

    name = "format"
    description = "Bias audit: P(fake) from file format, pixel count, bits per pixel, squareness and multiple-of-64 sides only (no pixels)."
    paper = "afpbench sanity detector (format/size shortcut audit)"
    license = "Apache-2.0"
    trainable = True
    fit_mode = "fit"
    variants = {None: Variant(training_data="none: a fixed prior (lossless/square/multiple-of-64 = fake, JPEG = real) unless fitted with afpbench train")}
    train_recipe = {"batch_size": 256, "epochs": 1}
    choices = ["Unfitted prior logit = 2*png + 1*webp - 2*jpeg + 1*square + 1*multiple_of_64 - 1."]

    def setup(self) -> None:
        self.weight = torch.tensor(PRIOR_WEIGHT)
        self.bias = torch.tensor([PRIOR_BIAS])
        self.fitted = False
        if self.weights_path is not None:
            _, state = read_saved(self.weights_path, self.name)
            self.load_trainable_state(state, self.weights_path)

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(note="No pixels: the features come from the row (format, width, height, encoded bytes).")

    def preprocess(self, image: Any, row: dict[str, Any] | None = None) -> torch.Tensor:
        row = row or {}
        fmt = row.get("format") or getattr(image, "format", None)
        if not fmt:
            raise AfpbenchError("The format detector needs the dataset row (format, width, height, bytes); pass row= to preprocess.")
        width = row.get("width") or image.width
        height = row.get("height") or image.height
        num_bytes = row.get("bytes")
        if num_bytes is None and isinstance(row.get("image"), dict) and row["image"].get("bytes") is not None:
            num_bytes = len(row["image"]["bytes"])
        return torch.tensor(file_features(fmt, width, height, num_bytes), dtype=torch.float32)

    def train_preprocess(self, image: Any, row: dict[str, Any] | None, rng: Any) -> torch.Tensor:
        return self.preprocess(image, row)

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(batch.float() @ self.weight.to(batch.device) + self.bias.to(batch.device))

    def fit(self, train_batches: Iterable[tuple[Any, Any]], val_batches: Iterable[tuple[Any, Any]]) -> tuple[float, float]:
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        def collect(batches: Iterable[tuple[Any, Any]]) -> tuple[Any, Any]:
            xs, ys = [], []
            for x, y in batches:
                xs.append(x.numpy())
                ys.append(np.asarray(y))
            return (np.concatenate(xs), np.concatenate(ys)) if xs else (np.zeros((0, len(FEATURES))), np.zeros(0))

        xtr, ytr = collect(train_batches)
        if len(set(ytr.tolist())) < 2:
            raise AfpbenchError("format needs both real and fake images in the training data.")
        clf = LogisticRegression(C=1.0, max_iter=2000).fit(xtr, ytr)
        self.weight = torch.tensor(clf.coef_[0], dtype=torch.float32)
        self.bias = torch.tensor(clf.intercept_, dtype=torch.float32)
        self.fitted = True
        xva, yva = collect(val_batches)
        return bce_from_probs(clf.predict_proba(xtr)[:, 1], ytr), (bce_from_probs(clf.predict_proba(xva)[:, 1], yva) if len(yva) else math.nan)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight.clone(), "bias": self.bias.clone()}

    def load_trainable_state(self, state: dict[str, Any], source: Path | str) -> None:
        check_state_dict({"weight": (len(FEATURES),), "bias": (1,)}, state, source, f"a format fit over {len(FEATURES)} features")
        self.weight, self.bias = state["weight"].float(), state["bias"].float()
        self.fitted = True

    def arguments(self) -> dict[str, Any]:
        return {**super().arguments(), "fitted": self.fitted}


__all__ = ["FormatDetector", "file_features", "FEATURES"]
