"""Weights files for detector files: finding, hashing, reading and checking them, loudly.

A file that is missing, truncated, or whose keys or shapes do not match the model raises
``WeightsError`` naming the file and the mismatch. Nothing is loaded with
``strict=False`` and no detector ever scores with random weights.

afpbench's own format for a trained detector is a folder holding ``detector.json`` and
one ``model.safetensors`` (``write_saved`` / ``read_saved``); released files come in
upstream's formats, which each detector file maps by an explicit key map.

torch and safetensors are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from afpbench._util.hashing import sha256_file
from afpbench._util.io import atomic_write_text, replacing
from afpbench.errors import WeightsError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from afpbench.cards import WeightsSource

# The on-disk format afpbench writes for trained detectors: a folder with this JSON and
# one safetensors file. Bumped when the layout changes; readers refuse newer versions.
SAVE_FORMAT_VERSION = 1
SAVE_META = "detector.json"
SAVE_WEIGHTS = "model.safetensors"


# -- where weights are ----------------------------------------------------------------------
def weights_dirs() -> list[Path]:
    """Folders searched for released weights: $AFPBENCH_WEIGHTS (os.pathsep-separated), then ~/.cache/afpbench/weights."""
    out = [Path(p).expanduser() for p in os.environ.get("AFPBENCH_WEIGHTS", "").split(os.pathsep) if p]
    out.append(Path("~/.cache/afpbench/weights").expanduser())
    return out


def resolve_weights(weights: str | Path | None, *, name: str, full_name: str, release: "WeightsSource | None", required: bool) -> Path | None:
    """The weights file (or saved folder) a detector loads.

    ``weights`` given: it must exist (a folder must be an afpbench folder). Otherwise the
    release's file name is looked up in ``weights_dirs()``; when nothing is found and the
    detector ``required`` weights, the error says where to download them or how to train.
    """
    if weights is not None:
        p = Path(weights).expanduser()
        if not p.exists():
            raise WeightsError(f"Weights {p} for {full_name} do not exist; check the --weights path.")
        if p.is_dir() and not (p / SAVE_WEIGHTS).exists():
            raise WeightsError(f"Weights folder {p} has no {SAVE_WEIGHTS}; pass the weights file itself, or a folder written by 'afpbench train' (or downloaded from the Hub).")
        return p
    if release is not None:
        for d in weights_dirs():
            if (d / release.filename).exists():
                return d / release.filename
    if required:
        if release is not None:
            raise WeightsError(
                f"{full_name} needs {release.filename}: download it from {release.source} and pass --weights PATH "
                f"or put it in {weights_dirs()[0]} (or a folder named by $AFPBENCH_WEIGHTS)."
            )
        raise WeightsError(f"{full_name} has no released weights: train it with 'afpbench train --detector {name}' and pass --weights OUT/best.")
    return None


def weights_sha256(path: str | Path) -> str:
    """sha256 of a weights file, or of a saved detector folder's weights file."""
    path = Path(path)
    return sha256_file(path / SAVE_WEIGHTS if path.is_dir() else path)


# -- reading ------------------------------------------------------------------------------------
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


def tensor_dict(obj: Any, source: Path | str, expected: str, *, unwrap: bool = False, strip_module: bool = False) -> dict[str, Any]:
    """The state dict in a loaded checkpoint, refused unless it holds only tensors.

    ``unwrap``: take the ``model`` entry when there is one (the wrapper dict that training
    scripts save beside optimizer and epoch entries). ``strip_module``: drop the ``module.``
    prefix DataParallel/DDP put on every key. ``expected`` completes the error "SOURCE is not ...".
    """
    import torch

    if unwrap and isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{source} is not {expected}.")
    return {k.removeprefix("module."): v for k, v in obj.items()} if strip_module else dict(obj)


def read_state_dict(path: Path, what: str) -> dict[str, Any]:
    """A state dict from a released file: bare, or under ``model`` (CNNDetection-style wrappers)."""
    obj = load_safetensors(path) if path.suffix == ".safetensors" else torch_load(path)
    return tensor_dict(obj, path, f"{what} (a state dict of tensors); use the released file", unwrap=True)


def load_module(build: Callable[[], "nn.Module"], state: dict[str, Any], source: Path | str, what: str) -> "nn.Module":
    """Build on the meta device, check every key and shape, then take the file's tensors.

    Checking before allocating refuses a wrong file in milliseconds even for large models;
    ``assign=True`` makes the loaded tensors the parameters (no second copy).
    """
    import torch

    with torch.device("meta"):
        model = build()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_dict(expected, state, source, what)
    model.load_state_dict(state, strict=True, assign=True)
    return model


# -- afpbench's own format ------------------------------------------------------------------
def is_own_format(path: Path) -> bool:
    """True for the formats afpbench writes (a saved folder, a bare .safetensors file);
    False for a released file in upstream's format, which its detector reads itself."""
    return path.is_dir() or path.suffix == ".safetensors"


def read_own(path: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, meta) of a file in afpbench's own format (see ``is_own_format``); a bare
    .safetensors file has no meta."""
    if path.is_dir():
        meta, tensors = read_saved(path, name)
        return tensors, meta
    return load_safetensors(path), {}


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


def saved_training_data(folder: Path) -> str:
    """The ``training_data`` a saved folder records ("" when unreadable: the card then says nothing)."""
    try:
        return json.loads((folder / SAVE_META).read_text()).get("training_data", "")
    except (OSError, json.JSONDecodeError):
        return ""


def write_saved(folder: Path, meta: dict[str, Any], tensors: dict[str, Any]) -> Path:
    """Write an afpbench detector folder (weights first, JSON last, so a crash leaves no valid-looking folder)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with replacing(folder / SAVE_WEIGHTS) as tmp:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp))
    full = {"format_version": SAVE_FORMAT_VERSION, **meta}
    atomic_write_text(folder / SAVE_META, json.dumps(full, indent=2, sort_keys=True, default=str) + "\n")
    return folder


__all__ = [
    "SAVE_FORMAT_VERSION", "SAVE_META", "SAVE_WEIGHTS", "weights_dirs", "resolve_weights", "weights_sha256", "check_state_dict",
    "torch_load", "load_safetensors", "read_state_dict", "load_module", "is_own_format", "read_own", "read_saved",
    "saved_training_data", "write_saved",
]
