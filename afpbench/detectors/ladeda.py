"""LaDeDa and Tiny-LaDeDa (Cavia et al., 2024): 9x9-patch deepfake scorers whose image score
is the mean of the patch scores.

Upstream: barcavia/RealTime-DeepfakeDetection-in-the-RealWorld.

* **LaDeDa** (``networks/LaDeDa.py``, ``LaDeDa9``): a BagNet-style ResNet-50 on the NPR
  residual (``x - up(down(x))``, nearest, factor 0.5): a 1x1 and a 3x3 stem convolution,
  four bottleneck stages (3, 4, 6, 3 blocks, strides 2, 2, 2, 1) whose convolutions are
  unpadded and 3x3 only in the first block of stages 1-2, so every output position sees
  one 9x9 patch (stride 8). ``fc = Linear(2048, 1)`` per position gives the patch score
  map; the image logit is its mean (upstream: average pool, then ``fc``; the same number,
  ``fc`` being linear). The blocks are upstream's own (no torchvision block has unpadded
  1x1/3x3 convolutions), with upstream's key names.
* **Tiny-LaDeDa** (``networks/Tiny_LaDeDa.py``): LaDeDa distilled into 4 convolutions
  (8 channels) on a ``right_diag`` gradient of 10x10 patches (``extract_patches.py`` cuts
  them with stride 8; ``train_Tiny_LaDeDa.py`` regresses LaDeDa's patch logits and scores
  an image by the sigmoid of the mean patch logit). Here the image is cut the same way and
  every patch is scored on its own, as in distillation.

Both releases are written by ``BaseModel.save_networks``: ``torch.save(model.state_dict())``,
a bare state dict with BatchNorm buffers. The Tiny files ship in the repository
(``weights/Tiny_LaDeDa/``), LaDeDa's are in a Google Drive folder.

Test-time preprocessing is upstream's ``test.py`` (``no_resize=False, no_crop=True``):
torchvision ``Resize((256, 256))`` (both sides, bilinear), ``ToTensor``, ImageNet
mean/std. The image logit's sign is P(fake) > 0.5 (labels 0_real/1_fake, BCEWithLogits).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from afpbench.cards import Preprocessing, Variant, WeightsSource
from afpbench.detectors._transforms import IMAGENET_MEAN, IMAGENET_STD
from afpbench.detectors._weights import load_module, read_state_dict
from afpbench.detectors.base import Detector
from afpbench.errors import AfpbenchError, WeightsError

_REPO = "https://github.com/barcavia/RealTime-DeepfakeDetection-in-the-RealWorld"
_DRIVE = "https://drive.google.com/drive/folders/1KxNdnPRJJTuqxmzBPiGsg43tXzO8AN2d (weights/LaDeDa/download_weights.txt)"
_LICENSE = "Yissum (Hebrew University) Software Research License: research use only, no commercial use"
_WILDRF = "WildRF training split (real and fake images collected from social platforms; the paper trains on Reddit)"
_FORENSYNTH = "ForenSynth / CNNDetection ProGAN training set, 20 LSUN classes"
# Upstream's gradient kernels (Tiny_LaDeDa.preprocess), applied per channel with 'same' padding.
GRADIENTS = {
    "x_grad": ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0)),
    "y_grad": ((-1.0, -2.0, -1.0), (0.0, 0.0, 0.0), (1.0, 2.0, 1.0)),
    "left_diag": ((0.0, 1.0, 2.0), (-1.0, 0.0, 1.0), (-2.0, -1.0, 0.0)),
    "right_diag": ((-2.0, -1.0, 0.0), (-1.0, 0.0, 1.0), (0.0, 1.0, 2.0)),
}


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """x minus its nearest 0.5x-down, 2x-up copy (LaDeDa's and NPR's preprocessing)."""
    half = F.interpolate(x, scale_factor=0.5, mode="nearest", recompute_scale_factor=True)
    return x - F.interpolate(half, scale_factor=2.0, mode="nearest", recompute_scale_factor=True)


class Bottleneck(nn.Module):
    """Upstream's LaDeDa block: unpadded 1x1/kxk/1x1, residual cropped to the output."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, kernel_size: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=kernel_size, stride=stride, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = self.downsample(x) if self.downsample is not None else x
        # Upstream trims the residual's last rows/columns to the unpadded output's size.
        dh, dw = residual.shape[-2] - out.shape[-2], residual.shape[-1] - out.shape[-1]
        if dh or dw:
            residual = residual[:, :, : residual.shape[-2] - dh, : residual.shape[-1] - dw]
        return self.relu(out + residual)


