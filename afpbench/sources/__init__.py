"""Where inputs come from: caption files, image folders, archives, HF datasets, bundled photos.

``plan_items(recipe, config)`` turns a recipe and the user's ``--source`` into the full,
ordered list of ``WorkItem`` rows (cheap: no image is decoded), and
``load_input(item)`` loads one row's input image when its batch is about to run.

``--source`` forms:

* ``PATH``: one collection for every row (a caption file, an image folder, a dataset);
* ``key=PATH,key=PATH``: one collection per key of the recipe's ``source.mix``
  (``coco=.../captions_train2014.json,flickr=.../results.csv``), plus
  ``captions=PATH`` for image folders whose captions are not in the standard place;
* ``photos``: seeded crops of the bundled real photos, for any recipe that takes images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from afpbench.errors import AfpbenchError

if TYPE_CHECKING:  # pragma: no cover
    from afpbench.catalog import Recipe
    from afpbench.generate.base import BuildConfig, WorkItem

IMAGE_KINDS = ("images", "imagenet", "import", "photos")


@dataclass
class Plan:
    items: list["WorkItem"]
    info: dict[str, Any] = field(default_factory=dict)  # recorded as the manifest's "source"


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


def scale_mix(mix: dict[str, int], count: int) -> dict[str, int]:
    """The recipe's mix scaled to ``count`` rows (largest remainder; keys keep their order)."""
    total = sum(mix.values())
    if total == count:
        return dict(mix)
    exact = {k: v * count / total for k, v in mix.items()}
    out = {k: int(x) for k, x in exact.items()}
    for k in sorted(mix, key=lambda k: (-(exact[k] - out[k]), list(mix).index(k)))[: count - sum(out.values())]:
        out[k] += 1
    return out


def _size_for_photos(params: dict[str, Any]) -> int:
    from afpbench.sources.images import crop_size_of

    size = crop_size_of(params) or params.get("size")
    if not size and (params.get("height") or params.get("width")):
        size = max(int(params.get("height") or 0), int(params.get("width") or 0))
    return int(size or 256)


