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

Only numpy, pyarrow, pydantic and PIL are imported here; ``datasets`` is imported lazily when the
Hugging Face feature metadata is needed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from afpbench import LABEL_NAMES, __version__
from afpbench._util.io import atomic_write_text
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


# -- names and ids --------------------------------------------------------------------
# A set name becomes a folder under --out: one plain ASCII path component, never a path.
_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")


def check_set_name(name: Any, what: str = "The set name") -> str:
    """``name`` when it is a plain folder name, else a one-line DatasetError.

    No path separators, no '..', no control characters, no leading dot: a name is joined
    to --out, and anything else could write outside it or hide there.
    """
    if isinstance(name, str) and _SET_NAME.fullmatch(name) and ".." not in name:
        return name
    shown = str(name).encode("unicode_escape").decode("ascii")
    raise DatasetError(
        f"{what} '{shown}' is not a plain folder name; use letters, digits, '_', '-', '+' or '.' "
        f"(starting with a letter or digit, no '..', at most 100 characters)."
    )


def _is_control(ch: str) -> bool:
    # Cc: C0/C1 controls (newline, escape...); Cf: invisible format characters such as
    # the bidi overrides that make a name display as another; Zl/Zp: line separators.
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")


def clean_id(text: str) -> str:
    """``text`` with control and format characters percent-encoded (``%0A``), else unchanged.

    Row ids reach terminals, logs, CSV and HTML; a newline or an escape sequence in one
    would forge lines there. Printable text is kept as it is so ids stay readable.
    """
    if not any(_is_control(c) for c in text):
        return text
    return "".join("".join(f"%{b:02X}" for b in c.encode("utf-8")) if _is_control(c) else c for c in text)


def has_control(text: str) -> bool:
    return any(_is_control(c) for c in text)


def unique_ids(ids: Iterable[str]) -> list[str]:
    """``ids`` made unique deterministically: a repeat gets ``#2``, ``#3``... (first free).

    The input order decides which occurrence keeps the plain id, so callers pass ids in a
    fixed (sorted) order; unique inputs come back unchanged.
    """
    out: list[str] = []
    used: set[str] = set()
    for rid in ids:
        cand, k = rid, 1
        while cand in used:
            k += 1
            cand = f"{rid}#{k}"
        used.add(cand)
        out.append(cand)
    return out


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
        self._h.update(self.feed(table))

    def update_bytes(self, feed: bytes) -> None:
        """Fold in what :meth:`feed` returned for the next rows (shards hashed in parallel)."""
        self._h.update(feed)

    @staticmethod
    def feed(table: pa.Table) -> bytes:
        """The bytes a table's rows add to the fingerprint: per row, sha256(image) + fields.

        Hashing the concatenation equals hashing row by row, so shards can compute their
        feeds in parallel threads and be folded in, in order, afterwards.
        """
        cols = {c: table.column(c).to_pylist() for c in COLUMNS if c != "image"}
        out = []
        i = 0
        for chunk in table.column("image").chunks:  # chunk by chunk: no combined copy
            images = chunk.field("bytes")
            for k in range(len(chunk)):
                out.append(hashlib.sha256(images[k].as_buffer()).digest())
                out.append(json.dumps([cols[c][i] for c in cols], ensure_ascii=False).encode())
                i += 1
        return b"".join(out)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def library_versions() -> dict[str, str | None]:
    from afpbench.envinfo import version

    return {lib: version(lib) for lib in LIBRARIES}


# -- atomic file helpers --------------------------------------------------------------
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
    # Replace a different dataset already at <out>/<name> (the CLI's --overwrite). Without
    # it, finalize replaces only an empty folder or a dataset with the same content.
    overwrite: bool = False


