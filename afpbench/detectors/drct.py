"""DRCT (Chen et al., ICML 2024): ConvNeXt-B trained with diffusion-reconstruction
contrastive learning, then a 2-class head.

Upstream (beibuwandeluori/DRCT, ``network/models.py``): ``ContrastiveModels`` holds a
timm ``convnext_base_in22k`` as ``self.model`` whose ``head.fc`` maps 1024 -> 1024 (the
embedding the contrastive loss sees) and ``self.fc = Linear(1024, 2)``. Labels are real
0 / fake >= 1 and ``train.py``'s evaluation scores ``1 - softmax(logits)[:, 0]``, which
for two classes is ``softmax[:, 1]`` = P(fake). The network here is the same timm
architecture (``convnext_base``, ``num_classes=1024``) plus the 1024 -> 2 layer, loaded
by upstream's key names (``model.*``, ``fc.*``).

Release: ModelScope ``BokingChen/DRCT-2M``, ``pretrained.zip``; the ConvNeXt files are
``pretrained/DRCT-2M/sdv14/convnext_base_in22k_224_drct_amp_crop/14_acc0.9996.pth``
(DRCT-2M, reconstructions by SD v1.4; the default), ``.../DRCT-2M/sdv2/.../16_acc0.9993.pth``
(reconstructions by SD v2) and ``.../GenImage/sdv14/.../last_acc0.9991.pth``
(GenImage SD v1.4). ``train_contrastive.py`` saves ``model.module.state_dict()`` under
DataParallel, else ``model.state_dict()``: a bare state dict without ``module.``.
Unzip the archive into the weights folder and the paths below are found as they are.

Test-time preprocessing is upstream's ``create_val_transforms(224, is_crop=True)`` (the
test scripts pass ``--is_crop``): albumentations ``PadIfNeeded(224)`` with black borders
(centred, the extra pixel at the bottom/right) -> ``CenterCrop(224)`` (offset
``(size - 224) // 2``) -> ImageNet mean/std. No resize (DetectZoo resizes to 256 first;
upstream does not).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from afpbench.cards import Preprocessing, Variant, WeightsSource
from afpbench.detectors._transforms import IMAGENET_MEAN, IMAGENET_STD
from afpbench.detectors._weights import load_module, read_state_dict
from afpbench.detectors.base import Detector
from afpbench.errors import AfpbenchError, WeightsError

_REPO = "https://github.com/beibuwandeluori/DRCT"
_ZIP = "https://modelscope.cn/datasets/BokingChen/DRCT-2M/files (pretrained.zip)"
_DIR = "pretrained/{data}/{dr}/convnext_base_in22k_224_drct_amp_crop/{file}"

# `base` picks the architecture: upstream's ConvNeXt-B and a tiny ConvNeXt for tests.
ARCHS: dict[str, dict[str, Any]] = {
    "convnext_base_in22k": {"timm": "convnext_base", "kwargs": {}, "embedding": 1024, "size": 224},
    "tiny": {"timm": "convnext_base", "kwargs": {"depths": (1, 1, 1, 1), "dims": (8, 16, 24, 32)}, "embedding": 16, "size": 32},
}


class DRCTNet(nn.Module):
    """Upstream's ``ContrastiveModels``: timm backbone to an embedding, then 2 logits."""

    def __init__(self, timm_name: str, embedding: int, **kwargs: Any):
        import timm

        super().__init__()
        self.model = timm.create_model(timm_name, pretrained=False, num_classes=embedding, **kwargs)
        self.fc = nn.Linear(embedding, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.model(x))


def _variant(data: str, dr: str, file: str, training: str) -> Variant:
    return Variant(WeightsSource(filename=_DIR.format(data=data, dr=dr, file=file), source=_ZIP, license="none stated"), training)


