"""Tiny weights files for the timm/torchvision zoo, written the way each upstream writes its
release (its saving code, not afpbench's loader): wrapper dicts, optimizer and epoch
entries, pickled training arguments, BatchNorm buffers. The networks are tiny
configurations of upstream's architectures built from timm/torchvision (or, where
upstream has its own blocks, from the key layout its code defines).

``make_zoo_timm(name, tmp_path_factory)`` returns a ready detector for the registry test.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

_CACHE: dict[str, Any] = {}
NAMES = ("commfor", "npr", "drct", "safe", "ladeda", "tiny_ladeda", "bfree")


def _memo(key: str, build):
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def _root(tmp_path_factory) -> Path:
    return _memo("root", lambda: tmp_path_factory.mktemp("zoo-timm"))


def _trained_bn(sd: dict[str, torch.Tensor], g: torch.Generator) -> dict[str, torch.Tensor]:
    """Non-trivial BatchNorm statistics and affine terms, as a trained network has."""
    out = OrderedDict()
    for k, v in sd.items():
        if k.endswith("running_var"):
            v = torch.rand(v.shape, generator=g) * 1.5 + 0.5
        elif k.endswith("running_mean"):
            v = torch.randn(v.shape, generator=g) * 0.1
        elif k.endswith("num_batches_tracked"):
            v = torch.tensor(1234, dtype=torch.long)
        out[k] = v.clone()
    return out


# -- Community Forensics: PyTorchModelHubMixin.save_pretrained of upstream's ViTClassifier --
TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2}


def commfor_classifier(seed: int = 0) -> nn.Module:
    """Upstream's ViTClassifier (timm ViT-S/16-384 in ``self.vit``, head replaced by Linear(dim, 1)) at tiny size."""
    import timm
    from huggingface_hub import PyTorchModelHubMixin

    class ViTClassifier(nn.Module, PyTorchModelHubMixin):
        def __init__(self, model_size: str = "small", input_size: int = 384, patch_size: int = 16, freeze_backbone: bool = False, device: str = "cpu"):
            super().__init__()
            self.vit = timm.create_model("vit_small_patch16_384", pretrained=False, **TINY_VIT)
            self.vit.head = nn.Linear(TINY_VIT["embed_dim"], 1, bias=True)

        def forward(self, x):
            return self.vit(x)

    torch.manual_seed(seed)
    return ViTClassifier(input_size=384)


def write_commfor_hub(folder: Path, seed: int = 0, model: nn.Module | None = None) -> Path:
    """The Hub release layout: model.safetensors (vit.* keys) + config.json (init kwargs)."""
    model = model or commfor_classifier(seed)
    model.save_pretrained(folder)
    return folder


