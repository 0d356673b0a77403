"""The detector contract: the ``Scorer`` protocol, the ``Detector`` base class, and the two
ways a detector can be trained, ``Trainable`` and ``ClosedFormFit``.

* ``Scorer`` is all ``evaluate`` needs: ``preprocess(PIL image, row) -> CHW tensor`` (run
  on CPU, per image, possibly in worker processes), ``collate``, ``score(batch) -> P(fake)``
  and ``describe()``. A plugin may satisfy it without inheriting anything.
* ``Detector`` is the base class of the bundled detectors (eval only): a card (what it
  is, where its weights come from, how it sees an image), weights resolution, and the
  scoring entry point around the subclass's ``forward_scores``.
* ``Trainable`` (the gradient loop of ``afpbench train``: ``trainable_parameters``,
  ``training_loss``, ``set_training``) and ``ClosedFormFit`` (``fit`` on the whole
  training set, e.g. scikit-learn) are mixins; both save a folder ``load_detector(name,
  weights=folder)`` loads. A detector that mixes in neither is not trainable, and has no
  training method at all.

Weights I/O lives in ``_weights``, image transforms in ``_transforms``, transformers
loading in ``_hf``; the card models in ``afpbench.cards``. This module imports no torch
at import time.
"""

from __future__ import annotations

import abc
import math
import random
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from afpbench.cards import DetectorCard, Preprocessing, Variant
from afpbench.detectors._transforms import apply_preprocessing
from afpbench.detectors._weights import resolve_weights, saved_training_data, weights_sha256, write_saved
from afpbench.errors import AfpbenchError, WeightsError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

    from afpbench.results import DetectorInfo


# -- the contract the evaluation pipeline types against ---------------------------------------
@runtime_checkable
class Scorer(Protocol):
    """What ``evaluate`` needs of a detector. A plugin may satisfy it without inheriting.

    ``preprocess`` runs on CPU per image (in DataLoader workers), ``collate`` joins a
    batch, ``score`` returns P(fake) in [0, 1] per image (float32, CPU), and ``describe``
    says what a results file records about it (name, arguments, weights, typed card).
    ``pred = score > threshold``; ``threshold_policy`` says how the threshold was chosen.
    """

    name: str
    threshold: float
    threshold_policy: str

    @property
    def full_name(self) -> str: ...

    def preprocess(self, image: Any, row: dict[str, Any] | None = None) -> Any: ...

    def collate(self, items: list[Any]) -> Any: ...

    def score(self, batch: Any) -> Any: ...

    def describe(self) -> "DetectorInfo": ...


def _compute_dtype(device: str, dtype: str | None, cuda_default: str) -> "torch.dtype":
    from afpbench._util.devices import canonical_dtype, resolve_dtype, torch_dtype

    if device == "meta":
        # The meta device holds no values (afpbench plan, the real-size tests): any dtype builds there.
        return torch_dtype(canonical_dtype(dtype) or "float32")
    return resolve_dtype(device, dtype, cuda_default)


