"""Image folders: a COCO/Flickr30k image folder (with optional captions), for the editing
recipes (sd2ip, sd2sr, stylization, lama, liif) and the real sets built by sampling
(coco, flickr).

Images are sampled with a seeded permutation of the sorted file list (listed by
``afpbench.sources.files.iter_image_files``), so the rows of a small build are the first
rows of a large one. An image is opened only when its batch is about to run
(``load_input``), and a recipe with a ``crop_size`` gets a square crop whose box comes
from the row seed alone: the crop is reproducible from the row.

``--source photos`` replaces the folder by seeded crops of the bundled photos
(``afpbench.sources.photos``), so every image recipe runs offline.
"""

from __future__ import annotations

import functools
import io
import random
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from afpbench._util.crops import center_resize_crop, seeded_square_crop
from afpbench.errors import AfpbenchError
from afpbench.plan import BuildConfig, Plan, WorkItem, resolve_params
from afpbench.sources.base import Source, check_keys, collection_keys, recipe_seed, sample_indices, scale_mix
from afpbench.sources.files import iter_image_files

if TYPE_CHECKING:  # pragma: no cover
    from afpbench.catalog import Recipe


def crop_size_of(params: dict[str, Any]) -> int | None:
    """The input size an image recipe asks for: ``crop_size`` or ``image_size``."""
    for key in ("crop_size", "image_size"):
        if params.get(key):
            return int(params[key])
    return None


@functools.lru_cache(maxsize=8)
def list_images(root: str) -> tuple[str, ...]:
    """``iter_image_files(root)`` as a tuple, cached: a mix and a rerun list a folder once."""
    return tuple(iter_image_files(root))


def image_key(rel: str) -> str:
    """A short stable id for an image file: the COCO number, else the file stem."""
    stem = rel.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    m = re.fullmatch(r"COCO_[a-z]+\d{4}_0*(\d+)", stem)
    return m.group(1) if m else stem.replace("/", "-")


def image_keys(rels: list[str] | tuple[str, ...]) -> list[str]:
    """``image_key`` of each file, made unique within ``rels`` by construction.

    Files whose short key is shared (a.jpg and a.png, sub1/a.jpg and sub2/a.jpg, the
    same COCO number in train and val) or could be read as a repeat suffix (``x~1``)
    are keyed by their whole relative path, extension included; control characters are
    percent-encoded. Every other file keeps its short key, so ids of existing builds do
    not change.
    """
    from afpbench.dataset import clean_id, unique_ids

    keys = [clean_id(image_key(r)) for r in rels]
    counts = Counter(keys)
    out = [clean_id(r) if counts[k] > 1 or re.search(r"~\d+$", k) else k for k, r in zip(keys, rels)]
    return unique_ids(out)  # a stem that equals another file's path (a.jpg.png vs a.jpg): #2


def find_captions(image_root: Path) -> Path | None:
    """The captions file beside a COCO/Flickr30k image folder, in their standard layouts."""
    parent = image_root.parent
    candidates = [
        parent / "annotations" / f"captions_{image_root.name}.json",  # coco/train2014 + coco/annotations
        image_root / f"captions_{image_root.name}.json",
        parent / "results.csv", image_root / "results.csv",  # flickr30k (Kaggle layout)
        parent / "results_20130124.token", image_root / "results_20130124.token",
        parent / "dataset_flickr30k.json", image_root / "dataset_flickr30k.json",
    ]
    return next((c for c in candidates if c.is_file()), None)


def _captions_by_file(path: Path) -> dict[str, list]:
    from afpbench.sources.captions import coco_file_captions, detect_format, flickr_file_captions

    fmt = detect_format(path)
    if fmt == "coco":
        return coco_file_captions(path)
    if fmt in ("flickr_csv", "flickr_token", "karpathy"):
        return flickr_file_captions(path)
    raise AfpbenchError(f"{path} is not a COCO or Flickr30k captions file; pass captions=captions_train2014.json or captions=results.csv.")


