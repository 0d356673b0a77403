"""``afpbench import``: package existing images as afpbench datasets.

For the sets that cannot be regenerated (closed models, face datasets) and for the
authors' own test archive. Inputs: a folder tree, a .tar/.tar.gz/.tgz/.zip archive, or
a Hugging Face dataset saved with ``save_to_disk``.

Every input file ends up either as a row or in the manifest's ``rejects`` with a
reason: nothing is dropped silently (the original evaluation code skipped ``.JPG`` and
``.webp`` files and scored a folder of fakes with the real label). Images keep their
original bytes; only modes a detector cannot read unambiguously as 8-bit RGB (CMYK,
16-bit, alpha, palette) are converted, losslessly to PNG, with the original mode and
format kept in ``meta``.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
import tarfile
import threading
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

from afpbench._util.locking import lock_scope
from afpbench.dataset import DatasetWriter, WriterOptions, encode_png, make_row, to_rgb
from afpbench.errors import AfpbenchError
from afpbench.sources.images import IMAGE_EXTENSIONS

# Decompression-bomb guard: the declared size is checked before any pixel is decoded.
DEFAULT_MAX_PIXELS = 64_000_000
# Modes kept as they are; everything else is converted to RGB (see the module doc).
KEEP_MODES = {"RGB", "L"}
LABEL_DIRS = {"0_real": 0, "1_fake": 1}


@dataclass
class InputFile:
    """One candidate input: its path inside the input, and how to read its bytes."""

    relpath: str
    read: Callable[[], bytes]
    label_hint: int | None = None   # from a 0_real / 1_fake folder or an HF label column
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImportConfig:
    name: str | None                 # a catalog set, a new set (with label), or None: the authors' archive layout
    source: Path
    out: Path
    count: int | None = None
    seed: int = 0
    label: str | None = None         # "real"/"fake" for sets outside the catalog
    max_pixels: int = DEFAULT_MAX_PIXELS
    workers: int = 2
    flush_rows: int = 256
    quiet: bool = False


@dataclass
class ImportSummary:
    name: str
    path: Path
    imported: int
    converted: int
    rejected: int
    reasons: dict[str, int]

    def line(self) -> str:
        why = ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items(), key=lambda kv: -kv[1]))
        rej = f"; rejected {self.rejected} ({why}; listed in manifest.json)" if self.rejected else "; rejected 0"
        return f"{self.name}: imported {self.imported} images into {self.path} ({self.converted} converted to RGB){rej}"


# -- enumerating inputs ---------------------------------------------------------------
def _is_hf_on_disk(path: Path) -> bool:
    return path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists())


def iter_inputs(source: Path, scratch: Path | None = None) -> Iterator[InputFile]:
    """Every file of ``source`` in a fixed (sorted) order; bytes are read lazily.

    A compressed tar cannot be read in random order without re-decompressing from the
    start, so it is first unpacked, streaming, into ``scratch`` (disk, not memory).
    """
    if not source.exists():
        raise AfpbenchError(f"Input {source} does not exist; pass an existing folder, .tar/.tar.gz/.zip archive or saved HF dataset with --from.")
    if _is_hf_on_disk(source):
        yield from _iter_hf(source)
    elif source.is_dir():
        yield from _iter_folder(source)
    elif source.suffix.lower() == ".zip":
        zf = zipfile.ZipFile(source)
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            if not info.is_dir():
                yield InputFile(info.filename, (lambda i=info: zf.read(i)))
    elif tarfile.is_tarfile(source):
        with open(source, "rb") as fh:
            compressed = fh.read(3)[:2] in (b"\x1f\x8b", b"BZ") or source.suffix.lower() in (".xz", ".txz")
        if compressed:
            target = (scratch or source.parent / f".{source.name}.afpbench-extract") / "unpacked"
            done = target.parent / "complete"
            if not done.exists():
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                with tarfile.open(source) as tf:
                    tf.extractall(target, filter="data")  # "data" refuses links and paths escaping the folder
                done.write_text("ok")
            yield from _iter_folder(target)
        else:
            tf = tarfile.open(source)
            lock = threading.Lock()  # one file handle: the checking threads must take turns

            def read(m: tarfile.TarInfo) -> bytes:
                with lock:
                    return tf.extractfile(m).read()

            for m in sorted((m for m in tf.getmembers() if m.isfile()), key=lambda m: m.name):
                yield InputFile(m.name, (lambda m=m: read(m)))
    else:
        raise AfpbenchError(f"{source} is neither a folder, a .tar/.tar.gz/.zip archive nor a saved HF dataset; convert it to one of those.")


def _iter_folder(root: Path) -> Iterator[InputFile]:
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        yield InputFile(p.relative_to(root).as_posix(), p.read_bytes)


def _iter_hf(path: Path) -> Iterator[InputFile]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        split = "test" if "test" in ds else sorted(ds)[0]
        ds = ds[split]
    image_col = next((c for c, f in ds.features.items() if isinstance(f, datasets.Image)), None)
    if image_col is None:
        raise AfpbenchError(f"The HF dataset at {path} has no Image column; add one (datasets.Image()) before importing.")
    ds = ds.cast_column(image_col, datasets.Image(decode=False))
    label_feat = ds.features.get("label")
    names = [n.lower() for n in label_feat.names] if isinstance(label_feat, datasets.ClassLabel) else None
    for i, row in enumerate(ds):
        cell = row[image_col]
        rid = str(row.get("id") or (PurePosixPath(cell["path"]).stem if cell.get("path") else f"{i:07d}"))
        hint = None
        if "label" in row and row["label"] is not None:
            lab = row["label"]
            hint = {"real": 0, "fake": 1}.get(names[lab]) if names else int(lab)
        prompt = row.get("prompt") or row.get("text") or row.get("caption") or ""
        data = cell.get("bytes") or (Path(cell["path"]).read_bytes() if cell.get("path") else b"")
        # An HF Image column is declared image content: its checks go by content, not extension.
        yield InputFile(f"{rid}.{_ext_of(cell.get('path'))}", (lambda d=data: d), hint, {"prompt": prompt, "declared_image": True})


def _ext_of(path: str | None) -> str:
    return PurePosixPath(path).suffix.lstrip(".").lower() if path else "img"


# -- checking one image ---------------------------------------------------------------
@dataclass
class Checked:
    ok: bool
    reason: str = ""
    data: bytes = b""
    format: str = ""
    width: int = 0
    height: int = 0
    sha256: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def check_image(raw: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Checked:
    """Decode fully (catches truncation), guard size, convert only when needed."""
    from PIL import Image, UnidentifiedImageError

    if not raw:
        return Checked(False, "empty file (0 bytes)")
    digest = hashlib.sha256(raw).hexdigest()
    try:
        img = Image.open(io.BytesIO(raw))
    except Image.DecompressionBombError:
        return Checked(False, "declared size is far beyond PIL's limit (decompression-bomb guard)")
    except UnidentifiedImageError:
        return Checked(False, "not an image (content is not a recognised image format)")
    except Exception as exc:
        return Checked(False, f"unreadable image header ({type(exc).__name__})")
    w, h = img.size
    if w * h > max_pixels:
        return Checked(False, f"declared size {w}x{h} exceeds the {max_pixels // 1_000_000}-megapixel limit (decompression-bomb guard)")
    fmt = (img.format or "").lower().replace("mpo", "jpeg")
    try:
        # PIL's own bomb check also fires here; our limit above is stricter and first.
        Image.MAX_IMAGE_PIXELS = max(max_pixels, Image.MAX_IMAGE_PIXELS or 0)
        img.load()
    except Exception as exc:
        return Checked(False, f"truncated or corrupt image data ({' '.join(str(exc).split())[:80]})")
    meta: dict[str, Any] = {"sha256": digest}
    data = raw
    if img.mode not in KEEP_MODES:
        meta.update(converted_from=img.mode, original_format=fmt)
        data = encode_png(to_rgb(img))
        fmt = "png"
    return Checked(True, "", data, fmt or "unknown", w, h, digest, meta)


# -- the import -----------------------------------------------------------------------
def _label_of(name: str, label: str | None) -> tuple[int, str, dict[str, Any]]:
    """(label id, family, manifest info) for a set name."""
    from afpbench import catalog

    if name in catalog.recipes():
        r = catalog.get_recipe(name)
        info = {
            "recipe": {"name": r.name, "version": r.version, "params": r.resolved_params(),
                       "choices": {k: p.model_dump() for k, p in r.choices().items()}},
            "label": r.label, "family": r.family, "paper_name": r.paper_name, "description": r.description,
        }
        if label and label != r.label:
            raise AfpbenchError(f"'{name}' is a {r.label} set in the catalog; drop --label {label} or import under another name.")
        return r.label_id, r.family, info
    if label not in ("real", "fake"):
        from afpbench.registry import did_you_mean

        raise did_you_mean(name, list(catalog.recipes()), "dataset", "To import a set outside the catalog, pass --label real|fake.")
    return (0 if label == "real" else 1), "imported", {"recipe": {"name": name, "version": 1}, "label": label, "family": "imported"}


def _has_image_ext(f: InputFile) -> bool:
    return f.extra.get("declared_image", False) or PurePosixPath(f.relpath).suffix.lower() in IMAGE_EXTENSIONS


def _path_label(relpath: str) -> int | None:
    for part in PurePosixPath(relpath).parts[:-1]:
        if part.lower() in LABEL_DIRS:
            return LABEL_DIRS[part.lower()]
    return None


def _row_id(name: str, relpath: str) -> str:
    stem = PurePosixPath(relpath).with_suffix("").as_posix()
    return f"{name}/{stem}"


@lock_scope
def import_set(cfg: ImportConfig, files: list[InputFile] | None = None) -> ImportSummary:
    """Import ``cfg.source`` (or the given ``files``) as the set ``cfg.name``."""
    assert cfg.name
    label, family, info = _label_of(cfg.name, cfg.label)
    own_scratch = files is None
    _lock_output(cfg, cfg.name, scratch=own_scratch)
    if files is None:
        files = list(iter_inputs(cfg.source, _scratch(cfg)))
    if not files:
        raise AfpbenchError(f"{cfg.source} holds no files; point --from at the folder or archive with the images.")
    images = [f for f in files if _has_image_ext(f)]
    if not images:
        raise AfpbenchError(f"{cfg.source} holds {len(files)} file(s) but none with an image extension ({', '.join(sorted(IMAGE_EXTENSIONS))}); point --from at the images.")
    info.update(source={"path": str(cfg.source), "files": len(files)}, seed=cfg.seed,
                acquisition="import", resume_key={"name": cfg.name, "source": str(cfg.source), "count": cfg.count, "seed": cfg.seed})
    writer = DatasetWriter(cfg.out, cfg.name, info=info, options=WriterOptions(flush_rows=cfg.flush_rows))
    order = list(range(len(files)))
    if cfg.count is not None:
        # A seeded permutation; the first `count` images that pass the checks are kept.
        random.Random(cfg.seed).shuffle(order)
    done = writer.done_ids()
    seen: dict[str, str] = {}
    for rid, meta in zip(writer.partial_column("id"), writer.partial_column("meta")):
        seen[json.loads(meta).get("sha256", "")] = rid
    accepted = len(done)
    converted = 0
    target = cfg.count if cfg.count is not None else len(files)

    local_reasons: Counter[str] = Counter()

    def rej(path: str, reason: str) -> None:
        local_reasons[_reason_kind(reason)] += 1
        writer.reject(path, reason)

    def prepare(i: int) -> tuple[int, InputFile, Checked | None, str]:
        f = files[i]
        ext = PurePosixPath(f.relpath).suffix.lower()
        if not _has_image_ext(f):
            return i, f, None, f"not an image file extension ({ext or 'none'})"
        return i, f, check_image(f.read(), cfg.max_pixels), ""

    try:
        with writer, ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
            chunk = max(8, 4 * cfg.workers)
            pos = 0
            while pos < len(order) and accepted < target:
                todo = []
                for i in order[pos:pos + chunk]:
                    if _row_id(cfg.name, files[i].relpath) not in done:
                        todo.append(i)
                pos += chunk
                for i, f, chk, why in pool.map(prepare, todo):
                    if accepted >= target:
                        break
                    if chk is None:
                        rej(f.relpath, why)
                        continue
                    if not chk.ok:
                        rej(f.relpath, chk.reason)
                        continue
                    hint = f.label_hint if f.label_hint is not None else _path_label(f.relpath)
                    if hint is not None and hint != label:
                        rej(f.relpath, f"labelled {'real' if hint == 0 else 'fake'} by its folder but '{cfg.name}' is a {'real' if label == 0 else 'fake'} set")
                        continue
                    if chk.sha256 in seen:
                        rej(f.relpath, f"duplicate of {seen[chk.sha256]}")
                        continue
                    rid = _row_id(cfg.name, f.relpath)
                    seen[chk.sha256] = rid
                    if "converted_from" in chk.meta:
                        converted += 1
                    writer.add(
                        make_row(id=rid, image=chk.data, label=label, dataset=cfg.name, family=family,
                                 prompt=f.extra.get("prompt", ""), source=f.relpath, seed=cfg.seed,
                                 width=chk.width, height=chk.height, format=chk.format, meta={**chk.meta, "source_path": f.relpath}),
                        index=i,
                    )
                    accepted += 1
    except BaseException:
        writer.flush()
        raise
    if accepted == 0:
        writer.abandon()
        why = ", ".join(f"{n} {r}" for r, n in local_reasons.most_common()) or "all rejected"
        raise AfpbenchError(f"None of the {len(files)} file(s) in {cfg.source} could be imported ({why}); nothing was written.")
    manifest = writer.finalize()
    if own_scratch:
        _drop_scratch(cfg)
    reasons = Counter(_reason_kind(r["reason"]) for r in manifest["rejects"])
    # Count conversions from the final rows, so a resumed import reports all of them.
    from afpbench.dataset import open_dataset

    conv = sum(1 for m in open_dataset(cfg.out / cfg.name).column("meta") if "converted_from" in m)
    return ImportSummary(cfg.name, cfg.out / cfg.name, manifest["num_rows"], conv, len(manifest["rejects"]), dict(reasons))


def _lock_output(cfg: ImportConfig, name: str | None, scratch: bool) -> None:
    """Refuse a second import (or build) of the set into this ``--out`` while one runs.

    The set's lock is the one ``build`` takes; the archive's unpacking folder has its own,
    since imports of different sets from one archive share it.
    """
    from afpbench._util.locking import ensure_output_dir, hold, lock_path
    from afpbench.dataset import recover_interrupted

    ensure_output_dir(cfg.out)
    if name:
        hold(lock_path(cfg.out, name), cfg.out / name)
        recover_interrupted(cfg.out, name)
    if scratch and cfg.source.is_file():  # an archive: it may be unpacked into the scratch folder
        hold(lock_path(cfg.out, _scratch(cfg).name), _scratch(cfg))


def _scratch(cfg: ImportConfig) -> Path:
    return cfg.out / ".afpbench-partial" / f"extract-{cfg.source.name}"


def _drop_scratch(cfg: ImportConfig) -> None:
    scratch = _scratch(cfg)
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        scratch.parent.rmdir()  # only when no partial build is left in it
    except OSError:
        pass


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0].split(" of ")[0]


# -- the authors' archive layout ------------------------------------------------------
def split_archive(files: list[InputFile]) -> tuple[dict[str, list[InputFile]], list[InputFile]]:
    """Group files by the set their path names (``COCO/..``, ``1_fake/SD2/..``, ...).

    Paths inside each group are re-rooted below the set folder, so row ids do not depend
    on where the set sat in the archive.
    """
    from afpbench.catalog import resolve_alias

    groups: dict[str, list[InputFile]] = {}
    unknown: list[InputFile] = []
    for f in files:
        parts = PurePosixPath(f.relpath).parts
        for k, part in enumerate(parts[:-1]):
            name = resolve_alias(part)
            if name:
                hint = f.label_hint if f.label_hint is not None else _path_label(f.relpath)
                rel = PurePosixPath(*parts[k + 1:]).as_posix()
                groups.setdefault(name, []).append(InputFile(rel, f.read, hint, f.extra))
                break
        else:
            unknown.append(f)
    return groups, unknown


@lock_scope
def import_archive(cfg: ImportConfig) -> list[ImportSummary]:
    _lock_output(cfg, None, scratch=True)
    files = list(iter_inputs(cfg.source, _scratch(cfg)))
    groups, unknown = split_archive(files)
    if not groups:
        raise AfpbenchError(
            f"No folder in {cfg.source} is named like a test set (COCO, SD2, DALLE-2, ...); name the set: afpbench import NAME --from PATH."
        )
    out = []
    for name in sorted(groups):
        sub = ImportConfig(**{**cfg.__dict__, "name": name})
        out.append(import_set(sub, groups[name]))
    _drop_scratch(cfg)
    if unknown:
        # Files outside every set folder are reported, not silently skipped.
        (cfg.out / "import-unmatched.json").write_text(json.dumps([f.relpath for f in unknown], indent=1))
    return out
