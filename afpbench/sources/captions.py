"""Caption sources: COCO 2014 and Flickr30k annotation files, plain text, or an HF dataset.

Text-to-image recipes draw their prompts here. Each collection is read into a sorted
pool of ``Caption`` (a stable id, the text, the image it describes), then sampled with a
seeded permutation: the first ``n`` rows of a permutation do not depend on ``n``, so a
build of 10 rows is the prefix of a build of 3,000 (same ids, prompts and seeds).

Readers (all local files; nothing is downloaded):

* COCO: ``captions_train2014.json`` (``images`` + ``annotations``);
* Flickr30k: the Kaggle ``results.csv`` (``image_name| comment_number| comment``), the
  original ``results_20130124.token`` (``1000092795.jpg#0<TAB>caption``), or Karpathy's
  ``dataset_flickr30k.json``;
* plain text: one caption per line (the demo's ``afpbench/data/demo_captions.txt``);
* a Hugging Face dataset (saved with ``save_to_disk``, parquet files, or a hub id in the
  local cache) with a caption column.
"""

from __future__ import annotations

import csv
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from afpbench.errors import AfpbenchError
from afpbench.plan import BuildConfig, Plan, WorkItem, looks_like_path
from afpbench.sources.base import Source, check_keys, collection_keys, recipe_seed, sample_indices, scale_mix

if TYPE_CHECKING:  # pragma: no cover
    from afpbench.catalog import Recipe

CAPTION_COLUMNS = ("caption", "captions", "sentences", "raw", "text", "prompt")


@dataclass(frozen=True)
class Caption:
    id: str  # stable within its collection: "<image id>-<k>" or "<line>"
    text: str
    image: str = ""  # the image it describes (COCO image id, Flickr file stem), if any


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def detect_format(path: Path) -> str:
    """coco | flickr_csv | flickr_token | karpathy | text | hf, from the file itself."""
    if path.is_dir():
        return "hf"
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "hf"
    if name.endswith(".token"):
        return "flickr_token"
    if name.endswith(".csv"):
        return "flickr_csv"
    if name.endswith(".json"):
        with open(path, "rb") as fh:
            head = fh.read(4096).decode("utf-8", "replace")
        # Karpathy's split files start with {"images": [{"sentids"..., COCO with "info"/"licenses".
        return "karpathy" if '"sentids"' in head or '"sentences"' in head else "coco"
    return "text"


def _read_coco(path: Path) -> list[Caption]:
    data = json.loads(path.read_text())
    if "annotations" not in data:
        raise AfpbenchError(f"{path} has no 'annotations'; pass COCO's captions_train2014.json (from annotations_trainval2014.zip).")
    by_image: dict[int, list[tuple[int, str]]] = {}
    for a in data["annotations"]:
        by_image.setdefault(int(a["image_id"]), []).append((int(a.get("id", 0)), _clean(a["caption"])))
    out = []
    for image_id in sorted(by_image):
        for k, (_, text) in enumerate(sorted(by_image[image_id])):
            out.append(Caption(f"{image_id}-{k}", text, str(image_id)))
    return out


def coco_file_captions(path: Path) -> dict[str, list[Caption]]:
    """COCO captions keyed by image file name (``COCO_train2014_000000391895.jpg``)."""
    data = json.loads(path.read_text())
    names = {int(im["id"]): im["file_name"] for im in data.get("images", [])}
    out: dict[str, list[Caption]] = {}
    for c in _read_coco(path):
        name = names.get(int(c.image))
        if name:
            out.setdefault(name, []).append(c)
    return out


def _flickr_rows(path: Path) -> list[tuple[str, int, str]]:
    """(image file name, comment number, caption) from any of the three Flickr30k layouts."""
    fmt = detect_format(path)
    rows: list[tuple[str, int, str]] = []
    if fmt == "karpathy":
        data = json.loads(path.read_text())
        for im in data["images"]:
            for k, s in enumerate(im.get("sentences", [])):
                rows.append((im["filename"], k, _clean(s.get("raw") or " ".join(s.get("tokens", [])))))
    elif fmt == "flickr_token":
        for line in path.read_text(encoding="utf-8").splitlines():
            if "\t" not in line:
                continue
            key, text = line.split("\t", 1)
            name, _, k = key.partition("#")
            rows.append((name.strip(), int(k or 0), _clean(text)))
    else:  # the Kaggle results.csv: "image_name| comment_number| comment"
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, delimiter="|")
            header = next(reader, None)
            if not header or "image_name" not in header[0]:
                raise AfpbenchError(f"{path} is not Flickr30k's results.csv (header 'image_name| comment_number| comment'); pass that file or results_20130124.token.")
            for rec in reader:
                if len(rec) < 3:
                    continue  # the file has a known malformed line; skip it rather than guess
                try:
                    k = int(rec[1].strip())
                except ValueError:
                    continue
                rows.append((rec[0].strip(), k, _clean("|".join(rec[2:]))))
    return rows


