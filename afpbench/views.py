"""Evaluation views: the same sets with their encoding harmonised, applied to the stored bytes.

A detector that reads the file (``format``, ``size``) and one that reads pixels must see
the same thing, so a view rewrites the encoded image *before* decoding: the row's bytes,
format, width, height and byte count all describe the harmonised file.

==============  ======  ==================================================================
view            rows    what it does
==============  ======  ==================================================================
native          all     the stored bytes (today's behaviour)
jpeg:Q          all     every image re-encoded once as JPEG at quality Q (4:2:0)
codec-matched   fakes   each fake re-encoded with a codec drawn from the paired real pool:
                        format, and for JPEG the estimated quality and subsampling
size-matched    fakes   each fake takes a size drawn from the real pool: resized (Lanczos,
                        aspect ratio kept) to cover it, then centre-cropped to it, so the
                        fakes' sizes follow the pool's exactly and no picture is
                        stretched; re-encoded in its own format (JPEG at its own
                        estimated quality)
crop:N          all     centre crop to N x N without resampling; images smaller than N
                        are left out of that set under this view and listed
==============  ======  ==================================================================

Draws are seeded per row from (view seed, view name, row id), so the same row gets the
same codec or size whatever the batch, worker or process. The real pool's distributions
come from the stored headers of its images (:func:`afpbench.audit.image_features`), read
once before the pass. Re-encoding a JPEG (crop, size-matched) adds one compression
generation at the image's own estimated quality; PNG stays lossless.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from afpbench.errors import AfpbenchError
from afpbench.seeding import row_rng

#: View names without a parameter, and those with one.
VIEWS = ("native", "codec-matched", "size-matched")
PARAM_VIEWS = {"jpeg": (1, 100), "crop": (8, 8192)}


@dataclass(frozen=True)
class Encoded:
    """An encoded image and what a dataset row says about it."""

    data: bytes
    format: str
    width: int
    height: int

    @property
    def nbytes(self) -> int:
        return len(self.data)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Encoded":
        cell = row.get("image") or {}
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if data is None:
            raise AfpbenchError(f"Row {row.get('id')} holds no image bytes; re-import the set so bytes are embedded.")
        return cls(bytes(data), str(row.get("format") or "").lower(), int(row.get("width") or 0), int(row.get("height") or 0))

    def row_fields(self) -> dict[str, Any]:
        """The row columns that describe this file (what row-level detectors read)."""
        return {"image": {"bytes": self.data, "path": None}, "format": self.format, "width": self.width, "height": self.height, "bytes": self.nbytes}


def encode(image: Any, fmt: str, *, quality: int | None = None, subsampling: str | None = None) -> Encoded:
    """Encode an RGB PIL image; JPEG at ``quality`` (and subsampling), PNG losslessly, WebP lossy at ``quality``."""
    fmt = fmt.lower()
    buf = io.BytesIO()
    image = image.convert("RGB")
    if fmt == "jpeg":
        kw: dict[str, Any] = {"quality": int(quality or 75)}
        if subsampling:
            kw["subsampling"] = subsampling
        image.save(buf, format="JPEG", **kw)
    elif fmt == "webp":
        image.save(buf, format="WEBP", quality=int(quality or 80))
    else:
        fmt = "png"
        image.save(buf, format="PNG", compress_level=1)
    return Encoded(buf.getvalue(), fmt, image.width, image.height)


def decode(enc: Encoded) -> Any:
    from afpbench.dataset import decode_image

    return decode_image(enc.data)


def reencode_like(image: Any, original: Encoded) -> Encoded:
    """Encode pixels in the original file's container: PNG stays PNG, a JPEG is re-saved at its own quality."""
    if original.format == "jpeg":
        from afpbench.audit import image_features

        f = image_features(original.data)
        return encode(image, "jpeg", quality=f.jpeg_quality or 75, subsampling=f.subsampling)
    if original.format == "webp":
        return encode(image, "webp")
    return encode(image, "png")


def cover_crop(image: Any, width: int, height: int) -> Any:
    """Resize (aspect kept, Lanczos) so the image covers width x height, then centre-crop to it."""
    from PIL import Image

    if image.size == (width, height):
        return image
    scale = max(width / image.width, height / image.height)
    w, h = max(width, math.ceil(image.width * scale - 1e-9)), max(height, math.ceil(image.height * scale - 1e-9))
    if (w, h) != image.size:
        image = image.resize((w, h), Image.Resampling.LANCZOS)
    left, top = (w - width) // 2, (h - height) // 2
    return image.crop((left, top, left + width, top + height))


class ViewRefusal(Exception):
    """A row this view cannot produce (e.g. smaller than the crop); it is left out and listed."""


@dataclass(frozen=True)
class Codec:
    format: str
    quality: int | None = None
    subsampling: str | None = None


@dataclass
class PoolStats:
    """What matched views draw from: the real pool's codecs and sizes (from stored headers)."""

    names: list[str]
    codecs: list[Codec]
    sizes: list[tuple[int, int]]
    #: Set name -> content fingerprint of the pool sets the statistics were read from.
    fingerprints: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_bytes(cls, names: list[str], blobs: Iterable[bytes], fingerprints: dict[str, str] | None = None) -> "PoolStats":
        from afpbench.audit import image_features

        codecs, sizes = [], []
        for data in blobs:
            f = image_features(data)
            if f.error:
                continue
            codecs.append(Codec(f.format, f.jpeg_quality, f.subsampling) if f.format == "jpeg" else Codec(f.format))
            sizes.append((f.width, f.height))
        if not codecs:
            raise AfpbenchError(f"The real pool ({', '.join(names) or 'none'}) has no readable image to match; evaluate a real set with the matched view.")
        return cls(names, codecs, sizes, dict(fingerprints or {}))

    def record(self) -> dict[str, Any]:
        from collections import Counter

        return {
            "real_pool": list(self.names),
            "fingerprints": dict(self.fingerprints),
            "n": len(self.codecs),
            "formats": dict(Counter(c.format for c in self.codecs)),
            "jpeg_qualities": sorted({c.quality for c in self.codecs if c.quality is not None}),
        }


