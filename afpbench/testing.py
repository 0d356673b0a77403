"""Helpers the tests, the demo and the benchmarks share (never used by the library itself).

``write_images`` packages PIL images as a dataset folder, the quickest way to make a set
whose content a test controls.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from afpbench.dataset import DatasetWriter, WriterOptions, encode_png, make_row, to_rgb


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
    overwrite: bool = True,
) -> Path:
    """Package PIL images as a dataset folder (PNG by default; ``jpeg`` for format audits).

    Tests and the demo call this to (re)write fixture sets, so it replaces an existing set
    unless ``overwrite=False``.
    """
    if isinstance(labels, int):
        labels = [labels] * len(images)
    info = {"recipe": {"name": name, "version": 1}, "family": family, **(info or {})}
    with DatasetWriter(out_dir, name, info=info, options=WriterOptions(overwrite=overwrite)) as w:
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
