"""Random: a seeded, content-addressed coin (a sanity baseline at chance level).

The score of an image is a keyed hash (BLAKE2b, key = the seed) of its decoded pixels
and size, mapped to [0, 1). So the same image always gets the same score, whatever the
batch size, order or process; a different seed (``random.<seed>``, e.g. ``random.1``)
gives an independent draw.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from afpbench.cards import Preprocessing, Variant
from afpbench.detectors.base import Detector
from afpbench.errors import AfpbenchError


class RandomDetector(Detector):
    """Uniform pseudo-random P(fake), deterministic per image content and seed."""

    name = "random"
    description = "Sanity baseline: P(fake) = keyed hash of the decoded pixels, uniform in [0, 1); random.<seed> picks the seed (default 0)."
    paper = "afpbench sanity detector"
    license = "Apache-2.0"
    variants = {None: Variant(training_data="none")}
    choices = ["Content-addressed (BLAKE2b of the RGB pixels and size), so scores do not depend on batching."]

    def __init__(self, tag: str | None = None, **kw: Any):
        # Any integer tag is a seed; register it as a variant of this instance's class view.
        if tag is not None and tag not in self.variants:
            if not tag.isdigit():
                raise AfpbenchError(f"random's tag is a seed (random.1, random.42), not '{tag}'.")
            self.variants = {**self.variants, tag: Variant(training_data="none")}
        self.seed = int(tag) if tag else 0
        super().__init__(tag, **kw)

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(note="Hashes the decoded RGB pixels; no resize.")

    def preprocess(self, image: Any, row: dict[str, Any] | None = None) -> torch.Tensor:
        import numpy as np

        if image.mode != "RGB":
            image = image.convert("RGB")
        h = hashlib.blake2b(key=str(self.seed).encode(), digest_size=8)
        h.update(f"{image.width}x{image.height}".encode())
        h.update(np.asarray(image).tobytes())
        u = int.from_bytes(h.digest(), "big") / 2.0**64
        return torch.tensor([u], dtype=torch.float64)

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return batch[:, 0].float()

    def arguments(self) -> dict[str, Any]:
        return {**super().arguments(), "seed": self.seed}


__all__ = ["RandomDetector"]