def write_commfor_training_checkpoint(path: Path, model: nn.Module, prefix: str = "") -> Path:
    """utils.save_checkpoint after one training step (``model`` is updated in place):
    {'model', 'optimizer', 'scheduler', 'scaler', 'epoch', 'itr'}."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    sd = OrderedDict((prefix + k, v) for k, v in model.state_dict().items())
    torch.save({"model": sd, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": {}, "epoch": 4, "itr": 1200}, path)
    return path


# -- NPR / SAFE: upstream's truncated resnet50 state dict --------------------------------------
def truncated_resnet_state(num_classes: int, seed: int = 0, blocks: tuple[int, int] = (1, 1), width_per_group: int = 16) -> OrderedDict[str, torch.Tensor]:
    """Keys and shapes of upstream's ``networks/resnet.py`` ResNet (NPR and SAFE): torchvision's
    stem BN and layer1-2 key layout, a 3x3 ``conv1`` (64, 3, 3, 3) and ``fc1`` (n, 512)."""
    from torchvision.models.resnet import Bottleneck, ResNet

    torch.manual_seed(seed)
    full = ResNet(Bottleneck, [blocks[0], blocks[1], 1, 1], width_per_group=width_per_group).state_dict()
    keep = OrderedDict((k, v) for k, v in full.items() if k.split(".")[0] in ("bn1", "layer1", "layer2"))
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict([("conv1.weight", torch.randn(64, 3, 3, 3, generator=g) * 0.2)])
    sd.update(_trained_bn(keep, g))
    sd["fc1.weight"] = torch.randn(num_classes, 512, generator=g) * 0.05
    sd["fc1.bias"] = torch.zeros(num_classes)
    return sd


def write_npr(path: Path, seed: int = 0, state: dict | None = None) -> Path:
    """BaseModel.save_networks: torch.save(self.model.state_dict()) - a bare state dict."""
    torch.save(state if state is not None else truncated_resnet_state(1, seed), path)
    return path


def safe_args() -> argparse.Namespace:
    return argparse.Namespace(model="SAFE", input_size=256, transform_mode="crop", batch_size=32, blr=1e-2, epochs=20, output_dir="results/SAFE", model_ema=False)


def write_safe(path: Path, seed: int = 0, state: dict | None = None) -> Path:
    """utils.save_model: {'model', 'optimizer', 'epoch', 'scaler', 'args': argparse.Namespace}."""
    sd = state if state is not None else truncated_resnet_state(2, seed)
    params = [nn.Parameter(v.clone()) for v in sd.values() if v.is_floating_point()][:4]
    opt = torch.optim.AdamW(params, lr=1e-3)
    sum(p.sum() for p in params).backward()
    opt.step()
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 17}
    torch.save({"model": sd, "optimizer": opt.state_dict(), "epoch": "best", "scaler": scaler, "args": safe_args()}, path)
    return path


# -- DRCT: train_contrastive.py saves ContrastiveModels.state_dict() ------------------------------
TINY_CONVNEXT = {"depths": (1, 1, 1, 1), "dims": (8, 16, 24, 32)}


def drct_model(seed: int = 0, embedding: int = 16) -> nn.Module:
    """Upstream's ContrastiveModels around get_convnext: timm ConvNeXt whose head.fc is
    replaced by Linear(features, embedding), then fc = Linear(embedding, 2)."""
    import timm

    class ContrastiveModels(nn.Module):
        def __init__(self):
            super().__init__()
            net = timm.create_model("convnext_base", pretrained=False, **TINY_CONVNEXT)
            net.head.fc = nn.Linear(net.head.fc.in_features, embedding)
            self.model = net
            self.fc = nn.Linear(embedding, 2)

        def forward(self, x):
            return self.fc(self.model(x))

    torch.manual_seed(seed)
    return ContrastiveModels()


def write_drct(path: Path, seed: int = 0, model: nn.Module | None = None) -> Path:
    torch.save((model or drct_model(seed)).state_dict(), path)
    return path


# -- LaDeDa / Tiny-LaDeDa: BaseModel.save_networks (bare state dict) ------------------------------
def _bn(prefix: str, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": 1 + 0.1 * torch.randn(n, generator=g),
        f"{prefix}.bias": 0.1 * torch.randn(n, generator=g),
        f"{prefix}.running_mean": 0.1 * torch.randn(n, generator=g),
        f"{prefix}.running_var": torch.rand(n, generator=g) + 0.5,
        f"{prefix}.num_batches_tracked": torch.tensor(106400, dtype=torch.long),
    }


def ladeda_state(seed: int = 0, layers: tuple[int, ...] = (1, 1, 1, 1), width: int = 4, kernel3: tuple[int, ...] = (1, 1, 0, 0)) -> OrderedDict[str, torch.Tensor]:
    """The state dict layout of upstream's ``LaDeDa(Bottleneck, layers, kernel3=...)`` with
    ``fc = Linear(8 * width * 4, 1)``, spelled out from networks/LaDeDa.py."""
    g = torch.Generator().manual_seed(seed)

    def conv(o: int, i: int, k: int) -> torch.Tensor:
        return torch.randn(o, i, k, k, generator=g) * (2.0 / (k * k * o)) ** 0.5

    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    sd["conv1.weight"] = conv(width, 3, 1)
    sd["conv2.weight"] = conv(width, width, 3)
    sd.update(_bn("bn1", width, g))
    inplanes = width
    for li, (n, k3) in enumerate(zip(layers, kernel3), start=1):
        planes = width * 2 ** (li - 1)
        for b in range(n):
            k = (1 if k3 == 0 else 3) if b == 0 else (1 if k3 <= b else 3)
            p = f"layer{li}.{b}"
            sd[f"{p}.conv1.weight"] = conv(planes, inplanes, 1)
            sd.update(_bn(f"{p}.bn1", planes, g))
            sd[f"{p}.conv2.weight"] = conv(planes, planes, k)
            sd.update(_bn(f"{p}.bn2", planes, g))
            sd[f"{p}.conv3.weight"] = conv(planes * 4, planes, 1)
            sd.update(_bn(f"{p}.bn3", planes * 4, g))
            if b == 0:
                sd[f"{p}.downsample.0.weight"] = conv(planes * 4, inplanes, 1)
                sd.update(_bn(f"{p}.downsample.1", planes * 4, g))
            inplanes = planes * 4
    sd["fc.weight"] = torch.randn(1, inplanes, generator=g) * 0.2
    sd["fc.bias"] = torch.zeros(1)
    return sd


def tiny_ladeda_state(seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """The 21 tensors of upstream's released Tiny-LaDeDa files (weights/Tiny_LaDeDa/*.pth)."""
    g = torch.Generator().manual_seed(seed)
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    sd["conv1.weight"] = torch.randn(8, 3, 1, 1, generator=g) * 0.5
    sd["conv2.weight"] = torch.randn(8, 8, 3, 3, generator=g) * 0.2
    sd.update(_bn("bn1", 8, g))
    sd["layer1.0.conv1.weight"] = torch.randn(8, 8, 1, 1, generator=g) * 0.5
    sd.update(_bn("layer1.0.bn1", 8, g))
    sd["layer1.0.conv2.weight"] = torch.randn(8, 8, 3, 3, generator=g) * 0.2
    sd.update(_bn("layer1.0.bn2", 8, g))
    sd["fc.weight"] = torch.randn(1, 8, generator=g) * 0.3
    sd["fc.bias"] = torch.zeros(1)
    return sd


