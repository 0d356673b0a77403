"""Real photos that install offline with scikit-image, scikit-learn and matplotlib.

They give the toolkit real images on any machine: ``afpbench build photos`` makes a
real set of seeded crops of them, ``--source photos`` gives any image recipe seeded
crops of them (each with a hand-written caption) instead of its own inputs, the demo
builds its mini benchmark on them, and the tests use them instead of random noise.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from afpbench.errors import AfpbenchError
from afpbench.plan import BuildConfig, Plan, WorkItem, resolve_params
from afpbench.seeding import row_seed
from afpbench.sources.base import Source, recipe_seed

if TYPE_CHECKING:  # pragma: no cover
    from afpbench.catalog import Recipe

# Source kinds whose rows take an input image: --source photos applies to them.
IMAGE_KINDS = ("images", "imagenet", "import", "photos")

# One plain caption per bundled photo, used as the prompt when a recipe that needs one
# (sd2ip, sd2sr, stylization) runs on --source photos.
PHOTO_CAPTIONS = {
    "astronaut": "A smiling astronaut in a white spacesuit holding a helmet in front of an American flag.",
    "chelsea": "A tabby cat with green eyes looking to the side.",
    "coffee": "A cup of coffee on a saucer with a spoon, seen from above.",
    "rocket": "A rocket standing on a launch pad under a clear sky.",
    "hubble_deep_field": "Hundreds of distant galaxies scattered across a dark starry sky.",
    "camera": "A man with a camera on a tripod standing in a grassy field.",
    "coins": "Rows of old coins lying on a dark surface.",
    "moon": "The cratered surface of the moon in grey tones.",
    "clock": "A round wall clock hanging next to a window.",
    "brick": "A close-up of a weathered brick wall.",
    "grass": "A close-up of green grass blades.",
    "gravel": "A close-up of grey gravel stones on the ground.",
    "motorcycle_left": "A red motorcycle parked indoors next to a workbench.",
    "motorcycle_right": "A red motorcycle parked indoors next to a workbench.",
    "china": "An ancient Chinese temple with a curved roof among trees.",
    "flower": "A pink flower with yellow stamens surrounded by leaves.",
    "grace_hopper": "A portrait of a woman in a navy uniform with medals.",
}


def photo_caption(photo_name: str) -> str:
    short = photo_name.split("/")[-1].split(".")[0]
    return PHOTO_CAPTIONS.get(short, f"A photo of {short.replace('_', ' ')}.")


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


class PhotosSource(Source):
    """Seeded crops of the bundled photos: the ``photos`` recipe, and ``--source photos`` for any image recipe."""

    name = "photos"
    param_names = frozenset({"size", "min_scale", "crop_size", "image_size", "height", "width"})

    def plan(self, recipe: "Recipe", config: BuildConfig, given: dict[str, str]) -> Plan:
        kind = recipe.source.kind
        if kind not in IMAGE_KINDS:
            what = {"captions": "captions (a text file, COCO or Flickr30k annotations)", "classes": "class ids (no --source)", "hf_dataset": "a dataset (--source PATH)"}.get(kind, kind)
            fix = "--source afpbench/data/demo_captions.txt for an offline run" if kind == "captions" else "the source it needs"
            raise AfpbenchError(f"'{recipe.name}' takes {what}, not images, so --source photos does not apply; pass {fix}.")
        params = resolve_params(recipe, config)
        size, min_scale = _crop_size(params), float(params.get("min_scale", 0.35))
        n = int(config.count)
        seed = recipe_seed(recipe, config)
        prefix = recipe.name if kind == "photos" else f"{recipe.name}/photos"
        items = []
        # The crop geometry (box, flip) is recorded in the item and redone when the batch
        # runs, so planning 3,000 rows does not hold 3,000 images in memory.
        for i, crop in enumerate(photo_crops(n, seed=seed, size=size, min_scale=min_scale, prefix=prefix)):
            flip = bool(crop.flip)
            ref = {"kind": self.name, "photo": crop.photo, "box": list(crop.box), "size": size, "flip": flip, "crop_mode": "random"}
            meta = {"photo": crop.photo, "crop_box": list(crop.box), "flip": flip}
            items.append(WorkItem(index=i, id=crop.id, seed=row_seed(seed, crop.id), prompt=photo_caption(crop.photo), source=crop.photo, image_ref=ref, meta=meta))
        return Plan(items, {"spec": "photos", "kind": "photos", "rows": n, "size": size, "min_scale": min_scale})

    def load_input(self, item: WorkItem) -> Any:
        """The row's crop, redone from the photo, box and flip it records."""
        from PIL import Image

        ref = item.image_ref
        img = _photos()[ref["photo"]].crop(tuple(ref["box"])).resize((ref["size"], ref["size"]), Image.BICUBIC)
        return img.transpose(Image.FLIP_LEFT_RIGHT) if ref["flip"] else img


def _crop_size(params: dict[str, Any]) -> int:
    """The crop side a recipe's params ask for (``crop_size``/``image_size``, ``size``, or height/width); 256 by default."""
    from afpbench.sources.images import crop_size_of

    size = crop_size_of(params) or params.get("size")
    if not size and (params.get("height") or params.get("width")):
        size = max(int(params.get("height") or 0), int(params.get("width") or 0))
    return int(size or 256)


@functools.lru_cache(maxsize=1)
def _photos() -> dict[str, Any]:
    return dict(photo_images())

