"""``afpbench import``: package existing images as afpbench datasets.

For the sets that cannot be regenerated (closed models, face datasets) and for the
authors' own test archive. Inputs: a folder tree, a .tar/.tar.gz/.tgz/.zip archive, or
a Hugging Face dataset saved with ``save_to_disk``.

Every entry of the input ends up either as a row or in the manifest's ``rejects`` with
a reason: nothing is dropped silently (the original evaluation code skipped ``.JPG`` and
``.webp`` files and scored a folder of fakes with the real label). That includes what a
walk or an unpacker would skip without a word: unreadable folders and files, link loops,
dangling links, named pipes and devices, archive members that are links or devices or
whose path is absolute or climbs out with '..', members far too large, and a damaged
archive's tail. With ``--count``, the entries left unread once the sample is complete
are counted as "not examined". In the authors' archive layout, files under no set folder
are listed in ``<out>/import-unmatched.json`` and counted by the CLI.

Safety: no member path ever becomes a path on disk (a compressed tar is unpacked under
numbered names), and an entry's declared size is checked before a byte of it is read;
a large entry is sniffed from its first megabyte before being read whole. Row ids are
the set name plus the whole input path, extension included, unique by construction and
free of control characters (see ``row_ids``). An import never replaces a different
dataset at ``<out>/<name>`` without ``overwrite``; re-running the same import replaces
it only when the content is the same.

Images keep their original bytes; only modes a detector cannot read unambiguously as
8-bit RGB (CMYK, 16-bit, alpha, palette) are converted, losslessly to PNG, with the
original mode and format kept in ``meta``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import stat
import tarfile
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from afpbench._util.io import atomic_write_text
from afpbench._util.locking import lock_scope
from afpbench.dataset import (
    DatasetWriter,
    WriterOptions,
    check_set_name,
    clean_id,
    encode_png,
    existing_target,
    make_row,
    to_rgb,
    unique_ids,
)
from afpbench.errors import AfpbenchError, DatasetError
from afpbench.sources import files
from afpbench.sources.files import IMAGE_EXTENSIONS
from afpbench.sources.hf import is_saved_dataset

# Decompression-bomb guard: the declared size is checked before any pixel is decoded.
DEFAULT_MAX_PIXELS = 64_000_000
# Modes kept as they are; everything else is converted to RGB (see the module doc).
KEEP_MODES = {"RGB", "L"}
LABEL_DIRS = {"0_real": 0, "1_fake": 1}
# A file larger than this is first sniffed from its first HEAD_BYTES: content that no
# image format recognises is rejected without reading (or unpacking) the rest.
SNIFF_ABOVE = 4 * 1024 * 1024
HEAD_BYTES = 1024 * 1024
NOT_AN_IMAGE = "not an image (content is not a recognised image format)"
OUTSIDE_SETS = "outside every set folder (no folder on its path is named like a test set)"


def max_file_bytes(max_pixels: int) -> int:
    """The largest file accepted as one image: 8-bit RGBA of ``max_pixels`` stored raw, plus metadata.

    Checked against the size an archive or the file system declares, before a byte is
    read: a 400 MB member of zeros costs nothing. ``--max-megapixels`` raises it.
    """
    return max_pixels * 4 + 16 * 1024 * 1024


def _no_read(n: int) -> bytes:  # pragma: no cover - entries with an error are never read
    raise AssertionError("an input with an error is never read")


@dataclass
class InputFile:
    """One entry of the input: its path inside the input, and how to read its bytes.

    ``read(n)`` returns the first ``n`` bytes (all of them when ``n`` exceeds the size),
    so a large file can be sniffed and capped without being read whole. ``error`` is a
    reject reason known without reading (unsafe archive member, dangling link...).
    """

    relpath: str
    read: Callable[[int], bytes] = _no_read
    label_hint: int | None = None   # from a 0_real / 1_fake folder or an HF label column
    extra: dict[str, Any] = field(default_factory=dict)
    size: int | None = None         # declared size in bytes, when known before reading
    error: str | None = None


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
    overwrite: bool = False          # replace a different dataset already at <out>/<name>

    @property
    def max_bytes(self) -> int:
        return max_file_bytes(self.max_pixels)


def _count_text(reasons: dict[str, int]) -> str:
    return ", ".join(f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass
class ImportSummary:
    """Every entry the import saw, in exactly one category: imported, rejected or not examined."""

    name: str
    path: Path
    imported: int
    converted: int
    rejected: int
    reasons: dict[str, int]
    seen: int = 0                    # entries of the input given to this set
    not_examined: int = 0            # left unread because --count images were already kept
    count: int | None = None

    def line(self) -> str:
        rej = f"; rejected {self.rejected} ({_count_text(self.reasons)}; listed in manifest.json)" if self.rejected else "; rejected 0"
        rest = f"; not examined {self.not_examined} (--count {self.count} reached)" if self.not_examined else ""
        return (f"{self.name}: {self.seen} files seen: imported {self.imported} images into {self.path} "
                f"({self.converted} converted to RGB){rej}{rest}")

    def lines(self) -> list[str]:
        return [self.line()]


@dataclass
class ArchiveSummary:
    """The authors' archive split into sets, plus the entries that belong to none."""

    sets: list[ImportSummary]
    unmatched: list[dict[str, str]]
    unmatched_path: Path | None

    def lines(self) -> list[str]:
        out = [s.line() for s in self.sets]
        if self.unmatched:
            kinds = Counter(_reason_kind(u["reason"]) for u in self.unmatched)
            out.append(f"unmatched: {len(self.unmatched)} files belong to no set ({_count_text(dict(kinds))}); listed in {self.unmatched_path}")
        else:
            out.append("unmatched: 0 (every file is under a set folder)")
        return out


