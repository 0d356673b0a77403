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
webp:q    quality 1-100 (80)          re-encode as lossy WebP with Pillow
gamma:g   exponent (1.2)              out = 255 * (in / 255) ** (1 / g)
jitter:s  strength 0-1 (0.2)          brightness, contrast and saturation each scaled by
                                      a factor drawn from [1 - s, 1 + s]
sharpen:p percent (100)               Pillow UnsharpMask (radius 2, threshold 0)
cropf:f   kept fraction (0.8)         random crop keeping fraction f of each side
social    (none)                      resize:0.5 then jpeg:75 (a re-uploaded photo)
chain     (none)                      per image, 1-5 operations drawn from the families
                                      in CHAIN_FAMILIES, each with a drawn parameter
========  ==========================  ===============================================

Operations chain with ``+`` (``resize:0.5+jpeg:50``). Random operations (crop position,
noise) draw from a generator seeded by (suite seed, canonical spec, row id, step), so an
image is perturbed identically whatever the batch size, the worker or the process that
handles it. Results keep the canonical spec, the parameters and the seed.

Perturbations act on the stored file like views do (``apply_encoded``): after them the
row's bytes, format, width, height and byte count describe the perturbed image. A codec
step (``jpeg``, ``webp``) produces the file; pixel steps are re-encoded at the end in the
current container (PNG stays lossless, a JPEG is re-saved at its own estimated quality),
so a file-reading detector such as ``format`` sees what a re-uploaded image would be.

``chain`` is the NTIRE 2026 style of robustness test: single operations hide failures
that chains expose. Each image gets its own seeded draw (same draw for a row whatever the
batch, worker or process); the drawn chain is recorded per image in the predictions.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from afpbench.errors import AfpbenchError
from afpbench.registry import did_you_mean
from afpbench.seeding import row_rng

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
    "webp": _OpSpec(80, True, lambda v: _check(1 <= v <= 100, "webp", v, "Q with Q an integer in 1..100")),
    "gamma": _OpSpec(1.2, False, lambda v: _check(0.1 <= v <= 10, "gamma", v, "G with 0.1 <= G <= 10")),
    "jitter": _OpSpec(0.2, False, lambda v: _check(0 < v < 1, "jitter", v, "S with 0 < S < 1")),
    "sharpen": _OpSpec(100, True, lambda v: _check(1 <= v <= 500, "sharpen", v, "PERCENT with PERCENT an integer in 1..500")),
    "cropf": _OpSpec(0.8, False, lambda v: _check(0.05 <= v <= 1, "cropf", v, "F with 0.05 <= F <= 1")),
}
#: Codec operations: they produce the file, pixel operations change the picture.
CODEC_OPS = ("jpeg", "webp")
#: The chain suite's families and parameter ranges (afpbench choices, recorded with results).
CHAIN_FAMILIES: dict[str, tuple[float, float]] = {
    "jpeg": (30, 95), "webp": (30, 95), "resize": (0.5, 1.5), "cropf": (0.6, 0.95), "blur": (0.3, 2.0),
    "noise": (1.0, 10.0), "jitter": (0.05, 0.3), "gamma": (0.7, 1.4), "sharpen": (50, 200),
}
CHAIN_LENGTH = (1, 5)


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
        if self.kind == "webp":
            from afpbench.views import decode, encode

            return decode(encode(image, "webp", quality=int(self.param)))
        if self.kind == "gamma":
            lut = [min(255, round(255 * (i / 255) ** (1 / self.param))) for i in range(256)]
            return image.convert("RGB").point(lut * 3)
        if self.kind == "jitter":
            from PIL import ImageEnhance

            lo, hi = 1 - self.param, 1 + self.param
            for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                image = enhancer(image).enhance(float(rng.uniform(lo, hi)))
            return image
        if self.kind == "sharpen":
            return image.filter(ImageFilter.UnsharpMask(radius=2, percent=int(self.param), threshold=0))
        if self.kind == "cropf":
            w, h = image.size
            cw, ch = max(1, round(w * self.param)), max(1, round(h * self.param))
            left = int(rng.integers(0, w - cw + 1))
            top = int(rng.integers(0, h - ch + 1))
            return image.crop((left, top, left + cw, top + ch))
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

    def ops_for(self, row_id: str) -> tuple[Op, ...]:
        """The operations this row gets (the same for every row, except in the chain suite)."""
        if self.name == "chain":
            return draw_chain(self.seed, str(row_id))
        return self.ops

    def condition(self, row_id: str) -> str:
        """The canonical spec of what this row got (recorded per image in the predictions)."""
        return "+".join(o.spec for o in self.ops_for(row_id))

    def __call__(self, image: Any, row_id: str) -> Any:
        image = image.convert("RGB")
        spec = self.spec if self.name != "chain" else f"chain|{self.condition(row_id)}"
        for step, op in enumerate(self.ops_for(row_id)):
            rng = row_rng(self.seed, spec, str(row_id), str(step))
            image = op.apply(image, rng)
        return image.convert("RGB")

    def apply_encoded(self, enc: Any, row_id: str) -> Any:
        """The row's file after the chain: bytes, format and size describe the perturbed image."""
        return self.perturb_file(enc, row_id)[0]

    def perturb_file(self, enc: Any, row_id: str, image: Any = None) -> tuple[Any, Any]:
        """(the perturbed file, its decoded RGB pixels). ``image``: ``enc`` already decoded.

        A codec step writes the file and is decoded right away (the next step, and the
        detector, see what the codec left); pixel steps are re-encoded at the end in the
        current container, and decoded again only when that container is lossy.
        """
        from afpbench.views import decode, encode, reencode_like

        image = (decode(enc) if image is None else image).convert("RGB")
        spec = self.spec if self.name != "chain" else f"chain|{self.condition(row_id)}"
        current = enc  # the container the pixels are in right now
        last: Any = None  # the file a codec step produced, while no pixel step followed it
        for step, op in enumerate(self.ops_for(row_id)):
            rng = row_rng(self.seed, spec, str(row_id), str(step))
            if op.kind in CODEC_OPS:
                last = current = encode(image, op.kind, quality=int(op.param))
                image = decode(current).convert("RGB")
            else:
                image = op.apply(image, rng).convert("RGB")
                last = None
        if last is not None:
            return last, image
        out = reencode_like(image, current)
        return out, (image if out.format == "png" else decode(out))

    def record(self) -> dict[str, Any]:
        """What a results file stores about this perturbation."""
        out = {
            "name": self.name or self.spec,
            "spec": self.spec,
            "seed": self.seed,
            "ops": [{"kind": o.kind, "param": o.param} for o in self.ops],
            "extension": True,
        }
        if self.name == "chain":
            out["families"] = {k: list(v) for k, v in CHAIN_FAMILIES.items()}
            out["length"] = list(CHAIN_LENGTH)
        return out


