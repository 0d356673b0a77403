"""Writing a set: :class:`DatasetWriter` (resumable parts, then an atomic finalize).

Rows are appended to Arrow IPC *parts* in ``<out>/.afpbench-partial/<name>/`` (each part
written to a temporary name and renamed, so a killed process never leaves a half part).
``finalize`` then sorts every row by its index, cuts shards, writes the preview grid, the
manifest and the card into a temporary folder and swaps it in with renames. So an
interrupted build or import leaves either the previous dataset or a resumable partial
one, never a corrupt shard; and the final bytes do not depend on how the work was split
into parts or processes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from afpbench import LABEL_NAMES, __version__
from afpbench._util.hashing import sha256_bytes, sha256_file
from afpbench._util.io import atomic_write_bytes, atomic_write_text, remove, replacing, tmp_name
from afpbench.dataset._arrow import release_memory, runs
from afpbench.dataset.fingerprint import ContentFingerprint, RecipeFingerprint
from afpbench.dataset.manifest import MANIFEST_SCHEMA_VERSION, PREVIEW_FILE, Manifest
from afpbench.dataset.names import check_set_name, clean_id
from afpbench.dataset.reader import sample_rows
from afpbench.dataset.schema import COLUMN_NAMES, DICTIONARY_COLUMNS, Row, arrow_schema, part_schema
from afpbench.errors import DatasetError

logger = logging.getLogger(__name__)

PARTIAL_DIR = ".afpbench-partial"
# Shards are cut by size so that 1024 px PNG sets do not make multi-GB files and tiny
# sets stay in one file (the Hub's viewer and streaming work best below ~500 MB).
DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
# Images are read back one row group at a time; small groups keep readers' memory flat.
# Groups are cut by rows and by bytes: 64 rows of 1024 px PNGs would be ~100 MB.
ROW_GROUP_ROWS = 64
ROW_GROUP_BYTES = 16 * 1024 * 1024
# A flushed part is written as record batches of at most this many image bytes, and
# finalize reads it back one such batch at a time: both hold a few MB whatever the
# flush buffer or the set size (converting a whole 16 MB buffer at once cost ~4x that).
PART_BATCH_BYTES = 2 * 1024 * 1024
# The card's preview grid: the gallery's default sample (12 rows, seed 0), 4 per line.
PREVIEW_ROWS = 12
PREVIEW_COLUMNS = 4
PREVIEW_CELL = 192


# -- the resume key: one serialization for the writer and for build's early checks -----
def resume_key_text(key: Any) -> str:
    """The one serialization of a resume key, used wherever two keys are compared (the
    partial folder's ``info.json``, a manifest's ``build.key``/``import.key``)."""
    return json.dumps(key, sort_keys=True, default=str)


def partial_path(out_dir: str | Path, name: str) -> Path:
    """Where the resumable parts of set ``name`` under ``out_dir`` live."""
    return Path(out_dir) / PARTIAL_DIR / name


def check_resume(out_dir: str | Path, name: str, key: Any) -> None:
    """Refuse a partial build of ``name`` made with another resume key (one-line DatasetError).

    Called by :meth:`DatasetWriter.open`, and by ``build`` before it loads any model.
    """
    info = partial_path(out_dir, name) / "info.json"
    if not info.is_file():
        return
    try:
        data = json.loads(info.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DatasetError(f"{info} cannot be read; delete {info.parent} to start over.") from None
    old = data.get("resume_key") if isinstance(data, dict) else None
    if old != resume_key_text(key):
        raise DatasetError(
            f"{info.parent} holds a partial build of '{name}' with other parameters; re-run with the same parameters to resume, "
            f"or delete that folder to start over."
        )


# -- writer -----------------------------------------------------------------------------
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


def _rows_to_batch(rows: list[Row], indices: list[int]) -> pa.RecordBatch:
    cols: dict[str, list[Any]] = {c: [r[c] for r in rows] for c in COLUMN_NAMES}
    cols["_index"] = indices
    return pa.RecordBatch.from_pydict(cols, schema=part_schema())


@dataclass
class _Index:
    """Where every kept row is in the parts, in final order (see ``_collect_index``)."""

    part_files: list[Path]
    #: (part, record batch, row in batch) of every row in the parts.
    loc: list[tuple[int, int, int]]
    #: Image bytes of every row in the parts.
    sizes: list[int]
    #: Positions (into loc/sizes) of the kept rows, in final order.
    keep: list[int]


class _PartRows:
    """Rows taken out of the parts by position, one record batch in memory per rank."""

    def __init__(self, index: _Index):
        self.index = index
        self.cache: OrderedDict[tuple[int, int], pa.RecordBatch] = OrderedDict()
        # Rows of K ranks interleave, so a row group draws on K parts at once.
        self.max_cached = len({p.name.split("-")[1] for p in index.part_files}) + 1

    def batch(self, key: tuple[int, int]) -> pa.RecordBatch:
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        # A plain file read of one record batch: only its bytes come into memory.
        with pa.OSFile(str(self.index.part_files[key[0]])) as fh:
            self.cache[key] = ipc.open_file(fh).get_batch(key[1])
        while len(self.cache) > self.max_cached:
            self.cache.popitem(last=False)
        return self.cache[key]

    def take(self, positions: list[int]) -> pa.Table:
        """The rows at ``positions``, in that order (runs from one batch are taken at once)."""
        loc = self.index.loc
        pieces, run_key, run_rows = [], None, []
        for pos in positions + [-1]:
            key, r = (loc[pos][:2], loc[pos][2]) if pos >= 0 else (None, None)
            if key != run_key and run_rows:
                pieces.append(pa.Table.from_batches([self.batch(run_key).take(pa.array(run_rows, pa.int64()))]))
                run_rows = []
            run_key = key
            if pos >= 0:
                run_rows.append(r)
        return pa.concat_tables(pieces)


@dataclass
class _Written:
    """What writing the shards found: the manifest's content fields and the preview tiles."""

    shards: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {n: 0 for n in LABEL_NAMES})
    formats: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""
    recipe_fingerprint: str = ""
    #: (row id, thumbnail image) of the sampled rows, in row order.
    thumbs: list[tuple[str, Any]] = field(default_factory=list)


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
        self.partial_dir = partial_path(self.out_dir, name)
        self._rows: list[Row] = []
        self._indices: list[int] = []
        self._buffer_bytes = 0
        self._rejects: list[Reject] = []
        self._seq = 0
        self._done: set[str] | None = None
        self._opened = False

    # context manager: flush on exit, even on KeyboardInterrupt, so work is kept.
    def __enter__(self) -> DatasetWriter:
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.flush()

    def open(self) -> None:
        if self._opened:
            return
        (self.partial_dir / "parts").mkdir(parents=True, exist_ok=True)
        # A partial made by a different recipe/parameters must not be mixed in.
        key = self.info.get("resume_key", self.info.get("recipe"))
        check_resume(self.out_dir, self.name, key)
        info_path = self.partial_dir / "info.json"
        if not info_path.exists() and self.opts.rank == 0:
            atomic_write_text(info_path, json.dumps({"resume_key": resume_key_text(key), "name": self.name}))
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

    def add(self, row: Row, index: int | None = None) -> None:
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
            with replacing(parts / f"{stem}.arrow") as tmp:
                with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, part_schema()) as w:
                    for lo, hi in runs([len(r["image"]["bytes"]) for r in self._rows], PART_BATCH_BYTES):
                        w.write_batch(_rows_to_batch(self._rows[lo:hi], self._indices[lo:hi]))
                        release_memory()
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

    # -- finalize -----------------------------------------------------------------------
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
            remove(self._tmp_dir())
            raise

    def _tmp_dir(self) -> Path:
        return tmp_name(self.final_dir)

    def _finalize(self, *, card: str | None, extra_manifest: dict[str, Any] | None) -> dict[str, Any]:
        self.flush()
        if not self.opts.overwrite and existing_target(self.final_dir)[0] == "other":
            raise self._refusal("files that are not an afpbench dataset")
        rejects = self._collect_rejects()
        index = self._collect_index(rejects)
        head = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "name": self.name,
            **{k: v for k, v in self.info.items() if k != "resume_key"},
            **(extra_manifest or {}),
        }
        tmp_dir = self._tmp_dir()
        shutil.rmtree(tmp_dir, ignore_errors=True)
        (tmp_dir / "data").mkdir(parents=True)
        written = self._write_shards(tmp_dir, index, self._cut_shards(index), head)
        manifest = {
            **head,
            "afpbench_version": __version__,
            "libraries": _library_versions(),
            "created": _created(),
            "num_rows": len(index.keep),
            "counts": written.counts,
            "formats": dict(sorted(written.formats.items())),
            "shards": written.shards,
            "fingerprint": written.fingerprint,
            "recipe_fingerprint": written.recipe_fingerprint,
            **self._write_preview(tmp_dir, written.thumbs),
            "rejects": rejects,
        }
        text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        # The writer writes what readers accept: a field a caller passed with the wrong
        # type fails here, before anything is replaced (the parts stay for a rerun).
        Manifest.model_validate(json.loads(text))
        atomic_write_text(tmp_dir / "manifest.json", text)
        from afpbench.card import render_card

        atomic_write_text(tmp_dir / "README.md", card if card is not None else render_card(manifest))
        if not self.opts.overwrite:
            self._check_replace(manifest["fingerprint"])
        _swap_in(tmp_dir, self.final_dir)
        self.abandon()
        return manifest

    def _collect_rejects(self) -> list[dict[str, str]]:
        rejects: list[dict[str, str]] = []
        for rj in sorted((self.partial_dir / "parts").glob("part-*.rejects.json")):
            rejects.extend(json.loads(rj.read_text()))
        # A resumed run re-checks inputs it had rejected before: keep each reject once.
        return [dict(t) for t in sorted({(("input", r["input"]), ("reason", r["reason"])) for r in rejects})]

    def _collect_index(self, rejects: list[dict[str, str]]) -> _Index:
        """Read the small columns of every part and fix the final order.

        Only ids, sort indices and image sizes are read; image bytes are read later, one
        record batch at a time, so memory stays at a few batches however large the set is
        (a memory map would be cheap to open but its touched pages count as RSS).
        """
        import pyarrow.compute  # noqa: F401  (pa.compute below; a submodule is not imported with pyarrow)

        part_files = sorted((self.partial_dir / "parts").glob("part-*.arrow"))
        if not part_files:
            raise DatasetError(
                f"No image could be added to '{self.name}' ({len(rejects)} input(s) rejected); nothing was written. "
                "Check the input path and the rejects reported above."
            )
        ids_all: list[str] = []
        idx_all: list[int] = []
        loc: list[tuple[int, int, int]] = []
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
        return _Index(part_files, loc, sizes, keep)

    def _cut_shards(self, index: _Index) -> list[list[int]]:
        """The kept positions cut into shards by size, in final row order."""
        return [index.keep[lo:hi] for lo, hi in runs([index.sizes[pos] for pos in index.keep], self.opts.shard_bytes)]

    def _write_shards(self, tmp_dir: Path, index: _Index, groups: list[list[int]], head: dict[str, Any]) -> _Written:
        """Write every shard one row group at a time, hashing, counting and sampling on the way."""
        out = _Written()
        rows = _PartRows(index)
        content, recipe = ContentFingerprint(), RecipeFingerprint(head)
        wanted = set(sample_rows(len(index.keep), PREVIEW_ROWS, 0, self.name))
        schema = arrow_schema()
        row_no = 0
        for k, group in enumerate(groups):
            rel = f"data/test-{k:05d}-of-{len(groups):05d}.parquet"
            # One row group at a time: memory stays at a row group, not a shard.
            # Dictionary encoding only for the short repeated columns: trying it on image
            # bytes would hash a whole row group of images before falling back.
            with pq.ParquetWriter(tmp_dir / rel, schema, compression="none", write_statistics=False, use_dictionary=DICTIONARY_COLUMNS) as pw:
                for lo, hi in runs([index.sizes[pos] for pos in group], ROW_GROUP_BYTES, ROW_GROUP_ROWS):
                    sub = rows.take(group[lo:hi]).drop_columns(["_index"]).cast(schema)
                    content.update(sub)
                    recipe.update(sub)
                    pw.write_table(sub, row_group_size=len(sub))
                    release_memory()
                    for lab in sub.column("label").to_pylist():
                        out.counts[LABEL_NAMES[lab]] += 1
                    for f in sub.column("format").to_pylist():
                        out.formats[f] = out.formats.get(f, 0) + 1
                    for i in sorted(wanted.intersection(range(row_no, row_no + len(sub)))):
                        out.thumbs += _thumb(sub, i - row_no)
                    row_no += len(sub)
                    del sub
            out.shards.append({"path": rel, "sha256": sha256_file(tmp_dir / rel), "num_rows": len(group), "bytes": (tmp_dir / rel).stat().st_size})
        rows.cache.clear()
        out.fingerprint, out.recipe_fingerprint = content.hexdigest(), recipe.hexdigest()
        return out

    def _write_preview(self, tmp_dir: Path, thumbs: list[tuple[str, Any]]) -> dict[str, Any]:
        """Write the card's preview grid; its manifest entry (none when no row could be shown)."""
        if not thumbs:
            return {}
        from afpbench.dataset.images import preview_grid

        data = preview_grid([img for _, img in thumbs], columns=PREVIEW_COLUMNS, cell=PREVIEW_CELL)
        atomic_write_bytes(tmp_dir / PREVIEW_FILE, data)
        return {"preview": {"path": PREVIEW_FILE, "sha256": sha256_bytes(data), "bytes": len(data), "rows": [rid for rid, _ in thumbs]}}

    def _check_replace(self, fingerprint: str) -> None:
        """Checked again at the end: something may have appeared at the target meanwhile."""
        state, old = existing_target(self.final_dir)
        old_fp = str((old or {}).get("fingerprint", ""))
        if state == "other" or (state == "dataset" and old_fp != fingerprint):
            shutil.rmtree(self._tmp_dir(), ignore_errors=True)
            raise self._refusal(
                f"a different dataset (fingerprint {old_fp[:12]}..., this one {fingerprint[:12]}...)"
                if state == "dataset" else "files that are not an afpbench dataset"
            )

    def _refusal(self, what: str) -> DatasetError:
        return DatasetError(
            f"{self.final_dir} already holds {what}; nothing was replaced. Re-run with --overwrite to replace it "
            f"(finished rows are kept in {self.partial_dir} and are not redone), or choose another name or --out."
        )