# -- the Detector base class ----------------------------------------------------------------
class Detector(abc.ABC):
    """Base class of the bundled detectors; subclasses fill the class attributes and the hooks.

    Construction: ``Cls(tag, weights=..., device=..., dtype=..., base=..., image_size=...,
    options=...)``; ``options`` are the detector's own named settings (``option_values``).
    ``train_init=True`` builds a trainable detector from its base without weights (what
    ``afpbench train`` starts from); everything else refuses to run without weights when
    the detector needs them. ``device`` is ``cpu``, ``cuda[:N]``, ``mps``, ``auto`` or
    ``meta`` (the architecture without values: plan estimates and real-size tests).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    code: ClassVar[str] = ""
    license: ClassVar[str] = ""
    variants: ClassVar[dict[str | None, Variant]] = {None: Variant()}
    # The licence forbids commercial use (see DetectorCard.noncommercial); a variant may override it.
    noncommercial: ClassVar[bool] = False
    # Whether scoring needs a weights file (released or trained); train_init waives it.
    needs_weights: ClassVar[bool] = False
    choices: ClassVar[list[str]] = []
    default_threshold_policy: ClassVar[str] = "fixed 0.5 on P(fake)"
    cuda_dtype: ClassVar[str] = "float32"
    # Named options beyond the common arguments (``options={"KEY": "VALUE"}``, the CLI's
    # ``--detector-option KEY=VALUE``): option name -> the values it accepts.
    option_values: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(
        self,
        tag: str | None = None,
        *,
        weights: str | Path | None = None,
        device: str = "cpu",
        dtype: str | None = None,
        base: str | None = None,
        image_size: int | None = None,
        train_init: bool = False,
        options: dict[str, str] | None = None,
    ):
        if tag not in self.variants:
            known = [f"{self.name}.{t}" if t else self.name for t in self.variants]
            from afpbench.registry import did_you_mean

            raise did_you_mean(f"{self.name}.{tag}", known, "detector variant")
        from afpbench._util.devices import resolve_device

        self.tag = tag
        self.variant = self.variants[tag]
        self.options = self.check_options(options or {})
        self.device = "meta" if str(device) == "meta" else resolve_device(device)
        self.requested_dtype = dtype  # None: the detector's default (a detector may pick a mixed-precision mode then)
        self.dtype = _compute_dtype(self.device, dtype, self.cuda_dtype)
        self.base = base
        self.image_size = image_size
        self.train_init = train_init
        release = self.variant.weights
        self.weights_path: Path | None = resolve_weights(
            weights, name=self.name, full_name=self.full_name, release=release, required=self.needs_weights and not train_init
        )
        self.weights_sha256: str | None = weights_sha256(self.weights_path) if self.weights_path is not None else None
        expected = release.sha256 if (release and weights is None) else None
        if expected and self.weights_sha256 != expected:
            raise WeightsError(f"{self.weights_path} has sha256 {self.weights_sha256[:12]}..., the release's is {expected[:12]}...; download it again.")
        self.threshold = 0.5
        self.threshold_policy = self.default_threshold_policy
        self.setup()

    def check_options(self, options: dict[str, Any]) -> dict[str, str]:
        """Refuse an option this detector does not have, or a value it does not accept."""
        out = {}
        for key, value in options.items():
            allowed = self.option_values.get(key)
            if allowed is None:
                have = ", ".join(sorted(self.option_values)) or "none"
                raise AfpbenchError(f"{self.name} has no option '{key}' (its options: {have}); drop it or pick another detector.")
            if str(value) not in allowed:
                raise AfpbenchError(f"Option {key}={value} is not one {self.name} accepts; use one of {', '.join(allowed)}.")
            out[key] = str(value)
        return out

    # -- hooks subclasses implement ------------------------------------------------------
    def setup(self) -> None:  # noqa: B027 - a hook: detectors without a model (constant, random) need nothing here
        """Build the model and load ``self.weights_path`` (None only when allowed)."""

    def preprocessing(self) -> Preprocessing:
        return Preprocessing()

    def preprocess(self, image: "Image.Image", row: dict[str, Any] | None = None) -> "torch.Tensor":
        """Decoded RGB image (and optionally its dataset row) -> CHW float tensor."""
        return apply_preprocessing(image, self.preprocessing())

    def collate(self, items: list[Any]) -> Any:
        import torch

        # default_collate stacks same-shape tensors exactly as torch.stack does, and inside
        # a DataLoader worker it stacks straight into shared memory: one copy less for
        # every batch a worker sends to the scorer.
        first = items[0] if items else None
        if isinstance(first, torch.Tensor) and all(isinstance(x, torch.Tensor) and x.shape == first.shape for x in items):
            return torch.utils.data.default_collate(items)
        return torch.stack(items)

    @abc.abstractmethod
    def forward_scores(self, batch: Any) -> "torch.Tensor":
        """P(fake) for a batch already on the device."""

    def bare_forward(self, batch: Any) -> Any:
        """The underlying model's own forward on a device batch, without afpbench's score
        head (sigmoid/softmax, clamping, the CPU copy). Used by ``benchmarks/bench_detectors.py``
        to measure afpbench's overhead (score vs bare forward); defaults to ``forward_scores``."""
        return self.forward_scores(batch)

    def to_device(self, batch: Any) -> Any:
        return batch.to(self.device, non_blocking=True)

    # -- the scoring entry point ---------------------------------------------------------
    def score(self, batch: Any) -> "torch.Tensor":
        """P(fake) in [0, 1], float32 on CPU, one value per image of the batch."""
        import torch

        with torch.inference_mode():
            p = self.forward_scores(self.to_device(batch))
        return p.detach().float().cpu().clamp_(0.0, 1.0).reshape(-1)

    # -- description ---------------------------------------------------------------------
    @property
    def full_name(self) -> str:
        return f"{self.name}.{self.tag}" if self.tag else self.name

    @classmethod
    def variant_names(cls) -> list[str]:
        return [f"{cls.name}.{t}" if t else cls.name for t in cls.variants]

    @property
    def is_noncommercial(self) -> bool:
        """The licence flag of this variant (the variant's own, else the detector's)."""
        own = self.variant.noncommercial
        return self.noncommercial if own is None else own

    @property
    def card(self) -> DetectorCard:
        v = self.variant
        return DetectorCard(
            name=self.name,
            tag=self.tag,
            variants=self.variant_names(),
            description=self.description,
            paper=self.paper,
            code=self.code,
            license=self.license,
            weights=v.weights,
            training_data=self.training_data(),
            base=self.base_description(),
            preprocessing=self.preprocessing(),
            threshold=self.threshold,
            threshold_policy=self.threshold_policy,
            trainable=training_kind(type(self)) is not None,
            noncommercial=self.is_noncommercial,
            choices=list(self.choices),
        )

    def training_data(self) -> str:
        if self.weights_path is not None and self.weights_path.is_dir():
            return saved_training_data(self.weights_path)
        return self.variant.training_data

    def base_description(self) -> str | None:
        return self.base

    def arguments(self) -> dict[str, Any]:
        """What a results file records to rerun this detector."""
        return {
            "detector": self.full_name,
            "weights": str(self.weights_path) if self.weights_path else None,
            "weights_sha256": self.weights_sha256,
            "base": self.base_description(),
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", ""),
            "image_size": self.image_size,
            "threshold": self.threshold,
            "threshold_policy": self.threshold_policy,
        }

    def predict(self, images: Any, *, batch_size: int = 16) -> list[Any]:
        """P(fake) and decision for paths, PIL images or numpy arrays, through evaluate's pass
        (:func:`afpbench.detect.predict`): ``[Prediction(p_fake, fake, threshold), ...]``."""
        from afpbench.detect import predict

        return predict(self, images, batch_size=batch_size)

    def describe(self) -> "DetectorInfo":
        """What a results file records about this detector (the Scorer contract)."""
        import json

        from afpbench.results import DetectorInfo

        return DetectorInfo(
            name=self.name, tag=self.tag, full_name=self.full_name,
            arguments=json.loads(json.dumps(self.arguments(), default=str)),
            weights=str(self.weights_path) if self.weights_path else None, weights_sha256=self.weights_sha256,
            card=self.card.model_dump(mode="json"),
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.full_name} device={self.device} dtype={self.dtype}>"


