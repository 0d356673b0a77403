"""The on-disk dataset: features, shard writer and reader, manifest, dataset card, verify.

A set is one folder::

    <out>/<name>/README.md                         dataset card (YAML front matter: configs, features)
    <out>/<name>/manifest.json                     what is inside, with hashes (see ``Manifest``)
    <out>/<name>/data/test-00000-of-00003.parquet  image bytes embedded, never paths

Writing goes through ``DatasetWriter``: rows are appended to Arrow IPC *parts* in
``<out>/.afpbench-partial/<name>/`` (each part written to a temporary name and renamed,
so a killed process never leaves a half part), then ``finalize`` sorts every row by its
index, re-shards, writes the card and manifest into a temporary folder and swaps it in
with renames. So an interrupted build or import leaves either the previous dataset or a
resumable partial one, never a corrupt shard; and the final bytes do not depend on how
the work was split into parts or processes.

Only numpy, pyarrow and PIL are imported here; ``datasets`` is imported lazily when the
Hugging Face feature metadata is needed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from afpbench import LABEL_NAMES, __version__
from afpbench.errors import DatasetError

MANIFEST_SCHEMA_VERSION = 1
PARTIAL_DIR = ".afpbench-partial"
# Shards are cut by size so that 1024 px PNG sets do not make multi-GB files and tiny
# sets stay in one file (the Hub's viewer and streaming work best below ~500 MB).
DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
# Images are read back one row group at a time; small groups keep readers' memory flat.
# Groups are cut by rows and by bytes: 64 rows of 1024 px PNGs would be ~100 MB.
ROW_GROUP_ROWS = 64
ROW_GROUP_BYTES = 16 * 1024 * 1024
DICTIONARY_COLUMNS = ["dataset", "family", "generator", "format"]
# A flushed part is written as record batches of at most this many image bytes, and
# finalize reads it back one such batch at a time: both hold a few MB whatever the
# flush buffer or the set size (converting a whole 16 MB buffer at once cost ~4x that).
PART_BATCH_BYTES = 2 * 1024 * 1024
# Columns of every set, in order. `meta` is a JSON object string for recipe-specific
# fields (crop box, attack predictions, original mode of a converted import...).
COLUMNS = ("id", "image", "label", "dataset", "family", "generator", "prompt", "source", "seed", "width", "height", "format", "meta")
STRING_COLUMNS = ("id", "dataset", "family", "generator", "prompt", "source", "format", "meta")
LIBRARIES = ("afpbench", "torch", "diffusers", "transformers", "accelerate", "datasets", "torchattacks", "pyarrow", "pillow", "numpy")


# -- schema ---------------------------------------------------------------------------
def hf_features():
    """The declared ``datasets.Features`` of every afpbench set."""
    from datasets import ClassLabel, Features, Image, Value

    return Features(
        {
            "id": Value("string"),
            "image": Image(),
            "label": ClassLabel(names=list(LABEL_NAMES)),
            "dataset": Value("string"),
            "family": Value("string"),
            "generator": Value("string"),
            "prompt": Value("string"),
            "source": Value("string"),
            "seed": Value("int64"),
            "width": Value("int32"),
            "height": Value("int32"),
            "format": Value("string"),
            "meta": Value("string"),
        }
    )


_SCHEMA: pa.Schema | None = None


def arrow_schema() -> pa.Schema:
    """The parquet schema, carrying the ``huggingface`` metadata so clients get the features."""
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = hf_features().arrow_schema
    return _SCHEMA


def _part_schema() -> pa.Schema:
    # Parts carry a sort index on top of the final columns; it is dropped at finalize.
    return arrow_schema().append(pa.field("_index", pa.int64()))


# -- images ---------------------------------------------------------------------------
def encode_png(image) -> bytes:
    """Lossless, deterministic encoding for generated images."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def to_rgb(image):
    """Convert any PIL mode to 8-bit RGB the way a detector should see it.

    16/32-bit grey is rescaled (PIL's plain convert clips it to white), transparency is
    composited over white (afpbench choice), CMYK/palette/grey go through PIL.
    """
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        import numpy as np

        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype("uint8"), mode="L")
        return grey.convert("RGB")
    if image.mode == "F":
        import numpy as np

        arr = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype("uint8")).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(value: Any):
    """Bytes, or an ``{"bytes": ...}`` cell, -> an RGB PIL image (fully loaded)."""
    from PIL import Image

    data = value.get("bytes") if isinstance(value, dict) else value
    if data is None:
        raise DatasetError("An image cell has no bytes (a path-only row); re-import the set so bytes are embedded.")
    img = Image.open(io.BytesIO(data))
    img.load()
    return to_rgb(img)


