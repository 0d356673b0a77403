"""Seeded irregular masks for the inpainting sets (lama, and the sd2ip diffusion recipe).

LaMa was trained on free-form "brush stroke" masks: a few poly-lines of random angle,
length and thickness, sometimes with boxes (Suvorov et al. 2022, their
``random_thick_512`` mask config: up to 5 strokes of up to 200 px long and 100 px wide at
512 px, boxes of 30-150 px). The paper does not say which masks its LaMa and SD2IP sets
used, so the shape and coverage here are afpbench choices, recorded in every recipe and
row. This is our own generator in that spirit, not LaMa's code: lengths and widths are
fractions of the image side (so 256 and 512 px masks look alike), and strokes are added
until the hole covers a seeded target fraction between ``min_ratio`` and ``max_ratio``.

Everything is drawn from ``numpy.random.default_rng(seed)`` with the row's seed, so a
mask is reproducible from the row alone. Only numpy and PIL are needed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from afpbench.errors import AfpbenchError

MASK_KINDS = ("irregular", "box", "mixed")


@dataclass(frozen=True)
class MaskConfig:
    """How masks are drawn. Sizes are fractions of the image side."""

    kind: str = "irregular"  # irregular strokes, boxes, or a seeded mix of both
    min_ratio: float = 0.1  # hole fraction is drawn uniformly in [min_ratio, max_ratio]
    max_ratio: float = 0.4
    max_len: float = 0.4  # longest stroke segment (LaMa thick_512: 200/512)
    min_width: float = 0.02
    max_width: float = 0.2  # thickest brush (LaMa thick_512: 100/512)
    max_vertices: int = 5  # segments per stroke
    max_angle: float = 4.0  # radians of turn between segments, as LaMa's generator
    min_box: float = 0.06  # box side range (LaMa: 30-150 px at 512)
    max_box: float = 0.3
    max_attempts: int = 60  # strokes tried before giving up on reaching the target

    def __post_init__(self) -> None:
        if self.kind not in MASK_KINDS:
            raise AfpbenchError(f"Unknown mask kind '{self.kind}'; set mask_kind to one of {', '.join(MASK_KINDS)}.")
        if not 0.0 <= self.min_ratio <= self.max_ratio <= 1.0:
            raise AfpbenchError(
                f"Mask ratios must satisfy 0 <= mask_min_ratio <= mask_max_ratio <= 1 (got {self.min_ratio}, {self.max_ratio}); fix the recipe params."
            )

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "MaskConfig":
        """Read ``mask_kind``, ``mask_min_ratio``... from recipe params (other keys ignored)."""
        names = {f: f for f in cls.__dataclass_fields__}
        kwargs = {}
        for key, value in params.items():
            if key == "mask_kind":
                kwargs["kind"] = value
            elif key.startswith("mask_") and key[5:] in names:
                kwargs[key[5:]] = value
        return cls(**kwargs)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The recipe parameters ``MaskConfig.from_params`` reads.
PARAM_NAMES = frozenset({"mask_kind"} | {f"mask_{name}" for name in MaskConfig.__dataclass_fields__ if name != "kind"})


@dataclass
class Mask:
    """A drawn mask: ``array`` is HxW uint8 with 1 = hole (the pixels to inpaint)."""

    array: Any
    ratio: float
    shapes: int
    target_ratio: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_pil(self):
        """The mask as a PIL ``L`` image, white (255) = hole: the diffusers convention."""
        from PIL import Image

        return Image.fromarray(self.array * 255, mode="L")

    def meta(self) -> dict[str, Any]:
        return {"mask_ratio": round(self.ratio, 6), "mask_target_ratio": round(self.target_ratio, 6), "mask_shapes": self.shapes}


def _stroke(draw, rng, w: int, h: int, cfg: MaskConfig, shrink: float) -> None:
    side = min(w, h)
    x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
    width = max(1, int(side * rng.uniform(cfg.min_width, cfg.max_width) * shrink))
    angle = float(rng.uniform(0, 2 * math.pi))
    points = [(x, y)]
    for _ in range(int(rng.integers(1, cfg.max_vertices + 1))):
        angle += float(rng.uniform(-cfg.max_angle, cfg.max_angle)) / 2
        length = side * float(rng.uniform(0.1, 1.0)) * cfg.max_len * shrink
        x = min(max(x + length * math.cos(angle), 0.0), w - 1.0)
        y = min(max(y + length * math.sin(angle), 0.0), h - 1.0)
        points.append((x, y))
    draw.line(points, fill=1, width=width)
    # Round joints and caps, so strokes look brushed rather than mitred.
    r = width / 2
    for px, py in points:
        draw.ellipse((px - r, py - r, px + r, py + r), fill=1)


def _box(draw, rng, w: int, h: int, cfg: MaskConfig, shrink: float) -> None:
    side = min(w, h)
    bw = max(1, int(side * rng.uniform(cfg.min_box, cfg.max_box) * shrink))
    bh = max(1, int(side * rng.uniform(cfg.min_box, cfg.max_box) * shrink))
    x0 = int(rng.integers(0, max(1, w - bw)))
    y0 = int(rng.integers(0, max(1, h - bh)))
    draw.rectangle((x0, y0, x0 + bw - 1, y0 + bh - 1), fill=1)


def make_mask(size: tuple[int, int], seed: int, config: MaskConfig | None = None) -> Mask:
    """Draw the mask of one row: ``size`` is (width, height), ``seed`` the row seed.

    Shapes are added one at a time; a shape that would push the hole past ``max_ratio``
    is dropped and the next ones are drawn smaller, so the coverage always stays within
    the bound and reaches the seeded target unless ``max_attempts`` runs out.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    cfg = config or MaskConfig()
    w, h = int(size[0]), int(size[1])
    if w < 2 or h < 2:
        raise AfpbenchError(f"Cannot draw a mask of size {w}x{h}; use images of at least 2x2 pixels.")
    rng = np.random.default_rng(int(seed))
    target = float(rng.uniform(cfg.min_ratio, cfg.max_ratio))
    canvas = Image.new("L", (w, h), 0)
    ratio, shapes, shrink = 0.0, 0, 1.0
    for _ in range(cfg.max_attempts):
        if ratio >= target:
            break
        trial = canvas.copy()
        draw = ImageDraw.Draw(trial)
        use_box = cfg.kind == "box" or (cfg.kind == "mixed" and rng.random() < 0.3)
        (_box if use_box else _stroke)(draw, rng, w, h, cfg, shrink)
        new_ratio = float(np.asarray(trial, dtype=np.uint8).mean())
        if new_ratio > cfg.max_ratio:
            shrink *= 0.7  # too big a shape for what is left: try smaller ones
            continue
        canvas, ratio, shapes = trial, new_ratio, shapes + 1
    arr = np.asarray(canvas, dtype=np.uint8).copy()
    return Mask(array=arr, ratio=ratio, shapes=shapes, target_ratio=target, info={"kind": cfg.kind})
