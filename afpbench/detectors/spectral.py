"""Spectral: azimuthally averaged power spectrum + logistic regression (Durall et al. 2020).

Weight-free features: the grey image's 2-D FFT, log power, averaged over rings of equal
frequency (the "1-D power spectrum", ``image_size // 2`` values), min-max normalised per
image as in the paper. Up-convolution in generators leaves traces at high frequencies,
which the spectrum's tail shows. A logistic regression (scikit-learn) on the
standardised profile is the classifier: fitted in seconds on CPU by
``afpbench train --detector spectral``, saved as a few hundred numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from afpbench.cards import Preprocessing, Variant
from afpbench.detectors._weights import check_state_dict, read_saved
from afpbench.detectors.base import ClosedFormFit, Detector, bce_from_probs
from afpbench.errors import AfpbenchError


class Spectral(Detector, ClosedFormFit):
    """1-D power spectrum features + logistic regression."""

    name = "spectral"
    description = "Azimuthally averaged log power spectrum of the grey image (image_size/2 bins) + logistic regression; P(fake) = sigmoid."
    paper = "Durall, Keuper, Keuper. Watch your Up-Convolution: CNN Based Generative Deep Neural Networks are Failing to Reproduce Spectral Distributions. CVPR 2020."
    code = "https://github.com/cc-hpc-itwm/UpConv (method re-implemented in torch + scikit-learn)"
    license = "Apache-2.0 (afpbench implementation)"
    needs_weights = True
    cuda_dtype = "float32"
    variants = {None: Variant(training_data="fitted by 'afpbench train --detector spectral' (no released weights)")}
    train_recipe = {"batch_size": 64, "epochs": 1}
    choices = [
        "Center crop of image_size (default 256) without downscaling, so the spectrum's high frequencies survive; smaller images are resized up.",
        "Per-image min-max normalisation of the profile (as Durall et al.), then standardisation with the training mean/std; scikit-learn LogisticRegression(C=1).",
    ]

    def setup(self) -> None:
        state: dict[str, Any] | None = None
        if self.weights_path is not None:
            meta, state = read_saved(self.weights_path, self.name)
            self.image_size = self.image_size or meta.get("image_size")
        self.image_size = int(self.image_size or 256)
        if self.image_size < 8:
            raise AfpbenchError("spectral needs --image-size of at least 8 pixels.")
        n = self.image_size
        self.bins = n // 2
        yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        radius = torch.sqrt((yy - n // 2).float() ** 2 + (xx - n // 2).float() ** 2).floor().long().reshape(-1)
        keep = radius < self.bins
        self._index = torch.nonzero(keep).squeeze(1).to(self.device)
        self._ring = radius[keep].to(self.device)
        self._counts = torch.bincount(radius[keep], minlength=self.bins).float().to(self.device)
        self.mean = torch.zeros(self.bins, device=self.device)
        self.std = torch.ones(self.bins, device=self.device)
        self.weight = torch.zeros(self.bins, device=self.device)
        self.bias = torch.zeros(1, device=self.device)
        if state is not None:
            self.load_trainable_state(state, self.weights_path)

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(resize=None, resize_policy="upscale_only", interpolation="bicubic", crop=self.image_size, colour="grey",
                             note="Grey, center crop without downscaling; the FFT features are computed in score().")

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, dtype=torch.float32)

    def profile(self, batch: torch.Tensor) -> torch.Tensor:
        """[B, 1, N, N] grey images -> [B, N/2] min-max normalised 1-D log power spectra."""
        x = batch[:, 0].float()
        spec = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
        power = torch.log(spec.real ** 2 + spec.imag ** 2 + 1e-8).reshape(x.shape[0], -1)
        rings = torch.zeros(x.shape[0], self.bins, device=x.device).index_add_(1, self._ring, power[:, self._index]) / self._counts
        lo = rings.min(dim=1, keepdim=True).values
        hi = rings.max(dim=1, keepdim=True).values
        return (rings - lo) / (hi - lo).clamp_min(1e-8)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        z = (self.profile(batch) - self.mean) / self.std
        return z @ self.weight + self.bias

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(batch))

    # -- fitting -------------------------------------------------------------------------
    def fit(self, train_batches: Iterable[tuple[Any, Any]], val_batches: Iterable[tuple[Any, Any]]) -> tuple[float, float]:
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        def collect(batches: Iterable[tuple[Any, Any]]) -> tuple[Any, Any]:
            feats, labels = [], []
            with torch.inference_mode():
                for x, y in batches:
                    feats.append(self.profile(self.to_device(x)).cpu().numpy())
                    labels.append(np.asarray(y))
            if not feats:
                return np.zeros((0, self.bins)), np.zeros(0)
            return np.concatenate(feats), np.concatenate(labels)

        xtr, ytr = collect(train_batches)
        if len(set(ytr.tolist())) < 2:
            raise AfpbenchError("spectral needs both real and fake images in the training data.")
        mean, std = xtr.mean(axis=0), xtr.std(axis=0) + 1e-6
        clf = LogisticRegression(C=1.0, max_iter=2000)
        clf.fit((xtr - mean) / std, ytr)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device)
        self.weight = torch.tensor(clf.coef_[0], dtype=torch.float32, device=self.device)
        self.bias = torch.tensor(clf.intercept_, dtype=torch.float32, device=self.device)
        xva, yva = collect(val_batches)
        p_tr = clf.predict_proba((xtr - mean) / std)[:, 1]
        p_va = clf.predict_proba((xva - mean) / std)[:, 1] if len(yva) else []
        return bce_from_probs(p_tr, ytr), bce_from_probs(p_va, yva)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.cpu(), "std": self.std.cpu(), "weight": self.weight.cpu(), "bias": self.bias.cpu()}

    def load_trainable_state(self, state: dict[str, Any], source: Path | str) -> None:
        n = self.bins
        check_state_dict({"mean": (n,), "std": (n,), "weight": (n,), "bias": (1,)}, state, source, f"a spectral fit for image_size {self.image_size} ({n} bins)")
        self.mean, self.std, self.weight, self.bias = (state[k].float().to(self.device) for k in ("mean", "std", "weight", "bias"))


__all__ = ["Spectral"]
