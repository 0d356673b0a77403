"""Bundled detectors, registered lazily (listing them never imports torch).

Each detector lives in its own module; ``load_detector("antifakeprompt.lama", ...)``
imports only that module. Third-party detectors join through the ``afpbench.detectors``
entry-point group (a ``Detector`` subclass, or any class satisfying the ``Scorer``
protocol), and ``name.tag`` selects a weight variant.

``BUNDLED`` declares, beside each class, the facts ``afpbench list detectors`` and
``afpbench train`` need without importing it: the variant tags, how it trains, whether
it needs weights, and its licence flag (timm's ``list_models(pretrained=True)`` idea). A
test imports every class and checks that the declaration agrees with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from afpbench.registry import DETECTORS, split_tag

if TYPE_CHECKING:  # pragma: no cover
    from afpbench.detectors.base import Detector


@dataclass(frozen=True)
class Entry:
    """A bundled detector as the registry and the listing see it, before it is imported."""

    target: str
    """``module:Class`` implementing it."""
    tags: tuple[str, ...] = ("",)
    """Its variants' tags in the class's order; ``""`` is the bare name."""
    training: Literal["gradient", "closed-form"] | None = None
    """How ``afpbench train`` trains it (the class's ``Trainable`` / ``ClosedFormFit`` mixin); None: not trainable."""
    needs_weights: bool = False
    """Scoring needs a weights file (released, or written by ``afpbench train``)."""
    noncommercial: bool = False
    """The licence forbids commercial use (the class's flag) ..."""
    noncommercial_tags: tuple[str, ...] = ()
    """... or only these variants' licences do."""
    open_tag: str = ""
    """A tag the class accepts beyond ``tags`` (``<seed>`` for random), shown as ``name.<open_tag>``."""
    kind: Literal["detector", "sanity", "test"] = "detector"
    """``sanity``: a reference row that never learns from pixels; ``test``: for tests and benchmarks."""

    @property
    def trainable(self) -> bool:
        return self.training is not None

    def variant_names(self, name: str) -> list[str]:
        return [f"{name}.{t}" if t else name for t in self.tags] + ([f"{name}.<{self.open_tag}>"] if self.open_tag else [])

    def is_noncommercial(self, tag: str) -> bool:
        return self.noncommercial or tag in self.noncommercial_tags


_GRAD, _FIT = "gradient", "closed-form"

# name -> Entry. Order is the order of docs/detectors.md.
BUNDLED: dict[str, Entry] = {
    "antifakeprompt": Entry("afpbench.detectors.antifakeprompt:AntifakePrompt", ("", "lama", "v1", "v1_lama"), _GRAD, needs_weights=True),
    "instructblip": Entry("afpbench.detectors.instructblip:InstructBlipZeroShot"),
    "instructblip_lora": Entry("afpbench.detectors.instructblip_lora:InstructBlipLora", training=_GRAD, needs_weights=True),
    "cnnspot": Entry("afpbench.detectors.cnnspot:CNNSpot", ("", "blur_jpg_prob0.5"), _GRAD, needs_weights=True),
    "univfd": Entry("afpbench.detectors.univfd:UnivFD", training=_GRAD, needs_weights=True),
    "spectral": Entry("afpbench.detectors.spectral:Spectral", training=_FIT, needs_weights=True),
    "efficientnet": Entry("afpbench.detectors.efficientnet:EfficientNetDetector", training=_GRAD, needs_weights=True),
    "constant": Entry("afpbench.detectors.constant:Constant", ("", "fake", "real"), kind="sanity"),
    "random": Entry("afpbench.detectors.random_:RandomDetector", open_tag="seed", kind="sanity"),
    "format": Entry("afpbench.detectors.format_:FormatDetector", training=_FIT, kind="sanity"),
    "size": Entry("afpbench.detectors.size_:SizeDetector", training=_FIT, kind="sanity"),
    "commfor": Entry("afpbench.detectors.commfor:CommunityForensics", ("", "224"), needs_weights=True),
    "npr": Entry("afpbench.detectors.npr:NPR", ("", "paper"), needs_weights=True, noncommercial=True),
    "drct": Entry("afpbench.detectors.drct:DRCT", ("", "sdv2", "genimage"), needs_weights=True, noncommercial=True),
    "safe": Entry("afpbench.detectors.safe:SAFE", needs_weights=True),
    "ladeda": Entry("afpbench.detectors.ladeda:LaDeDa", ("", "forensynth"), needs_weights=True, noncommercial=True),
    "tiny_ladeda": Entry("afpbench.detectors.ladeda:TinyLaDeDa", ("", "forensynth"), needs_weights=True, noncommercial=True),
    "bfree": Entry("afpbench.detectors.bfree:BFree", needs_weights=True, noncommercial=True),
    "dda": Entry("afpbench.detectors.dda:DDA", ("", "legacy"), needs_weights=True),
    "rine": Entry("afpbench.detectors.rine:RINE", ("", "1class", "2class", "ldm"), needs_weights=True),
    "c2p_clip": Entry("afpbench.detectors.c2p_clip:C2PCLIP", needs_weights=True, noncommercial=True),
    "cospy": Entry("afpbench.detectors.cospy:CoSpy", needs_weights=True),
    "probe": Entry("afpbench.detectors.probe:Probe", ("", "dinov2", "siglip2", "clip_l14"), _FIT, needs_weights=True),
    "qwen_vl": Entry("afpbench.detectors.vlm:QwenVL", ("", "3b"), noncommercial_tags=("3b",)),
    # The toy detector tests and benchmarks share (lm-eval's dummy, timm's test_* models).
    "test_toy": Entry("afpbench.testing:ToyDetector", open_tag="label", kind="test"),
}

for _name, _entry in BUNDLED.items():
    DETECTORS.register_lazy(_name, _entry.target)


def trainable_names() -> list[str]:
    """The bundled detectors ``afpbench train`` accepts (from the declarations: no import)."""
    return [n for n, e in BUNDLED.items() if e.trainable and e.kind != "test"]


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


__all__ = ["BUNDLED", "Entry", "detector_class", "load_detector", "trainable_names"]