def _thumb(table: pa.Table, i: int) -> list[tuple[str, Any]]:
    """[(id, thumbnail)] of row ``i`` for the preview grid; [] when it does not decode.

    The preview only shows the set: a row whose bytes PIL cannot turn into a thumbnail
    (possible for bytes a caller stored as they were) is left out, it does not stop the set.
    """
    from afpbench.dataset.images import thumbnail_image

    rid = table.column("id")[i].as_py()
    try:
        return [(rid, thumbnail_image(table.column("image")[i].as_py(), PREVIEW_CELL))]
    except Exception as exc:  # PIL raises many types for undecodable bytes
        logger.warning("preview of %s leaves out row %s (%s: %s)", table.column("dataset")[i].as_py(), rid, type(exc).__name__, exc)
        return []


def _library_versions() -> dict[str, str | None]:
    from afpbench.envinfo import PACKAGES, version

    return {p: version(p) for p in PACKAGES}


def _created() -> str:
    from afpbench._util.clock import utc_timestamp

    return utc_timestamp()


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

    out_dir = Path(out_dir)
    final = out_dir / name
    pattern = glob.escape(name)
    backups = sorted(out_dir.glob(f".{pattern}.old-*"), key=lambda p: p.stat().st_mtime)
    if backups and not final.exists():
        os.replace(backups.pop(), final)
    for leftover in [*backups, *out_dir.glob(f".{pattern}.tmp-*")]:
        remove(leftover)
    partial = partial_path(out_dir, name)
    for leftover in [*partial.glob("parts/.part-*.tmp*"), *partial.glob("parts/.*.tmp-*"), *partial.glob(".*.tmp-*")]:
        remove(leftover)


__all__ = [
    "PARTIAL_DIR", "DEFAULT_SHARD_BYTES", "WriterOptions", "DatasetWriter", "Reject", "existing_target", "recover_interrupted",
    "resume_key_text", "check_resume", "partial_path",
]
