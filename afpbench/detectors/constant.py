"""Constant: the same score for every image (a sanity floor for every metric).

``constant.fake`` (the default) scores 1.0 (everything called fake), ``constant.real``
scores 0.0. On a single-class set its accuracy is 100% or 0%; its AUC is 0.5 everywhere.
"""

from __future__ import annotations

from typing import Any

import torch

from afpbench.cards import Preprocessing, Variant
from afpbench.detectors.base import Detector


class Constant(Detector):
    """Scores every image ``1.0`` (tag ``fake``, default) or ``0.0`` (tag ``real``)."""

    name = "constant"
    description = "Sanity baseline: a constant P(fake) (1.0 for constant.fake, 0.0 for constant.real)."
    paper = "afpbench sanity detector"
    license = "Apache-2.0"
    variants = {
        None: Variant(training_data="none", options={"value": 1.0}),
        "fake": Variant(training_data="none", options={"value": 1.0}),
        "real": Variant(training_data="none", options={"value": 0.0}),
    }
    choices = ["The bare name is constant.fake."]

    def setup(self) -> None:
        self.value = float(self.variant.options["value"])

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(note="Ignores the image: a 1-element placeholder per image.")

    def preprocess(self, image: Any, row: dict[str, Any] | None = None) -> torch.Tensor:
        return torch.zeros(1)

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.full((batch.shape[0],), self.value)


__all__ = ["Constant"]