def plan(recipe: "Recipe", config: "BuildConfig") -> Plan:
    """Every row of the build, in final order, with what the manifest records about the source."""
    from afpbench.catalog import get_generator
    from afpbench.generate.base import resolve_params

    count = recipe.count.value if config.count is None else int(config.count)
    if count < 1:
        raise AfpbenchError(f"--count must be at least 1 (got {count}).")
    params = resolve_params(recipe, config)
    kind = recipe.source.kind
    given = parse_source(config.source)
    spec_text = config.source

    if kind == "photos" or config.source == "photos":
        if kind not in IMAGE_KINDS:
            what = {"captions": "captions (a text file, COCO or Flickr30k annotations)", "classes": "class ids (no --source)", "hf_dataset": "a dataset (--source PATH)"}.get(kind, kind)
            raise AfpbenchError(f"'{recipe.name}' takes {what}, not images, so --source photos does not apply; pass {'--source afpbench/data/demo_captions.txt for an offline run' if kind == 'captions' else 'the source it needs'}.")
        from afpbench.sources.images import plan_photos

        items, info = plan_photos(recipe, config, count, size=_size_for_photos(params), min_scale=float(params.get("min_scale", 0.35)))
        return Plan(items, {"spec": "photos", **info})

    card = get_generator(recipe.generator) if recipe.generator else None
    keys = list(recipe.source.mix) or [recipe.source.dataset or kind]

    if kind == "classes":
        from afpbench.sources.imagenet import plan_classes

        items, info = plan_classes(recipe, config, count, int(params.get("num_classes") or 1000))
        return Plan(items, info)

    if kind == "hf_dataset":
        from afpbench.sources import hf

        spec = given.get("") or next(iter(given.values()), None) or recipe.source.dataset
        if not spec:
            raise AfpbenchError(f"'{recipe.name}' samples a dataset; pass --source PATH (a save_to_disk folder or parquet files).")
        items, info = hf.plan(recipe, config, spec, count)
        return Plan(items, info)

    if kind == "captions":
        from afpbench.sources import captions

        if not given:
            raise AfpbenchError(
                f"'{recipe.name}' prompts with captions; pass --source {','.join(f'{k}=PATH' for k in keys)} "
                f"(COCO captions_train2014.json, Flickr30k results.csv) or one caption file, e.g. --source afpbench/data/demo_captions.txt."
            )
        if "" in given:
            path = given[""]
            fmt, _ = captions.read_captions(path, recipe.source.split)
            key = {"coco": "coco", "flickr_csv": "flickr", "flickr_token": "flickr", "karpathy": "flickr"}.get(fmt, fmt)
            sources, counts = {key: path}, {key: count}
        else:
            _check_keys(recipe, given, keys)
            sources, counts = given, scale_mix(recipe.source.mix, count)
        items, info = captions.plan(recipe, config, sources, {k: n for k, n in counts.items() if n})
        return Plan(items, {"spec": spec_text, "mix": counts, **info})

    if kind in ("images", "import", "imagenet"):
        if kind == "import" and recipe.task != "sample":
            raise AfpbenchError(f"'{recipe.name}' cannot be built; package your copy with 'afpbench import {recipe.name} PATH'.")
        extra = ("captions",) if kind != "imagenet" else ()
        if not given:
            example = {"imagenet": "an ImageNet-style folder", "import": f"your local {keys[0]} image folder"}.get(kind, f"{keys[0]}=IMAGE_FOLDER[,captions=CAPTIONS_FILE]")
            raise AfpbenchError(f"'{recipe.name}' needs input images; pass --source {example}, or --source photos for the bundled photos.")
        if "" in given:
            if len(keys) > 1:
                raise AfpbenchError(f"'{recipe.name}' mixes {', '.join(keys)}; pass --source {','.join(f'{k}=PATH' for k in keys)}.")
            given = {keys[0]: given[""]}
        _check_keys(recipe, {k: v for k, v in given.items() if k not in extra}, keys)
        counts = scale_mix(recipe.source.mix, count) if recipe.source.mix else {keys[0]: count}
        from afpbench.sources import images, imagenet

        items, infos, start = [], {}, 0
        need_captions = card is not None and card.backend == "diffusion"
        for key, n in counts.items():
            if not n:
                continue
            if kind == "imagenet":
                its, inf = imagenet.plan_folder(recipe, config, key, given[key], n, start, size=int(params.get("image_size") or 224))
            else:
                its, inf = images.plan_folder(
                    recipe, config, key, given[key], n, start, captions=given.get("captions"), need_captions=need_captions,
                    crop=images.crop_size_of(params),
                )
            items += its
            infos[key] = inf
            start += n
        return Plan(items, {"spec": spec_text, "kind": kind, "mix": counts, "collections": infos})

    raise AfpbenchError(f"'{recipe.name}' has source kind '{kind}', which afpbench build does not read; use 'afpbench import'.")


def _check_keys(recipe: "Recipe", given: dict[str, str], keys: list[str]) -> None:
    missing = [k for k in keys if k not in given]
    unknown = [k for k in given if k not in keys]
    if missing or unknown:
        raise AfpbenchError(
            f"'{recipe.name}' reads {', '.join(keys)}"
            + (f"; --source lacks {', '.join(missing)}" if missing else "")
            + (f"; --source has unknown {', '.join(unknown)}" if unknown else "")
            + f". Pass --source {','.join(f'{k}=PATH' for k in keys)} (or a single PATH for all rows)."
        )


def plan_items(recipe: "Recipe", config: "BuildConfig") -> list["WorkItem"]:
    """The rows of a build, in order (see ``plan`` for the source description too)."""
    return plan(recipe, config).items


def load_input(item: "WorkItem"):
    """The row's input image (RGB PIL), or None for rows without one (captions, classes)."""
    ref = item.image_ref
    if ref is None:
        return None
    if ref["kind"] in ("file", "photo"):
        from afpbench.sources.images import load_input as load

        return load(item)
    if ref["kind"] == "hf":
        from afpbench.sources.hf import load_input as load

        return load(item)
    raise ValueError(f"unknown image_ref kind {ref['kind']!r}")


def load_original(item: "WorkItem") -> tuple[bytes, str] | None:
    """The input's own encoded bytes and format when the row copies a whole real image, else None."""
    ref = item.image_ref
    if ref is None:
        return None
    if ref["kind"] == "file":
        from afpbench.sources.images import load_original as load

        return load(item)
    if ref["kind"] == "hf":
        from afpbench.sources.hf import load_original as load

        return load(item)
    return None
