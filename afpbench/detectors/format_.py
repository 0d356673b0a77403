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
the fitted ``format`` scores well has a format shortcut. ``size`` is its sibling that
sees the size only.
"""

from __future__ import annotations

import math
from typing import Any

from afpbench.cards import Preprocessing, Variant
from afpbench.detectors._rowfit import RowLogistic, row_value
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


class FormatDetector(RowLogistic):
    """Scores the file's format, size and compression, never its pixels."""

    name = "format"
    description = "Bias audit: P(fake) from file format, pixel count, bits per pixel, squareness and multiple-of-64 sides only (no pixels)."
    paper = "afpbench sanity detector (format/size shortcut audit)"
    license = "Apache-2.0"
    variants = {None: Variant(training_data="none: a fixed prior (lossless/square/multiple-of-64 = fake, JPEG = real) unless fitted with afpbench train")}
    choices = ["Unfitted prior logit = 2*png + 1*webp - 2*jpeg + 1*square + 1*multiple_of_64 - 1."]
    FEATURES = FEATURES
    PRIOR_WEIGHT = PRIOR_WEIGHT
    PRIOR_BIAS = PRIOR_BIAS

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(note="No pixels: the features come from the row (format, width, height, encoded bytes).")

    def row_features(self, row: dict[str, Any] | None, image: Any) -> list[float]:
        fmt = row_value(row, None, "format") or getattr(image, "format", None)
        if not fmt:
            raise AfpbenchError("The format detector needs the dataset row (format, width, height, bytes); pass row= to preprocess.")
        return file_features(fmt, row_value(row, image, "width"), row_value(row, image, "height"), row_value(row, image, "bytes"))


__all__ = ["FormatDetector", "file_features", "FEATURES"]