# -- enumerating inputs ---------------------------------------------------------------
def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _path_key(rel: str) -> tuple[str, ...]:
    # Folders and archives are ordered alike: by path components, as a walk meets them.
    return tuple(rel.split("/"))


def iter_inputs(source: Path, scratch: Path | None = None, max_bytes: int | None = None) -> Iterator[InputFile]:
    """Every entry of ``source`` in a fixed (sorted) order; bytes are read lazily.

    Entries that cannot be images or cannot be read safely (unreadable folders, link
    loops, dangling links, special files, archive links and devices, absolute or '..'
    member paths) come back with ``error`` set, so the import lists them as rejects.
    A compressed tar cannot be read in random order without re-decompressing from the
    start, so it is first unpacked, streaming, into ``scratch`` (disk, not memory);
    members over ``max_bytes`` are never unpacked.
    """
    cap = max_bytes if max_bytes is not None else max_file_bytes(DEFAULT_MAX_PIXELS)
    if not source.exists():
        raise AfpbenchError(f"Input {source} does not exist; pass an existing folder, .tar/.tar.gz/.zip archive or saved HF dataset with --from.")
    if is_saved_dataset(source):
        yield from _iter_hf(source)
    elif source.is_dir():
        yield from _iter_folder(source)
    elif not os.access(source, os.R_OK):
        raise AfpbenchError(f"Cannot read {source} (permission denied); fix its permissions or copy it somewhere readable.")
    elif source.suffix.lower() == ".zip":
        yield from _iter_zip(source)
    elif tarfile.is_tarfile(source):
        with open(source, "rb") as fh:
            magic = fh.read(6)
        opener = _decompressor(magic)
        if opener is not None:
            yield from _iter_tar_stream(source, opener, scratch or source.parent / f".{source.name}.afpbench-extract", cap)
        else:
            yield from _iter_tar(source)
    elif zipfile.is_zipfile(source):  # after tar: a tar whose last member is a zip looks like one
        yield from _iter_zip(source)
    else:
        raise AfpbenchError(f"{source} is neither a folder, a .tar/.tar.gz/.zip archive nor a saved HF dataset; convert it to one of those.")


