"""Real photos written as the awkward files an import meets in the wild."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _photo(i: int = 0, size: int = 96) -> Image.Image:
    from afpbench.sources.photos import photo_images

    name, img = photo_images()[i]
    return img.resize((size, size), Image.BICUBIC)


def _bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1x1 PNG whose header declares a huge size (CRC fixed so only the size is wrong)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature + (length, type) of the IHDR chunk
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:ihdr + 13])) & 0xFFFFFFFF
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def write_messy_folder(root: Path) -> dict[str, set[str]]:
    """Write good and bad inputs; return the expected {'imported': names, 'rejected': names}."""
    root.mkdir(parents=True, exist_ok=True)
    rgb = _photo(0)
    rgb.save(root / "good.jpg", quality=90)
    _photo(1).save(root / "UPPER.PNG")
    _photo(2).save(root / "photo.webp", quality=90)
    _photo(3).convert("L").save(root / "grey.png")
    _photo(4).convert("CMYK").save(root / "cmyk.jpg")
    arr16 = (np.asarray(_photo(5).convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(arr16).save(root / "deep16.png")  # uint16 -> mode I;16
    _photo(6).convert("P", palette=Image.ADAPTIVE).save(root / "palette.png")
    rgba = _photo(7).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(root / "alpha.png")
    sub = root / "nested"
    sub.mkdir(exist_ok=True)
    _photo(8).save(sub / "deeper.jpeg", quality=85)
    full = (root / "good.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("this is not a png\n")
    (root / "bomb.png").write_bytes(_bomb_png())
    (root / "zz_copy_of_good.jpg").write_bytes(full)
    (root / "notes.txt").write_text("captions and such\n")
    return {
        "imported": {"good.jpg", "UPPER.PNG", "photo.webp", "grey.png", "cmyk.jpg", "deep16.png", "palette.png", "alpha.png", "nested/deeper.jpeg"},
        "converted": {"cmyk.jpg", "deep16.png", "palette.png", "alpha.png"},
        "rejected": {"truncated.jpg", "empty.png", "text.png", "bomb.png", "zz_copy_of_good.jpg", "notes.txt"},
    }
