"""The Detector contract, its card, and the helpers every detector shares.

A detector is a class with a card (what it is, where its weights come from, how it sees
an image) and two methods the harness calls: ``preprocess(PIL image, row) -> CHW tensor``
(run on CPU, per image, possibly in worker threads) and ``score(batch) -> P(fake)``
(batched, on the detector's device). Trainable detectors add the hooks ``afpbench.train``
drives: ``trainable_parameters``, ``training_loss``, ``train_preprocess``, ``save``.

Weights are loaded loudly: a file that is missing, truncated, or whose keys or shapes do
not match the model raises ``WeightsError`` naming the file and the mismatch. Nothing is
loaded with ``strict=False`` and no detector ever scores with random weights.

This module imports no torch at import time, so ``DetectorCard`` can be used by the
catalog and ``afpbench list`` cheaply.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from afpbench.errors import AfpbenchError, WeightsError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

    from afpbench.results import DetectorInfo

# The on-disk format afpbench writes for trained detectors: a folder with this JSON and
# one safetensors file. Bumped when the layout changes; readers refuse newer versions.
SAVE_FORMAT_VERSION = 1
SAVE_META = "detector.json"
SAVE_WEIGHTS = "model.safetensors"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# -- the card ---------------------------------------------------------------------------
class Preprocessing(BaseModel):
    """How a detector turns a decoded RGB image into its input tensor (eval time)."""

    resize: int | None = Field(None, description="Target of the shorter side in pixels (None: no resize).")
    resize_policy: Literal["shorter", "upscale_only", "none"] = Field(
        "shorter", description="'shorter': always resize the shorter side to `resize`; 'upscale_only': only images smaller than `crop` are resized up (keeps high-frequency traces); 'none'."
    )
    interpolation: Literal["bicubic", "bilinear", "nearest"] = Field("bicubic", description="PIL resampling filter of the resize.")
    crop: int | None = Field(None, description="Side of the square center crop (None: no crop).")
    mean: tuple[float, float, float] | None = Field(None, description="Per-channel mean subtracted after scaling to [0, 1].")
    std: tuple[float, float, float] | None = Field(None, description="Per-channel std divided after the mean.")
    colour: Literal["rgb", "grey"] = Field("rgb", description="Channels fed to the model.")
    note: str = Field("", description="Anything else (afpbench choices, departures from the paper).")


class WeightsSource(BaseModel):
    """One released weights file: what it is called, where it comes from, how to check it."""

    filename: str = Field(description="File name the cache lookup searches for.")
    source: str = Field(description="Where to download it (URL or repository path).")
    sha256: str | None = Field(None, description="Expected sha256 when known; afpbench always records the sha256 of the file it loaded.")
    license: str = Field("", description="License of the weights.")
    note: str = Field("", description="Anything else about the file.")


class DetectorCard(BaseModel):
    """Everything a results file needs to say about a detector."""

    name: str = Field(description="Registry name, e.g. 'antifakeprompt'.")
    tag: str | None = Field(None, description="Variant tag (the part after the dot), None for the default.")
    variants: list[str] = Field(default_factory=list, description="Every selectable 'name.tag'.")
    description: str = Field("", description="What the detector is, in one sentence.")
    paper: str = Field("", description="Citation of the method.")
    code: str = Field("", description="Upstream code the method comes from.")
    license: str = Field("", description="License of the method's code/weights.")
    weights: WeightsSource | None = Field(None, description="Released weights this variant loads (None: no file needed or trained by afpbench).")
    training_data: str = Field("", description="What the weights were trained on.")
    base: str | None = Field(None, description="Backbone this detector was built on (folder or hub id), when any.")
    preprocessing: Preprocessing = Field(default_factory=Preprocessing, description="How an image becomes the detector's input.")
    threshold: float = Field(0.5, description="pred = score > threshold (a tie is real).")
    threshold_policy: str = Field("fixed", description="How the threshold was chosen.")
    trainable: bool = Field(False, description="Whether `afpbench train` can train it.")
    noncommercial: bool = Field(False, description="True when the licence of the weights or code does not allow commercial use (non-profit, research-only, NC, or no licence granted); leaderboards flag such rows.")
    choices: list[str] = Field(default_factory=list, description="Decisions afpbench made that the paper does not document.")


@dataclass(frozen=True)
class Variant:
    """One ``name.tag``: the weights it loads and what they were trained on."""

    weights: WeightsSource | None = None
    training_data: str = ""
    note: str = ""
    options: dict[str, Any] = field(default_factory=dict)


# -- weights files ------------------------------------------------------------------------
def weights_dirs() -> list[Path]:
    """Folders searched for released weights: $AFPBENCH_WEIGHTS (os.pathsep-separated), then ~/.cache/afpbench/weights."""
    out = [Path(p).expanduser() for p in os.environ.get("AFPBENCH_WEIGHTS", "").split(os.pathsep) if p]
    out.append(Path("~/.cache/afpbench/weights").expanduser())
    return out


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a saved detector folder's weights file."""
    path = Path(path)
    if path.is_dir():
        path = path / SAVE_WEIGHTS
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fmt_keys(keys: Iterable[str], limit: int = 3) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(expected: dict[str, tuple[int, ...]], got: dict[str, Any], file: Path | str, what: str) -> None:
    """Refuse a state dict whose keys or shapes differ from ``expected`` (name -> shape)."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} {tuple(got[k].shape)} != {tuple(expected[k])}" for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k])]
    problems = []
    if missing:
        problems.append(f"missing {_fmt_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected {_fmt_keys(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_fmt_keys(shapes)}")
    if problems:
        raise WeightsError(f"{file} does not match {what}: {'; '.join(problems)}. Use the weights file made for this detector and base.")


def torch_load(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers; bad files -> WeightsError."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, pickle.UnpicklingError, ValueError, OSError, AttributeError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise WeightsError(f"{path} cannot be read as a PyTorch checkpoint ({reason}); it is truncated or not the expected file: download it again.") from exc


def load_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path} cannot be read as safetensors ({' '.join(str(exc).split())[:160]}); it is truncated or corrupt: save or download it again.") from exc


def read_saved(folder: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read an afpbench detector folder -> (meta, tensors), checking it belongs to ``name``."""
    meta_path = folder / SAVE_META
    if not meta_path.exists() or not (folder / SAVE_WEIGHTS).exists():
        raise WeightsError(f"{folder} is not a saved afpbench detector (needs {SAVE_META} and {SAVE_WEIGHTS}); pass the folder written by 'afpbench train' or a released weights file.")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{meta_path} is not valid JSON ({exc}); save the detector again.") from exc
    if meta.get("format_version", 0) > SAVE_FORMAT_VERSION:
        raise WeightsError(f"{folder} was saved by a newer afpbench (format {meta.get('format_version')}); upgrade afpbench.")
    if meta.get("detector") != name:
        raise WeightsError(f"{folder} holds weights of detector '{meta.get('detector')}', not '{name}'; pass --detector {meta.get('detector')} or the right folder.")
    return meta, load_safetensors(folder / SAVE_WEIGHTS)