# -- training ----------------------------------------------------------------------------------
class _Learned(abc.ABC):
    """What both kinds of trained detectors share: a recipe, a state, and a saved folder.

    Mixed into a ``Detector`` subclass (``class X(Detector, Trainable)``), so ``self`` has
    the detector's card, preprocessing and device.
    """

    # Overrides of afpbench.train.TrainConfig defaults (the paper's recipe for AntifakePrompt).
    train_recipe: ClassVar[dict[str, Any]] = {}

    @abc.abstractmethod
    def trainable_state(self) -> dict[str, "torch.Tensor"]:
        """The tensors a checkpoint needs to restore training (and scoring) exactly."""

    @abc.abstractmethod
    def load_trainable_state(self, state: dict[str, "torch.Tensor"], source: Path | str) -> None:
        """Put ``state`` (checked against the model's keys and shapes) into the model."""

    def saved_meta(self) -> dict[str, Any]:
        """Common fields of ``detector.json``; subclasses add theirs."""
        det: Any = self
        return {
            "detector": det.name,
            "tag": det.tag,
            "base": det.base_description(),
            "image_size": det.image_size,
            "training_data": det.training_data(),
            "card": det.card.model_dump(mode="json"),
        }

    def save(self, out_dir: str | Path, *, training_data: str | None = None) -> Path:
        """Write a folder that ``load_detector(name, weights=folder)`` loads; ``training_data``
        (what it was just trained on) replaces the card's record of it."""
        meta = self.saved_meta()
        if training_data:
            meta["training_data"] = training_data
        return write_saved(Path(out_dir), meta, self.trainable_state())


class Trainable(_Learned):
    """A detector ``afpbench train`` trains with its gradient loop (AdamW, schedule, resume)."""

    @abc.abstractmethod
    def trainable_parameters(self) -> list["torch.nn.Parameter"]:
        """The parameters the optimizer updates (made to require grad)."""

    @abc.abstractmethod
    def training_loss(self, batch: Any, labels: "torch.Tensor") -> "torch.Tensor":
        """Mean loss of a device batch with 0/1 labels (gradients flow to trainable_parameters)."""

    @abc.abstractmethod
    def set_training(self, training: bool) -> None:
        """Put the modules in train/eval mode (frozen parts may stay in eval)."""

    def train_preprocess(self, image: "Image.Image", row: dict[str, Any] | None, rng: random.Random) -> "torch.Tensor":
        """Train-time transform: the eval transform with a random crop and a horizontal flip."""
        det: Any = self
        return apply_preprocessing(image, det.preprocessing(), rng=rng, flip=True)


class ClosedFormFit(_Learned):
    """A detector fitted in closed form on the whole training set (scikit-learn, ...)."""

    @abc.abstractmethod
    def fit(self, train_batches: Iterable[tuple[Any, Any]], val_batches: Iterable[tuple[Any, Any]]) -> tuple[float, float]:
        """Fit on ``(batch, labels)`` pairs -> (train loss, val loss; NaN without validation data)."""

    def train_preprocess(self, image: "Image.Image", row: dict[str, Any] | None, rng: random.Random) -> Any:
        """A fit sees each image once: the eval transform, no augmentation."""
        det: Any = self
        return det.preprocess(image, row)


def training_kind(cls: type) -> Literal["gradient", "closed-form"] | None:
    """How ``afpbench train`` trains a detector class: its gradient loop, a closed-form fit, or not at all."""
    if issubclass(cls, Trainable):
        return "gradient"
    if issubclass(cls, ClosedFormFit):
        return "closed-form"
    return None


def bce_from_probs(p: Any, y: Any) -> float:
    """Mean binary cross-entropy of numpy probabilities (for closed-form fits' reports)."""
    import numpy as np

    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(y, dtype=np.float64)
    if len(y) == 0:
        return math.nan
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


__all__ = ["Scorer", "Detector", "Trainable", "ClosedFormFit", "training_kind", "bce_from_probs"]
