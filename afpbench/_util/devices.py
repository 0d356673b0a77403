"""One vocabulary for devices and dtypes, used by build, evaluate, train and every detector.

Devices: ``auto`` (the default everywhere: a launcher's device, else CUDA when visible,
else CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps``. Dtypes: ``float32``, ``float16``,
``bfloat16``, with the short spellings ``fp32``, ``fp16``, ``bf16`` (and ``half``)
accepted as the same names.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from afpbench.errors import AfpbenchError

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEFAULT_DEVICE = "auto"
DEVICE_HELP = "auto (a launcher's device, else cuda when visible, else cpu), cpu, cuda, cuda:N or mps"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

#: Canonical dtype names and their accepted spellings.
DTYPES = {"float32": ("float32", "fp32"), "float16": ("float16", "fp16", "half"), "bfloat16": ("bfloat16", "bf16")}
DTYPE_CHOICES = tuple(s for spellings in DTYPES.values() for s in spellings)
_CANON = {s: canon for canon, spellings in DTYPES.items() for s in spellings}


def check_device_name(device: str) -> str:
    """Refuse a device outside the vocabulary (no torch needed: usable at parse time)."""
    d = str(device).strip().lower()
    if not _DEVICE.match(d):
        raise AfpbenchError(f"Unknown device '{device}'; use {DEVICE_HELP}.")
    return d


def resolve_device(requested: str | None = DEFAULT_DEVICE, launcher_device: str | None = None) -> str:
    """The concrete device: ``auto`` -> the launcher's device, else cuda/cpu; a named CUDA device must be visible."""
    d = check_device_name(requested or DEFAULT_DEVICE)
    if d == "auto":
        if launcher_device:
            return launcher_device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if d.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise AfpbenchError(f"Device '{d}' was asked for but no CUDA device is visible; pass --device cpu (or auto).")
        index = int(d.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise AfpbenchError(f"Device '{d}' was asked for but only {torch.cuda.device_count()} CUDA device(s) are visible; pass --device cuda:0.")
    if d == "mps":
        import torch

        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise AfpbenchError("Device 'mps' was asked for but Metal is not available here; pass --device cpu.")
    return d


def canonical_dtype(name: str | None) -> str | None:
    """``fp16`` -> ``float16`` and so on; None stays None (the caller's default)."""
    if name is None:
        return None
    key = str(name).strip().lower().replace("torch.", "")
    if key not in _CANON:
        raise AfpbenchError(f"Unknown dtype '{name}'; use one of float32, float16, bfloat16 (or fp32, fp16, bf16).")
    return _CANON[key]


def torch_dtype(name: str) -> "torch.dtype":
    import torch

    return getattr(torch, canonical_dtype(name))


def dtype_name(dtype: Any) -> str:
    """The canonical name of a torch dtype or a spelling."""
    return canonical_dtype(str(dtype))


def resolve_dtype(device: str, dtype: str | None, cuda_default: str = "float16") -> "torch.dtype":
    """The compute dtype: the asked one, else ``cuda_default`` on a GPU and float32 elsewhere.

    float16 is refused off the GPU: CPU kernels for it are missing or many times slower,
    and a half-precision run there fails deep inside a model instead of here.
    """
    is_cuda = str(device).startswith("cuda")
    name = canonical_dtype(dtype) or (canonical_dtype(cuda_default) if is_cuda else "float32")
    if name == "float16" and not is_cuda:
        raise AfpbenchError("float16 is not supported on CPU; use --dtype bfloat16 or float32 (or a CUDA --device).")
    return torch_dtype(name)


__all__ = [
    "DEFAULT_DEVICE", "DEVICE_HELP", "DTYPES", "DTYPE_CHOICES", "check_device_name", "resolve_device",
    "canonical_dtype", "torch_dtype", "dtype_name", "resolve_dtype",
]
