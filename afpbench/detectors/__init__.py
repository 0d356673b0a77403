"""Bundled detectors, registered lazily (listing them never imports torch).

Each detector lives in its own module; ``load_detector("antifakeprompt.lama", ...)``
imports only that module. Third-party detectors join through the ``afpbench.detectors``
entry-point group (a ``Detector`` subclass), and ``name.tag`` selects a weight variant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from afpbench.registry import DETECTORS, split_tag

if TYPE_CHECKING:  # pragma: no cover
    from afpbench.detectors.base import Detector

# name -> "module:Class". Order is the order of docs/detectors.md.
BUNDLED = {
    "antifakeprompt": "afpbench.detectors.antifakeprompt:AntifakePrompt",
    "instructblip": "afpbench.detectors.instructblip:InstructBlipZeroShot",
    "instructblip_lora": "afpbench.detectors.instructblip_lora:InstructBlipLora",
    "cnnspot": "afpbench.detectors.cnnspot:CNNSpot",
    "univfd": "afpbench.detectors.univfd:UnivFD",
    "spectral": "afpbench.detectors.spectral:Spectral",
    "efficientnet": "afpbench.detectors.efficientnet:EfficientNetDetector",
    "constant": "afpbench.detectors.constant:Constant",
    "random": "afpbench.detectors.random_:RandomDetector",
    "format": "afpbench.detectors.format_:FormatDetector",
    "size": "afpbench.detectors.size_:SizeDetector",
    "commfor": "afpbench.detectors.commfor:CommunityForensics",
    "npr": "afpbench.detectors.npr:NPR",
    "drct": "afpbench.detectors.drct:DRCT",
    "safe": "afpbench.detectors.safe:SAFE",
    "ladeda": "afpbench.detectors.ladeda:LaDeDa",
    "tiny_ladeda": "afpbench.detectors.ladeda:TinyLaDeDa",
    "bfree": "afpbench.detectors.bfree:BFree",
}
BUNDLED.update({
    "dda": "afpbench.detectors.dda:DDA",
    "rine": "afpbench.detectors.rine:RINE",
    "c2p_clip": "afpbench.detectors.c2p_clip:C2PCLIP",
    "cospy": "afpbench.detectors.cospy:CoSpy",
    "probe": "afpbench.detectors.probe:Probe",
    "qwen_vl": "afpbench.detectors.vlm:QwenVL",
})

# Names `afpbench train` accepts (kept here so the CLI can say so without importing torch).
TRAINABLE = ("antifakeprompt", "instructblip_lora", "cnnspot", "univfd", "spectral", "efficientnet", "format", "size")

for _name, _target in BUNDLED.items():
    DETECTORS.register_lazy(_name, _target)

TRAINABLE += ("probe",)  # the linear probe family (fitted on cached backbone features)


def detector_class(name: str) -> type["Detector"]:
    """The class registered under the base name of ``name`` (imports its module)."""
    return DETECTORS.get(name)


def load_detector(
    name: str,
    *,
    weights: str | Path | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    base: str | None = None,
    image_size: int | None = None,
    train_init: bool = False,
    options: dict[str, str] | None = None,
) -> "Detector":
    """Build the detector ``name`` (``name.tag`` picks a variant), ready to score.

    ``weights``: a released file or a folder saved by ``afpbench train``; without it the
    variant's file is looked up in $AFPBENCH_WEIGHTS and ~/.cache/afpbench/weights.
    ``base``: folder or hub id of the backbone (InstructBLIP family, univfd, cnnspot).
    ``options``: the detector's own named settings (its ``option_values``), e.g.
    ``{"tokenization": "transformers-4.35"}`` for AntifakePrompt.
    Raises ``WeightsError`` when the weights are needed and missing or do not match.
    """
    cls = detector_class(name)
    _, tag = split_tag(name)
    extra = {"options": options} if options else {}  # plugins without options keep working
    return cls(tag, weights=weights, device=device, dtype=dtype, base=base, image_size=image_size, train_init=train_init, **extra)


__all__ = ["BUNDLED", "TRAINABLE", "detector_class", "load_detector"]
