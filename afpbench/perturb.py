"""Robustness perturbations (an afpbench extension: the paper has no such experiments).

A perturbation is a named, seeded chain of image operations applied on the fly to the
decoded image, before the detector's own preprocessing:

========  ==========================  ===============================================
spec      parameter (default)         what it does
========  ==========================  ===============================================
jpeg:q    quality 1-100 (75)          re-encode as JPEG with Pillow
blur:s    Gaussian sigma, px (1.0)    Pillow GaussianBlur with standard deviation s
resize:f  scale factor (0.5)          bicubic resize of both sides by f
crop:n    side in pixels (224)        random n x n crop (clipped to the image)
noise:s   sigma in grey levels (8)    additive Gaussian noise on 0-255, clipped
social    (none)                      resize:0.5 then jpeg:75 (a re-uploaded photo)
========  ==========================  ===============================================

Operations chain with ``+`` (``resize:0.5+jpeg:50``). Random operations (crop position,
noise) draw from a generator seeded by (suite seed, canonical spec, row id, step), so an
image is perturbed identically whatever the batch size, the worker or the process that
handles it. Results keep the canonical spec, the parameters and the seed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from afpbench.errors import AfpbenchError
from afpbench.seeding import row_rng
from afpbench.registry import did_you_mean

#: Named chains. Parameters are afpbench choices, recorded with every result.
SUITES: dict[str, str] = {"social": "resize:0.5+jpeg:75"}
#: Spellings that mean "no perturbation".
CLEAN = ("", "none", "clean")


def _check(cond: bool, op: str, value: float, allowed: str) -> None:
    if not cond:
        raise AfpbenchError(f"Perturbation '{op}:{value:g}' is out of range; use {op}:{allowed}.")


@dataclass(frozen=True)
class _OpSpec:
    default: float
    integer: bool
    validate: Callable[[float], None]


_OPS: dict[str, _OpSpec] = {
    "jpeg": _OpSpec(75, True, lambda v: _check(1 <= v <= 100, "jpeg", v, "Q with Q an integer in 1..100")),
    "blur": _OpSpec(1.0, False, lambda v: _check(0 < v <= 50, "blur", v, "SIGMA with 0 < SIGMA <= 50 pixels")),
    "resize": _OpSpec(0.5, False, lambda v: _check(0 < v <= 8, "resize", v, "SCALE with 0 < SCALE <= 8")),
    "crop": _OpSpec(224, True, lambda v: _check(8 <= v <= 8192, "crop", v, "SIZE with SIZE an integer in 8..8192")),
    "noise": _OpSpec(8.0, False, lambda v: _check(0 < v <= 255, "noise", v, "SIGMA with 0 < SIGMA <= 255 grey levels")),
}


@dataclass(frozen=True)
class Op:
    """One step of a perturbation chain."""

    kind: str
    param: float

    @property
    def spec(self) -> str:
        return f"{self.kind}:{int(self.param) if _OPS[self.kind].integer else self.param:g}"

    def apply(self, image: Any, rng: np.random.Generator) -> Any:
        from PIL import Image, ImageFilter

        if self.kind == "jpeg":
            buf = io.BytesIO()
            image.convert("RGB").save(buf, format="JPEG", quality=int(self.param))
            buf.seek(0)
            out = Image.open(buf)
            out.load()
            return out.convert("RGB")
        if self.kind == "blur":
            return image.filter(ImageFilter.GaussianBlur(radius=self.param))
        if self.kind == "resize":
            w, h = image.size
            size = (max(1, round(w * self.param)), max(1, round(h * self.param)))
            return image.resize(size, Image.Resampling.BICUBIC)
        if self.kind == "crop":
            w, h = image.size
            cw, ch = min(int(self.param), w), min(int(self.param), h)
            left = int(rng.integers(0, w - cw + 1))
            top = int(rng.integers(0, h - ch + 1))
            return image.crop((left, top, left + cw, top + ch))
        if self.kind == "noise":
            arr = np.asarray(image.convert("RGB"), dtype=np.float32)
            arr = arr + rng.normal(0.0, self.param, size=arr.shape).astype(np.float32)
            return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
        raise AssertionError(self.kind)  # parse() admits only known kinds


@dataclass(frozen=True)
class Perturbation:
    """A named, seeded chain of operations; call it on (image, row id)."""

    spec: str
    ops: tuple[Op, ...]
    seed: int = 0
    name: str = field(default="")

    @property
    def slug(self) -> str:
        """The folder-safe name used in ``<detector>@<slug>`` result folders."""
        slug = (self.name or self.spec).replace(":", "-")
        return slug if self.seed == 0 else f"{slug}-seed{self.seed}"

    def __call__(self, image: Any, row_id: str) -> Any:
        image = image.convert("RGB")
        for step, op in enumerate(self.ops):
            rng = row_rng(self.seed, self.spec, str(row_id), str(step))
            image = op.apply(image, rng)
        return image.convert("RGB")

    def record(self) -> dict[str, Any]:
        """What a results file stores about this perturbation."""
        return {
            "name": self.name or self.spec,
            "spec": self.spec,
            "seed": self.seed,
            "ops": [{"kind": o.kind, "param": o.param} for o in self.ops],
            "extension": True,
        }


def parse_perturbation(spec: str | None, seed: int = 0) -> Perturbation | None:
    """``"jpeg:75"``, ``"blur:2+jpeg:50"``, ``"social"`` -> a Perturbation (None for clean)."""
    if spec is None or spec.strip().lower() in CLEAN:
        return None
    text = spec.strip().lower()
    name = ""
    if text in SUITES:
        name, text = text, SUITES[text]
    ops: list[Op] = []
    for part in text.split("+"):
        kind, _, raw = part.strip().partition(":")
        if kind in SUITES:
            raise AfpbenchError(f"The suite '{kind}' cannot be chained; spell out its steps ({SUITES[kind]}).")
        if kind not in _OPS:
            raise did_you_mean(kind, list(_OPS) + list(SUITES), "perturbation", "Known: jpeg:Q, blur:SIGMA, resize:SCALE, crop:SIZE, noise:SIGMA, social.")
        opspec = _OPS[kind]
        try:
            value = float(raw) if raw else float(opspec.default)
        except ValueError:
            raise AfpbenchError(f"Perturbation '{part}' has a non-numeric parameter; write it like {kind}:{opspec.default:g}.") from None
        if opspec.integer and value != int(value):
            raise AfpbenchError(f"Perturbation '{part}' needs an integer parameter; write it like {kind}:{int(opspec.default)}.")
        opspec.validate(value)
        ops.append(Op(kind, value))
    canonical = "+".join(o.spec for o in ops)
    return Perturbation(spec=canonical, ops=tuple(ops), seed=int(seed), name=name)


def perturbation_from_record(record: dict[str, Any] | None) -> Perturbation | None:
    """Rebuild a Perturbation from what a results file stored."""
    if not record:
        return None
    p = parse_perturbation(record.get("name") or record["spec"], seed=record.get("seed", 0))
    return p