class DatasetWriter:
    """Append rows, then ``finalize`` into a dataset folder; resumable across processes.

    ``info`` is merged into the manifest (recipe, params, generator, source, seed...).
    Rows may be added in any order and by several processes (each with its own
    ``rank``); ``index`` gives a row's place in the final order (default: its id).
    """

    def __init__(self, out_dir: str | Path, name: str, *, info: dict[str, Any] | None = None, options: WriterOptions | None = None):
        self.out_dir = Path(out_dir)
        self.name = check_set_name(name)
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
        # One line each, without control characters: rejects are printed and listed.
        self._rejects.append(Reject(clean_id(str(input_name)), clean_id(" ".join(reason.split()))))

    def flush(self) -> None:
        """Write buffered rows (and rejects) as one part, atomically."""
        if not self._opened or (not self._rows and not self._rejects):
            return
        stem = f"part-r{self.opts.rank:03d}-{self._seq:06d}"
        parts = self.partial_dir / "parts"
        if self._rows:
            from afpbench._util.io import replacing

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

        An existing ``<out>/<name>`` is replaced only when it is empty, holds a dataset
        with the same content (fingerprint), or ``options.overwrite`` is set; otherwise a
        DatasetError is raised and the partial build is kept, so a re-run with
        ``--overwrite`` finishes without redoing any row.

        The new folder is written in full beside the old one and swapped in: when writing
        fails (disk full, Ctrl-C) the half-written folder is removed, the previous dataset
        is untouched and the parts stay, so running again finishes the job.
        """
        try:
            return self._finalize(card=card, extra_manifest=extra_manifest)
        except BaseException:
            from afpbench._util.io import remove

            remove(self._tmp_dir())
            raise

    def _tmp_dir(self) -> Path:
        return self.out_dir / f".{self.name}.tmp-{os.getpid()}"

    def _finalize(self, *, card: str | None, extra_manifest: dict[str, Any] | None) -> dict[str, Any]:
        import pyarrow.compute  # noqa: F401  (pa.compute below; a submodule is not imported with pyarrow)

        self.flush()
        if not self.opts.overwrite and existing_target(self.final_dir)[0] == "other":
            raise self._refusal("files that are not an afpbench dataset")
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
        if not self.opts.overwrite:
            # Checked again at the end: something may have appeared there meanwhile.
            state, old = existing_target(self.final_dir)
            old_fp = str((old or {}).get("fingerprint", ""))
            if state == "other" or (state == "dataset" and old_fp != manifest["fingerprint"]):
                shutil.rmtree(tmp_dir, ignore_errors=True)
                raise self._refusal(
                    f"a different dataset (fingerprint {old_fp[:12]}..., this one {manifest['fingerprint'][:12]}...)"
                    if state == "dataset" else "files that are not an afpbench dataset"
                )
        _swap_in(tmp_dir, self.final_dir)
        self.abandon()
        return manifest

    def _refusal(self, what: str) -> DatasetError:
        return DatasetError(
            f"{self.final_dir} already holds {what}; nothing was replaced. Re-run with --overwrite to replace it "
            f"(finished rows are kept in {self.partial_dir} and are not redone), or choose another name or --out."
        )


def existing_target(final: Path) -> tuple[str, dict[str, Any] | None]:
    """What ``final`` holds now: ("absent"|"empty"|"dataset"|"other", its manifest or None).

    "dataset" needs a readable manifest.json that is a JSON object with a fingerprint;
    anything else that is there (a file, a folder of other things, a damaged manifest)
    is "other" and is never replaced without --overwrite.
    """
    final = Path(final)
    if not final.exists() and not final.is_symlink():
        return "absent", None
    if final.is_dir() and not final.is_symlink():
        try:
            if not any(final.iterdir()):
                return "empty", None
            manifest = json.loads((final / "manifest.json").read_text())
        except (OSError, ValueError):
            return "other", None
        if isinstance(manifest, dict) and isinstance(manifest.get("fingerprint"), str):
            return "dataset", manifest
    return "other", None


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


# -- manifest -------------------------------------------------------------------------
_HEX64 = r"^[0-9a-f]{64}$"


class ManifestShard(BaseModel):
    """One shard as ``manifest.json`` lists it."""

    model_config = ConfigDict(extra="allow", strict=True)

    path: str = Field(description="Path of the parquet file, relative to the set folder.")
    sha256: str = Field(pattern=_HEX64, description="sha256 of the file's bytes.")
    num_rows: int = Field(ge=0, description="Rows in the file.")
    bytes: int = Field(ge=0, description="Size of the file.")

    @field_validator("path")
    @classmethod
    def _inside_the_set(cls, value: str) -> str:
        # A listed path is opened relative to the set folder: it must not lead out of it.
        parts = value.split("/")
        if not value or value.startswith("/") or "\\" in value or ":" in parts[0] or any(x in ("", ".", "..") for x in parts) or not value.endswith(".parquet"):
            raise ValueError("must be a relative path to a .parquet file inside the set folder (no '..', not absolute)")
        return value


class Manifest(BaseModel):
    """The part of ``manifest.json`` every reader relies on; recipe-specific fields
    (recipe, params, generator, source, rejects...) are kept as extras."""

    model_config = ConfigDict(extra="allow", strict=True)

    schema_version: int = Field(ge=1, description="Manifest schema version; readers refuse newer ones.")
    name: str = Field(description="Set name.")
    num_rows: int = Field(ge=0, description="Rows in the set.")
    counts: dict[str, int] = Field(description="Rows per label name (real, fake).")
    formats: dict[str, int] | None = Field(None, description="Rows per stored image format.")
    shards: list[ManifestShard] = Field(description="The parquet shards, in row order.")
    fingerprint: str = Field(pattern=_HEX64, description="Content hash of the rows (see _Fingerprint).")

    @field_validator("counts")
    @classmethod
    def _label_counts(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(LABEL_NAMES))
        if unknown:
            raise ValueError(f"has label(s) {', '.join(unknown)}; only {', '.join(LABEL_NAMES)} exist")
        if any(v < 0 for v in value.values()):
            raise ValueError("has a negative count")
        return value


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def load_manifest(folder: str | Path) -> dict[str, Any]:
    """Read and validate ``<folder>/manifest.json``; every defect is a one-line DatasetError."""
    mpath = Path(folder) / "manifest.json"
    fix = "restore the set's manifest.json or rebuild the set"
    try:
        data = json.loads(mpath.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise DatasetError(f"{mpath} is not UTF-8 text; {fix}.") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{mpath} is not valid JSON ({exc.msg} at line {exc.lineno}); {fix}.") from None
    except OSError as exc:
        raise DatasetError(f"{mpath} cannot be read ({exc.strerror or exc}); check its permissions or {fix}.") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{mpath} is not a JSON object; {fix}.")
    version = data.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > MANIFEST_SCHEMA_VERSION:
        raise DatasetError(f"{mpath} uses manifest schema {version}, newer than this afpbench understands ({MANIFEST_SCHEMA_VERSION}); upgrade afpbench.")
    try:
        Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise DatasetError(f"{mpath} is malformed at {where}: {_one_line(first['msg'])} ({exc.error_count()} error(s)); {fix}.") from None
    return data


def manifest_claims(manifest: dict[str, Any]) -> list[str]:
    """Where a (valid) manifest contradicts itself: row totals of shards, counts, formats."""
    problems = []
    n = manifest["num_rows"]
    listed = sum(s["num_rows"] for s in manifest["shards"])
    if listed != n:
        problems.append(f"manifest.json: its shards hold {listed} rows in total, its num_rows says {n}")
    if sum(manifest["counts"].values()) != n:
        problems.append(f"manifest.json: its label counts {manifest['counts']} add up to {sum(manifest['counts'].values())} rows, its num_rows says {n}")
    formats = manifest.get("formats")
    if formats is not None and sum(formats.values()) != n:
        problems.append(f"manifest.json: its format counts add up to {sum(formats.values())} rows, its num_rows says {n}")
    paths = [s["path"] for s in manifest["shards"]]
    if len(set(paths)) != len(paths):
        problems.append("manifest.json: a shard is listed twice")
    return problems


def _parquet(path: Path, folder: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"Shard {path} cannot be read ({_one_line(exc)}); run 'afpbench verify {folder}' and rebuild the set.") from None


def recover_interrupted(out_dir: str | Path, name: str) -> None:
    """Undo what a killed writer of set ``name`` left in ``out_dir``; call it holding the set's lock.

    A previous dataset moved aside by a swap that was killed halfway is put back, and
    half-written folders and temporary parts are removed (finished parts are kept: they
    are the resumable work).
    """
    import glob

    from afpbench._util.io import remove

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
    """Read a dataset folder written by ``DatasetWriter`` (or imported).

    Opening checks the manifest (schema, types, its own totals) and that every shard is
    there with its listed size; it does not hash the shards: :func:`check_contents`
    does, and ``evaluate`` calls it before scoring.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not self.path.is_dir():
            raise DatasetError(f"Dataset folder {self.path} does not exist; build or import it first (afpbench build / afpbench import).")
        if not mpath.exists():
            raise DatasetError(f"{self.path} has no manifest.json; it is not an afpbench dataset (build or import it first).")
        self.manifest: dict[str, Any] = load_manifest(self.path)
        claims = manifest_claims(self.manifest)
        if claims:
            raise DatasetError(f"{mpath} contradicts itself ({claims[0].split(': ', 1)[1]}); run 'afpbench verify {self.path}' and rebuild the set.")
        self.shards = [self.path / s["path"] for s in self.manifest["shards"]]
        for s, p in zip(self.manifest["shards"], self.shards):
            if not p.is_file():
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

    def shards_for(self, stop: int | None = None) -> list[int]:
        """Indices of the shards that hold rows ``[0, stop)`` (all shards for None)."""
        stop = self.num_rows if stop is None else min(stop, self.num_rows)
        out, pos = [], 0
        for i, s in enumerate(self.manifest["shards"]):
            if pos >= stop:
                break
            out.append(i)
            pos += s["num_rows"]
        return out

    def iter_batches(self, batch_size: int = 64, columns: Iterable[str] | None = None, start: int = 0, stop: int | None = None) -> Iterator[list[dict[str, Any]]]:
        """Rows ``[start, stop)`` in order, as lists of dicts, one shard row group at a time."""
        stop = self.num_rows if stop is None else min(stop, self.num_rows)
        cols = list(columns) if columns else None
        pos = 0
        pending: list[dict[str, Any]] = []
        for shard in self.shards:
            pf = _parquet(shard, self.path)
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

    def column(self, name: str, stop: int | None = None) -> list[Any]:
        """One column of rows ``[0, stop)``, reading only the shards that hold them."""
        stop = self.num_rows if stop is None else min(stop, self.num_rows)
        tables = []
        for i in self.shards_for(stop):
            try:
                tables.append(pq.read_table(self.shards[i], columns=[name]))
            except (pa.ArrowException, OSError) as exc:
                raise DatasetError(f"Shard {self.shards[i]} cannot be read ({_one_line(exc)}); run 'afpbench verify {self.path}' and rebuild the set.") from None
        if not tables:
            return []
        return pa.concat_tables(tables).column(name).to_pylist()[:stop]

    def ids(self, stop: int | None = None) -> list[str]:
        return self.column("id", stop)

    def labels(self, stop: int | None = None) -> list[int]:
        return self.column("label", stop)

    def rows(self, batch_size: int = 64, **kw: Any) -> Iterator[dict[str, Any]]:
        for batch in self.iter_batches(batch_size, **kw):
            yield from batch