class LaDeDaNet(nn.Module):
    """``LaDeDa9``: 9x9 receptive field, stride 8; ``width`` 64 and blocks (3, 4, 6, 3) upstream."""

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), width: int = 64, strides: tuple[int, ...] = (2, 2, 2, 1), kernel3: tuple[int, ...] = (1, 1, 0, 0)):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=1, stride=1, padding=0, bias=False)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=1, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(width, momentum=0.001)
        self.relu = nn.ReLU(inplace=True)
        for i, (n, s, k3) in enumerate(zip(layers, strides, kernel3)):
            setattr(self, f"layer{i + 1}", self._make_layer(width * 2**i, n, s, k3))
        self.fc = nn.Linear(width * 8 * Bottleneck.expansion, 1)

    def _make_layer(self, planes: int, blocks: int, stride: int, kernel3: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, kernel_size=1 if kernel3 == 0 else 3)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes, kernel_size=1 if kernel3 <= i else 3) for i in range(1, blocks)]
        return nn.Sequential(*layers)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Per-patch features [B, C, h, w] of the NPR residual of a normalised image."""
        x = self.relu(self.bn1(self.conv2(self.conv1(npr_residual(x)))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upstream's pooled forward: average pool over all patches, then ``fc``."""
        return self.fc(self.feature_map(x).mean(dim=(2, 3)))


class TinyBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 2, kernel_size: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=kernel_size, stride=stride, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


class TinyLaDeDaNet(nn.Module):
    """``tiny_ladeda``: gradient or NPR input, 1x1 + 3x3 stem, one stride-2 3x3 block, 8 -> 1."""

    def __init__(self, width: int = 8, preprocess: str = "right_diag"):
        super().__init__()
        if preprocess not in GRADIENTS and preprocess != "NPR":
            raise ValueError(f"unknown Tiny-LaDeDa preprocessing {preprocess!r}")
        self.preprocess = preprocess
        self.conv1 = nn.Conv2d(3, width, kernel_size=1, stride=1, padding=0, bias=False)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=1, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(width, momentum=0.001)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(TinyBottleneck(width, width, stride=2, kernel_size=3))
        self.fc = nn.Linear(width, 1)

    def features(self, patches: torch.Tensor) -> torch.Tensor:
        """Pooled features of 10x10 patches [N, 3, 10, 10] -> [N, width]."""
        if self.preprocess == "NPR":
            x = npr_residual(patches)
        else:
            # A constant, not a buffer: the network is built on the meta device before loading.
            kernel = torch.tensor(GRADIENTS[self.preprocess], dtype=patches.dtype, device=patches.device).expand(3, 1, 3, 3)
            x = F.conv2d(patches, kernel, groups=3, padding="same")
        x = self.relu(self.bn1(self.conv2(self.conv1(x))))
        return self.layer1(x).mean(dim=(2, 3))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(patches))