class DRCT(Detector):
    """ConvNeXt-B + DRCT contrastive training (Chen et al., ICML 2024)."""

    name = "drct"
    description = "timm ConvNeXt-B (IN-22k init) -> 1024-d contrastive embedding -> Linear(1024, 2); P(fake) = softmax[1]."
    paper = "Chen, Zeng, Yang, Yang. DRCT: Diffusion Reconstruction Contrastive Training towards Universal Detection of Diffusion Generated Images. ICML 2024."
    code = _REPO
    license = "no licence stated in the repository or for pretrained.zip: all rights reserved by default"
    noncommercial = True
    needs_weights = True
    cuda_dtype = "float32"
    variants = {
        None: _variant("DRCT-2M", "sdv14", "14_acc0.9996.pth", "DRCT-2M: MSCOCO train2017 reals vs Stable Diffusion v1.4 fakes, plus diffusion reconstructions (DR by SD v1 inpainting) labelled fake"),
        "sdv2": _variant("DRCT-2M", "sdv2", "16_acc0.9993.pth", "DRCT-2M: MSCOCO train2017 reals vs SD v1.4 fakes, plus diffusion reconstructions (DR by SD v2 inpainting) labelled fake"),
        "genimage": _variant("GenImage", "sdv14", "last_acc0.9991.pth", "GenImage SD v1.4 subset (ImageNet reals vs SD v1.4 fakes), plus diffusion reconstructions (DR by SD v1) labelled fake"),
    }
    choices = [
        "Preprocessing is upstream's test transform (is_crop): zero-pad to 224 if smaller, centre crop 224 with albumentations' offsets, no resize; ImageNet mean/std.",
        "Images are decoded by PIL here (upstream reads them with OpenCV); pixel values agree for PNG, JPEG decoders may differ by a level.",
        "Label convention checked from upstream: real 0 / fake >= 1, CrossEntropy, 1 - softmax[:, 0] = P(fake).",
        "Only the ConvNeXt-B checkpoints are bundled; the release's CLIP ViT-L/14 variants need the openai `clip` package.",
    ]

    def setup(self) -> None:
        self.arch_name = self.base or "convnext_base_in22k"
        if self.arch_name not in ARCHS:
            raise AfpbenchError(f"Unknown --base '{self.arch_name}' for drct; use one of {', '.join(ARCHS)}.")
        arch = ARCHS[self.arch_name]
        self.image_size = self.image_size or arch["size"]
        if self.weights_path is None:
            raise WeightsError(f"{self.full_name} is not trainable here; pass --weights with the released {self.variant.weights.filename.rsplit('/', 1)[-1]}.")
        state = read_state_dict(self.weights_path, "a DRCT checkpoint")
        build = lambda: DRCTNet(arch["timm"], arch["embedding"], **arch["kwargs"])
        self.model = load_module(build, state, self.weights_path, f"DRCT's ConvNeXt ('{self.arch_name}', {arch['embedding']}-d embedding, 2 classes)")
        self.model.requires_grad_(False)
        self.model.eval().to(self.device, self.dtype)

    def base_description(self) -> str | None:
        return self.arch_name

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(resize=None, resize_policy="none", crop=self.image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                             note="albumentations PadIfNeeded (black, centred) + CenterCrop (floor offsets), no resize; ImageNet mean/std.")

    def preprocess(self, image: Any, row: dict[str, Any] | None = None) -> torch.Tensor:
        import numpy as np
        from torchvision.transforms import functional as TF

        s = self.image_size
        a = np.asarray(image.convert("RGB"))
        h, w = a.shape[:2]
        if h < s or w < s:  # PadIfNeeded: black borders, the odd pixel at the bottom/right
            top, left = max(s - h, 0) // 2, max(s - w, 0) // 2
            a = np.pad(a, ((top, max(s - h, 0) - top), (left, max(s - w, 0) - left), (0, 0)))
            h, w = a.shape[:2]
        y, x = (h - s) // 2, (w - s) // 2  # albumentations' CenterCrop offsets
        crop = np.ascontiguousarray(a[y:y + s, x:x + s])
        return TF.normalize(TF.to_tensor(crop), IMAGENET_MEAN, IMAGENET_STD)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, dtype=self.dtype, non_blocking=True)

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        """The contrastive embedding (the input of the 2-class layer)."""
        return self.model.model(batch).float()

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(batch).float(), dim=1)[:, 1]

    def bare_forward(self, batch: torch.Tensor) -> Any:
        return self.model(batch)


__all__ = ["ARCHS", "DRCT", "DRCTNet"]
