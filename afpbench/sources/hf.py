"""Hugging Face dataset sources (DiffusionDB, caption datasets), read with ``datasets``.

A source is any of: a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``,
a parquet file or a folder of parquet files (the Hub's parquet export), or a hub dataset
id that is already in the local ``datasets`` cache (the hub is never contacted when
``HF_DATASETS_OFFLINE=1``). Datasets are memory-mapped Arrow tables: planning a sample
reads the prompt and file-name columns only, and each image's bytes are read when its
batch runs.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

from afpbench.errors import AfpbenchError

IMAGE_COLUMNS = ("image", "img", "png", "jpg")


@functools.lru_cache(maxsize=4)
def open_dataset(spec: str, *, config: str | None = None, split: str | None = None):
    """A ``datasets.Dataset`` from a saved folder, parquet file(s) or a cached hub id."""
    import datasets

    path = Path(spec).expanduser()
    try:
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            ds = datasets.load_from_disk(str(path))
        elif path.is_file() and path.suffix == ".parquet" or path.is_dir() and any(path.rglob("*.parquet")):
            files = [str(path)] if path.is_file() else sorted(str(p) for p in path.rglob("*.parquet"))
            ds = datasets.load_dataset("parquet", data_files=files, split="train")
        elif path.exists():
            raise AfpbenchError(f"{spec} is neither a saved dataset (save_to_disk) nor parquet files; pass one of those, or a hub dataset id.")
        else:
            ds = datasets.load_dataset(spec, config, split=split or "train")
    except AfpbenchError:
        raise
    except Exception as exc:  # the datasets library raises many types for "not available"
        offline = "HF_DATASETS_OFFLINE=1 / HF_HUB_OFFLINE=1 is set and " if _offline() else ""
        raise AfpbenchError(
            f"Cannot open dataset '{spec}' ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); {offline}"
            f"save a local copy with Dataset.save_to_disk or download its parquet files, and pass --source PATH."
        ) from exc
    if isinstance(ds, datasets.DatasetDict):
        wanted = split or "train"
        if wanted not in ds:
            raise AfpbenchError(f"Dataset {spec} has no split '{wanted}' (it has {', '.join(ds)}); save that split or pick another source.")
        ds = ds[wanted]
    return ds


def _offline() -> bool:
    import os

    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def image_column(ds) -> str:
    col = next((c for c in IMAGE_COLUMNS if c in ds.column_names), None)
    if col is None:
        raise AfpbenchError(f"The dataset has no image column (looked for {', '.join(IMAGE_COLUMNS)}; it has {', '.join(ds.column_names)}); pass a dataset of images.")
    return col


def _image_names(ds, col: str, indices: list[int]) -> list[str | None]:
    """The stored file name of each selected image, without reading image bytes."""
    table = ds.select(indices).with_format("arrow")[col]
    if not hasattr(table, "type") or not str(table.type).startswith("struct"):
        return [None] * len(indices)
    names = table.combine_chunks().field("path").to_pylist() if hasattr(table, "combine_chunks") else table.field("path").to_pylist()
    return [Path(n).name if n else None for n in names]


def fingerprint(ds) -> str:
    return getattr(ds, "_fingerprint", "") or ""


def plan(recipe, config, spec: str, n: int) -> tuple[list[Any], dict[str, Any]]:
    """``n`` rows sampled (seeded, without replacement) from the dataset ``spec``."""
    from afpbench.generate.base import WorkItem
    from afpbench.seeding import row_seed
    from afpbench.sources.captions import permutation

    src = recipe.source
    ds = open_dataset(spec, config=src.config, split=src.split)
    col = image_column(ds)
    if n > len(ds):
        raise AfpbenchError(f"Dataset {spec} has {len(ds)} rows, fewer than the {n} asked for; pass --count {len(ds)} or a larger copy.")
    seed = recipe.seed if config.seed is None else config.seed
    order = permutation(len(ds), row_seed(seed, f"{recipe.name}:sample"))[:n]
    names = _image_names(ds, col, order)
    meta_cols = [c for c in ds.column_names if c != col]
    rows = ds.select(order).select_columns(meta_cols).to_list() if meta_cols else [{} for _ in order]
    items = []
    for i, (pos, name, rec) in enumerate(zip(order, names, rows)):
        rid = f"{recipe.name}/{(name or f'{pos:07d}').rsplit('.', 1)[0]}"
        prompt = str(rec.pop("prompt", "") or "")
        # Keep the source row's own generation facts (DiffusionDB: seed, step, cfg, sampler...).
        meta = {"row": pos, **{k: v for k, v in rec.items() if isinstance(v, (str, int, float, bool)) or v is None}}
        if "seed" in meta:
            meta["source_seed"] = meta.pop("seed")
        ref = {"kind": "hf", "spec": spec, "config": src.config, "split": src.split, "index": pos, "column": col}
        items.append(WorkItem(index=i, id=rid, seed=row_seed(seed, rid), prompt=prompt, source=name or f"row-{pos}", image_ref=ref, meta=meta))
    if len({it.id for it in items}) != len(items):
        raise AfpbenchError(f"Dataset {spec} has duplicate image file names; deduplicate it before sampling.")
    info = {"kind": "hf_dataset", "dataset": spec, "config": src.config, "split": src.split, "rows_available": len(ds), "rows": n, "fingerprint": fingerprint(ds)}
    return items, info


@functools.lru_cache(maxsize=4)
def _undecoded(spec: str, config: str | None, split: str | None, column: str):
    """The image column alone, with decoding off: rows give their stored bytes."""
    import datasets

    ds = open_dataset(spec, config=config, split=split).select_columns([column])
    return ds.cast_column(column, datasets.Image(decode=False))


def _cell(item) -> dict[str, Any]:
    ref = item.image_ref
    cell = _undecoded(ref["spec"], ref["config"], ref["split"], ref["column"])[int(ref["index"])][ref["column"]]
    if not cell or not cell.get("bytes"):
        path = cell.get("path") if cell else None
        if path and Path(path).is_file():
            return {"bytes": Path(path).read_bytes(), "path": path}
        raise AfpbenchError(f"Row {ref['index']} of {ref['spec']} holds no image bytes; save the dataset with embedded images (save_to_disk).")
    return cell


def load_original(item) -> tuple[bytes, str]:
    from PIL import Image

    data = _cell(item)["bytes"]
    with Image.open(io.BytesIO(data)) as im:
        fmt = (im.format or "png").lower()
    return data, fmt


def load_input(item):
    from afpbench.dataset import decode_image

    try:
        return decode_image(_cell(item)["bytes"])
    except OSError as exc:
        raise AfpbenchError(f"Row {item.image_ref['index']} of {item.image_ref['spec']} is not a readable image ({exc}); repair the dataset.") from exc