def write_state(path: Path, state: dict) -> Path:
    torch.save(state, path)
    return path


# -- B-Free: {'model': timm ViT state dict} ------------------------------------------------------
TINY_REG4 = {"img_size": 32, "patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2}


def bfree_vit(seed: int = 0) -> nn.Module:
    import timm

    torch.manual_seed(seed)
    model = timm.create_model("vit_base_patch14_reg4_dinov2", pretrained=False, num_classes=1, **TINY_REG4)
    with torch.no_grad():  # a trained head, not timm's near-zero init: scores must spread
        model.head.weight.normal_(0.0, 1.0)
    return model


def write_bfree(path: Path, seed: int = 0, model: nn.Module | None = None) -> Path:
    torch.save({"model": (model or bfree_vit(seed)).state_dict()}, path)
    return path


# -- the registry test's builders ----------------------------------------------------------------
def tiny_file(base_name: str, tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """(weights path, load_detector kwargs) of the tiny release of ``base_name``."""
    root = _root(tmp_path_factory)
    if base_name == "commfor":
        return _memo("commfor", lambda: write_commfor_hub(root / "commfor-model-384")), {"base": "tiny"}
    if base_name == "npr":
        return _memo("npr", lambda: write_npr(root / "model_epoch_last_3090.pth", seed=1)), {"base": "tiny"}
    if base_name == "safe":
        return _memo("safe", lambda: write_safe(root / "checkpoint-best.pth", seed=2)), {"base": "tiny"}
    if base_name == "drct":
        return _memo("drct", lambda: write_drct(root / "14_acc0.9996.pth", seed=3)), {"base": "tiny"}
    if base_name == "ladeda":
        return _memo("ladeda", lambda: write_state(root / "WildRF_LaDeDa.pth", ladeda_state(4))), {"base": "tiny"}
    if base_name == "tiny_ladeda":
        return _memo("tiny_ladeda", lambda: write_state(root / "WildRF_Tiny_LaDeDa.pth", tiny_ladeda_state(5))), {"image_size": 64}
    if base_name == "bfree":
        return _memo("bfree", lambda: write_bfree(root / "model_epoch_best.pth", seed=6)), {"base": "tiny"}
    raise KeyError(base_name)


def make_zoo_timm(name: str, tmp_path_factory, **kw: Any):
    """A tiny instance of one of this zoo's detectors with upstream-format weights."""
    from afpbench.detectors import load_detector

    path, opts = tiny_file(name.split(".")[0], tmp_path_factory)
    return load_detector(name, weights=path, **{**opts, **kw})