def plan_folder(recipe: "Recipe", config: BuildConfig, key: str, root: str, n: int, start_index: int, *, captions: str | None, need_captions: bool, crop: int | None,
                crop_mode: str = "random") -> tuple[list[WorkItem], dict[str, Any]]:
    """``n`` rows sampled from the image folder ``root``."""
    from afpbench.seeding import row_seed

    base = Path(root).expanduser()
    if not base.is_dir():
        raise AfpbenchError(f"Image folder {root} does not exist; pass --source {key}=PATH with your local copy (e.g. coco/train2014), or --source photos.")
    files = list(list_images(str(base)))
    if not files:
        raise AfpbenchError(f"No image (.jpg/.png/.webp...) found under {root}; pass the folder that holds the images.")
    cap_path = Path(captions).expanduser() if captions else (find_captions(base) if need_captions else None)
    if captions and not cap_path.is_file():  # type: ignore[union-attr]
        raise AfpbenchError(f"Captions file {captions} does not exist; pass captions=PATH to COCO's captions_*.json or Flickr30k's results.csv.")
    by_file: dict[str, list] = {}
    if cap_path is not None:
        by_file = _captions_by_file(cap_path)
        # Captions are keyed by bare file name; images may sit in sub-folders.
        files = [f for f in files if f.rsplit("/", 1)[-1] in by_file]
        if not files:
            raise AfpbenchError(f"No image under {root} has a caption in {cap_path}; pass the captions file of this image folder.")
    elif need_captions:
        raise AfpbenchError(
            f"'{recipe.name}' prompts with each image's caption, and no captions file was found beside {root}; "
            f"pass --source {key}={root},captions=PATH (COCO captions_train2014.json or Flickr30k results.csv)."
        )
    seed = recipe_seed(recipe, config)
    picks = sample_indices(len(files), n, row_seed(seed, f"{recipe.name}:{key}"))
    keys = image_keys(files)
    items = []
    for i, (pos, rep) in enumerate(picks):
        rel = files[pos]
        rid = f"{recipe.name}/{key}-{keys[pos]}" + (f"~{rep}" if rep else "")
        s = row_seed(seed, rid)
        prompt, meta = "", {"file": rel, "collection": key}
        caps = by_file.get(rel.rsplit("/", 1)[-1])
        if caps:
            cap = caps[random.Random(row_seed(s, "caption")).randrange(len(caps))]
            prompt, meta["caption_id"] = cap.text, cap.id
        ref = {"kind": ImageFolderSource.name, "path": str(base / rel), "crop": crop, "crop_mode": crop_mode}
        items.append(WorkItem(index=start_index + i, id=rid, seed=s, prompt=prompt, source=rel, image_ref=ref, meta=meta))
    info = {"path": str(base), "images": len(files), "rows": n, "captions": str(cap_path) if cap_path else None, "repeated": n > len(files)}
    return items, info


def plan_mix(recipe: "Recipe", config: BuildConfig, given: dict[str, str], *, extra: tuple[str, ...],
             plan_one: Callable[[str, str, int, int], tuple[list[WorkItem], dict[str, Any]]]) -> Plan:
    """Rows from each image collection of the recipe's mix (``plan_one(key, root, n, start)`` each)."""
    kind = recipe.source.kind
    keys = collection_keys(recipe)
    count = int(config.count)
    if not given:
        example = {"imagenet": "an ImageNet-style folder", "import": f"your local {keys[0]} image folder"}.get(kind, f"{keys[0]}=IMAGE_FOLDER[,captions=CAPTIONS_FILE]")
        raise AfpbenchError(f"'{recipe.name}' needs input images; pass --source {example}, or --source photos for the bundled photos.")
    if "" in given:
        if len(keys) > 1:
            raise AfpbenchError(f"'{recipe.name}' mixes {', '.join(keys)}; pass --source {','.join(f'{k}=PATH' for k in keys)}.")
        given = {keys[0]: given[""]}
    check_keys(recipe, {k: v for k, v in given.items() if k not in extra}, keys)
    counts = scale_mix(recipe.source.mix, count) if recipe.source.mix else {keys[0]: count}
    items: list[WorkItem] = []
    infos: dict[str, Any] = {}
    start = 0
    for key, n in counts.items():
        if not n:
            continue
        its, infos[key] = plan_one(key, given[key], n, start)
        items += its
        start += n
    return Plan(items, {"spec": config.source, "kind": kind, "mix": counts, "collections": infos})


def open_image(path: str):
    """An image file as a loaded RGB PIL image; unreadable files fail with the file named."""
    from PIL import Image, UnidentifiedImageError

    from afpbench.dataset import to_rgb

    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise AfpbenchError(f"Cannot read image {path} ({exc}); replace or remove the file and re-run (finished rows are kept).") from exc


class ImageFolderSource(Source):
    """Rows sampled from image folders (the ``images`` and ``import`` source kinds)."""

    name = "images"
    param_names = frozenset({"crop_size", "image_size"})

    def plan(self, recipe: "Recipe", config: BuildConfig, given: dict[str, str]) -> Plan:
        from afpbench.catalog import get_generator

        if recipe.source.kind == "import" and recipe.task != "sample":
            raise AfpbenchError(f"'{recipe.name}' cannot be built; package your copy with 'afpbench import {recipe.name} PATH'.")
        card = get_generator(recipe.generator) if recipe.generator else None
        crop = crop_size_of(resolve_params(recipe, config))

        def one(key: str, root: str, n: int, start: int) -> tuple[list[WorkItem], dict[str, Any]]:
            return plan_folder(recipe, config, key, root, n, start, captions=given.get("captions"),
                               need_captions=card is not None and card.backend == "diffusion", crop=crop)

        return plan_mix(recipe, config, given, extra=("captions",), plan_one=one)

    def load_input(self, item: WorkItem) -> Any:
        """The file, cropped as the row says: the seeded square of ``crop`` px, or the ImageNet center crop."""
        ref = item.image_ref
        image = open_image(ref["path"])
        crop = ref.get("crop")
        if not crop:
            return image
        if ref.get("crop_mode") == "center":
            item.meta["input_size"] = [image.width, image.height]
            return center_resize_crop(image, crop)
        from afpbench.seeding import row_seed

        out, facts = seeded_square_crop(image, crop, row_seed(item.seed, "crop"))
        item.meta.update(facts)
        return out

    def load_original(self, item: WorkItem) -> tuple[bytes, str] | None:
        """The file's own bytes and format when the row is the whole image unchanged, else None."""
        ref = item.image_ref
        if ref.get("crop"):
            return None
        from PIL import Image

        data = Path(ref["path"]).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or Path(ref["path"]).suffix.lstrip(".")).lower()
        return data, fmt