# folders
def _file_reader(path: Path) -> Callable[[int], bytes]:
    def read(n: int) -> bytes:
        with open(path, "rb") as fh:
            return fh.read(n)
    return read


def _iter_folder(root: Path) -> Iterator[InputFile]:
    try:
        root.stat()
        with os.scandir(root):
            pass
    except OSError as exc:
        raise AfpbenchError(f"Cannot read folder {root} ({_why(exc)}); fix its permissions (chmod u+rx) or copy the images somewhere readable.") from exc
    # Every entry, hidden ones included: an import accounts for all it was given.
    for e in files.walk(root, include_hidden=True):
        if e.problem is None:
            yield InputFile(e.relpath, _file_reader(e.path), size=e.size)
        else:
            yield InputFile(e.relpath, error=_walk_reason(e))


def _walk_reason(e: files.Entry) -> str:
    """The reject reason of what the folder walk could not walk (see afpbench.sources.files)."""
    detail = {
        files.UNREADABLE_FOLDER: f"{e.detail}; the files in it were not seen",
        files.DANGLING_LINK: f"its target {e.detail} does not exist",
        files.INNER_LINK: f"{e.detail}; its files are imported under their own path",
    }.get(e.problem, e.detail)
    return f"{e.problem} ({detail})"


# archives
def _member_path_problem(name: str) -> str | None:
    """Why an archive member's path is unsafe (absolute, '..', a drive), or None."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return "unsafe path in archive (absolute path)"
    if ".." in posix.split("/"):
        return "unsafe path in archive (contains '..')"
    return None


def _member_relpath(name: str) -> str:
    return PurePosixPath(name).as_posix()  # "./a//b.jpg" -> "a/b.jpg"


def _tar_problem(m: tarfile.TarInfo) -> str | None:
    why = _member_path_problem(m.name)
    if why:
        return why
    if m.issym():
        return f"link in archive (symbolic link to {m.linkname})"
    if m.islnk():
        return f"link in archive (hard link to {m.linkname})"
    if m.ischr() or m.isblk():
        return "special file in archive (device)"
    if m.isfifo():
        return "special file in archive (named pipe)"
    if not m.isfile():
        return f"special file in archive (tar type {m.type!r})"
    return None


def _tar_damaged(exc: BaseException) -> InputFile:
    return InputFile("<rest of the archive>", error=f"damaged archive ({' '.join(str(exc).split())[:120]}; the members after this point were not seen)")


def _iter_tar(source: Path) -> Iterator[InputFile]:
    """An uncompressed tar, read in place: headers first, each member's bytes when checked."""
    try:
        tf = tarfile.open(source)
    except (tarfile.TarError, OSError) as exc:
        raise AfpbenchError(f"Cannot open the archive {source} ({exc}); re-download it or unpack it and pass the folder.") from exc
    lock = threading.Lock()  # one file handle: the checking threads must take turns

    def reader(m: tarfile.TarInfo) -> Callable[[int], bytes]:
        def read(n: int) -> bytes:
            with lock:
                fh = tf.extractfile(m)
                return fh.read(n) if fh is not None else b""
        return read

    out: list[InputFile] = []
    try:
        for m in tf:
            if m.isdir():
                continue
            why = _tar_problem(m)
            rel = m.name if why and why.startswith("unsafe") else _member_relpath(m.name)
            out.append(InputFile(rel, reader(m), size=m.size, error=why))
    except (tarfile.TarError, EOFError) as exc:
        out.append(_tar_damaged(exc))
    yield from sorted(out, key=lambda f: _path_key(f.relpath))


def _decompressor(magic: bytes) -> Callable[..., Any] | None:
    """The opener of a compressed tar, from its first bytes (None: not compressed).

    The archive is decompressed by gzip/bz2/lzma file objects rather than by tarfile's
    own stream: those bound each read's output, while tarfile's stream decompresses a
    whole 10 KB block at once, which a block of zeros turns into ~10 MB.
    """
    import bz2
    import gzip
    import lzma

    if magic[:2] == b"\x1f\x8b":
        return gzip.open
    if magic[:3] == b"BZh":
        return bz2.open
    if magic == b"\xfd7zXZ\x00":
        return lzma.open
    return None


