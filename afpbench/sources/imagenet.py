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
from typing import Any

from afpbench.errors import AfpbenchError


@functools.lru_cache(maxsize=4)
def list_imagenet(root: str) -> tuple[tuple[str, int | None, str | None], ...]:
    """(relative file, class index or None, class folder or None), sorted."""
    from afpbench.sources.images import IMAGE_EXTENSIONS, list_images

    base = Path(root)
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    out: list[tuple[str, int | None, str | None]] = []
    if classes:
        for idx, wnid in enumerate(classes):
            for rel in list_images(str(base / wnid)):
                out.append((f"{wnid}/{rel}", idx, wnid))
    flat = [p.name for p in base.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS)]
    out += [(name, None, None) for name in sorted(flat)]
    return tuple(out)


def plan_folder(recipe, config, key: str, root: str, n: int, start_index: int, *, size: int) -> tuple[list[Any], dict[str, Any]]:
    from afpbench.generate.base import WorkItem
    from afpbench.seeding import row_seed
    from afpbench.sources.captions import sample_indices

    base = Path(root).expanduser()
    if not base.is_dir():
        raise AfpbenchError(f"ImageNet folder {root} does not exist; pass --source PATH (class sub-folders like n01440764/, or a flat folder of images), or --source photos.")
    files = list_imagenet(str(base))
    if not files:
        raise AfpbenchError(f"No image found under {root}; pass an ImageNet-style folder (class sub-folders of .JPEG files).")
    n_classes = sum(1 for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    seed = recipe.seed if config.seed is None else config.seed
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
        ref = {"kind": "file", "path": str(base / rel), "crop": size, "crop_mode": "center"}
        items.append(WorkItem(index=start_index + i, id=rid, seed=row_seed(seed, rid), source=rel, image_ref=ref, meta=meta))
    info = {"path": str(base), "images": len(files), "rows": n, "labelled": n_classes == 1000, "repeated": n > len(files)}
    return items, info


def plan_classes(recipe, config, n: int, num_classes: int) -> tuple[list[Any], dict[str, Any]]:
    """``n`` rows, each with a class drawn uniformly from ``num_classes`` by the row seed."""
    from afpbench.generate.base import WorkItem
    from afpbench.seeding import row_seed

    seed = recipe.seed if config.seed is None else config.seed
    items = []
    for i in range(n):
        rid = f"{recipe.name}/{i:05d}"
        s = row_seed(seed, rid)
        cls = random.Random(row_seed(s, "class")).randrange(num_classes)
        items.append(WorkItem(index=i, id=rid, seed=s, source=f"class-{cls}", meta={"class_index": cls}))
    return items, {"kind": "classes", "num_classes": num_classes, "rows": n}
