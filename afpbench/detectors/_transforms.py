"""Image transforms detector files share: a card's eval transform, its train-time variant,
the resize/crop rules behind them, and CNNSpot's blur + JPEG augmentation.

PIL + numpy, with torchvision's rounding rules (``Resize(int)`` on the shorter side,
``CenterCrop``), so the tensors are what upstream's torchvision transforms give on the
same PIL image. Detectors whose upstream uses torchvision functional ops directly call
torchvision themselves.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

    from afpbench.cards import Preprocessing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0}  # PIL.Image.Resampling values


def resize_shorter(image: "Image.Image", size: int, interpolation: str = "bicubic") -> "Image.Image":
    """Resize so the shorter side is ``size`` (torchvision's Resize(int) rule for the long side)."""
    w, h = image.size
    if min(w, h) == size:
        return image
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    return image.resize((nw, nh), _RESAMPLE[interpolation])


def center_crop(image: "Image.Image", size: int) -> "Image.Image":
    """Square center crop (torchvision's rounding); pads nothing, so callers resize first."""
    w, h = image.size
    left = int(round((w - size) / 2.0))
    top = int(round((h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def random_crop(image: "Image.Image", size: int, rng: random.Random) -> "Image.Image":
    w, h = image.size
    left = rng.randint(0, w - size)
    top = rng.randint(0, h - size)
    return image.crop((left, top, left + size, top + size))


def to_tensor(image: "Image.Image", mean: tuple[float, ...] | None, std: tuple[float, ...] | None, grey: bool = False) -> "torch.Tensor":
    """PIL -> float32 CHW in [0, 1], then normalised."""
    import numpy as np
    import torch

    if grey:
        image = image.convert("L")
    arr = np.asarray(image, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    if mean is not None and std is not None:
        x = (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    return x


def apply_preprocessing(image: "Image.Image", p: "Preprocessing", *, rng: random.Random | None = None, flip: bool = False) -> "torch.Tensor":
    """Eval transform of a card; with ``rng``, the train-time variant (random crop, optional flip)."""
    from PIL import Image as _Image

    if image.mode != "RGB":  # the single-image path of the original code forgot this
        image = image.convert("RGB")
    if p.resize and p.resize_policy == "shorter":
        image = resize_shorter(image, p.resize, p.interpolation)
    elif p.crop and p.resize_policy == "upscale_only" and min(image.size) < p.crop:
        image = resize_shorter(image, p.crop, p.interpolation)
    if p.crop:
        if min(image.size) < p.crop:  # resize_policy 'none' with a small image
            image = resize_shorter(image, p.crop, p.interpolation)
        image = random_crop(image, p.crop, rng) if rng is not None else center_crop(image, p.crop)
    if rng is not None and flip and rng.random() < 0.5:
        image = image.transpose(_Image.Transpose.FLIP_LEFT_RIGHT)
    return to_tensor(image, p.mean, p.std, grey=p.colour == "grey")


def blur_jpeg(image: "Image.Image", rng: random.Random, prob: float) -> "Image.Image":
    """CNNSpot's training augmentation: with probability ``prob`` each, Gaussian blur
    (sigma ~ U[0, 3]) and JPEG re-compression (quality ~ U{30..100}), in that order."""
    import io

    from PIL import Image as _Image
    from PIL import ImageFilter

    if prob > 0 and rng.random() < prob:
        image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.0, 3.0)))
    if prob > 0 and rng.random() < prob:
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=rng.randint(30, 100))
        buf.seek(0)
        image = _Image.open(buf)
        image.load()
        image = image.convert("RGB")
    return image


__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "CLIP_MEAN", "CLIP_STD", "resize_shorter", "center_crop", "random_crop", "to_tensor",
    "apply_preprocessing", "blur_jpeg",
]