def write_saved(folder: Path, meta: dict[str, Any], tensors: dict[str, Any]) -> Path:
    """Write an afpbench detector folder (weights first, JSON last, so a crash leaves no valid-looking folder)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (SAVE_WEIGHTS + ".tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, folder / SAVE_WEIGHTS)
    full = {"format_version": SAVE_FORMAT_VERSION, **meta}
    tmpj = folder / (SAVE_META + ".tmp")
    tmpj.write_text(json.dumps(full, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmpj, folder / SAVE_META)
    return folder


# -- image transforms (PIL + numpy; torchvision is not available) ---------------------------
_RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0}  # PIL.Image.Resampling values


def resize_shorter(image: "Image.Image", size: int, interpolation: str = "bicubic") -> "Image.Image":
    """Resize so the shorter side is ``size`` (torchvision's Resize(int) rule for the long side)."""
    w, h = image.size
    if min(w, h) == size:
        return image
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    return image.resize((nw, nh), _RESAMPLE[interpolation])


def center_crop(image: "Image.Image", size: int) -> "Image.Image":
    """Square center crop (torchvision's rounding); pads nothing, so callers resize first."""
    w, h = image.size
    left = int(round((w - size) / 2.0))
    top = int(round((h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def random_crop(image: "Image.Image", size: int, rng: random.Random) -> "Image.Image":
    w, h = image.size
    left = rng.randint(0, w - size)
    top = rng.randint(0, h - size)
    return image.crop((left, top, left + size, top + size))


def to_tensor(image: "Image.Image", mean: tuple[float, ...] | None, std: tuple[float, ...] | None, grey: bool = False) -> "torch.Tensor":
    """PIL -> float32 CHW in [0, 1], then normalised."""
    import numpy as np
    import torch

    if grey:
        image = image.convert("L")
    arr = np.asarray(image, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    if mean is not None and std is not None:
        x = (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    return x


def apply_preprocessing(image: "Image.Image", p: Preprocessing, *, rng: random.Random | None = None, flip: bool = False) -> "torch.Tensor":
    """Eval transform of a card; with ``rng``, the train-time variant (random crop, optional flip)."""
    from PIL import Image as _Image

    if image.mode != "RGB":  # the single-image path of the original code forgot this
        image = image.convert("RGB")
    if p.resize and p.resize_policy == "shorter":
        image = resize_shorter(image, p.resize, p.interpolation)
    elif p.crop and p.resize_policy == "upscale_only" and min(image.size) < p.crop:
        image = resize_shorter(image, p.crop, p.interpolation)
    if p.crop:
        if min(image.size) < p.crop:  # resize_policy 'none' with a small image
            image = resize_shorter(image, p.crop, p.interpolation)
        image = random_crop(image, p.crop, rng) if rng is not None else center_crop(image, p.crop)
    if rng is not None and flip and rng.random() < 0.5:
        image = image.transpose(_Image.Transpose.FLIP_LEFT_RIGHT)
    return to_tensor(image, p.mean, p.std, grey=p.colour == "grey")


def resolve_dtype(device: str, dtype: str | None, cuda_default: str = "float16") -> "torch.dtype":
    """The compute dtype: fp16/bf16 on GPU, fp32 (or bf16 when asked) on CPU."""
    import torch

    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    is_cuda = str(device).startswith("cuda")
    if dtype is None:
        return names[cuda_default] if is_cuda else torch.float32
    if dtype not in names:
        raise AfpbenchError(f"Unknown dtype '{dtype}'; use one of float32, float16, bfloat16.")
    out = names[dtype]
    # The meta device holds no values (afpbench plan, the real-size tests): any dtype builds there.
    if out is torch.float16 and not is_cuda and str(device) != "meta":
        raise AfpbenchError("float16 is not supported on CPU; use --dtype bfloat16 or float32 (or a CUDA --device).")
    return out


def check_device(device: str) -> str:
    import torch

    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AfpbenchError(f"Device '{device}' was asked for but no CUDA GPU is visible; use --device cpu.")
    return device


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


# -- the Detector base class ----------------------------------------------------------------
class Detector:
    """Base class of every detector; subclasses fill the class attributes and the hooks.

    Construction: ``Cls(tag, weights=..., device=..., dtype=..., base=..., image_size=...,
    options=...)``; ``options`` are the detector's own named settings (``option_values``).
    ``train_init=True`` builds a trainable detector from its base without weights (what
    ``afpbench train`` starts from); everything else refuses to run without weights when
    the detector needs them.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    code: ClassVar[str] = ""
    license: ClassVar[str] = ""
    variants: ClassVar[dict[str | None, Variant]] = {None: Variant()}
    trainable: ClassVar[bool] = False
    # The licence forbids commercial use (see DetectorCard.noncommercial).
    noncommercial: ClassVar[bool] = False
    # Whether scoring needs a weights file (released or trained); train_init waives it.
    needs_weights: ClassVar[bool] = False
    # "sgd": afpbench.train runs the gradient loop; "fit": the detector's own fit() (closed form).
    fit_mode: ClassVar[Literal["sgd", "fit"]] = "sgd"
    # Overrides of afpbench.train.TrainConfig defaults (the paper's recipe for AntifakePrompt).
    train_recipe: ClassVar[dict[str, Any]] = {}
    choices: ClassVar[list[str]] = []
    default_threshold_policy: ClassVar[str] = "fixed 0.5 on P(fake)"
    cuda_dtype: ClassVar[str] = "float32"
    # Named options beyond the common arguments (``options={"KEY": "VALUE"}``, the CLI's
    # ``--detector-option KEY=VALUE``): option name -> the values it accepts.
    option_values: ClassVar[dict[str, tuple[str, ...]]] = {}

    def read_own_weights(self) -> tuple[dict[str, Any] | None, dict[str, Any]] | None:
        """Weights in afpbench's own formats: ``(None, {})`` without weights, ``(tensors,
        meta)`` for a folder saved by ``afpbench train`` or a bare .safetensors file, and
        ``None`` for any other file (a released format the subclass reads itself)."""
        p = self.weights_path
        if p is None:
            return None, {}
        if p.is_dir():
            meta, tensors = read_saved(p, self.name)
            return tensors, meta
        if p.suffix == ".safetensors":
            return load_safetensors(p), {}
        return None

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
        self.tag = tag
        self.variant = self.variants[tag]
        self.options = self.check_options(options or {})
        self.device = check_device(device)
        self.requested_dtype = dtype  # None: the detector's default (a detector may pick a mixed-precision mode then)
        self.dtype = resolve_dtype(self.device, dtype, self.cuda_dtype)
        self.base = base
        self.image_size = image_size
        self.train_init = train_init
        self.weights_path: Path | None = self._resolve_weights(weights)
        self.weights_sha256: str | None = sha256_path(self.weights_path) if self.weights_path is not None else None
        expected = self.variant.weights.sha256 if (self.variant.weights and weights is None) else None
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
    def setup(self) -> None:
        """Build the model and load ``self.weights_path`` (None only when allowed)."""

    def preprocessing(self) -> Preprocessing:
        return Preprocessing()

    def preprocess(self, image: "Image.Image", row: dict[str, Any] | None = None) -> "torch.Tensor":
        """Decoded RGB image (and optionally its dataset row) -> CHW float tensor."""
        return apply_preprocessing(image, self.preprocessing())

    def train_preprocess(self, image: "Image.Image", row: dict[str, Any] | None, rng: random.Random) -> "torch.Tensor":
        """Train-time transform: random crop and horizontal flip unless overridden."""
        return apply_preprocessing(image, self.preprocessing(), rng=rng, flip=True)

    def collate(self, items: list[Any]) -> Any:
        import torch

        # default_collate stacks same-shape tensors exactly as torch.stack does, and inside
        # a DataLoader worker it stacks straight into shared memory: one copy less for
        # every batch a worker sends to the scorer.
        first = items[0] if items else None
        if isinstance(first, torch.Tensor) and all(isinstance(x, torch.Tensor) and x.shape == first.shape for x in items):
            return torch.utils.data.default_collate(items)
        return torch.stack(items)

    def forward_scores(self, batch: "torch.Tensor") -> "torch.Tensor":
        """P(fake) for a batch already on the device (subclasses)."""
        raise NotImplementedError

    def bare_forward(self, batch: "torch.Tensor") -> Any:
        """The underlying model's forward on a device batch (for benchmarks); defaults to forward_scores."""
        return self.forward_scores(batch)

    def to_device(self, batch: "torch.Tensor") -> "torch.Tensor":
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
            trainable=self.trainable,
            noncommercial=self.noncommercial,
            choices=list(self.choices),
        )

    def training_data(self) -> str:
        if self.weights_path is not None and self.weights_path.is_dir():
            try:
                return json.loads((self.weights_path / SAVE_META).read_text()).get("training_data", "")
            except (OSError, json.JSONDecodeError):
                return ""
        return self.variant.training_data

    def base_description(self) -> str | None:
        return self.base

    def arguments(self) -> dict[str, Any]:
        """What a results file records to rerun this detector."""
        import torch

        return {
            "detector": self.full_name,
            "weights": str(self.weights_path) if self.weights_path else None,
            "weights_sha256": self.weights_sha256,
            "base": self.base_description(),
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", "") if isinstance(self.dtype, torch.dtype) else str(self.dtype),
            "image_size": self.image_size,
            "threshold": self.threshold,
            "threshold_policy": self.threshold_policy,
        }

    def describe(self) -> "DetectorInfo":
        """What a results file records about this detector (the Scorer contract)."""
        import json as _json

        from afpbench.results import DetectorInfo

        return DetectorInfo(
            name=self.name, tag=self.tag, full_name=self.full_name,
            arguments=_json.loads(_json.dumps(self.arguments(), default=str)),
            weights=str(self.weights_path) if self.weights_path else None, weights_sha256=self.weights_sha256,
            card=self.card.model_dump(mode="json"),
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.full_name} device={self.device} dtype={self.dtype}>"

    # -- weights -------------------------------------------------------------------------
    def _resolve_weights(self, weights: str | Path | None) -> Path | None:
        if weights is not None:
            p = Path(weights).expanduser()
            if not p.exists():
                raise WeightsError(f"Weights {p} for {self.full_name} do not exist; check the --weights path.")
            if p.is_dir() and not (p / SAVE_WEIGHTS).exists():
                raise WeightsError(f"Weights folder {p} has no {SAVE_WEIGHTS}; pass the weights file itself, or a folder written by 'afpbench train' (or downloaded from the Hub).")
            return p
        src = self.variant.weights
        if src is not None:
            for d in weights_dirs():
                if (d / src.filename).exists():
                    return d / src.filename
        if self.needs_weights and not self.train_init:
            if src is not None:
                raise WeightsError(
                    f"{self.full_name} needs {src.filename}: download it from {src.source} and pass --weights PATH "
                    f"or put it in {weights_dirs()[0]} (or a folder named by $AFPBENCH_WEIGHTS)."
                )
            raise WeightsError(f"{self.full_name} has no released weights: train it with 'afpbench train --detector {self.name}' and pass --weights OUT/best.")
        return None

    def saved_meta(self) -> dict[str, Any]:
        """Common fields of ``detector.json``; subclasses add theirs."""
        return {
            "detector": self.name,
            "tag": self.tag,
            "base": self.base_description(),
            "image_size": self.image_size,
            "training_data": getattr(self, "trained_on", "") or self.training_data(),
            "card": self.card.model_dump(mode="json"),
        }

    # -- training hooks (trainable detectors) --------------------------------------------
    def trainable_parameters(self) -> list["torch.nn.Parameter"]:
        raise AfpbenchError(f"{self.name} is not trainable; pick a trainable detector ({', '.join(trainable_names())}).")

    def training_loss(self, batch: "torch.Tensor", labels: "torch.Tensor") -> "torch.Tensor":
        """Mean loss of a device batch with 0/1 labels (gradients flow to trainable_parameters)."""
        raise AfpbenchError(f"{self.name} is not trainable with the gradient loop.")

    def set_training(self, training: bool) -> None:
        """Put the modules in train/eval mode (frozen parts may stay in eval)."""

    def trainable_state(self) -> dict[str, "torch.Tensor"]:
        """The tensors a checkpoint needs to restore training (and scoring) exactly."""
        raise AfpbenchError(f"{self.name} is not trainable.")

    def load_trainable_state(self, state: dict[str, "torch.Tensor"], source: Path | str) -> None:
        raise AfpbenchError(f"{self.name} is not trainable.")

    def save(self, out_dir: str | Path) -> Path:
        """Write a folder that ``load_detector(name, weights=folder)`` loads."""
        if not self.trainable:
            raise AfpbenchError(f"{self.name} has nothing to save; it is not trainable.")
        return write_saved(Path(out_dir), self.saved_meta(), self.trainable_state())

    def fit(self, train_batches: Iterable[tuple[Any, Any]], val_batches: Iterable[tuple[Any, Any]]) -> tuple[float, float]:
        """Closed-form fit for ``fit_mode == 'fit'`` detectors -> (train loss, val loss)."""
        raise AfpbenchError(f"{self.name} is trained with the gradient loop, not fit().")


def trainable_names() -> list[str]:
    from afpbench.detectors import TRAINABLE

    return sorted(TRAINABLE)


def bce_from_probs(p: Any, y: Any) -> float:
    """Mean binary cross-entropy of numpy probabilities (for closed-form fits' reports)."""
    import numpy as np

    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(y, dtype=np.float64)
    if len(y) == 0:
        return math.nan
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def blur_jpeg(image: "Image.Image", rng: random.Random, prob: float) -> "Image.Image":
    """CNNSpot's training augmentation: with probability ``prob`` each, Gaussian blur
    (sigma ~ U[0, 3]) and JPEG re-compression (quality ~ U{30..100}), in that order."""
    import io

    from PIL import Image as _Image
    from PIL import ImageFilter

    if prob > 0 and rng.random() < prob:
        image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.0, 3.0)))
    if prob > 0 and rng.random() < prob:
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=rng.randint(30, 100))
        buf.seek(0)
        image = _Image.open(buf)
        image.load()
        image = image.convert("RGB")
    return image
