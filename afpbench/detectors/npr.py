"""NPR (Tan et al., CVPR 2024): neighbouring-pixel residuals into a truncated ResNet-50.

Upstream (chuangchuangtan/NPR-DeepfakeDetection, ``networks/resnet.py``) computes
``NPR = x - up(down(x))`` with nearest interpolation at factor 0.5 on the ImageNet-
normalised image, scales it by 2/3 and feeds it to a ResNet-50 cut after ``layer2``: the
stem convolution is 3x3 with stride 2 (not torchvision's 7x7), the classifier is
``fc1 = Linear(512, 1)`` on the average-pooled ``layer2`` output. The network here is
torchvision's ``ResNet`` (same ``Bottleneck`` v1.5 blocks and key names) with those
changes, so the released state dict loads by its own key names.

Releases (in the repository): ``model_epoch_last_3090.pth`` (the ProGAN 4-class
checkpoint upstream's README uses for AIGCDetectBenchmark) and ``NPR.pth`` (the one its
test command names). Both are written by ``BaseModel.save_networks``:
``torch.save(model.state_dict())``, a bare state dict (no wrapper, no ``module.``),
BatchNorm buffers included.

Test-time preprocessing follows upstream's AIGCDetectBenchmark instructions: no resize,
no crop (full resolution), ImageNet normalisation, odd heights/widths trimmed by one
pixel (the README's patch; the residual needs even sizes). Full-resolution images of
different sizes cannot be stacked, so ``collate`` returns the list and the forward runs
each group of same-sized images as one batch (upstream runs batch size 1): every image is
scored exactly as alone, whatever the batch.
"""

from __future__ import annotations

from typing import Any

import torch

from afpbench.cards import Preprocessing, Variant, WeightsSource
from afpbench.detectors._resnet import TruncatedResNet, arch_options
from afpbench.detectors._transforms import IMAGENET_MEAN, IMAGENET_STD
from afpbench.detectors._weights import load_module, read_state_dict
from afpbench.detectors.base import Detector
from afpbench.errors import AfpbenchError, WeightsError

_REPO = "https://github.com/chuangchuangtan/NPR-DeepfakeDetection"


class NPR(Detector):
    """Neighbouring pixel relationships + truncated ResNet-50 (Tan et al., CVPR 2024)."""

    name = "npr"
    description = "Nearest up/down-sampling residual (x - up(down(x))) of the full-resolution image into a ResNet-50 cut after layer2; P(fake) = sigmoid(logit)."
    paper = "Tan, Liu, Zhao, Wei, Gu, Liu, Wei. Rethinking the Up-Sampling Operations in CNN-based Generative Network for Generalizable Deepfake Detection. CVPR 2024."
    code = _REPO
    license = "no licence stated in the repository (code and weights): all rights reserved by default"
    noncommercial = True
    needs_weights = True
    cuda_dtype = "float32"
    variants = {
        None: Variant(
            WeightsSource(filename="model_epoch_last_3090.pth", source=f"{_REPO} (model_epoch_last_3090.pth)", license="none stated",
                          note="ProGAN 4-class checkpoint upstream's README uses for AIGCDetectBenchmark (no resize, no crop, batch size 1)."),
            "ProGAN (CNNDetection/ForenSynths train set), 4 classes: car, cat, chair, horse",
        ),
        "paper": Variant(
            WeightsSource(filename="NPR.pth", source=f"{_REPO} (NPR.pth)", license="none stated", note="The checkpoint upstream's test command (test.py --model_path ./NPR.pth) names."),
            "ProGAN (CNNDetection/ForenSynths train set), 4 classes: car, cat, chair, horse",
        ),
    }
    choices = [
        "Full resolution, ImageNet mean/std, odd sizes trimmed by one pixel (upstream's AIGCDetectBenchmark setting); no resize or crop.",
        "Mixed sizes in a batch are scored in same-size groups (never padded or resized), so a score never depends on the batch.",
        "Label convention checked from upstream: ImageFolder 0_real/1_fake, BCEWithLogits, sigmoid(logit) = P(fake).",
    ]

    def setup(self) -> None:
        self.arch_name, arch = arch_options(self.base, "resnet50", self.name)
        if self.weights_path is None:
            raise WeightsError(f"{self.full_name} is not trainable here; pass --weights with the released {self.variant.weights.filename}.")
        state = read_state_dict(self.weights_path, "an NPR checkpoint")
        what = f"NPR's truncated ResNet ('{self.arch_name}': blocks {arch['layers']})"
        self.model = load_module(lambda: TruncatedResNet(arch["layers"], 1, arch["width_per_group"]), state, self.weights_path, what)
        self.model.requires_grad_(False)
        self.model.eval().to(self.device, self.dtype)

    def base_description(self) -> str | None:
        return self.arch_name

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(resize=None, resize_policy="none", crop=None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                             note="Full resolution, no resize or crop; odd height/width trimmed by one pixel (bottom row / right column).")

    def preprocess(self, image: Any, row: dict[str, Any] | None = None) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        image = image.convert("RGB")
        w, h = image.size
        if w < 2 or h < 2:
            raise AfpbenchError(f"npr needs images of at least 2x2 pixels (got {w}x{h}).")
        if w % 2 or h % 2:
            image = image.crop((0, 0, w - w % 2, h - h % 2))
        return TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)

    def collate(self, items: list[Any]) -> Any:
        return torch.stack(items) if all(x.shape == items[0].shape for x in items) else list(items)

    def to_device(self, batch: Any) -> Any:
        if isinstance(batch, list):
            return [x.to(self.device, dtype=self.dtype, non_blocking=True) for x in batch]
        return batch.to(self.device, dtype=self.dtype, non_blocking=True)

    @staticmethod
    def residual(x: torch.Tensor) -> torch.Tensor:
        """Upstream's NPR: x minus its nearest 0.5x-down, 2x-up copy."""
        import torch.nn.functional as F

        half = F.interpolate(x, scale_factor=0.5, mode="nearest", recompute_scale_factor=True)
        return x - F.interpolate(half, scale_factor=2.0, mode="nearest", recompute_scale_factor=True)

    def _per_size(self, batch: Any, fn: Any) -> torch.Tensor:
        """Apply ``fn`` to a stacked batch, or to each same-size group of a list (in order)."""
        if isinstance(batch, torch.Tensor):
            return fn(batch)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(batch):
            groups.setdefault(tuple(x.shape), []).append(i)
        out: list[Any] = [None] * len(batch)
        for idx in groups.values():
            res = fn(torch.stack([batch[i] for i in idx]))
            for j, i in enumerate(idx):
                out[i] = res[j]
        return torch.stack(out)

    def gradcam(self) -> tuple[Any, Any]:
        """Grad-CAM target for ``detect --explain``: layer2 (the last one NPR keeps), and the fake logit."""
        return self.model.layer2, lambda x: self.model(self.residual(x) * (2.0 / 3.0))

    def features(self, batch: Any) -> torch.Tensor:
        """Pooled layer2 features (the input of ``fc1``), one row per image."""
        return self._per_size(batch, lambda x: self.model.features(self.residual(x) * (2.0 / 3.0))).float()

    def logits(self, batch: Any) -> torch.Tensor:
        return self._per_size(batch, lambda x: self.model(self.residual(x) * (2.0 / 3.0))).float()[:, 0]

    def forward_scores(self, batch: Any) -> torch.Tensor:
        return torch.sigmoid(self.logits(batch))

    def bare_forward(self, batch: Any) -> Any:
        return self._per_size(batch, lambda x: self.model(self.residual(x) * (2.0 / 3.0)))


__all__ = ["NPR"]