def open_dataset(path: str | Path) -> DatasetReader:
    return DatasetReader(path)


# -- content checks ---------------------------------------------------------------------
@dataclass
class ContentReport:
    """What :func:`check_contents` found for one set."""

    problems: list[str] = field(default_factory=list)
    #: Rows in the shards that were read.
    num_rows: int = 0
    #: Recomputed content fingerprint ("" unless every shard was read in full).
    fingerprint: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)


@dataclass
class _ShardResult:
    problems: list[str] = field(default_factory=list)
    rows: int = 0
    feed: bytes = b""
    labels: dict[int, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)


def _check_shard(folder: Path, entry: dict[str, Any], sha: bool, content: bool) -> _ShardResult:
    """Size, footer and (``sha``) sha256 of one shard; with ``content`` also its rows
    (fingerprint feed, label and format counts)."""
    rel = entry["path"]
    p = folder / rel
    out = _ShardResult()
    if not p.is_file():
        out.problems.append(f"{rel}: missing")
        return out
    size = p.stat().st_size
    if size != entry["bytes"]:
        out.problems.append(f"{rel}: {size} bytes, manifest says {entry['bytes']}")
        return out
    if sha:
        digest = sha256_file(p)
        if digest != entry["sha256"]:
            out.problems.append(f"{rel}: sha256 {digest[:12]}... differs from the manifest's {entry['sha256'][:12]}...")
            return out
    try:
        pf = pq.ParquetFile(p)
        missing = [c for c in COLUMNS if c not in pf.schema_arrow.names]
        if missing:
            out.problems.append(f"{rel}: lacks column(s) {', '.join(missing)}")
            return out
        out.rows = pf.metadata.num_rows
        if out.rows != entry["num_rows"]:
            out.problems.append(f"{rel}: {out.rows} rows, manifest says {entry['num_rows']}")
        if content:
            feeds = []
            for g in range(pf.num_row_groups):
                t = pf.read_row_group(g, columns=list(COLUMNS))
                feeds.append(_Fingerprint.feed(t))
                for lab in t.column("label").to_pylist():
                    out.labels[lab] = out.labels.get(lab, 0) + 1
                for f in t.column("format").to_pylist():
                    out.formats[f] = out.formats.get(f, 0) + 1
                del t
            out.feed = b"".join(feeds)
            # Once per shard, not per row group: handing pages back to the OS after every
            # row group made each read fault its buffers in again (3-4x slower reads),
            # while row groups of one shard reuse the same few pages.
            _release_arrow_memory()
    except Exception as exc:  # a shard that hashes right but does not parse is still bad
        out.problems.append(f"{rel}: unreadable ({type(exc).__name__}: {_one_line(exc)})")
    return out


