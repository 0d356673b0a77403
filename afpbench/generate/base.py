"""The contract between ``afpbench.build`` and the generation backends.

``build`` plans every row up front (``WorkItem``: id, seed, prompt, what input to load),
then hands batches of items and their loaded input images to a ``Backend``, which
returns one ``Output`` per item. Backends never write files and never draw from a
shared random stream: each row is seeded from ``WorkItem.seed`` alone, which is what
makes subsets, resumed builds and builds split over processes give identical rows.

Only the standard library is imported at module level; torch is imported by the
helpers that need it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from afpbench.errors import AfpbenchError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from afpbench.catalog import GeneratorCard, Recipe

DTYPES = ("fp16", "bf16", "fp32")


@dataclass
class BuildConfig:
    """What ``afpbench build`` and library callers choose; ``None`` means the recipe's value."""

    out: Path = Path("out")
    count: int | None = None  # default: recipe.count.value
    seed: int | None = None  # default: recipe.seed
    model: str | None = None  # hub id, local folder, TorchScript file, "module:callable", or a named offline classifier
    source: str | None = None  # path(s) of inputs, "photos" for the bundled photos, or "a=path,b=path" for mixes
    batch_size: int = 4
    device: str | None = None  # default: cuda if available else cpu
    dtype: str | None = None  # fp16|bf16|fp32; default: the generator card's dtype on GPU, fp32 on CPU
    quiet: bool = False
    params: dict[str, Any] = field(default_factory=dict)  # --param key=value overrides of recipe params (recorded)
    name: str | None = None  # output set name (default: recipe.name)


@dataclass
class WorkItem:
    """One row to produce, planned cheaply before any model is loaded."""

    index: int  # position in the final dataset (0..count-1)
    id: str  # stable row id, e.g. "sd3/coco-391895-0"
    seed: int  # afpbench.seeding.row_seed(recipe_seed, id)
    prompt: str = ""
    source: str = ""  # caption id / source image id
    image_ref: Any = None  # what the source needs to load the input image lazily
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Output:
    """One produced row.

    ``image`` is stored as lossless PNG. A backend that copies a real image unchanged
    (the ``sample`` backend) may also pass its original encoded bytes in ``data`` with
    their ``format`` ("jpeg", "webp"...): re-encoding real photos would change exactly the
    compression traces detectors are sensitive to.
    """

    image: "Image.Image"
    meta: dict[str, Any] = field(default_factory=dict)
    data: bytes | None = None
    format: str | None = None


class Backend:
    """Base class of the generation backends (one subclass per file in afpbench/generate/)."""

    family: str = ""

    def __init__(self, recipe: "Recipe", card: "GeneratorCard | None", config: BuildConfig):
        self.recipe = recipe
        self.card = card
        self.config = config
        self.params = resolve_params(recipe, config)

    def param(self, key: str, default: Any = None) -> Any:
        """A recipe parameter (after --param overrides), else the generator card's default."""
        if key in self.params and self.params[key] is not None:
            return self.params[key]
        if self.card is not None and self.card.defaults.get(key) is not None:
            return self.card.defaults[key]
        return default

    def load(self) -> dict[str, Any]:
        """Load models once, before any work; raise ``AfpbenchError`` (one line naming the fix)
        if a model cannot be loaded. Returns provenance for the manifest: model_id, revision
        actually loaded, pipeline/class, scheduler, dtype, device."""
        return {}

    def run(self, items: list[WorkItem], inputs: list["Image.Image | None"]) -> list[Output]:
        """Produce one batch, seeding each row from ``item.seed`` (never a shared RNG stream)."""
        raise NotImplementedError

    @staticmethod
    def summarize(metas: list[dict[str, Any]]) -> dict[str, Any]:
        """Manifest extras computed from every row's meta at finalize (e.g. attack success rate)."""
        return {}


# -- parameters -----------------------------------------------------------------------
def resolve_params(recipe: "Recipe", config: BuildConfig) -> dict[str, Any]:
    """The recipe's parameter values with the caller's ``--param`` overrides applied."""
    return {**recipe.resolved_params(), **(config.params or {})}


def parse_param_values(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["steps=2", "height=64", "mask_kind=box"]`` -> typed values (YAML scalars/lists)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise AfpbenchError(f"--param '{pair}' is not key=value; write it as --param num_inference_steps=30.")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key] = value
    return out


def check_param_keys(recipe: "Recipe", params: dict[str, Any]) -> None:
    """Refuse overrides of parameters the recipe does not have (a typo would be silently ignored)."""
    from afpbench.registry import did_you_mean

    known = list(recipe.params)
    for key in params:
        if key not in recipe.params:
            raise did_you_mean(key, known, f"parameter of recipe '{recipe.name}'", f"Its parameters: {', '.join(known) or '(none)'}.")


# -- device and dtype -----------------------------------------------------------------
def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(config: BuildConfig, default: str | None = None) -> str:
    """``--device`` if given (checked), else ``default`` (a launcher's device), else cuda/cpu."""
    if config.device:
        dev = config.device
        if dev.startswith("cuda") and not cuda_available():
            raise AfpbenchError(f"--device {dev} was asked for but no CUDA device is visible; pass --device cpu or run on a GPU machine.")
        if not (dev == "cpu" or dev.startswith("cuda") or dev == "mps"):
            raise AfpbenchError(f"Unknown --device '{dev}'; use cpu, cuda or cuda:N.")
        return dev
    if default:
        return default
    return "cuda" if cuda_available() else "cpu"


def resolve_dtype(config: BuildConfig, card: "GeneratorCard | None", device: str) -> str:
    """``--dtype`` if given, else the card's dtype on a GPU and fp32 on CPU (fp16 kernels are slow or missing there)."""
    if config.dtype:
        if config.dtype not in DTYPES:
            raise AfpbenchError(f"Unknown --dtype '{config.dtype}'; use one of {', '.join(DTYPES)}.")
        return config.dtype
    if device.startswith("cuda") and card is not None:
        return card.dtype
    return "fp32"


def torch_dtype(name: str):
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


# -- model references -----------------------------------------------------------------
def looks_like_path(ref: str) -> bool:
    """True for references that are meant as local paths rather than hub ids."""
    if ref.startswith(("/", "./", "../", "~", ".")) or ref.endswith(("/", os.sep)):
        return True
    if os.sep != "/" and os.sep in ref:
        return True
    return ref.count("/") > 1  # hub ids are "name" or "org/name"


def hash_path(path: str | Path) -> str:
    """sha256 of a file (what ``sha256sum`` prints), or over a folder's relative file
    names and contents (sorted).

    Recorded as the revision of a locally loaded model so that two builds can tell
    whether they used the same weights.
    """
    from afpbench._util.hashing import sha256_file

    path = Path(path)
    if path.is_file():
        return "sha256:" + sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        h.update(bytes.fromhex(sha256_file(f)))
    return "sha256:" + h.hexdigest()