# -- rows -----------------------------------------------------------------------------
def make_row(
    *,
    id: str,
    image: bytes,
    label: int,
    dataset: str,
    family: str = "",
    generator: str = "",
    prompt: str = "",
    source: str = "",
    seed: int = -1,
    width: int,
    height: int,
    format: str,
    meta: dict[str, Any] | str | None = None,
) -> dict[str, Any]:
    """A row in the project's column layout (validates the fixed contracts)."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 (real) or 1 (fake), got {label!r}")
    if not isinstance(image, (bytes, bytearray)):
        raise TypeError("image must be encoded bytes (PNG for generated images, the original bytes for imports)")
    return {
        "id": id,
        "image": {"bytes": bytes(image), "path": None},
        "label": int(label),
        "dataset": dataset,
        "family": family or "",
        "generator": generator or "",
        "prompt": prompt or "",
        "source": source or "",
        "seed": int(seed),
        "width": int(width),
        "height": int(height),
        "format": format.lower(),
        "meta": meta if isinstance(meta, str) else json.dumps(meta or {}, sort_keys=True),
    }


def _rows_to_batch(rows: list[dict[str, Any]], indices: list[int]) -> pa.RecordBatch:
    cols = {c: [r[c] for r in rows] for c in COLUMNS}
    cols["_index"] = indices
    return pa.RecordBatch.from_pydict(cols, schema=_part_schema())


def _release_arrow_memory() -> None:
    """Hand freed Arrow buffers back to the OS.

    Arrow's default pool (mimalloc in current wheels) keeps freed pages for reuse, and
    with image-sized buffers of varying sizes the kept pages grow with the number of
    flushes and row groups: memory would grow with the set instead of staying flat.
    Called once per record batch of a flushed part and per written row group (a few MB
    each), where its cost is lost in the I/O.
    """
    pa.default_memory_pool().release_unused()


def _runs(sizes: list[int], max_bytes: int, max_rows: int | None = None) -> Iterator[tuple[int, int]]:
    """Consecutive [lo, hi) runs whose byte sizes sum to at most ``max_bytes`` (and at most
    ``max_rows`` items); an item larger than ``max_bytes`` gets a run of its own."""
    lo, acc = 0, 0
    for i, n in enumerate(sizes):
        if i > lo and (acc + n > max_bytes or (max_rows is not None and i - lo >= max_rows)):
            yield lo, i
            lo, acc = i, 0
        acc += n
    if lo < len(sizes):
        yield lo, len(sizes)


# -- hashing --------------------------------------------------------------------------
def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class _Fingerprint:
    """Content hash of a set: ids, labels, image bytes and row fields in row order.

    It does not depend on parquet encoding details (writer version, row groups), so an
    interrupted-then-resumed build and a single-process build compare equal.
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, table: pa.Table) -> None:
        cols = {c: table.column(c).to_pylist() for c in COLUMNS if c != "image"}
        i = 0
        for chunk in table.column("image").chunks:  # chunk by chunk: no combined copy
            images = chunk.field("bytes")
            for k in range(len(chunk)):
                self._h.update(hashlib.sha256(images[k].as_buffer()).digest())
                self._h.update(json.dumps([cols[c][i] for c in cols], ensure_ascii=False).encode())
                i += 1

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def library_versions() -> dict[str, str | None]:
    from afpbench.envinfo import version

    return {lib: version(lib) for lib in LIBRARIES}


