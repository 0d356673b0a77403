"""``probe.<backbone>``: a linear probe on a frozen foundation model's image features.

The 2025-26 evaluations of vision foundation models (VFMs) as fake-image detectors find
that a logistic regression on frozen DINOv2 / SigLIP 2 / CLIP features is a strong,
cheap baseline. afpbench trains one on its own data:

* ``probe.dinov2`` (= ``probe``): transformers ``Dinov2Model`` (``facebook/dinov2-large``),
  the CLS token after the final LayerNorm (``pooler_output``, 1024-d);
* ``probe.siglip2``: ``SiglipVisionModel`` (``google/siglip2-large-patch16-256``, a
  fixed-resolution SigLIP 2 checkpoint), the attention-pooled embedding (``pooler_output``);
* ``probe.clip_l14``: ``CLIPVisionModelWithProjection`` (``openai/clip-vit-large-patch14``),
  the projected image embedding (``image_embeds``, UnivFD's feature).

``--base`` swaps the checkpoint (another size of the same family). ``afpbench train
--detector probe.<backbone>`` runs each image through the frozen backbone **once**
(a ``ClosedFormFit``), keeps the features in memory, standardises them and fits
scikit-learn's ``LogisticRegression`` on that cache (L-BFGS iterates over the cached
features; ``--epochs`` and ``--lr`` do not apply). The result is an afpbench folder
(``detector.json`` + ``model.safetensors`` with ``mean``, ``std``, ``weight``, ``bias``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from afpbench.cards import Preprocessing, Variant
from afpbench.detectors._hf import from_pretrained_strict, quiet_transformers
from afpbench.detectors._transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from afpbench.detectors._weights import check_state_dict, read_saved
from afpbench.detectors.base import ClosedFormFit, Detector, bce_from_probs
from afpbench.errors import AfpbenchError, WeightsError

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Family:
    model: str  # transformers class
    default_base: str
    feature: str  # output attribute read as the feature
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_ratio: float  # shorter side = crop * ratio, then center crop
    crop: int | None  # default crop; None: the config's image_size
    licence: str
    paper: str


FAMILIES = {
    "dinov2": Family("Dinov2Model", "facebook/dinov2-large", "pooler_output", IMAGENET_MEAN, IMAGENET_STD, 256 / 224, 224, "Apache-2.0 (DINOv2 weights)",
                     "Oquab et al. DINOv2: Learning Robust Visual Features without Supervision. TMLR 2024."),
    "siglip2": Family("SiglipVisionModel", "google/siglip2-large-patch16-256", "pooler_output", SIGLIP_MEAN, SIGLIP_STD, 1.0, None, "Apache-2.0 (SigLIP 2 weights)",
                      "Tschannen et al. SigLIP 2: Multilingual Vision-Language Encoders with Improved Semantic Understanding, Localization, and Dense Features. arXiv 2502.14786."),
    "clip_l14": Family("CLIPVisionModelWithProjection", "openai/clip-vit-large-patch14", "image_embeds", CLIP_MEAN, CLIP_STD, 1.0, None, "MIT (OpenAI CLIP weights)",
                       "Radford et al. Learning Transferable Visual Models From Natural Language Supervision. ICML 2021."),
}
_TRAINED = "fitted by 'afpbench train --detector probe.{tag}' (no released weights)"


class Probe(Detector, ClosedFormFit):
    """Logistic regression on frozen foundation-model features (trained by afpbench)."""

    name = "probe"
    description = "Frozen foundation-model image features (DINOv2 / SigLIP 2 / CLIP ViT-L/14), standardised, + logistic regression; P(fake) = sigmoid."
    paper = "Linear probes on frozen vision foundation models as AI-generated image detectors (e.g. arXiv 2602.01738); backbones: " + "; ".join(f.paper for f in FAMILIES.values())
    code = "afpbench (transformers backbones + scikit-learn LogisticRegression)"
    license = "Apache-2.0 (afpbench); backbone weights: DINOv2 Apache-2.0, SigLIP 2 Apache-2.0, CLIP MIT"
    needs_weights = True
    cuda_dtype = "float16"
    variants = {
        None: Variant(training_data=_TRAINED.format(tag="dinov2"), options={"family": "dinov2"}),
        "dinov2": Variant(training_data=_TRAINED.format(tag="dinov2"), options={"family": "dinov2"}),
        "siglip2": Variant(training_data=_TRAINED.format(tag="siglip2"), options={"family": "siglip2"}),
        "clip_l14": Variant(training_data=_TRAINED.format(tag="clip_l14"), options={"family": "clip_l14"}),
    }
    train_recipe = {"batch_size": 32, "epochs": 1}
    choices = [
        ("Features computed once per image with the backbone frozen (eval transform, no augmentation), kept in memory, standardised with the training mean/std; "
         "scikit-learn LogisticRegression(C=1, lbfgs)."),
        "Labels: afpbench's own (0 real, 1 fake) from the training sets; P(fake) = sigmoid of the regression logit.",
        "probe.dinov2: Resize(256, bicubic) + CenterCrop(224), ImageNet mean/std (DINOv2's linear-probe eval transform); CLS token after the final LayerNorm.",
        "probe.siglip2: shorter side to the model's size (256, bicubic) + center crop, mean/std 0.5 (SigLIP's processor squashes to a square instead); attention-pooled embedding.",
        "probe.clip_l14: shorter side to 224 (bicubic) + CenterCrop(224), CLIP mean/std (CLIP's processor); projected image embedding.",
    ]

    @property
    def family_name(self) -> str:
        return str(self.variant.options["family"])

    @property
    def family(self) -> Family:
        return FAMILIES[self.family_name]

    def setup(self) -> None:
        import transformers

        quiet_transformers()
        state: dict[str, Any] | None = None
        meta: dict[str, Any] = {}
        p = self.weights_path
        if p is not None:
            if not p.is_dir():
                raise WeightsError(f"{p} is not a probe folder; pass the folder written by 'afpbench train --detector probe.{self.family_name}' (e.g. OUT/best).")
            meta, state = read_saved(p, self.name)
            saved = str(meta.get("tag") or "dinov2")
            if saved != self.family_name:
                raise WeightsError(f"{p} holds a probe.{saved} fit, not probe.{self.family_name}; pass --detector probe.{saved}.")
        fam = self.family
        self.base = self.base or meta.get("base") or fam.default_base
        cls = getattr(transformers, fam.model)
        self.backbone = from_pretrained_strict(cls, self.base, f"{fam.model} backbone", dtype=self.dtype)
        self.backbone.requires_grad_(False)
        self.backbone.eval().to(self.device)
        cfg = self.backbone.config
        native = int(cfg.image_size)
        self.image_size = int(self.image_size or meta.get("image_size") or fam.crop or native)
        # DINOv2 always interpolates its position embeddings (trained at 518, probed at 224).
        self._interpolate = self.family_name != "dinov2" and self.image_size != native
        self.dim = self._feature_dim(cfg)
        self.mean = torch.zeros(self.dim, device=self.device)
        self.std = torch.ones(self.dim, device=self.device)
        self.weight = torch.zeros(self.dim, device=self.device)
        self.bias = torch.zeros(1, device=self.device)
        if state is not None:
            self.load_trainable_state(state, p)

    def _feature_dim(self, cfg: Any) -> int:
        return int(cfg.projection_dim) if self.family.feature == "image_embeds" else int(cfg.hidden_size)

    # -- scoring ---------------------------------------------------------------------------
    def preprocessing(self) -> Preprocessing:
        fam = self.family
        resize = round(self.image_size * fam.resize_ratio)
        return Preprocessing(resize=resize, resize_policy="shorter", interpolation="bicubic", crop=self.image_size, mean=fam.mean, std=fam.std,
                             note=f"Shorter side to {resize} (bicubic), center crop {self.image_size}, the backbone family's mean/std.")

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, dtype=self.dtype, non_blocking=True)

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        kw = {"interpolate_pos_encoding": True} if self._interpolate else {}
        out = self.backbone(pixel_values=batch, **kw)
        return getattr(out, self.family.feature).float()

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        z = (self.features(batch) - self.mean) / self.std
        return z @ self.weight + self.bias

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(batch))

    def bare_forward(self, batch: torch.Tensor) -> Any:
        return self.logits(batch)

    # -- fitting on cached features ----------------------------------------------------------
    def cache_features(self, batches: Iterable[tuple[Any, Any]]) -> tuple[Any, Any]:
        """One backbone pass over ``batches`` -> (features [N, dim] float32 numpy, labels [N])."""
        import numpy as np

        feats, labels = [], []
        with torch.inference_mode():
            for x, y in batches:
                feats.append(self.features(self.to_device(x)).cpu().numpy())
                labels.append(np.asarray(y))
        if not feats:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros(0)
        return np.concatenate(feats), np.concatenate(labels)

    def fit(self, train_batches: Iterable[tuple[Any, Any]], val_batches: Iterable[tuple[Any, Any]]) -> tuple[float, float]:
        import math

        from sklearn.linear_model import LogisticRegression

        xtr, ytr = self.cache_features(train_batches)
        if len(set(ytr.tolist())) < 2:
            raise AfpbenchError("probe needs both real and fake images in the training data.")
        mean, std = xtr.mean(axis=0), xtr.std(axis=0) + 1e-6
        clf = LogisticRegression(C=1.0, max_iter=5000)
        clf.fit((xtr - mean) / std, ytr)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device)
        self.weight = torch.tensor(clf.coef_[0], dtype=torch.float32, device=self.device)
        self.bias = torch.tensor(clf.intercept_, dtype=torch.float32, device=self.device)
        xva, yva = self.cache_features(val_batches)
        p_tr = clf.predict_proba((xtr - mean) / std)[:, 1]
        val = bce_from_probs(clf.predict_proba((xva - mean) / std)[:, 1], yva) if len(yva) else math.nan
        return bce_from_probs(p_tr, ytr), val

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.cpu(), "std": self.std.cpu(), "weight": self.weight.cpu(), "bias": self.bias.cpu()}

    def load_trainable_state(self, state: dict[str, Any], source: Path | str) -> None:
        n = self.dim
        check_state_dict({"mean": (n,), "std": (n,), "weight": (n,), "bias": (1,)}, state, source, f"a probe.{self.family_name} fit on {n}-d features of '{self.base}'")
        self.mean, self.std, self.weight, self.bias = (state[k].float().to(self.device) for k in ("mean", "std", "weight", "bias"))

    def saved_meta(self) -> dict[str, Any]:
        return {**super().saved_meta(), "tag": self.family_name, "feature": self.family.feature}


__all__ = ["Probe", "FAMILIES", "Family"]