def _run_tasks(tasks: list[tuple[Path, dict[str, Any], bool, bool]], workers: int | None) -> list[_ShardResult]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = max(1, min(workers if workers is not None else min(4, cpus), len(tasks)))
    if n == 1:
        return [_check_shard(*t) for t in tasks]
    from concurrent.futures import ThreadPoolExecutor

    # hashlib and pyarrow release the GIL: the threads hash and read shards in parallel.
    with ThreadPoolExecutor(n, thread_name_prefix="afpbench-check") as pool:
        return list(pool.map(lambda t: _check_shard(*t), tasks))


def _shards_holding(manifest: dict[str, Any], rows: int | None) -> list[dict[str, Any]]:
    out, pos = [], 0
    for s in manifest["shards"]:
        if rows is not None and pos >= rows:
            break
        out.append(s)
        pos += s["num_rows"]
    return out


def _compare(manifest: dict[str, Any], results: list[_ShardResult]) -> ContentReport:
    """A whole set's shard results against its manifest's claims."""
    rep = ContentReport(problems=manifest_claims(manifest))
    for r in results:
        rep.problems += r.problems
        rep.num_rows += r.rows
    if any(r.problems for r in results):
        return rep
    fp = _Fingerprint()
    for r in results:
        fp.update_bytes(r.feed)
        for lab, c in r.labels.items():
            name = LABEL_NAMES[lab] if lab in (0, 1) else repr(lab)
            rep.counts[name] = rep.counts.get(name, 0) + c
        for f, c in r.formats.items():
            rep.formats[f] = rep.formats.get(f, 0) + c
    rep.fingerprint = fp.hexdigest()
    bad_labels = sorted(set(rep.counts) - set(LABEL_NAMES))
    if bad_labels:
        rep.problems.append(f"the shards hold label value(s) {', '.join(bad_labels)}; only 0 (real) and 1 (fake) exist")
    if rep.num_rows != manifest["num_rows"]:
        rep.problems.append(f"{rep.num_rows} rows in the shards, manifest says {manifest['num_rows']}")
    have = {n: rep.counts.get(n, 0) for n in LABEL_NAMES}
    claimed = {n: manifest["counts"].get(n, 0) for n in LABEL_NAMES}
    if have != claimed:
        rep.problems.append(f"label counts in the shards are {have}, manifest says {claimed}")
    if manifest.get("formats") is not None and dict(sorted(rep.formats.items())) != dict(sorted(manifest["formats"].items())):
        rep.problems.append(f"format counts in the shards are {dict(sorted(rep.formats.items()))}, manifest says {manifest['formats']}")
    if rep.fingerprint != manifest["fingerprint"]:
        rep.problems.append(f"content fingerprint {rep.fingerprint[:12]}... differs from the manifest's {manifest['fingerprint'][:12]}...")
    return rep