# -- atomic file helpers --------------------------------------------------------------
def atomic_write_text(path: Path, text: str) -> None:
    from afpbench._util.atomic import write_text

    write_text(path, text)  # a failed write leaves the previous file and no temporary


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- writer ---------------------------------------------------------------------------
@dataclass
class Reject:
    input: str
    reason: str


@dataclass
class WriterOptions:
    shard_bytes: int = DEFAULT_SHARD_BYTES
    flush_rows: int = 256
    flush_bytes: int = 16 * 1024 * 1024
    rank: int = 0


class DatasetWriter:
    """Append rows, then ``finalize`` into a dataset folder; resumable across processes.

    ``info`` is merged into the manifest (recipe, params, generator, source, seed...).
    Rows may be added in any order and by several processes (each with its own
    ``rank``); ``index`` gives a row's place in the final order (default: its id).
    """

    def __init__(self, out_dir: str | Path, name: str, *, info: dict[str, Any] | None = None, options: WriterOptions | None = None):
        self.out_dir = Path(out_dir)
        self.name = name
        self.info = dict(info or {})
        self.opts = options or WriterOptions()
        self.final_dir = self.out_dir / name
        self.partial_dir = self.out_dir / PARTIAL_DIR / name
        self._rows: list[dict[str, Any]] = []
        self._indices: list[int] = []
        self._buffer_bytes = 0
        self._rejects: list[Reject] = []
        self._seq = 0
        self._done: set[str] | None = None
        self._opened = False

    # context manager: flush on exit, even on KeyboardInterrupt, so work is kept.
    def __enter__(self) -> "DatasetWriter":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.flush()

    def open(self) -> None:
        if self._opened:
            return
        (self.partial_dir / "parts").mkdir(parents=True, exist_ok=True)
        info_path = self.partial_dir / "info.json"
        # A partial made by a different recipe/parameters must not be mixed in.
        key = json.dumps(self.info.get("resume_key", self.info.get("recipe")), sort_keys=True, default=str)
        if info_path.exists():
            old = json.loads(info_path.read_text())
            if old.get("resume_key") != key:
                raise DatasetError(
                    f"{self.partial_dir} holds a partial build with other parameters; delete that folder to start over "
                    f"or re-run with the same parameters to resume."
                )
        elif self.opts.rank == 0:
            atomic_write_text(info_path, json.dumps({"resume_key": key, "name": self.name}))
        existing = sorted((self.partial_dir / "parts").glob(f"part-r{self.opts.rank:03d}-*.arrow"))
        self._seq = (int(existing[-1].stem.split("-")[-1]) + 1) if existing else 0
        self._opened = True

    def done_ids(self) -> set[str]:
        """Ids already written by any process (resume: skip these)."""
        self.open()
        if self._done is None:
            done: set[str] = set()
            for part in sorted((self.partial_dir / "parts").glob("part-*.arrow")):
                with pa.memory_map(str(part)) as src:
                    done.update(ipc.open_file(src).read_all().column("id").to_pylist())
            self._done = done
        return self._done | {r["id"] for r in self._rows}

    def partial_column(self, name: str) -> list[Any]:
        """One column of every row already in the partial parts (resume bookkeeping)."""
        self.open()
        out: list[Any] = []
        for part in sorted((self.partial_dir / "parts").glob("part-*.arrow")):
            with pa.memory_map(str(part)) as src:
                out.extend(ipc.open_file(src).read_all().column(name).to_pylist())
        return out

    def add(self, row: dict[str, Any], index: int | None = None) -> None:
        self.open()
        self._rows.append(row)
        self._indices.append(-1 if index is None else int(index))
        self._buffer_bytes += len(row["image"]["bytes"])
        if len(self._rows) >= self.opts.flush_rows or self._buffer_bytes >= self.opts.flush_bytes:
            self.flush()

    def reject(self, input_name: str, reason: str) -> None:
        self._rejects.append(Reject(str(input_name), " ".join(reason.split())))

    def flush(self) -> None:
        """Write buffered rows (and rejects) as one part, atomically."""
        if not self._opened or (not self._rows and not self._rejects):
            return
        stem = f"part-r{self.opts.rank:03d}-{self._seq:06d}"
        parts = self.partial_dir / "parts"
        if self._rows:
            from afpbench._util.atomic import replacing

            with replacing(parts / f"{stem}.arrow") as tmp:
                with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, _part_schema()) as w:
                    for lo, hi in _runs([len(r["image"]["bytes"]) for r in self._rows], PART_BATCH_BYTES):
                        w.write_batch(_rows_to_batch(self._rows[lo:hi], self._indices[lo:hi]))
                        _release_arrow_memory()
            if self._done is not None:
                self._done.update(r["id"] for r in self._rows)
        if self._rejects:
            atomic_write_text(parts / f"{stem}.rejects.json", json.dumps([r.__dict__ for r in self._rejects]))
        self._seq += 1
        self._rows, self._indices, self._buffer_bytes, self._rejects = [], [], 0, []

    def abandon(self) -> None:
        """Delete the partial build (used when an input error means nothing may be written)."""
        self._rows, self._rejects = [], []
        shutil.rmtree(self.partial_dir, ignore_errors=True)
        try:
            (self.out_dir / PARTIAL_DIR).rmdir()
        except OSError:
            pass

    def finalize(self, *, card: str | None = None, extra_manifest: dict[str, Any] | None = None) -> dict[str, Any]:
        """Merge all parts into the final folder and return its manifest.

        The new folder is written in full beside the old one and swapped in: when writing
        fails (disk full, Ctrl-C) the half-written folder is removed, the previous dataset
        is untouched and the parts stay, so running again finishes the job.
        """
        try:
            return self._finalize(card=card, extra_manifest=extra_manifest)
        except BaseException:
            from afpbench._util.atomic import remove

            remove(self._tmp_dir())
            raise

    def _tmp_dir(self) -> Path:
        return self.out_dir / f".{self.name}.tmp-{os.getpid()}"

    def _finalize(self, *, card: str | None, extra_manifest: dict[str, Any] | None) -> dict[str, Any]:
        import pyarrow.compute  # noqa: F401  (pa.compute below; a submodule is not imported with pyarrow)

        self.flush()
        parts_dir = self.partial_dir / "parts"
        part_files = sorted(parts_dir.glob("part-*.arrow"))
        rejects: list[dict[str, str]] = []
        for rj in sorted(parts_dir.glob("part-*.rejects.json")):
            rejects.extend(json.loads(rj.read_text()))
        # A resumed run re-checks inputs it had rejected before: keep each reject once.
        rejects = [dict(t) for t in sorted({(("input", r["input"]), ("reason", r["reason"])) for r in rejects})]
        if not part_files:
            raise DatasetError(
                f"No image could be added to '{self.name}' ({len(rejects)} input(s) rejected); nothing was written. "
                "Check the input path and the rejects reported above."
            )
        # Only the small columns are read for ordering; image bytes are read later, one
        # record batch at a time, so memory stays at a few batches however large the set
        # is (a memory map would be cheap to open but its touched pages count as RSS).
        ids_all: list[str] = []
        idx_all: list[int] = []
        loc: list[tuple[int, int, int]] = []  # (part, record batch, row in batch)
        sizes: list[int] = []
        for pno, p in enumerate(part_files):
            with pa.memory_map(str(p)) as src:
                reader = ipc.open_file(src)
                for bno in range(reader.num_record_batches):
                    b = reader.get_batch(bno)
                    ids_all.extend(b.column("id").to_pylist())
                    idx_all.extend(b.column("_index").to_pylist())
                    sizes.extend(pa.compute.binary_length(b.column("image").field("bytes")).to_pylist())  # offsets only
                    loc.extend((pno, bno, r) for r in range(b.num_rows))
                    del b
                del reader
        # Sort by (index, id); a row added twice (two ranks overlapping) is kept once.
        keep, seen = [], set()
        for pos in sorted(range(len(ids_all)), key=lambda i: (idx_all[i], ids_all[i])):
            if ids_all[pos] not in seen:
                seen.add(ids_all[pos])
                keep.append(pos)
        cache: OrderedDict[tuple[int, int], pa.RecordBatch] = OrderedDict()
        # Rows of K ranks interleave, so a row group draws on K parts at once.
        max_cached = len({p.name.split("-")[1] for p in part_files}) + 1

        def batch(key: tuple[int, int]) -> pa.RecordBatch:
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
            # A plain file read of one record batch: only its bytes come into memory.
            with pa.OSFile(str(part_files[key[0]])) as fh:
                cache[key] = ipc.open_file(fh).get_batch(key[1])
            while len(cache) > max_cached:
                cache.popitem(last=False)
            return cache[key]

        def take(positions: list[int]) -> pa.Table:
            pieces, run_key, run_rows = [], None, []
            for pos in positions + [-1]:
                key, r = (loc[pos][:2], loc[pos][2]) if pos >= 0 else (None, None)
                if key != run_key and run_rows:
                    pieces.append(pa.Table.from_batches([batch(run_key).take(pa.array(run_rows, pa.int64()))]))
                    run_rows = []
                run_key = key
                if pos >= 0:
                    run_rows.append(r)
            return pa.concat_tables(pieces)

        # Cut shards by size, in final row order.
        groups = [keep[lo:hi] for lo, hi in _runs([sizes[pos] for pos in keep], self.opts.shard_bytes)]

        tmp_dir = self._tmp_dir()
        shutil.rmtree(tmp_dir, ignore_errors=True)
        (tmp_dir / "data").mkdir(parents=True)
        fp = _Fingerprint()
        shards, counts, formats = [], {n: 0 for n in LABEL_NAMES}, {}
        schema = arrow_schema()
        for k, group in enumerate(groups):
            rel = f"data/test-{k:05d}-of-{len(groups):05d}.parquet"
            # One row group at a time: memory stays at a row group, not a shard.
            # Dictionary encoding only for the short repeated columns: trying it on image
            # bytes would hash a whole row group of images before falling back.
            with pq.ParquetWriter(tmp_dir / rel, schema, compression="none", write_statistics=False, use_dictionary=DICTIONARY_COLUMNS) as pw:
                for lo, hi in _runs([sizes[pos] for pos in group], ROW_GROUP_BYTES, ROW_GROUP_ROWS):
                    sub = take(group[lo:hi]).drop_columns(["_index"]).cast(schema)
                    fp.update(sub)
                    pw.write_table(sub, row_group_size=len(sub))
                    _release_arrow_memory()
                    for lab in sub.column("label").to_pylist():
                        counts[LABEL_NAMES[lab]] += 1
                    for f in sub.column("format").to_pylist():
                        formats[f] = formats.get(f, 0) + 1
                    del sub
            shards.append({"path": rel, "sha256": sha256_file(tmp_dir / rel), "num_rows": len(group), "bytes": (tmp_dir / rel).stat().st_size})
        manifest = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "name": self.name,
            **{k: v for k, v in self.info.items() if k != "resume_key"},
            **(extra_manifest or {}),
            "afpbench_version": __version__,
            "libraries": library_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "num_rows": len(keep),
            "counts": counts,
            "formats": dict(sorted(formats.items())),
            "shards": shards,
            "fingerprint": fp.hexdigest(),
            "rejects": rejects,
        }
        atomic_write_text(tmp_dir / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        from afpbench.card import render_card

        atomic_write_text(tmp_dir / "README.md", card if card is not None else render_card(manifest))
        cache.clear()
        _swap_in(tmp_dir, self.final_dir)
        self.abandon()
        return manifest


def _swap_in(new: Path, final: Path) -> None:
    """Replace ``final`` by ``new`` with renames; the old folder survives until the end.

    Interrupted between the two renames (Ctrl-C, SIGTERM), the old folder is put back;
    killed there, :func:`recover_interrupted` puts it back on the next run.
    """
    backup = final.with_name(f".{final.name}.old-{os.getpid()}")
    try:
        if final.exists():
            os.replace(final, backup)
        os.replace(new, final)
    except BaseException:
        if backup.exists() and not final.exists():
            os.replace(backup, final)
        raise
    _fsync_dir(final.parent)
    shutil.rmtree(backup, ignore_errors=True)


def recover_interrupted(out_dir: str | Path, name: str) -> None:
    """Undo what a killed writer of set ``name`` left in ``out_dir``; call it holding the set's lock.

    A previous dataset moved aside by a swap that was killed halfway is put back, and
    half-written folders and temporary parts are removed (finished parts are kept: they
    are the resumable work).
    """
    import glob

    from afpbench._util.atomic import remove

    out_dir = Path(out_dir)
    final = out_dir / name
    pattern = glob.escape(name)
    backups = sorted(out_dir.glob(f".{pattern}.old-*"), key=lambda p: p.stat().st_mtime)
    if backups and not final.exists():
        os.replace(backups.pop(), final)
    for leftover in [*backups, *out_dir.glob(f".{pattern}.tmp-*")]:
        remove(leftover)
    partial = out_dir / PARTIAL_DIR / name
    for leftover in [*partial.glob("parts/.part-*.tmp*"), *partial.glob("parts/.*.tmp-*"), *partial.glob(".*.tmp-*")]:
        remove(leftover)


# -- reader ---------------------------------------------------------------------------
class DatasetReader:
    """Read a dataset folder written by ``DatasetWriter`` (or imported)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not self.path.is_dir():
            raise DatasetError(f"Dataset folder {self.path} does not exist; build or import it first (afpbench build / afpbench import).")
        if not mpath.exists():
            raise DatasetError(f"{self.path} has no manifest.json; it is not an afpbench dataset (build or import it first).")
        try:
            self.manifest: dict[str, Any] = json.loads(mpath.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{mpath} is not valid JSON ({exc}); rebuild the set.") from exc
        if self.manifest.get("schema_version", 0) > MANIFEST_SCHEMA_VERSION:
            raise DatasetError(f"{mpath} uses manifest schema {self.manifest['schema_version']}, newer than this afpbench understands; upgrade afpbench.")
        self.shards = [self.path / s["path"] for s in self.manifest["shards"]]
        for s, p in zip(self.manifest["shards"], self.shards):
            if not p.exists():
                raise DatasetError(f"Shard {p} listed in the manifest is missing; re-download or rebuild the set.")
            if p.stat().st_size != s["bytes"]:
                raise DatasetError(f"Shard {p} has {p.stat().st_size} bytes, the manifest says {s['bytes']}; run 'afpbench verify {self.path}' and rebuild.")

    name = property(lambda self: self.manifest["name"])
    fingerprint = property(lambda self: self.manifest["fingerprint"])
    num_rows = property(lambda self: self.manifest["num_rows"])
    family = property(lambda self: self.manifest.get("family", ""))

    @property
    def recipe_version(self) -> int | None:
        rec = self.manifest.get("recipe") or {}
        return rec.get("version") if isinstance(rec, dict) else None

    def __len__(self) -> int:
        return self.num_rows

    def iter_batches(self, batch_size: int = 64, columns: Iterable[str] | None = None, start: int = 0, stop: int | None = None) -> Iterator[list[dict[str, Any]]]:
        """Rows ``[start, stop)`` in order, as lists of dicts, one shard row group at a time."""
        stop = self.num_rows if stop is None else min(stop, self.num_rows)
        cols = list(columns) if columns else None
        pos = 0
        pending: list[dict[str, Any]] = []
        for shard in self.shards:
            pf = pq.ParquetFile(shard)
            n = pf.metadata.num_rows
            if pos + n <= start:
                pos += n
                continue
            if pos >= stop:
                break
            for rg in range(pf.num_row_groups):
                rg_rows = pf.metadata.row_group(rg).num_rows
                lo, hi = max(start - pos, 0), min(stop - pos, rg_rows)
                if hi > lo:
                    t = pf.read_row_group(rg, columns=cols).slice(lo, hi - lo)
                    pending.extend(t.to_pylist())
                    while len(pending) >= batch_size:
                        yield pending[:batch_size]
                        pending = pending[batch_size:]
                pos += rg_rows
                if pos >= stop:
                    break
        if pending:
            yield pending

    def column(self, name: str) -> list[Any]:
        return pa.concat_tables([pq.read_table(s, columns=[name]) for s in self.shards]).column(name).to_pylist()

    def ids(self) -> list[str]:
        return self.column("id")

    def labels(self) -> list[int]:
        return self.column("label")

    def rows(self, batch_size: int = 64, **kw: Any) -> Iterator[dict[str, Any]]:
        for batch in self.iter_batches(batch_size, **kw):
            yield from batch


def open_dataset(path: str | Path) -> DatasetReader:
    return DatasetReader(path)


# -- verify ---------------------------------------------------------------------------
@dataclass
class VerifyReport:
    path: Path
    ok: bool
    problems: list[str] = field(default_factory=list)
    num_rows: int = 0
    fingerprint: str = ""


def verify(path: str | Path) -> VerifyReport:
    """Recompute shard hashes, row counts and the content fingerprint."""
    path = Path(path)
    reader = DatasetReader.__new__(DatasetReader)
    reader.path = path
    mpath = path / "manifest.json"
    if not mpath.exists():
        raise DatasetError(f"{path} has no manifest.json; point 'afpbench verify' at a dataset folder (one with manifest.json).")
    manifest = json.loads(mpath.read_text())
    problems: list[str] = []
    fp = _Fingerprint()
    total = 0
    listed = {s["path"] for s in manifest["shards"]}
    for extra in sorted((path / "data").glob("*.parquet")):
        rel = extra.relative_to(path).as_posix()
        if rel not in listed:
            problems.append(f"{rel}: not listed in the manifest")
    for s in manifest["shards"]:
        p = path / s["path"]
        if not p.exists():
            problems.append(f"{s['path']}: missing")
            continue
        digest = sha256_file(p)
        if digest != s["sha256"]:
            problems.append(f"{s['path']}: sha256 {digest[:12]}... differs from the manifest's {s['sha256'][:12]}...")
            continue
        try:
            t = pq.read_table(p)
        except Exception as exc:  # a shard that hashes right but does not parse is still bad
            problems.append(f"{s['path']}: unreadable ({exc})")
            continue
        if t.num_rows != s["num_rows"]:
            problems.append(f"{s['path']}: {t.num_rows} rows, manifest says {s['num_rows']}")
        fp.update(t)
        total += t.num_rows
    if not problems:
        if total != manifest["num_rows"]:
            problems.append(f"{total} rows in the shards, manifest says {manifest['num_rows']}")
        if fp.hexdigest() != manifest["fingerprint"]:
            problems.append(f"content fingerprint {fp.hexdigest()[:12]}... differs from the manifest's {manifest['fingerprint'][:12]}...")
    return VerifyReport(path, not problems, problems, total, fp.hexdigest())


# -- small helpers for tests and the demo ---------------------------------------------
def write_images(
    out_dir: str | Path,
    name: str,
    images: list,
    labels: list[int] | int,
    *,
    family: str = "",
    generator: str = "",
    prompts: list[str] | None = None,
    image_format: str = "png",
    info: dict[str, Any] | None = None,
) -> Path:
    """Package PIL images as a dataset folder (PNG by default; ``jpeg`` for format audits)."""
    if isinstance(labels, int):
        labels = [labels] * len(images)
    with DatasetWriter(out_dir, name, info={"recipe": {"name": name, "version": 1}, "family": family, **(info or {})}) as w:
        for i, (img, lab) in enumerate(zip(images, labels)):
            img = to_rgb(img)
            if image_format == "png":
                data = encode_png(img)
            else:
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=95)
                data = buf.getvalue()
            w.add(
                make_row(
                    id=f"{name}/{i:05d}", image=data, label=lab, dataset=name, family=family, generator=generator,
                    prompt=(prompts[i] if prompts else ""), seed=i, width=img.width, height=img.height, format=image_format,
                ),
                index=i,
            )
    w.finalize()
    return Path(out_dir) / name