def _damaged_stream(exc: BaseException) -> bool:
    """Whether ``exc`` means the compressed data is bad (not, e.g., a full disk)."""
    import lzma
    import zlib

    if isinstance(exc, (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)):
        return True
    # gzip.BadGzipFile and bz2's "Invalid data stream" are OSErrors without an errno.
    return isinstance(exc, OSError) and exc.errno is None


def _iter_tar_stream(source: Path, opener: Callable[..., Any], scratch: Path, cap: int) -> Iterator[InputFile]:
    """A compressed tar, unpacked once, streaming, into ``scratch`` under numbered names.

    Members are written as 0000000, 0000001... so no member path ever becomes a path on
    disk (nothing can land outside ``scratch``, two members of one name both survive);
    unsafe members and members over ``cap`` bytes are recorded, never unpacked. The
    index is reused by a resumed import of the same (unchanged) archive.
    """
    target, index = scratch / "unpacked", scratch / "index.json"
    st = source.stat()
    stamp = {"source": str(source.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "cap": cap}
    entries: list[dict[str, Any]] | None = None
    if index.is_file():
        try:
            saved = json.loads(index.read_text())
            entries = saved["entries"] if saved.get("stamp") == stamp else None
        except (ValueError, KeyError, TypeError):
            entries = None
    if entries is None:
        shutil.rmtree(scratch, ignore_errors=True)
        target.mkdir(parents=True)
        entries = []
        k = 0
        try:
            with opener(source, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tf:
                for m in tf:
                    if m.isdir():
                        continue
                    why = _tar_problem(m)
                    entry: dict[str, Any] = {"name": m.name if why and why.startswith("unsafe") else _member_relpath(m.name), "size": m.size}
                    if why:
                        entry["error"] = why
                    elif m.size <= cap:  # larger members are skipped by the stream, never unpacked
                        fname = f"{k:07d}"
                        k += 1
                        src = tf.extractfile(m)
                        with open(target / fname, "wb") as dst:
                            shutil.copyfileobj(src, dst, 1024 * 1024)
                        entry["file"] = fname
                    entries.append(entry)
        except Exception as exc:
            if not _damaged_stream(exc):
                raise
            entries.append({"name": "<rest of the archive>", "error": _tar_damaged(exc).error})
        atomic_write_text(index, json.dumps({"stamp": stamp, "entries": entries}))
    out = []
    for e in entries:
        if e.get("error"):
            out.append(InputFile(e["name"], error=e["error"]))
        elif e.get("file"):
            out.append(InputFile(e["name"], _file_reader(target / e["file"]), size=e["size"]))
        else:  # over the cap: rejected as too large before any read
            out.append(InputFile(e["name"], size=e["size"]))
    yield from sorted(out, key=lambda f: _path_key(f.relpath))


def _iter_zip(source: Path) -> Iterator[InputFile]:
    try:
        zf = zipfile.ZipFile(source)
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise AfpbenchError(f"Cannot open the zip archive {source} ({exc}); re-download it or unpack it and pass the folder.") from exc

    def reader(info: zipfile.ZipInfo) -> Callable[[int], bytes]:
        def read(n: int) -> bytes:
            with zf.open(info) as fh:  # ZipFile serialises reads of its shared handle itself
                return fh.read(n)
        return read

    out = []
    for info in infos:
        if info.is_dir():
            continue
        mode = info.external_attr >> 16  # Unix mode, when the archive was made on Unix
        why = _member_path_problem(info.filename)
        if why is None and stat.S_ISLNK(mode):
            why = "link in archive (symbolic link)"
        elif why is None and stat.S_IFMT(mode) and not stat.S_ISREG(mode):
            why = f"special file in archive ({files.special_kind(mode)})"
        elif why is None and info.flag_bits & 0x1:
            why = "encrypted archive member (password protected)"
        rel = info.filename if why and why.startswith("unsafe") else _member_relpath(info.filename)
        out.append(InputFile(rel, reader(info), size=info.file_size, error=why))
    yield from sorted(out, key=lambda f: _path_key(f.relpath))


# Hugging Face datasets saved with save_to_disk
def _iter_hf(path: Path) -> Iterator[InputFile]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as exc:
        raise AfpbenchError(f"Cannot load the saved dataset at {path} ({exc}); save it again with save_to_disk.") from exc
    if isinstance(ds, datasets.DatasetDict):
        split = "test" if "test" in ds else sorted(ds)[0]
        ds = ds[split]
    image_col = next((c for c, f in ds.features.items() if isinstance(f, datasets.Image)), None)
    if image_col is None:
        raise AfpbenchError(f"The HF dataset at {path} has no Image column; add one (datasets.Image()) before importing.")
    ds = ds.cast_column(image_col, datasets.Image(decode=False))
    label_feat = ds.features.get("label")
    names = [n.lower() for n in label_feat.names] if isinstance(label_feat, datasets.ClassLabel) else None

    def reader(i: int) -> Callable[[int], bytes]:
        def read(n: int) -> bytes:
            cell = ds[i][image_col]  # one row at a time: the set's bytes are never all in memory
            if cell.get("bytes") is not None:
                return cell["bytes"][:n]
            with open(cell["path"], "rb") as fh:
                return fh.read(n)
        return read

    for i, row in enumerate(ds):
        cell = row[image_col]
        rid = row.get("id")
        # The row's own id, else its file name (with the extension), else its position.
        rel = str(rid) if rid not in (None, "") else (PurePosixPath(str(cell["path"])).name if cell.get("path") else f"{i:07d}")
        hint = None
        if "label" in row and row["label"] is not None:
            lab = row["label"]
            hint = {"real": 0, "fake": 1}.get(names[lab]) if names else int(lab)
        prompt = row.get("prompt") or row.get("text") or row.get("caption") or ""
        if cell.get("bytes") is not None:
            size: int | None = len(cell["bytes"])
        elif cell.get("path"):
            try:
                size = os.stat(cell["path"]).st_size
            except OSError as exc:
                yield InputFile(rel, error=f"unreadable file ({_why(exc)}: {cell['path']})")
                continue
        else:
            yield InputFile(rel, error="empty file (the image cell has neither bytes nor a path)")
            continue
        # An HF Image column is declared image content: its checks go by content, not extension.
        yield InputFile(rel, reader(i), hint, {"prompt": prompt, "declared_image": True}, size=size)


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


def _could_be_image(head: bytes) -> bool:
    """Whether any image format Pillow reads recognises ``head`` by its magic bytes.

    Formats without a magic test (TGA...) are left out: their headers are a few bytes,
    so when ``Image.open`` failed on a whole megabyte they cannot be read from the file.
    """
    from PIL import Image

    Image.init()
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        try:
            if accept is not None and accept(head):
                return True
        except Exception:
            continue
    return False


def _sniff(head: bytes, max_pixels: int) -> str | None:
    """A reject reason decided from a large file's first bytes, or None to read it all."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(head)) as img:
            w, h = img.size
    except Image.DecompressionBombError:
        return "declared size is far beyond PIL's limit (decompression-bomb guard)"
    except UnidentifiedImageError:
        return None if _could_be_image(head) else NOT_AN_IMAGE
    except Exception:
        return None  # e.g. a header longer than the head: decide on the whole file
    if w * h > max_pixels:
        return f"declared size {w}x{h} exceeds the {max_pixels // 1_000_000}-megapixel limit (decompression-bomb guard)"
    return None


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _too_large(size: int, cap: int) -> str:
    return f"too large ({_mb(size)}; one image may have at most {_mb(cap)}, raise --max-megapixels to allow more)"


def read_checked(f: InputFile, max_pixels: int, cap: int) -> Checked:
    """Check one entry: declared size first, then a sniff of its head, then the whole file.

    A member is never read past ``cap`` bytes, and one that is larger than
    ``SNIFF_ABOVE`` is read whole only when its first bytes look like an image.
    """
    if f.size is not None and f.size > cap:
        return Checked(False, _too_large(f.size, cap))
    try:
        if f.size is None or f.size > SNIFF_ABOVE:
            head = f.read(HEAD_BYTES)
            why = _sniff(head, max_pixels) if len(head) == HEAD_BYTES else None
            if why:
                return Checked(False, why)
        # Ask for no more than the declared size (+1 to see a file that grew): readers
        # allocate what is asked for before they know how much there is.
        raw = f.read((min(f.size, cap) if f.size is not None else cap) + 1)
    except OSError as exc:
        if isinstance(exc, (zipfile.BadZipFile, tarfile.TarError)) or not exc.strerror:
            return Checked(False, f"unreadable archive member ({' '.join(str(exc).split())[:80]})")
        return Checked(False, f"unreadable file ({_why(exc)})")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, RuntimeError, NotImplementedError, ValueError) as exc:
        return Checked(False, f"unreadable archive member ({type(exc).__name__}: {' '.join(str(exc).split())[:80]})")
    if len(raw) > cap:  # the declared size was wrong (a file that grew, a lying header)
        return Checked(False, _too_large(len(raw), cap))
    if f.size is not None and len(raw) > f.size:
        return Checked(False, f"changed while it was read (larger than its declared {f.size} bytes)")
    return check_image(raw, max_pixels)


# -- the import -----------------------------------------------------------------------
def _key_text(key: Any) -> str:
    return json.dumps(key, sort_keys=True, default=str)


def _label_of(name: str, label: str | None, source: Path) -> tuple[int, str, dict[str, Any]]:
    """(label id, family, manifest info) for a set name."""
    from afpbench import catalog

    if name in catalog.recipes():
        r = catalog.get_recipe(name)
        info = {
            "recipe": {"name": r.name, "version": r.version, "params": r.resolved_params(),
                       "choices": {k: p.model_dump() for k, p in r.choices().items()}, "description": r.description},
            "label": r.label, "family": r.family, "paper_name": r.paper_name,
            # What was done, not what the recipe would do: these images are the user's.
            "description": f"Images imported from {source.name}, declared to be the catalog set '{r.name}' ({r.description.rstrip('.')}).",
        }
        if label and label != r.label:
            raise AfpbenchError(f"'{name}' is a {r.label} set in the catalog; drop --label {label} or import under another name.")
        return r.label_id, r.family, info
    if label not in ("real", "fake"):
        from afpbench.registry import did_you_mean

        raise did_you_mean(name, list(catalog.recipes()), "dataset", "To import a set outside the catalog, pass --label real|fake.")
    info = {"recipe": {"name": name, "version": 1}, "label": label, "family": "imported",
            "description": f"Images imported from {source.name} as a {label} set outside the afpbench catalog."}
    return (0 if label == "real" else 1), "imported", info


def _has_image_ext(f: InputFile) -> bool:
    return f.extra.get("declared_image", False) or PurePosixPath(f.relpath).suffix.lower() in IMAGE_EXTENSIONS


def _path_label(relpath: str) -> int | None:
    for part in PurePosixPath(relpath).parts[:-1]:
        if part.lower() in LABEL_DIRS:
            return LABEL_DIRS[part.lower()]
    return None


def row_ids(name: str, relpaths: list[str]) -> list[str]:
    """Row ids of a set's inputs, unique by construction.

    The id is the set name and the input's whole path, extension included (a.jpg and
    a.png are two rows), with control characters percent-encoded; the same path twice
    (two archive members of one name, two HF rows of one file name) gets ``#2``...
    in input order.
    """
    return unique_ids(f"{name}/{clean_id(r)}" for r in relpaths)


def _import_key(cfg: ImportConfig) -> dict[str, Any]:
    return {"name": cfg.name, "source": str(Path(cfg.source).resolve()), "count": cfg.count, "seed": cfg.seed,
            "label": cfg.label, "max_pixels": cfg.max_pixels}


def _check_target(cfg: ImportConfig, key: dict[str, Any]) -> None:
    """Refuse, before any work, to import over a different dataset (or other files)."""
    if cfg.overwrite:
        return
    final = cfg.out / str(cfg.name)
    state, manifest = existing_target(final)
    if state in ("absent", "empty"):
        return
    if state == "dataset" and _key_text((manifest.get("import") or {}).get("key")) == _key_text(key):
        return  # the same import again: it replaces the set only if the content is the same
    what = (f"the dataset '{manifest.get('name')}' ({manifest.get('num_rows')} rows, made by other parameters or another command)"
            if state == "dataset" else "files that are not an afpbench dataset")
    raise DatasetError(f"{final} already holds {what}; pass --overwrite to replace it, or import under another name or --out.")


@lock_scope
def import_set(cfg: ImportConfig, files: list[InputFile] | None = None) -> ImportSummary:
    """Import ``cfg.source`` (or the given ``files``) as the set ``cfg.name``."""
    name = check_set_name(cfg.name, "NAME")
    label, family, info = _label_of(name, cfg.label, Path(cfg.source))
    key = _import_key(cfg)
    _check_target(cfg, key)  # before the input is read or unpacked
    own_scratch = files is None
    _lock_output(cfg, cfg.name, scratch=own_scratch)
    if files is None:
        files = list(iter_inputs(cfg.source, _scratch(cfg), cfg.max_bytes))
    if not files:
        raise AfpbenchError(f"{cfg.source} holds no files; point --from at the folder or archive with the images.")
    # Every entry is shown once, under a unique name: rejects are listed by it.
    shown = unique_ids(f.relpath for f in files)
    problems = [(n, f) for n, f in zip(shown, files) if f.error]
    cands = [(n, f) for n, f in zip(shown, files) if not f.error]
    if not problems and not any(_has_image_ext(f) for _, f in cands):
        raise AfpbenchError(f"{cfg.source} holds {len(files)} file(s) but none with an image extension ({', '.join(sorted(IMAGE_EXTENSIONS))}); point --from at the images.")
    ids = row_ids(name, [f.relpath for _, f in cands])
    info.update(source={"path": str(cfg.source), "files": len(files)}, seed=cfg.seed, acquisition="import", resume_key=key)
    writer = DatasetWriter(cfg.out, name, info=info, options=WriterOptions(flush_rows=cfg.flush_rows, overwrite=cfg.overwrite))
    order = list(range(len(cands)))
    if cfg.count is not None:
        # A seeded permutation; the first `count` images that pass the checks are kept.
        random.Random(cfg.seed).shuffle(order)
    done = writer.done_ids()
    seen: dict[str, str] = {}
    for rid, meta in zip(writer.partial_column("id"), writer.partial_column("meta")):
        seen[json.loads(meta).get("sha256", "")] = rid
    accepted = len(done)
    target = cfg.count if cfg.count is not None else len(cands)
    local_reasons: Counter[str] = Counter()

    def rej(path: str, reason: str) -> None:
        local_reasons[_reason_kind(reason)] += 1
        writer.reject(path, reason)

    def prepare(i: int) -> tuple[int, Checked | None, str]:
        f = cands[i][1]
        if not _has_image_ext(f):
            ext = PurePosixPath(f.relpath).suffix.lower()
            return i, None, f"not an image file extension ({ext or 'none'})"
        return i, read_checked(f, cfg.max_pixels, cfg.max_bytes), ""

    try:
        with writer, ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
            for shown_name, f in problems:
                rej(shown_name, str(f.error))
            chunk = max(8, 4 * cfg.workers)
            pos = 0
            while pos < len(order) and accepted < target:
                todo = [i for i in order[pos:pos + chunk] if ids[i] not in done]
                pos += chunk
                for i, chk, why in pool.map(prepare, todo):
                    if accepted >= target:
                        break
                    shown_name, f = cands[i]
                    if chk is None or not chk.ok:
                        rej(shown_name, why if chk is None else chk.reason)
                        continue
                    hint = f.label_hint if f.label_hint is not None else _path_label(f.relpath)
                    if hint is not None and hint != label:
                        rej(shown_name, f"labelled {'real' if hint == 0 else 'fake'} by its folder but '{name}' is a {'real' if label == 0 else 'fake'} set")
                        continue
                    if chk.sha256 in seen:
                        rej(shown_name, f"duplicate of {seen[chk.sha256]}")
                        continue
                    rid = ids[i]
                    seen[chk.sha256] = rid
                    writer.add(
                        make_row(id=rid, image=chk.data, label=label, dataset=name, family=family,
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
        why = _count_text(dict(local_reasons)) or "all rejected"
        raise AfpbenchError(f"None of the {len(files)} file(s) in {cfg.source} could be imported ({why}); nothing was written.")
    manifest = writer.finalize(extra_manifest={"import": {"key": key}})
    if own_scratch:
        _drop_scratch(cfg)
    reasons = Counter(_reason_kind(r["reason"]) for r in manifest["rejects"])
    # Count conversions from the final rows, so a resumed import reports all of them.
    from afpbench.dataset import open_dataset

    conv = sum(1 for m in open_dataset(cfg.out / name).column("meta") if "converted_from" in m)
    rows, rejected = manifest["num_rows"], len(manifest["rejects"])
    return ImportSummary(name, cfg.out / name, rows, conv, rejected, dict(reasons), seen=len(files),
                         not_examined=max(0, len(files) - rows - rejected), count=cfg.count)


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
    on where the set sat in the archive. Entries with an error go with the set their
    path names, so they are listed among that set's rejects.
    """
    from afpbench.catalog import resolve_alias

    groups: dict[str, list[InputFile]] = {}
    unknown: list[InputFile] = []
    for f in files:
        parts = PurePosixPath(f.relpath).parts
        for k, part in enumerate(parts[:-1]):
            name = resolve_alias(part)
            if name:
                check_set_name(name, "The set folder")  # catalog names are plain; never trust that blindly
                hint = f.label_hint if f.label_hint is not None else _path_label(f.relpath)
                rel = PurePosixPath(*parts[k + 1:]).as_posix()
                groups.setdefault(name, []).append(replace(f, relpath=rel, label_hint=hint))
                break
        else:
            unknown.append(f)
    return groups, unknown


UNMATCHED_FILE = "import-unmatched.json"


@lock_scope
def import_archive(cfg: ImportConfig) -> ArchiveSummary:
    """Split the authors' archive into its sets; entries under no set folder are listed apart."""
    _lock_output(cfg, None, scratch=True)
    files = list(iter_inputs(cfg.source, _scratch(cfg), cfg.max_bytes))
    groups, unknown = split_archive(files)
    if not groups:
        raise AfpbenchError(
            f"No folder in {cfg.source} is named like a test set (COCO, SD2, DALLE-2, ...); name the set: afpbench import NAME --from PATH."
        )
    subs = {name: ImportConfig(**{**cfg.__dict__, "name": name}) for name in sorted(groups)}
    for sub in subs.values():  # refuse before importing any set, not halfway through
        _check_target(sub, _import_key(sub))
    out = [import_set(sub, groups[name]) for name, sub in subs.items()]
    _drop_scratch(cfg)
    path = cfg.out / UNMATCHED_FILE
    shown = unique_ids(f.relpath for f in unknown)
    unmatched = [{"input": clean_id(n), "reason": f.error or OUTSIDE_SETS} for n, f in zip(shown, unknown)]
    if unmatched:
        # Not part of any set's manifest (they belong to none): listed here, counted by the CLI.
        atomic_write_text(path, json.dumps({"source": str(cfg.source), "unmatched": unmatched}, indent=1, ensure_ascii=False) + "\n")
    elif path.exists():
        path.unlink()  # a list from an earlier import would describe another archive
    return ArchiveSummary(out, unmatched, path if unmatched else None)