def flickr_file_captions(path: Path) -> dict[str, list[Caption]]:
    """Flickr30k captions keyed by image file name (``1000092795.jpg``)."""
    out: dict[str, list[Caption]] = {}
    for name, k, text in sorted(_flickr_rows(path)):
        stem = name.rsplit(".", 1)[0]
        out.setdefault(name, []).append(Caption(f"{stem}-{k}", text, stem))
    return out


def _read_flickr(path: Path) -> list[Caption]:
    return [c for name, caps in sorted(flickr_file_captions(path).items()) for c in caps]


def _read_text(path: Path) -> list[Caption]:
    lines = [_clean(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [Caption(f"{i}", t) for i, t in enumerate(line for line in lines if line)]


def _read_hf(spec: str, split: str | None) -> list[Caption]:
    from afpbench.sources.hf import open_hf_dataset

    ds = open_hf_dataset(spec, split=split)
    col = next((c for c in CAPTION_COLUMNS if c in ds.column_names), None)
    if col is None:
        raise AfpbenchError(f"Dataset {spec} has no caption column (looked for {', '.join(CAPTION_COLUMNS)}); pass a dataset with one.")
    out = []
    for i, value in enumerate(ds[col]):
        values = value if isinstance(value, list) else [value]
        for k, v in enumerate(values):
            if isinstance(v, dict):  # Karpathy-style {"raw": ...}
                v = v.get("raw") or v.get("text") or ""
            if v:
                out.append(Caption(f"{i}-{k}", _clean(v), str(i)))
    return out


@functools.lru_cache(maxsize=8)
def read_captions(spec: str, split: str | None = None) -> tuple[str, tuple[Caption, ...]]:
    """(detected format, every caption of the collection in a stable order)."""
    path = Path(spec).expanduser()
    if not path.exists():
        if looks_like_path(spec):
            raise AfpbenchError(f"Caption source {spec} does not exist; pass an existing COCO/Flickr30k annotation file, a text file, or a dataset folder.")
        return "hf", tuple(_read_hf(spec, split))
    fmt = detect_format(path)
    reader = {"coco": _read_coco, "flickr_csv": _read_flickr, "flickr_token": _read_flickr, "karpathy": _read_flickr, "text": _read_text}
    caps = _read_hf(str(path), split) if fmt == "hf" else reader[fmt](path)
    if not caps:
        raise AfpbenchError(f"No caption could be read from {path}; check that it is a COCO/Flickr30k annotation file or one caption per line.")
    return fmt, tuple(caps)


def plan_captions(recipe: "Recipe", config: BuildConfig, sources: dict[str, str], counts: dict[str, int], start_index: int = 0) -> tuple[list[WorkItem], dict[str, Any]]:
    """WorkItems for a captions recipe: ``counts[key]`` rows from ``sources[key]``, in key order."""
    from afpbench.seeding import row_seed

    seed = recipe_seed(recipe, config)
    items: list[WorkItem] = []
    info: dict[str, Any] = {"kind": "captions", "collections": {}}
    index = start_index
    for key, n in counts.items():
        fmt, pool = read_captions(sources[key], recipe.source.split)
        picks = sample_indices(len(pool), n, row_seed(seed, f"{recipe.name}:{key}"))
        info["collections"][key] = {"path": sources[key], "format": fmt, "captions": len(pool), "rows": n, "repeated": n > len(pool)}
        for pos, rep in picks:
            cap = pool[pos]
            rid = f"{recipe.name}/{key}-{cap.id}" + (f"~{rep}" if rep else "")
            items.append(WorkItem(index=index, id=rid, seed=row_seed(seed, rid), prompt=cap.text, source=f"{key}-{cap.id}", meta={"caption_id": cap.id, "collection": key}))
            index += 1
    return items, info


class CaptionSource(Source):
    """Prompts drawn from caption collections; rows have no input image."""

    name = "captions"

    def plan(self, recipe: "Recipe", config: BuildConfig, given: dict[str, str]) -> Plan:
        count = int(config.count)
        keys = collection_keys(recipe)
        if not given:
            raise AfpbenchError(
                f"'{recipe.name}' prompts with captions; pass --source {','.join(f'{k}=PATH' for k in keys)} "
                f"(COCO captions_train2014.json, Flickr30k results.csv) or one caption file, e.g. --source afpbench/data/demo_captions.txt."
            )
        if "" in given:
            path = given[""]
            fmt, _ = read_captions(path, recipe.source.split)
            key = {"coco": "coco", "flickr_csv": "flickr", "flickr_token": "flickr", "karpathy": "flickr"}.get(fmt, fmt)
            sources, counts = {key: path}, {key: count}
        else:
            check_keys(recipe, given, keys)
            sources, counts = given, scale_mix(recipe.source.mix, count)
        items, info = plan_captions(recipe, config, sources, {k: n for k, n in counts.items() if n})
        return Plan(items, {"spec": config.source, "mix": counts, **info})
