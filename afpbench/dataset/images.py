"""Image bytes in and out of a set: encoding, decoding to RGB, thumbnails and the preview grid.

PIL (and numpy for the high-bit-depth modes) is imported inside the functions, so
importing the dataset package stays light.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from afpbench.errors import DatasetError

#: Thumbnails are JPEG at this quality: small enough to publish, labelled as thumbnails
#: wherever they are shown so nobody audits codecs from them.
THUMB_QUALITY = 85


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


def thumbnail_image(value: Any, side: int):
    """The decoded image scaled (LANCZOS, aspect kept) so its longest side is at most ``side``."""
    from PIL import Image

    img = decode_image(value)
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    return img


def thumbnail(value: Any, side: int) -> bytes:
    """A JPEG thumbnail of an image cell or its bytes (longest side at most ``side``)."""
    buf = io.BytesIO()
    thumbnail_image(value, side).save(buf, format="JPEG", quality=THUMB_QUALITY)
    return buf.getvalue()


def preview_grid(images: Sequence[Any], *, columns: int = 4, cell: int = 192, gap: int = 4) -> bytes:
    """PIL images (thumbnails) laid out in a grid of ``columns``, each centred in a square
    ``cell``, on white; returned as JPEG bytes.

    Images larger than a cell must come already shrunk (:func:`thumbnail_image`); smaller
    ones are enlarged to fit it by pixel repetition (NEAREST), which shows their pixels
    as they are instead of inventing detail.
    """
    from PIL import Image, ImageOps

    if not images:
        raise ValueError("a preview grid needs at least one image")
    cols = min(columns, len(images))
    rows = math.ceil(len(images) / cols)
    sheet = Image.new("RGB", (cols * cell + (cols + 1) * gap, rows * cell + (rows + 1) * gap), (255, 255, 255))
    for k, img in enumerate(images):
        if max(img.size) < cell:
            img = ImageOps.contain(img, (cell, cell), Image.Resampling.NEAREST)
        r, c = divmod(k, cols)
        x = gap + c * (cell + gap) + (cell - img.width) // 2
        y = gap + r * (cell + gap) + (cell - img.height) // 2
        sheet.paste(img, (x, y))
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=THUMB_QUALITY)
    return buf.getvalue()


__all__ = ["encode_png", "to_rgb", "decode_image", "thumbnail_image", "thumbnail", "preview_grid", "THUMB_QUALITY"]