def check_contents(items: Sequence[tuple[Path, dict[str, Any], int | None]], *, sha256: bool = True, workers: int | None = None) -> list[ContentReport]:
    """Check sets against their manifests: ``items`` are (folder, manifest, rows); the
    manifests must have passed :func:`load_manifest`.

    ``rows=None`` checks a whole set: every shard's size and row count, the rows read
    back to recompute the content fingerprint, the row total and the label and format
    counts, and (``sha256``) every shard's sha256. Without ``sha256`` the content alone is
    compared (what evaluate needs: the rows it scores are the rows the manifest
    describes) and shards are hashed only when it differs, to name the one that changed.
    ``rows=N`` checks size, sha256 and row count of the shards holding the first N rows
    (what an ``evaluate --limit N`` reads: a fingerprint needs every row).

    Shards of all sets are checked in a pool of up to ``workers`` threads (default: up to
    4, one per available core).
    """
    tasks, owner = [], []
    for k, (folder, manifest, rows) in enumerate(items):
        for entry in _shards_holding(manifest, rows):
            tasks.append((Path(folder), entry, sha256 or rows is not None, rows is None))
            owner.append(k)
    results = _run_tasks(tasks, workers)
    reports = []
    for k, (folder, manifest, rows) in enumerate(items):
        mine = [r for o, r in zip(owner, results) if o == k]
        if rows is not None:
            rep = ContentReport()
            for r in mine:
                rep.problems += r.problems
                rep.num_rows += r.rows
        else:
            rep = _compare(manifest, mine)
            if rep.problems and not sha256:
                # Name the shard that changed, if its bytes did (else the manifest's claims were edited).
                hashed = _run_tasks([(Path(folder), e, True, False) for e in manifest["shards"]], workers)
                rep.problems = [p for r in hashed for p in r.problems if "sha256" in p] + rep.problems
        reports.append(rep)
    return reports


