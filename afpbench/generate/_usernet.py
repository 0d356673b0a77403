"""Loading a network the user supplies: a TorchScript file or a ``module:callable``.

Shared by the ``network`` backend (LaMa, LIIF, StyleGAN-XL... exported by the user, see
``docs/networks.md``) and the attacked classifier of the ``attacks`` backend. The
recorded revision of a TorchScript file is ``sha256:`` of its bytes (what
``sha256sum net.pt`` prints, so users can check it); that of a callable covers its
module's source, its name and the weights files it declares.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

import torch

from afpbench._util.hashing import revision_of, sha256_bytes
from afpbench.errors import AfpbenchError
from afpbench.registry import load_object

DOCS = "see docs/networks.md"
_CALLABLE_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def is_callable_ref(ref: str) -> bool:
    """``pkg.mod:make_net`` (and not an existing file that happens to contain ':')."""
    return bool(_CALLABLE_REF.fullmatch(ref)) and not Path(ref).exists()


def load_torchscript(ref: str, device: str, what: str) -> tuple[Any, dict[str, Any]]:
    """``torch.jit.load`` with the two failures users meet turned into one-line errors."""
    path = Path(ref).expanduser()
    if not path.is_file():
        raise AfpbenchError(
            f"The {what} file '{ref}' does not exist; pass --model with the path of a TorchScript file "
            f"(torch.jit.script(net).save('net.pt')) or a package.module:callable, {DOCS}."
        )
    try:
        net = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # torch raises RuntimeError/ValueError/pickle errors with long traces
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise AfpbenchError(
            f"'{ref}' is not a TorchScript file ({first}); export the {what} with torch.jit.script or "
            f"torch.jit.trace and save it (a state dict or a pickled model will not do), or pass a "
            f"package.module:callable, {DOCS}."
        ) from exc
    prov = {"model": ref, "model_kind": "torchscript", "revision": revision_of(path), "class": net.original_name}
    return net, prov


def load_callable(ref: str, what: str) -> tuple[Any, dict[str, Any]]:
    """Import ``module:attr``; an ``nn.Module`` instance is used as is, any other callable
    is a factory called with no arguments that returns the network.

    The revision is the sha256 of the module's source file plus the attribute name, so
    editing the exporter changes the recorded revision. A factory that loads weights
    itself should name their file(s) in ``net.afpbench_weights``: their sha256 joins the
    revision, so different checkpoints never share one.
    """
    obj = load_object(ref)  # raises AfpbenchError when the module or attribute is missing
    module_name, _, attr = ref.partition(":")
    module = sys.modules.get(module_name)
    src = getattr(module, "__file__", None)
    body = Path(src).read_bytes() if src and Path(src).is_file() else module_name.encode()
    if isinstance(obj, torch.nn.Module):
        net = obj
    elif callable(obj):
        try:
            inspect.signature(obj).bind()
        except TypeError as exc:
            raise AfpbenchError(
                f"'{ref}' is called with no arguments to build the {what} but needs some ({exc}); point --model at a "
                f"factory such as 'def make_net(): return net', {DOCS}."
            ) from exc
        except ValueError:
            pass  # a builtin without a signature: just try it
        try:
            net = obj()
        except AfpbenchError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            raise AfpbenchError(f"'{ref}' failed while building the {what} ({type(exc).__name__}: {first}); fix the factory or the weights it loads.") from exc
    else:
        raise AfpbenchError(f"'{ref}' is a {type(obj).__name__}, not a network or a factory; point --model at a callable, {DOCS}.")
    if not callable(net):
        raise AfpbenchError(f"'{ref}' returned a {type(net).__name__}, which cannot be called; the factory must return the {what}, {DOCS}.")
    chunks = [body, b"\0", attr.encode()]
    weights = getattr(net, "afpbench_weights", None)
    weights = [weights] if isinstance(weights, (str, Path)) else list(weights or [])
    weight_hashes = {}
    for w in weights:
        wp = Path(w).expanduser()
        if not wp.is_file():
            raise AfpbenchError(f"'{ref}' names the weights file {w} in afpbench_weights, which does not exist; fix the factory.")
        weight_hashes[str(wp)] = revision_of(wp)
        chunks += [b"\0", weight_hashes[str(wp)].encode()]
    prov = {"model": ref, "model_kind": "callable", "revision": "sha256:" + sha256_bytes(b"".join(chunks)), "class": type(net).__name__}
    if weight_hashes:
        prov["weights"] = weight_hashes
    return net, prov


def load_user_network(ref: str | None, device: str, dtype: torch.dtype, what: str = "network", cast_callables: bool = True) -> tuple[Any, dict[str, Any]]:
    """Load ``--model`` as TorchScript or ``module:callable``, in eval mode on ``device``.

    TorchScript files are cast to ``dtype``. A factory's network keeps the precision its
    factory chose when ``cast_callables`` is false: some upstream models (GLIDE's
    ``convert_to_fp16``) mix precisions on purpose and break when cast wholesale.
    """
    if not ref:
        raise AfpbenchError(
            f"This {what} is supplied by the user; pass --model path/to/net.pt (TorchScript) or "
            f"--model package.module:make_net, {DOCS}."
        )
    callable_ref = is_callable_ref(ref)
    net, prov = load_callable(ref, what) if callable_ref else load_torchscript(ref, device, what)
    if isinstance(net, torch.nn.Module):
        net = net.eval().to(device=device) if callable_ref and not cast_callables else net.eval().to(device=device, dtype=dtype)
        for p in net.parameters():
            p.requires_grad_(False)
    return net, prov


__all__ = ["DOCS", "is_callable_ref", "load_callable", "load_torchscript", "load_user_network"]