class LaDeDa(Detector):
    """Locally aware deepfake detection: mean of 9x9-patch scores (Cavia et al., 2024)."""

    name = "ladeda"
    description = "BagNet-style ResNet-50 on the NPR residual, one logit per 9x9 patch (stride 8) of a 256x256 resize; image logit = mean patch logit; P(fake) = sigmoid."
    paper = "Cavia, Horwitz, Reiss, Hoshen. Real-Time Deepfake Detection in the Real-World. arXiv 2406.09398, 2024."
    code = _REPO
    license = _LICENSE
    noncommercial = True
    needs_weights = True
    cuda_dtype = "float32"
    variants = {
        None: Variant(WeightsSource(filename="WildRF_LaDeDa.pth", source=_DRIVE, license=_LICENSE, note="The file upstream's test_config.py loads."), _WILDRF),
        "forensynth": Variant(WeightsSource(filename="ForenSynth_LaDeDa.pth", source=_DRIVE, license=_LICENSE,
                                            note="The standard-protocol (ForenSynth) checkpoint of the same folder; named like the Tiny files."), _FORENSYNTH),
    }
    archs: dict[str, dict[str, Any]] = {
        "ladeda9": {"layers": (3, 4, 6, 3), "width": 64, "size": 256},
        "tiny": {"layers": (1, 1, 1, 1), "width": 4, "size": 32},
    }
    default_arch = "ladeda9"
    choices = [
        "Preprocessing as upstream's test.py: Resize((256, 256)) bilinear (aspect ratio not kept), no crop, ImageNet mean/std.",
        "Image logit = mean of the per-patch logits (= upstream's average pool then fc); patch_logits() returns the map for explanations.",
        "Label convention checked from upstream: 0_real/1_fake, BCEWithLogits, sigmoid = P(fake).",
    ]

    def setup(self) -> None:
        self.arch_name = self.base or self.default_arch
        if self.arch_name not in self.archs:
            raise AfpbenchError(f"Unknown --base '{self.arch_name}' for {self.name}; use one of {', '.join(self.archs)}.")
        arch = self.archs[self.arch_name]
        self.image_size = self.image_size or arch["size"]
        if self.image_size % 2:
            raise AfpbenchError(f"{self.name} needs an even --image-size (got {self.image_size}).")
        if self.weights_path is None:
            raise WeightsError(f"{self.full_name} is not trainable here; pass --weights with the released {self.variant.weights.filename}.")
        state = read_state_dict(self.weights_path, f"a {self.name} checkpoint")
        self.model = load_module(lambda: self.build(arch), state, self.weights_path, f"{self.name}'s network ('{self.arch_name}')")
        self.model.requires_grad_(False)
        self.model.eval().to(self.device, self.dtype)

    def build(self, arch: dict[str, Any]) -> nn.Module:
        return LaDeDaNet(arch["layers"], arch["width"])

    def base_description(self) -> str | None:
        return self.arch_name

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(resize=self.image_size, resize_policy="shorter", interpolation="bilinear", crop=None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                             note=f"torchvision Resize(({self.image_size}, {self.image_size})): both sides, aspect ratio not kept; no crop.")

    def preprocess(self, image: Any, row: dict[str, Any] | None = None) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        image = TF.resize(image.convert("RGB"), [self.image_size, self.image_size])
        return TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, dtype=self.dtype, non_blocking=True)

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        """Patch features averaged over the image (what ``fc`` sees for the image logit)."""
        return self.model.feature_map(batch).mean(dim=(2, 3)).float()

    def patch_logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Logit of every patch, [B, h, w] (row-major patch grid, stride 8)."""
        fmap = self.model.feature_map(batch)
        return self.model.fc(fmap.permute(0, 2, 3, 1))[..., 0].float()

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(batch).float()[:, 0])

    def bare_forward(self, batch: torch.Tensor) -> Any:
        return self.model(batch)


class TinyLaDeDa(LaDeDa):
    """LaDeDa distilled into 4 convolutions on 10x10 patches (Cavia et al., 2024)."""

    name = "tiny_ladeda"
    description = ("Tiny-LaDeDa: a gradient (WildRF) or NPR (ForenSynth) residual + 4 convolutions (8 channels) scoring each 10x10 patch (stride 8) of a 256x256 resize; "
                   "image logit = mean patch logit; P(fake) = sigmoid.")
    variants = {
        None: Variant(WeightsSource(filename="WildRF_Tiny_LaDeDa.pth", source=f"{_REPO} (weights/Tiny_LaDeDa/WildRF_Tiny_LaDeDa.pth)", license=_LICENSE,
                                    sha256="5e063100564d2ddfe9bf48074e351c8f2b38855552574a18a0738e7f2a764d80"),
                      _WILDRF + "; distilled from LaDeDa's patch logits", options={"preprocess": "right_diag"}),
        "forensynth": Variant(WeightsSource(filename="ForenSynth_Tiny_LaDeDa.pth", source=f"{_REPO} (weights/Tiny_LaDeDa/ForenSynth_Tiny_LaDeDa.pth)", license=_LICENSE,
                                            sha256="4624258c70489cbff2778153ce6fc7f5ed16170b59a541a06dc3d4c759fd68a6"),
                              _FORENSYNTH + "; distilled from LaDeDa's patch logits", options={"preprocess": "NPR"}),
    }
    archs = {"tiny_ladeda": {"width": 8, "size": 256}}
    default_arch = "tiny_ladeda"
    patch = 10
    stride = 8
    choices = [
        "Preprocessing as upstream's test.py: Resize((256, 256)) bilinear, ImageNet mean/std; 10x10 patches with stride 8 (31x31 = 961 per image), each scored alone as in distillation.",
        ("Patch preprocessing per release: WildRF = right_diag gradient (upstream's --tiny_preprocess default), ForenSynth = NPR. The released BatchNorm statistics decide it: "
         "on photos, the first BN's input variance matches its running_var for NPR on the ForenSynth file (mean |log ratio| 0.23, gradients >= 3.8) and for a gradient on the WildRF file "
         "(0.23-0.36, NPR 3.8); the gradient's direction is not identifiable this way, so upstream's default is kept."),
        "The gradient's 'same' zero padding applies per 10x10 patch, as in distillation.",
        "Image logit = mean patch logit (train_Tiny_LaDeDa.py's validation rule); patch_logits() returns the map.",
        "Label convention: regression onto LaDeDa's logits (0_real/1_fake, BCE), sigmoid = P(fake).",
    ]

    def build(self, arch: dict[str, Any]) -> nn.Module:
        return TinyLaDeDaNet(arch["width"], self.variant.options["preprocess"])

    def _patches(self, batch: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        b, c, h, w = batch.shape
        if h < self.patch or w < self.patch:
            raise AfpbenchError(f"tiny_ladeda needs images of at least {self.patch} px (got {w}x{h}); raise --image-size.")
        p = batch.unfold(2, self.patch, self.stride).unfold(3, self.patch, self.stride)  # b, c, nh, nw, 10, 10
        nh, nw = p.shape[2], p.shape[3]
        return p.permute(0, 2, 3, 1, 4, 5).reshape(b * nh * nw, c, self.patch, self.patch), nh, nw

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        patches, nh, nw = self._patches(batch)
        return self.model.features(patches).view(batch.shape[0], nh * nw, -1).mean(dim=1).float()

    def patch_logits(self, batch: torch.Tensor) -> torch.Tensor:
        patches, nh, nw = self._patches(batch)
        return self.model(patches).view(batch.shape[0], nh, nw).float()

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.patch_logits(batch).mean(dim=(1, 2)))

    def bare_forward(self, batch: torch.Tensor) -> Any:
        return self.model(self._patches(batch)[0])


__all__ = ["LaDeDa", "LaDeDaNet", "TinyLaDeDa", "TinyLaDeDaNet"]
