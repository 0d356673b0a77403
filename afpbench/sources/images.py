"""Image sources: a COCO/Flickr30k image folder (with optional captions), or the bundled photos.

Editing recipes (sd2ip, sd2sr, stylization, lama, liif) and the real sets built by
sampling (coco, flickr) take their inputs here. Images are sampled with a seeded
permutation of the sorted file list, so the rows of a small build are the first rows
of a large one. An image is opened only when its batch is about to run
(``load_input``), and a recipe with a ``crop_size`` gets a square crop whose box comes
from the row seed alone: the crop is reproducible from the row.

``--source photos`` replaces the folder by seeded crops of the photos that install with
scikit-image, scikit-learn and matplotlib (``afpbench.sources.photos.photo_crops``),
each with a hand-written caption, so every image recipe runs offline.
"""

from __future__ import annotations

import errno
import functools
import os
import random
import re
import stat
from collections import Counter
from pathlib import Path
from typing import Any

from afpbench.errors import AfpbenchError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jfif")

# One plain caption per bundled photo (afpbench/sources/photos.py), used as the prompt when
# a recipe that needs one (sd2ip, sd2sr, stylization) runs on --source photos.
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


# -- crops ----------------------------------------------------------------------------
def crop_size_of(params: dict[str, Any]) -> int | None:
    """The input size an image recipe asks for: ``crop_size`` or ``image_size``."""
    for key in ("crop_size", "image_size"):
        if params.get(key):
            return int(params[key])
    return None


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


# -- folders --------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def list_images(root: str) -> tuple[str, ...]:
    """Image files under ``root`` (recursive), as sorted relative POSIX paths; extensions in any case.

    Hidden files and folders (names starting with '.') are left out, and so are files
    without an image extension. Links are followed. What cannot be listed stops the
    build with one line instead of being skipped, because a skipped file would silently
    change which images a seeded sample draws: an unreadable folder, a link loop, a
    dangling link.
    """
    base = Path(root)
    out: list[str] = []
    st = os.stat(base)
    _list_into(base, "", ((st.st_dev, st.st_ino),), out)
    return tuple(sorted(out))


def _list_into(folder: Path, prefix: str, ancestors: tuple[tuple[int, int], ...], out: list[str]) -> None:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise AfpbenchError(f"Cannot read the folder {folder} ({exc.strerror or exc}); fix its permissions or move it out of the image folder.") from exc
    for e in entries:
        if e.name.startswith("."):
            continue
        try:
            st = os.stat(e.path)  # follows links
        except OSError as exc:
            kind = "symbolic link loop" if exc.errno == errno.ELOOP else ("dangling symbolic link" if e.is_symlink() else "unreadable entry")
            raise AfpbenchError(f"{e.path} is a {kind} ({exc.strerror or exc}); remove it or fix it, then re-run.") from exc
        if stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) in ancestors:
                raise AfpbenchError(f"{e.path} is a symbolic link loop (it leads back to a folder that contains it); remove it, then re-run.")
            _list_into(Path(e.path), prefix + e.name + "/", ancestors + ((st.st_dev, st.st_ino),), out)
        elif stat.S_ISREG(st.st_mode) and e.name.lower().endswith(IMAGE_EXTENSIONS):
            out.append(prefix + e.name)


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


def plan_folder(recipe, config, key: str, root: str, n: int, start_index: int, *, captions: str | None, need_captions: bool, crop: int | None, crop_mode: str = "random") -> tuple[list[Any], dict[str, Any]]:
    """``n`` rows sampled from the image folder ``root``."""
    from afpbench.generate.base import WorkItem
    from afpbench.sources.captions import sample_indices
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
    seed = recipe.seed if config.seed is None else config.seed
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
        ref = {"kind": "file", "path": str(base / rel), "crop": crop, "crop_mode": crop_mode}
        items.append(WorkItem(index=start_index + i, id=rid, seed=s, prompt=prompt, source=rel, image_ref=ref, meta=meta))
    info = {"path": str(base), "images": len(files), "rows": n, "captions": str(cap_path) if cap_path else None, "repeated": n > len(files)}
    return items, info


# -- bundled photos -------------------------------------------------------------------
def plan_photos(recipe, config, n: int, *, size: int, min_scale: float = 0.35, crop_mode: str = "random", start_index: int = 0) -> tuple[list[Any], dict[str, Any]]:
    """``n`` rows of seeded crops of the bundled photos (``photo_crops``), each with a caption.

    The crop geometry (box, flip) is recorded in the item and redone when the batch runs,
    so planning 3,000 rows does not hold 3,000 images in memory.
    """
    from afpbench.generate.base import WorkItem
    from afpbench.seeding import row_seed
    from afpbench.sources.photos import photo_crops

    seed = recipe.seed if config.seed is None else config.seed
    prefix = recipe.name if recipe.source.kind == "photos" else f"{recipe.name}/photos"
    items = []
    for i, crop in enumerate(photo_crops(n, seed=seed, size=size, min_scale=min_scale, prefix=prefix)):
        flip = crop.flip
        ref = {"kind": "photo", "photo": crop.photo, "box": list(crop.box), "size": size, "flip": bool(flip), "crop_mode": crop_mode}
        meta = {"photo": crop.photo, "crop_box": list(crop.box), "flip": bool(flip)}
        items.append(WorkItem(index=start_index + i, id=crop.id, seed=row_seed(seed, crop.id), prompt=photo_caption(crop.photo), source=crop.photo, image_ref=ref, meta=meta))
    info = {"kind": "photos", "rows": n, "size": size, "min_scale": min_scale}
    return items, info


@functools.lru_cache(maxsize=1)
def _photos() -> dict[str, Any]:
    from afpbench.sources.photos import photo_images

    return dict(photo_images())


def _crop_photo(name: str, box, size: int, flip: bool):
    from PIL import Image

    img = _photos()[name].crop(tuple(box)).resize((size, size), Image.BICUBIC)
    return img.transpose(Image.FLIP_LEFT_RIGHT) if flip else img


# -- loading --------------------------------------------------------------------------
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


def load_input(item) -> Any:
    ref = item.image_ref
    if ref["kind"] == "photo":
        return _crop_photo(ref["photo"], ref["box"], ref["size"], ref["flip"])
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


def load_original(item) -> tuple[bytes, str] | None:
    """The file's own bytes and format when the row is the whole image unchanged, else None."""
    ref = item.image_ref
    if ref["kind"] != "file" or ref.get("crop"):
        return None
    from PIL import Image

    data = Path(ref["path"]).read_bytes()
    import io

    with Image.open(io.BytesIO(data)) as im:
        fmt = (im.format or Path(ref["path"]).suffix.lstrip(".")).lower()
    return data, fmt
