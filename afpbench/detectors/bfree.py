"""B-Free (Guillaro et al., CVPR 2025): a DINOv2 ViT-B/14 with 4 registers, one logit,
scored on five 504x504 crops of the unresized image.

Upstream (grip-unina/B-Free, ``code/``): ``config.yaml`` names the architecture
``timm_c5i504_vit_base_patch14_reg4_dinov2.lvd142m`` (``networks.get_network``): timm's
``vit_base_patch14_reg4_dinov2.lvd142m`` with ``num_classes=1`` and input size 504,
wrapped by ``Wrapper5crops``. The wrapper embeds the whole image with the stride-14
patch projection, tiles the patch grid when it is smaller than 36x36 (then keeps the
top-left 36x36), takes five 36x36 windows (centre, top-left, bottom-left, bottom-right,
top-right) and averages the five logits. ``main_bfree.py`` reads the image at full size
(no resize), ``ToTensor`` + ImageNet mean/std (``norm_type: resnet``), and calls a mean
logit > 0 fake.

The patch projection is a convolution with kernel = stride = 14, so embedding the whole
image and cutting windows on the patch grid equals cutting the same 14-aligned pixel
windows and embedding each: ``preprocess`` cuts the five 504x504 pixel crops (tiling as
the wrapper does), which makes every image one [5, 3, 504, 504] tensor that batches, and
the forward runs timm's model on them and averages the logits.

Release: ``BFREE_dino2reg4.zip`` (MD5 f3f53fa647848b16cf81c913f148a198, published in
``code/README.md``) holding ``BFREE_dino2reg4/config.yaml`` and
``BFREE_dino2reg4/model_epoch_best.pth``: ``{'model': state dict}`` with timm's own key
names (``networks.load_weights`` reads ``dat['model']``; ``Wrapper5crops.load_state_dict``
routes ``patch_embed.*`` to the projection and the rest to the ViT).

Licence: GRIP-UNINA, "informational and nonprofit purposes" only.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from afpbench.cards import Preprocessing, Variant, WeightsSource
from afpbench.detectors._transforms import IMAGENET_MEAN, IMAGENET_STD
from afpbench.detectors._weights import load_module, read_state_dict
from afpbench.detectors.base import Detector
from afpbench.errors import AfpbenchError, WeightsError

_REPO = "https://github.com/grip-unina/B-Free"
_LICENSE = "GRIP-UNINA licence: informational and nonprofit purposes only (code and weights)"
N_CROPS = 5

# `base` picks the architecture: upstream's ViT-B/14 reg4 at 504 px, or a tiny one of the
# same class (patch 4, 32-px crops) for tests, benchmarks and the offline demo.
ARCHS: dict[str, dict[str, Any]] = {
    "vit_base_patch14_reg4_dinov2.lvd142m": {"timm": "vit_base_patch14_reg4_dinov2", "kwargs": {"img_size": 504}},
    "tiny": {"timm": "vit_base_patch14_reg4_dinov2", "kwargs": {"img_size": 32, "patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2}},
}


def five_crops(x: torch.Tensor, patch: int, grid: int) -> torch.Tensor:
    """Upstream's five windows of ``grid`` x ``grid`` patches, as pixel crops [5, C, S, S].

    ``x`` is one normalised image [C, H, W]. Pixels past the last whole patch are unused
    (the projection has no padding). A grid smaller than ``grid`` in either direction is
    tiled and both directions are then cut to ``grid`` patches (Wrapper5crops'
    replicate_wrap), so all five windows coincide.
    """
    gh, gw = x.shape[-2] // patch, x.shape[-1] // patch
    x = x[:, : gh * patch, : gw * patch]
    if gh < grid or gw < grid:
        x = x.repeat(1, max(math.ceil(grid / gh), 1), max(math.ceil(grid / gw), 1))[:, : grid * patch, : grid * patch]
        gh = gw = grid
    s = grid * patch
    hs, ws = max((gh - grid) // 2, 0) * patch, max((gw - grid) // 2, 0) * patch
    H, W = gh * patch, gw * patch
    return torch.stack([
        x[:, hs:hs + s, ws:ws + s],  # centre
        x[:, :s, :s],  # top-left
        x[:, H - s:, :s],  # bottom-left
        x[:, H - s:, W - s:],  # bottom-right
        x[:, :s, W - s:],  # top-right
    ])


class BFree(Detector):
    """Bias-free training: DINOv2 ViT-B/14 with registers, mean logit of 5 crops (CVPR 2025)."""

    name = "bfree"
    description = "timm ViT-B/14 with 4 registers (DINOv2 init), 1 logit per 504x504 crop of the unresized image, mean over 5 crops; P(fake) = sigmoid(mean logit)."
    paper = "Guillaro, Zingarini, Usman, Sud, Cozzolino, Verdoliva. A Bias-Free Training Paradigm for More General AI-generated Image Detection. CVPR 2025."
    code = _REPO
    license = _LICENSE
    noncommercial = True
    needs_weights = True
    cuda_dtype = "float32"
    variants = {
        None: Variant(
            WeightsSource(filename="BFREE_dino2reg4/model_epoch_best.pth", source="https://www.grip.unina.it/download/prog/B-Free/weights/BFREE_dino2reg4.zip (unzip into the weights folder)",
                          license=_LICENSE, note="Upstream publishes the zip's MD5, f3f53fa647848b16cf81c913f148a198, not a sha256 of the .pth."),
            "51,517 MS-COCO train images (Creative Commons licences, central crop resized to 512) and 309,102 Stable Diffusion 2.1 inpainting images made from them "
            "(self-conditioned regenerations and content-augmented inpaintings); blur, JPEG, scaling, cut-out, noise and jitter at training time",
        ),
    }
    choices = [
        "Five 504x504 crops on the 14-px patch grid of the unresized image (tiled when smaller), mean of the five logits: upstream's Wrapper5crops, done at the pixel level so images batch.",
        "ImageNet mean/std (config norm_type 'resnet'); upstream runs batch size 1, here crops of many images run together with identical results.",
        "Label convention checked from upstream: one logit, fake when the mean logit > 0; P(fake) = sigmoid(mean logit).",
    ]

    def setup(self) -> None:
        import timm

        self.arch_name = self.base or "vit_base_patch14_reg4_dinov2.lvd142m"
        if self.arch_name not in ARCHS:
            raise AfpbenchError(f"Unknown --base '{self.arch_name}' for bfree; use one of {', '.join(ARCHS)}.")
        arch = ARCHS[self.arch_name]
        if self.weights_path is None:
            raise WeightsError(f"{self.full_name} is not trainable here; pass --weights with BFREE_dino2reg4/model_epoch_best.pth.")
        state = read_state_dict(self.weights_path, "a B-Free checkpoint")
        build = lambda: timm.create_model(arch["timm"], pretrained=False, num_classes=1, **arch["kwargs"])
        self.model = load_module(build, state, self.weights_path, f"B-Free's ViT ('{self.arch_name}', 4 registers, 1 output)")
        self.model.requires_grad_(False)
        self.model.eval().to(self.device, self.dtype)
        self.patch = self.model.patch_embed.patch_size[0]
        self.grid = self.model.patch_embed.grid_size[0]
        crop = self.patch * self.grid
        if self.image_size not in (None, crop):
            raise AfpbenchError(f"bfree scores {crop}-px crops ('{self.arch_name}'); leave --image-size out.")
        self.image_size = crop

    def base_description(self) -> str | None:
        return self.arch_name

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(resize=None, resize_policy="none", crop=self.image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                             note=f"No resize; five {self.image_size}x{self.image_size} crops on the {self.patch}-px patch grid (centre and four corners; tiled when smaller), mean logit.")

    def preprocess(self, image: Any, row: dict[str, Any] | None = None) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        image = image.convert("RGB")
        if min(image.size) < self.patch:
            raise AfpbenchError(f"bfree needs images of at least {self.patch}x{self.patch} pixels (got {image.size[0]}x{image.size[1]}).")
        x = TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)
        return five_crops(x, self.patch, self.grid)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, dtype=self.dtype, non_blocking=True)

    def _crops(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dim() != 5 or batch.shape[1] != N_CROPS:
            raise AfpbenchError(f"bfree expects batches of {N_CROPS} crops per image from its own preprocess (got shape {tuple(batch.shape)}).")
        return batch.flatten(0, 1)

    def crop_logits(self, batch: torch.Tensor) -> torch.Tensor:
        """The five crop logits of every image, [B, 5] (centre, TL, BL, BR, TR)."""
        return self.model(self._crops(batch)).float().view(batch.shape[0], N_CROPS)

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        """Head inputs (class token) averaged over the five crops."""
        f = self.model.forward_head(self.model.forward_features(self._crops(batch)), pre_logits=True)
        return f.float().view(batch.shape[0], N_CROPS, -1).mean(dim=1)

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.crop_logits(batch).mean(dim=1))

    def bare_forward(self, batch: torch.Tensor) -> Any:
        return self.model(self._crops(batch)).view(batch.shape[0], N_CROPS).mean(dim=1)


__all__ = ["ARCHS", "BFree", "five_crops"]
