"""Size: a detector that sees only an image's dimensions (size bias audit).

Generators emit fixed sizes (512², 1024², multiples of 64) while photos come in camera
and web sizes; a detector can learn the size instead of the picture ("Fake or JPEG?",
Grommelt et al. 2024; Aligned Datasets, ICLR 2025). ``size`` scores the pixel count,
the aspect ratio and whether both sides are multiples of 64, nothing else. Beside
``format`` it tells a codec shortcut from a size shortcut, and under the ``size-matched``
view (fakes take the real pool's sizes) it must fall to chance.
"""

from __future__ import annotations

import math
from typing import Any

from afpbench.cards import Preprocessing, Variant
from afpbench.detectors._rowfit import RowLogistic, row_value
from afpbench.errors import AfpbenchError

FEATURES = ("log_pixels", "log_aspect", "multiple_of_64")
# Unfitted prior: sides that are multiples of 64 look generated (the generators' latent grid).
PRIOR_WEIGHT = (0.0, 0.0, 2.0)
PRIOR_BIAS = -1.0


def size_features(width: int, height: int) -> list[float]:
    """The 3 features of one image (see FEATURES)."""
    w, h = max(int(width), 1), max(int(height), 1)
    return [math.log2(w * h) / 20.0, math.log2(w / h), float(w % 64 == 0 and h % 64 == 0)]


class SizeDetector(RowLogistic):
    """Scores width and height only."""

    name = "size"
    description = "Bias audit: P(fake) from pixel count, aspect ratio and multiple-of-64 sides only (no pixels, no codec)."
    paper = "afpbench sanity detector (size shortcut audit)"
    license = "Apache-2.0"
    variants = {None: Variant(training_data="none: a fixed prior (multiple-of-64 sides = fake) unless fitted with afpbench train")}
    choices = ["Unfitted prior logit = 2*multiple_of_64 - 1."]
    FEATURES = FEATURES
    PRIOR_WEIGHT = PRIOR_WEIGHT
    PRIOR_BIAS = PRIOR_BIAS

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(note="No pixels: the features come from the row's width and height.")

    def row_features(self, row: dict[str, Any] | None, image: Any) -> list[float]:
        w, h = row_value(row, image, "width"), row_value(row, image, "height")
        if not w or not h:
            raise AfpbenchError("The size detector needs the image's width and height (a dataset row or a decoded image).")
        return size_features(w, h)


__all__ = ["SizeDetector", "size_features", "FEATURES"]
