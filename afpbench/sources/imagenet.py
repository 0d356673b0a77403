"""ImageNet-style inputs for the attack recipes, and class ids for class-conditional networks.

An ImageNet folder is either ``ROOT/<wnid>/<file>`` (class sub-folders, sorted names give
the class index as torchvision's ``ImageFolder`` and the ILSVRC label files do) or a flat
folder of images (labels unknown: attack backends then use the classifier's own
prediction). Images are sampled with a seeded permutation and loaded as
``image_size`` x ``image_size`` RGB with the standard evaluation geometry (shorter side to
``image_size / 0.875``, bicubic; center crop).

``classes`` rows (sgxl) carry no input image: each row's class is drawn from its own seed.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from afpbench.errors import AfpbenchError
from afpbench.plan import BuildConfig, Plan, WorkItem, resolve_params
from afpbench.sources.base import Source, recipe_seed, sample_indices
from afpbench.sources.files import is_image_name
from afpbench.sources.images import ImageFolderSource, list_images, plan_mix

if TYPE_CHECKING:  # pragma: no cover
    from afpbench.catalog import Recipe


@functools.lru_cache(maxsize=4)
def list_imagenet(root: str) -> tuple[tuple[str, int | None, str | None], ...]:
    """(relative file, class index or None, class folder or None), sorted."""
    base = Path(root)
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    out: list[tuple[str, int | None, str | None]] = []
    if classes:
        for idx, wnid in enumerate(classes):
            for rel in list_images(str(base / wnid)):
                out.append((f"{wnid}/{rel}", idx, wnid))
    flat = [p.name for p in base.iterdir() if p.is_file() and is_image_name(p.name)]
    out += [(name, None, None) for name in sorted(flat)]
    return tuple(out)


def plan_folder(recipe: "Recipe", config: BuildConfig, key: str, root: str, n: int, start_index: int, *, size: int) -> tuple[list[WorkItem], dict[str, Any]]:
    """``n`` rows sampled from the ImageNet-style folder ``root``, loaded with the evaluation geometry at ``size`` px."""
    from afpbench.seeding import row_seed

    base = Path(root).expanduser()
    if not base.is_dir():
        raise AfpbenchError(f"ImageNet folder {root} does not exist; pass --source PATH (class sub-folders like n01440764/, or a flat folder of images), or --source photos.")
    files = list_imagenet(str(base))
    if not files:
        raise AfpbenchError(f"No image found under {root}; pass an ImageNet-style folder (class sub-folders of .JPEG files).")
    n_classes = sum(1 for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    seed = recipe_seed(recipe, config)
    picks = sample_indices(len(files), n, row_seed(seed, f"{recipe.name}:{key}"))
    items = []
    for i, (pos, rep) in enumerate(picks):
        rel, label, wnid = files[pos]
        stem = rel.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        rid = f"{recipe.name}/{stem}" + (f"~{rep}" if rep else "")
        meta: dict[str, Any] = {"file": rel}
        if wnid is not None:
            meta["wnid"] = wnid
        # Sorted wnids give the standard ImageNet-1k indices only for the full 1,000
        # classes; for a subset the index would name the wrong class, so the attacks
        # then fall back to the classifier's clean prediction.
        if label is not None and n_classes == 1000:
            meta["class_index"] = label
        ref = {"kind": ImageNetSource.name, "path": str(base / rel), "crop": size, "crop_mode": "center"}
        items.append(WorkItem(index=start_index + i, id=rid, seed=row_seed(seed, rid), source=rel, image_ref=ref, meta=meta))
    info = {"path": str(base), "images": len(files), "rows": n, "labelled": n_classes == 1000, "repeated": n > len(files)}
    return items, info


class ImageNetSource(ImageFolderSource):
    """Rows sampled from an ImageNet-style folder (the attack recipes); loaded as the image folders are."""

    name = "imagenet"
    param_names = frozenset({"image_size"})

    def plan(self, recipe: "Recipe", config: BuildConfig, given: dict[str, str]) -> Plan:
        size = int(resolve_params(recipe, config).get("image_size") or 224)

        def one(key: str, root: str, n: int, start: int) -> tuple[list[WorkItem], dict[str, Any]]:
            return plan_folder(recipe, config, key, root, n, start, size=size)

        return plan_mix(recipe, config, given, extra=(), plan_one=one)


class ClassSource(Source):
    """Class ids for a class-conditional network: each row's class is drawn from its own seed; no input image."""

    name = "classes"
    param_names = frozenset({"num_classes"})

    def plan(self, recipe: "Recipe", config: BuildConfig, given: dict[str, str]) -> Plan:
        from afpbench.seeding import row_seed

        n = int(config.count)
        num_classes = int(resolve_params(recipe, config).get("num_classes") or 1000)
        seed = recipe_seed(recipe, config)
        items = []
        for i in range(n):
            rid = f"{recipe.name}/{i:05d}"
            s = row_seed(seed, rid)
            cls = random.Random(row_seed(s, "class")).randrange(num_classes)
            items.append(WorkItem(index=i, id=rid, seed=s, source=f"class-{cls}", meta={"class_index": cls}))
        return Plan(items, {"kind": "classes", "num_classes": num_classes, "rows": n})