def check_content(folder: str | Path, manifest: dict[str, Any] | None = None, rows: int | None = None) -> ContentReport:
    """:func:`check_contents` for one set (its manifest is loaded when not given)."""
    folder = Path(folder)
    return check_contents([(folder, manifest if manifest is not None else load_manifest(folder), rows)])[0]


# -- verify ---------------------------------------------------------------------------
@dataclass
class VerifyReport:
    path: Path
    ok: bool
    problems: list[str] = field(default_factory=list)
    num_rows: int = 0
    fingerprint: str = ""


def verify(path: str | Path) -> VerifyReport:
    """Check a set against its manifest: the manifest's own form and totals, every
    shard's size, sha256 and row count, unlisted shards, the row total, label and format
    counts and the recomputed content fingerprint. A malformed manifest is one problem."""
    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise DatasetError(f"{path} has no manifest.json; point 'afpbench verify' at a dataset folder (one with manifest.json).")
    try:
        manifest = load_manifest(path)
    except DatasetError as exc:
        return VerifyReport(path, False, [str(exc)])
    listed = {s["path"] for s in manifest["shards"]}
    problems = [f"{extra.relative_to(path).as_posix()}: not listed in the manifest" for extra in sorted((path / "data").glob("*.parquet")) if extra.relative_to(path).as_posix() not in listed]
    rep = check_content(path, manifest)
    problems += rep.problems
    return VerifyReport(path, not problems, problems, rep.num_rows, rep.fingerprint)