@dataclass
class View:
    """A named evaluation condition applied to the stored bytes (see the module docstring)."""

    kind: str
    param: int | None = None
    seed: int = 0
    pool: PoolStats | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.param}" if self.param is not None else self.kind

    @property
    def slug(self) -> str:
        """Folder-safe name (``codec-matched``, ``jpeg-90``)."""
        slug = self.name.replace(":", "-")
        return slug if self.seed == 0 else f"{slug}-seed{self.seed}"

    @property
    def native(self) -> bool:
        return self.kind == "native"

    @property
    def matched(self) -> bool:
        return self.kind in ("codec-matched", "size-matched")

    @property
    def needs_pool(self) -> bool:
        return self.matched

    def refuses(self, width: int, height: int) -> bool:
        """Whether this view leaves out an image of this size (crop:N of a smaller image)."""
        return self.kind == "crop" and (int(width) < int(self.param) or int(height) < int(self.param))

    def applies_to(self, label: int) -> bool:
        return not self.native and (not self.matched or int(label) == 1)

    def apply(self, enc: Encoded, label: int, row_id: str) -> Encoded:
        """The row's file under this view (raises ViewRefusal for a row the view leaves out)."""
        if not self.applies_to(label):
            return enc
        if self.kind == "jpeg":
            return encode(decode(enc), "jpeg", quality=self.param)
        if self.kind == "crop":
            n = int(self.param)
            if enc.width < n or enc.height < n:
                raise ViewRefusal(f"{enc.width}x{enc.height} is smaller than the {n}x{n} crop")
            img = decode(enc)
            left, top = (img.width - n) // 2, (img.height - n) // 2
            return reencode_like(img.crop((left, top, left + n, top + n)), enc)
        if self.pool is None:
            raise AfpbenchError(f"View {self.name} needs the real pool's statistics; evaluate a real set with it.")
        rng = row_rng(self.seed, self.kind, str(row_id))
        if self.kind == "codec-matched":
            c = self.pool.codecs[int(rng.integers(len(self.pool.codecs)))]
            return encode(decode(enc), c.format, quality=c.quality, subsampling=c.subsampling)
        if self.kind == "size-matched":
            w, h = self.pool.sizes[int(rng.integers(len(self.pool.sizes)))]
            return reencode_like(cover_crop(decode(enc), w, h), enc)
        raise AssertionError(self.kind)  # parse_view admits only known kinds

    def target_size(self, width: int, height: int, drawn: tuple[int, int]) -> tuple[int, int]:
        """The drawn real size's pixel count at the fake's aspect ratio, when the pool has that aspect; else the drawn size."""
        assert self.pool is not None
        aspect = width / height
        aspects = [w / h for w, h in self.pool.sizes]
        lo, hi = min(aspects), max(aspects)
        if lo * 0.98 <= aspect <= hi * 1.02:
            pixels = drawn[0] * drawn[1]
            w = max(1, round(math.sqrt(pixels * aspect)))
            return w, max(1, round(pixels / w))
        return drawn

    def record(self) -> dict[str, Any]:
        """What predictions and results store about this view."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "param": self.param, "seed": self.seed, "rows": "fakes" if self.matched else ("none" if self.native else "all")}
        if self.pool is not None:
            out["pool"] = self.pool.record()
        return out


def parse_view(spec: str | None, seed: int = 0) -> View:
    """``native``, ``jpeg:90``, ``codec-matched``, ``size-matched``, ``crop:256`` -> a View."""
    text = (spec or "native").strip().lower()
    kind, sep, raw = text.partition(":")
    if kind in VIEWS and not sep:
        return View(kind, None, int(seed))
    if kind in PARAM_VIEWS:
        lo, hi = PARAM_VIEWS[kind]
        try:
            value = int(raw)
        except ValueError:
            raise AfpbenchError(f"View '{spec}' needs an integer parameter; write it like {kind}:{90 if kind == 'jpeg' else 256}.") from None
        if not lo <= value <= hi:
            raise AfpbenchError(f"View '{spec}' is out of range; use {kind}:N with N in {lo}..{hi}.")
        return View(kind, value, int(seed))
    from afpbench.registry import did_you_mean

    raise did_you_mean(text, [*VIEWS, "jpeg:Q", "crop:N"], "view", "Known views: native, jpeg:Q, codec-matched, size-matched, crop:N.")


def parse_views(specs: Sequence[str | None] | None, seed: int = 0) -> list[View]:
    views = [parse_view(s, seed) for s in (specs or ["native"])]
    if len({v.name for v in views}) != len(views):
        raise AfpbenchError("The same view is listed twice; give each --view once.")
    return views


__all__ = ["Encoded", "View", "ViewRefusal", "PoolStats", "Codec", "encode", "decode", "reencode_like", "parse_view", "parse_views", "VIEWS"]
