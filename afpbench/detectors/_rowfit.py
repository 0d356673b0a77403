"""Sanity detectors that never look at pixels: a logistic model over features of the dataset row.

``format`` and ``size`` share this: a fixed prior (the usual bias written down) until
``afpbench train`` fits a scikit-learn logistic regression on your data in closed form.
A row detector that scores well exposes a shortcut: the set can be told apart without
seeing the picture. Subclasses declare ``FEATURES``, the prior, and ``row_features``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import torch

from afpbench.detectors._weights import check_state_dict, read_saved
from afpbench.detectors.base import ClosedFormFit, Detector, bce_from_probs
from afpbench.errors import AfpbenchError


def row_value(row: dict[str, Any] | None, image: Any, key: str) -> Any:
    """A row field, falling back to the decoded image (width/height) or the encoded bytes' length."""
    row = row or {}
    if row.get(key) is not None:
        return row[key]
    if key in ("width", "height") and image is not None:
        return getattr(image, key)
    if key == "bytes" and isinstance(row.get("image"), dict) and row["image"].get("bytes") is not None:
        return len(row["image"]["bytes"])
    return None


class RowLogistic(Detector, ClosedFormFit):
    """P(fake) = sigmoid(w . features(row) + b); prior weights until fitted."""

    FEATURES: ClassVar[tuple[str, ...]] = ()
    PRIOR_WEIGHT: ClassVar[tuple[float, ...]] = ()
    PRIOR_BIAS: ClassVar[float] = 0.0
    train_recipe = {"batch_size": 256, "epochs": 1}

    def row_features(self, row: dict[str, Any] | None, image: Any) -> list[float]:
        raise NotImplementedError  # each row detector defines its features

    def setup(self) -> None:
        self.weight = torch.tensor(self.PRIOR_WEIGHT, dtype=torch.float32)
        self.bias = torch.tensor([self.PRIOR_BIAS], dtype=torch.float32)
        self.fitted = False
        if self.weights_path is not None:
            _, state = read_saved(self.weights_path, self.name)
            self.load_trainable_state(state, self.weights_path)

    def preprocess(self, image: Any, row: dict[str, Any] | None = None) -> torch.Tensor:
        return torch.tensor(self.row_features(row, image), dtype=torch.float32)

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
            return (np.concatenate(xs), np.concatenate(ys)) if xs else (np.zeros((0, len(self.FEATURES))), np.zeros(0))

        xtr, ytr = collect(train_batches)
        if len(set(ytr.tolist())) < 2:
            raise AfpbenchError(f"{self.name} needs both real and fake images in the training data.")
        clf = LogisticRegression(C=1.0, max_iter=2000).fit(xtr, ytr)
        self.weight = torch.tensor(clf.coef_[0], dtype=torch.float32)
        self.bias = torch.tensor(clf.intercept_, dtype=torch.float32)
        self.fitted = True
        xva, yva = collect(val_batches)
        return bce_from_probs(clf.predict_proba(xtr)[:, 1], ytr), (bce_from_probs(clf.predict_proba(xva)[:, 1], yva) if len(yva) else math.nan)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight.clone(), "bias": self.bias.clone()}

    def load_trainable_state(self, state: dict[str, Any], source: Path | str) -> None:
        check_state_dict({"weight": (len(self.FEATURES),), "bias": (1,)}, state, source, f"a {self.name} fit over {len(self.FEATURES)} features")
        self.weight, self.bias = state["weight"].float(), state["bias"].float()
        self.fitted = True

    def arguments(self) -> dict[str, Any]:
        return {**super().arguments(), "fitted": self.fitted}


__all__ = ["RowLogistic", "row_value"]