def draw_chain(seed: int, row_id: str) -> tuple[Op, ...]:
    """The chain suite's operations for one row: 1-5 distinct families in a drawn order, drawn parameters."""
    rng = row_rng(seed, "chain", row_id)
    k = int(rng.integers(CHAIN_LENGTH[0], CHAIN_LENGTH[1] + 1))
    families = list(CHAIN_FAMILIES)
    picked = [families[i] for i in rng.permutation(len(families))[:k]]
    ops = []
    for kind in picked:
        lo, hi = CHAIN_FAMILIES[kind]
        value = float(rng.uniform(lo, hi))
        value = float(round(value)) if _OPS[kind].integer else round(value, 2)
        ops.append(Op(kind, value))
    return tuple(ops)


def parse_perturbation(spec: str | None, seed: int = 0) -> Perturbation | None:
    """``"jpeg:75"``, ``"blur:2+jpeg:50"``, ``"social"`` -> a Perturbation (None for clean)."""
    if spec is None or spec.strip().lower() in CLEAN:
        return None
    text = spec.strip().lower()
    name = ""
    if text == "chain":
        return Perturbation(spec="chain", ops=(), seed=int(seed), name="chain")
    if text in SUITES:
        name, text = text, SUITES[text]
    ops: list[Op] = []
    for part in text.split("+"):
        kind, _, raw = part.strip().partition(":")
        if kind in SUITES or kind == "chain":
            raise AfpbenchError(f"The suite '{kind}' cannot be chained; {'spell out its steps (' + SUITES[kind] + ')' if kind in SUITES else 'use it on its own'}.")
        if kind not in _OPS:
            raise did_you_mean(kind, list(_OPS) + list(SUITES) + ["chain"], "perturbation",
                               "Known: jpeg:Q, webp:Q, blur:SIGMA, resize:SCALE, crop:SIZE, cropf:F, noise:SIGMA, gamma:G, jitter:S, sharpen:PERCENT, social, chain.")
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
