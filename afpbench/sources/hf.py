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
from typing import TYPE_CHECKING, Any

from afpbench._util.hub import offline
from afpbench.errors import AfpbenchError
from afpbench.plan import BuildConfig, Plan, WorkItem
from afpbench.sources.base import Source, recipe_seed

if TYPE_CHECKING:  # pragma: no cover
    from afpbench.catalog import Recipe

IMAGE_COLUMNS = ("image", "img", "png", "jpg")


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``.

    The marker files are the ones ``datasets.load_from_disk`` itself looks for.
    """
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


@functools.lru_cache(maxsize=4)
def open_hf_dataset(spec: str, *, config: str | None = None, split: str | None = None):
    """A ``datasets.Dataset`` from a saved folder, parquet file(s) or a cached hub id."""
    import datasets

    path = Path(spec).expanduser()
    try:
        if is_saved_dataset(path):
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
        why = "HF_DATASETS_OFFLINE=1 / HF_HUB_OFFLINE=1 is set and " if offline() else ""
        raise AfpbenchError(
            f"Cannot open dataset '{spec}' ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); {why}"
            f"save a local copy with Dataset.save_to_disk or download its parquet files, and pass --source PATH."
        ) from exc
    if isinstance(ds, datasets.DatasetDict):
        wanted = split or "train"
        if wanted not in ds:
            raise AfpbenchError(f"Dataset {spec} has no split '{wanted}' (it has {', '.join(ds)}); save that split or pick another source.")
        ds = ds[wanted]
    return ds


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


class HFSource(Source):
    """Rows sampled (seeded, without replacement) from a Hugging Face dataset of images, prompts kept."""

    name = "hf_dataset"

    def plan(self, recipe: "Recipe", config: BuildConfig, given: dict[str, str]) -> Plan:
        from afpbench.seeding import permutation, row_seed

        spec = given.get("") or next(iter(given.values()), None) or recipe.source.dataset
        if not spec:
            raise AfpbenchError(f"'{recipe.name}' samples a dataset; pass --source PATH (a save_to_disk folder or parquet files).")
        n = int(config.count)
        src = recipe.source
        ds = open_hf_dataset(spec, config=src.config, split=src.split)
        col = image_column(ds)
        if n > len(ds):
            raise AfpbenchError(f"Dataset {spec} has {len(ds)} rows, fewer than the {n} asked for; pass --count {len(ds)} or a larger copy.")
        seed = recipe_seed(recipe, config)
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
            ref = {"kind": self.name, "spec": spec, "config": src.config, "split": src.split, "index": pos, "column": col}
            items.append(WorkItem(index=i, id=rid, seed=row_seed(seed, rid), prompt=prompt, source=name or f"row-{pos}", image_ref=ref, meta=meta))
        if len({it.id for it in items}) != len(items):
            raise AfpbenchError(f"Dataset {spec} has duplicate image file names; deduplicate it before sampling.")
        info = {"kind": "hf_dataset", "dataset": spec, "config": src.config, "split": src.split, "rows_available": len(ds), "rows": n, "fingerprint": fingerprint(ds)}
        return Plan(items, info)

    def load_input(self, item: WorkItem):
        """The row's stored image, decoded to RGB."""
        from afpbench.dataset import decode_image

        try:
            return decode_image(_cell(item)["bytes"])
        except OSError as exc:
            raise AfpbenchError(f"Row {item.image_ref['index']} of {item.image_ref['spec']} is not a readable image ({exc}); repair the dataset.") from exc

    def load_original(self, item: WorkItem) -> tuple[bytes, str]:
        """The row's stored image bytes, unchanged, and their format."""
        from PIL import Image

        data = _cell(item)["bytes"]
        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or "png").lower()
        return data, fmt


@functools.lru_cache(maxsize=4)
def _undecoded(spec: str, config: str | None, split: str | None, column: str):
    """The image column alone, with decoding off: rows give their stored bytes."""
    import datasets

    ds = open_hf_dataset(spec, config=config, split=split).select_columns([column])
    return ds.cast_column(column, datasets.Image(decode=False))


def _cell(item: WorkItem) -> dict[str, Any]:
    ref = item.image_ref
    cell = _undecoded(ref["spec"], ref["config"], ref["split"], ref["column"])[int(ref["index"])][ref["column"]]
    if not cell or not cell.get("bytes"):
        path = cell.get("path") if cell else None
        if path and Path(path).is_file():
            return {"bytes": Path(path).read_bytes(), "path": path}
        raise AfpbenchError(f"Row {ref['index']} of {ref['spec']} holds no image bytes; save the dataset with embedded images (save_to_disk).")
    return cell
