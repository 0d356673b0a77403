"""Real photos that install offline with scikit-image, scikit-learn and matplotlib.

They give the toolkit real images on any machine: ``afpbench build photos`` makes a
real set of seeded crops of them, the demo builds its mini benchmark on them, and the
tests use them instead of random noise.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Iterator

from afpbench.seeding import row_seed

# (name, loader). Colour photographs first; the grey ones are converted to RGB.
_SKIMAGE = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "camera", "coins", "moon", "clock", "brick", "grass", "gravel"]


def _skimage(name: str):
    import skimage.data

    return getattr(skimage.data, name)()


def _stereo(i: int):
    import skimage.data

    return skimage.data.stereo_motorcycle()[i]


def _sklearn(name: str):
    from sklearn.datasets import load_sample_image

    return load_sample_image(name)


def _matplotlib(name: str):
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data(name) as fh:
        from PIL import Image

        img = Image.open(fh)
        img.load()
        return img


def _loaders():
    out = [(f"skimage/{n}", (lambda n=n: _skimage(n))) for n in _SKIMAGE]
    out += [("skimage/motorcycle_left", lambda: _stereo(0)), ("skimage/motorcycle_right", lambda: _stereo(1))]
    out += [(f"sklearn/{n}", (lambda n=n: _sklearn(n))) for n in ("china.jpg", "flower.jpg")]
    out += [("matplotlib/grace_hopper.jpg", lambda: _matplotlib("grace_hopper.jpg"))]
    return out


def photo_names() -> list[str]:
    return [n for n, _ in _loaders()]


@functools.lru_cache(maxsize=1)
def _photo_images_cached() -> tuple[tuple[str, "object"], ...]:
    return tuple(_load_photos())


def photo_images() -> list[tuple[str, "object"]]:
    """Every bundled photo as ``(name, RGB PIL image)``; missing packages are skipped.

    Loaded once per process (about 2 s); callers get copies so they may modify them.
    """
    return [(n, img.copy()) for n, img in _photo_images_cached()]


def _load_photos() -> list[tuple[str, "object"]]:
    from PIL import Image

    from afpbench.dataset import to_rgb

    out = []
    for name, load in _loaders():
        try:
            arr = load()
        except Exception:  # an optional package absent or a file needing a download
            continue
        img = arr if isinstance(arr, Image.Image) else Image.fromarray(arr)
        out.append((name, to_rgb(img)))
    return out


@dataclass(frozen=True)
class Crop:
    id: str
    photo: str
    seed: int
    box: tuple[int, int, int, int]
    image: "object"
    flip: bool = False


def photo_crops(count: int, *, seed: int = 0, size: int = 256, min_scale: float = 0.35, prefix: str = "photos") -> Iterator[Crop]:
    """``count`` seeded square crops, cycling over the photos, each resized to ``size``.

    Row ``i`` uses photo ``i % P`` and a box drawn from ``row_seed(seed, id)``, so any
    subset of rows is reproducible on its own.
    """
    from PIL import Image

    photos = photo_images()
    if not photos:
        from afpbench.errors import AfpbenchError

        raise AfpbenchError("No bundled photo could be loaded; install scikit-image, scikit-learn and matplotlib (make install).")
    for i in range(count):
        name, img = photos[i % len(photos)]
        rid = f"{prefix}/{name.split('/')[-1].split('.')[0]}-{i:05d}"
        s = row_seed(seed, rid)
        rng = random.Random(s)
        side_max = min(img.width, img.height)
        side = int(side_max * rng.uniform(min_scale, 1.0))
        x = rng.randint(0, img.width - side)
        y = rng.randint(0, img.height - side)
        crop = img.crop((x, y, x + side, y + side)).resize((size, size), Image.BICUBIC)
        flip = rng.random() < 0.5
        if flip:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        yield Crop(rid, name, s, (x, y, x + side, y + side), crop, flip)
