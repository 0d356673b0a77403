"""Square crops of input images, shared by the sources (which crop inputs as they load
them) and the backends (which give a library caller's own images the same geometry).

Only PIL is needed, imported by each function.
"""

from __future__ import annotations

import random
from typing import Any


def seeded_square_crop(image, size: int, seed: int):
    """A ``size`` x ``size`` crop with its box drawn from ``seed``.

    Images smaller than ``size`` are first enlarged (bicubic) so the shorter side fits.
    Returns (crop, facts) where facts records the box and any resize, for the row's meta.
    """
    from PIL import Image

    facts: dict[str, Any] = {"input_size": [image.width, image.height]}
    short = min(image.width, image.height)
    if short < size:
        scale = size / short
        image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))), Image.BICUBIC)
        facts["enlarged_to"] = [image.width, image.height]
    rng = random.Random(seed)
    x = rng.randint(0, image.width - size)
    y = rng.randint(0, image.height - size)
    facts["crop_box"] = [x, y, x + size, y + size]
    return image.crop((x, y, x + size, y + size)), facts


def center_resize_crop(image, size: int, ratio: float = 0.875):
    """ImageNet evaluation geometry: shorter side to ``size / ratio`` (bicubic), center crop ``size``."""
    from PIL import Image

    short = round(size / ratio)
    scale = short / min(image.width, image.height)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((w, h), Image.BICUBIC)
    x, y = (w - size) // 2, (h - size) // 2
    return image.crop((x, y, x + size, y + size))


__all__ = ["seeded_square_crop", "center_resize_crop"]
