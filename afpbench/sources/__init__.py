"""Where inputs come from: caption files, image folders, archives, HF datasets, bundled photos.

Each kind of input is a ``Source`` class (``afpbench.sources.base``) registered lazily in
``afpbench.registry.SOURCES`` under the recipe's ``source.kind`` (third-party sources join
through the ``afpbench.sources`` entry-point group). ``plan(recipe, config)`` finds the
recipe's source and asks it for the full, ordered list of ``WorkItem`` rows (cheap: no
image is decoded); ``load_input(item)`` loads one row's input image when its batch is
about to run, through the source named in the row's ``image_ref["kind"]``.

``--source`` forms:

* ``PATH``: one collection for every row (a caption file, an image folder, a dataset);
* ``key=PATH,key=PATH``: one collection per key of the recipe's ``source.mix``
  (``coco=.../captions_train2014.json,flickr=.../results.csv``), plus
  ``captions=PATH`` for image folders whose captions are not in the standard place;
* ``photos``: seeded crops of the bundled real photos, for any recipe that takes images.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from afpbench.errors import AfpbenchError
from afpbench.plan import BuildConfig, Plan, WorkItem
from afpbench.registry import SOURCES
from afpbench.sources.base import scale_mix

if TYPE_CHECKING:  # pragma: no cover
    from afpbench.catalog import Recipe
    from afpbench.sources.base import Source

SOURCES.register_lazy("captions", "afpbench.sources.captions:CaptionSource")
SOURCES.register_lazy("images", "afpbench.sources.images:ImageFolderSource")
# Images the user supplies for a sampled real set (coco, flickr): read as image folders.
SOURCES.register_lazy("import", "afpbench.sources.images:ImageFolderSource")
SOURCES.register_lazy("imagenet", "afpbench.sources.imagenet:ImageNetSource")
SOURCES.register_lazy("classes", "afpbench.sources.imagenet:ClassSource")
SOURCES.register_lazy("hf_dataset", "afpbench.sources.hf:HFSource")
SOURCES.register_lazy("photos", "afpbench.sources.photos:PhotosSource")


def parse_source(spec: str | None) -> dict[str, str]:
    """``"coco=a.json,flickr=b.csv"`` -> ``{"coco": "a.json", ...}``; a bare path -> ``{"": path}``."""
    if not spec:
        return {}
    parts = spec.split(",")
    if all(re.match(r"^[A-Za-z_][\w-]*=.+", p.strip()) for p in parts):
        out: dict[str, str] = {}
        for p in parts:
            k, _, v = p.strip().partition("=")
            if k in out:
                raise AfpbenchError(f"--source names '{k}' twice; give each collection once.")
            out[k] = v
        return out
    return {"": spec}


def source(name: str) -> "Source":
    """An instance of the source registered as ``name``."""
    return SOURCES.get(name)()


def plan(recipe: "Recipe", config: BuildConfig) -> Plan:
    """Every row of the build, in final order, with what the manifest records about the source."""
    count = recipe.count.value if config.count is None else int(config.count)
    if count < 1:
        raise AfpbenchError(f"--count must be at least 1 (got {count}).")
    name = "photos" if config.source == "photos" else recipe.source.kind
    if name not in SOURCES:
        raise AfpbenchError(f"'{recipe.name}' has source kind '{name}', which afpbench build does not read; use 'afpbench import'.")
    return source(name).plan(recipe, replace(config, count=count), parse_source(config.source))


def load_input(item: WorkItem) -> Any:
    """The row's input image (RGB PIL), or None for rows without one (captions, classes)."""
    ref = item.image_ref
    return None if ref is None else source(ref["kind"]).load_input(item)


def load_original(item: WorkItem) -> tuple[bytes, str] | None:
    """The input's own encoded bytes and format when the row copies a whole real image, else None."""
    ref = item.image_ref
    return None if ref is None else source(ref["kind"]).load_original(item)


def image_pool(spec: str, count: int, *, size: int, seed: int, prefix: str = "pool") -> tuple[list[str], list[Any]]:
    """``count`` images named by ``spec``, as (ids, RGB images): seeded ``size`` px crops of the
    bundled photos (``spec`` "photos", ids under ``prefix``), or the first files of a folder by
    sorted path, as they are (ids: their paths in it). See ``afpbench.plan.Inputs``."""
    if spec == "photos":
        from afpbench.sources.photos import photo_crops

        crops = list(photo_crops(count, seed=seed, size=size, prefix=prefix))
        return [c.id for c in crops], [c.image for c in crops]
    from pathlib import Path

    from afpbench.sources.images import list_images, open_image

    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise AfpbenchError(f"The image pool '{spec}' is neither 'photos' nor a folder; pass photos or a folder of images.")
    files = list(list_images(str(folder)))[:count]
    return files, [open_image(str(folder / f)) for f in files]


class SourceInputs:
    """``afpbench.plan.Inputs`` served by the registered sources: what ``build`` hands a backend."""

    load_input = staticmethod(load_input)
    load_original = staticmethod(load_original)
    image_pool = staticmethod(image_pool)


__all__ = ["SOURCES", "SourceInputs", "image_pool", "load_input", "load_original", "parse_source", "plan", "scale_mix", "source"]
