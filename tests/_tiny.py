"""Shared helpers for the detector tests: tiny real bases, tiny detectors with real
(non-trivial) weights written in each detector's own release format, and small
real/fake datasets made from the bundled photos.

Bases are built once per test process (memoised under pytest's session temp folder).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

TINY = 32  # input size of every tiny model
_CACHE: dict[str, Any] = {}


def _root(tmp_path_factory) -> Path:
    if "root" not in _CACHE:
        _CACHE["root"] = tmp_path_factory.mktemp("tiny-bases")
    return _CACHE["root"]


def _memo(key: str, build):
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def tiny_instructblip(tmp_path_factory) -> Path:
    from afpbench.testing import build_tiny_instructblip

    return _memo("instructblip", lambda: build_tiny_instructblip(_root(tmp_path_factory) / "instructblip", seed=0))


def tiny_llama(tmp_path_factory) -> Path:
    from afpbench.testing import build_tiny_llama

    return _memo("llama", lambda: build_tiny_llama(_root(tmp_path_factory) / "llama", seed=1))


def tiny_clip(tmp_path_factory) -> Path:
    from afpbench.testing import build_tiny_clip_vision

    return _memo("clip", lambda: build_tiny_clip_vision(_root(tmp_path_factory) / "clip"))


def tiny_resnet(tmp_path_factory) -> Path:
    from afpbench.testing import build_tiny_resnet

    return _memo("resnet", lambda: build_tiny_resnet(_root(tmp_path_factory) / "resnet"))


def photos(n: int = 8) -> list:
    """``n`` real photos (cycled), in their original sizes."""
    from afpbench.sources.photos import photo_images

    allp = _memo("photos", lambda: [im for _, im in photo_images()])
    return [allp[i % len(allp)] for i in range(n)]


def photo_rows(images: list, fmt: str = "png") -> list[dict[str, Any]]:
    """Rows as the harness passes them (format, size, encoded byte length)."""
    import io

    rows = []
    for im in images:
        buf = io.BytesIO()
        im.save(buf, format="PNG" if fmt == "png" else "JPEG")
        rows.append({"format": fmt, "width": im.width, "height": im.height, "bytes": len(buf.getvalue())})
    return rows


# -- release-format files ---------------------------------------------------------------------
def write_lavis_checkpoint(path: Path, q_hidden: int, llm_hidden: int, seed: int = 0, scale: float = 0.5, model: dict | None = None) -> Path:
    """An AntifakePrompt checkpoint in the authors' LAVIS format: torch.save({"model": {...}})."""
    import torch

    from afpbench.detectors.antifakeprompt import LAVIS_LLM_KEY, LAVIS_QFORMER_KEY

    g = torch.Generator().manual_seed(seed)
    sd = model if model is not None else {
        LAVIS_QFORMER_KEY: torch.randn(1, q_hidden, generator=g) * scale,
        LAVIS_LLM_KEY: torch.randn(1, llm_hidden, generator=g) * scale,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": sd, "epoch": 3}, path)
    return path


def lavis_buffers(base_dir: Path, llm_prefix: str = "llm_model.model.", fp16_rounded: bool = False) -> dict:
    """The registered buffers the authors' LAVIS trainer saves beside the trained tensors,
    computed as their code computes them from the base's configs: LAVIS ``BertEmbeddings``
    (``position_ids = arange(max_position_embeddings).expand((1, -1))``) and their
    transformers-4.30 ``LlamaRotaryEmbedding`` (one ``inv_freq = 1 / 10000 ** (arange(0,
    dim, 2) / dim)`` per layer, dim = hidden / heads). ``fp16_rounded``: the inv_freq values
    as they come out of an fp16 Vicuna checkpoint (stored back in fp32)."""
    import torch
    from transformers import InstructBlipConfig

    cfg = InstructBlipConfig.from_pretrained(base_dir)
    q, t = cfg.qformer_config, cfg.text_config
    out = {"Qformer.bert.embeddings.position_ids": torch.arange(q.max_position_embeddings).expand((1, -1))}
    dim = t.hidden_size // t.num_attention_heads
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
    if fp16_rounded:
        inv_freq = inv_freq.half().float()
    for i in range(t.num_hidden_layers):
        out[f"{llm_prefix}layers.{i}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
    return out


def trainer_state_dict(module) -> dict:
    """LAVIS ``RunnerBase._save_checkpoint``'s rule on a real module: its state dict minus
    the parameters that do not require grad (buffers stay)."""
    grad = {k: p.requires_grad for k, p in module.named_parameters()}
    return {k: v for k, v in module.state_dict().items() if not (k in grad and not grad[k])}


def write_lavis_trainer_checkpoint(path: Path, model: dict, arch: str = "blip2_vicuna_instruct_textinv", epoch: int = 9) -> Path:
    """What the authors' trainer writes (LAVIS ``RunnerBase._save_checkpoint``):
    ``torch.save({"model", "optimizer", "config", "scaler", "epoch"})``. The optimizer is a
    real AdamW (the paper's lr 1e-5, weight decay 0.05) stepped once over the floating
    tensors of ``model`` that are not buffers; the scaler a real GradScaler's state."""
    import torch

    trained = [torch.nn.Parameter(v.detach().clone().float()) for k, v in model.items() if torch.is_floating_point(v) and "rotary_emb" not in k]
    opt = torch.optim.AdamW(trained, lr=1e-5, betas=(0.9, 0.999), weight_decay=0.05)
    for p in trained:
        p.grad = torch.full_like(p, 1e-3)
    opt.step()
    config = {  # OmegaConf.to_container of the run config: plain containers only
        "model": {"arch": arch, "model_type": "vicuna7b", "load_finetuned": False, "prompt": "Is this photo real [*]?", "pseudo_word": "[*]"},
        "datasets": {"textinv": {"vis_processor": {"train": {"name": "blip2_image_train_textinv", "image_size": 224, "mean": [0.4730, 0.4499, 0.4129], "std": [0.2780, 0.2713, 0.2872]}}}},
        "run": {"task": "textinv", "lr_sched": "linear_warmup_cosine_lr", "init_lr": 1e-5, "min_lr": 0, "weight_decay": 0.05, "max_epoch": 10, "batch_size_train": 6, "amp": True, "seed": 42},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model, "optimizer": opt.state_dict(), "config": config, "scaler": torch.amp.GradScaler("cpu").state_dict(), "epoch": epoch}, path)
    return path


def hf_to_torchvision(key: str) -> str:
    """transformers ResNet key -> torchvision key (to write CNNSpot-format files in tests)."""
    m = re.fullmatch(r"resnet\.embedder\.embedder\.(convolution|normalization)\.(\w+)", key)
    if m:
        return ("conv1." if m[1] == "convolution" else "bn1.") + m[2]
    m = re.fullmatch(r"resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d)\.(convolution|normalization)\.(\w+)", key)
    if m:
        kind = "conv" if m[4] == "convolution" else "bn"
        return f"layer{int(m[1]) + 1}.{m[2]}.{kind}{int(m[3]) + 1}.{m[5]}"
    m = re.fullmatch(r"resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.(convolution|normalization)\.(\w+)", key)
    if m:
        return f"layer{int(m[1]) + 1}.{m[2]}.downsample.{0 if m[3] == 'convolution' else 1}.{m[4]}"
    m = re.fullmatch(r"classifier\.1\.(weight|bias)", key)
    if m:
        return f"fc.{m[1]}"
    raise KeyError(key)


def torchvision_resnet50_keys() -> list[str]:
    """Every key of torchvision's resnet50().state_dict(), written out from its structure."""
    keys = ["conv1.weight"] + [f"bn1.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    for layer, depth in zip(range(1, 5), (3, 4, 6, 3)):
        for b in range(depth):
            for i in (1, 2, 3):
                keys.append(f"layer{layer}.{b}.conv{i}.weight")
                keys += [f"layer{layer}.{b}.bn{i}.{s}" for s in bn]
            if b == 0:
                keys.append(f"layer{layer}.{b}.downsample.0.weight")
                keys += [f"layer{layer}.{b}.downsample.1.{s}" for s in bn]
    return keys + ["fc.weight", "fc.bias"]


def write_cnnspot_checkpoint(path: Path, resnet_dir: Path, seed: int = 0) -> Path:
    """A CNNSpot file as released: {"model": torchvision-keyed state dict} for the tiny ResNet."""
    import torch
    from transformers import ResNetForImageClassification

    torch.manual_seed(seed)
    model = ResNetForImageClassification.from_pretrained(resnet_dir)
    sd = {hf_to_torchvision(k): v.clone() for k, v in model.state_dict().items()}
    # Non-trivial BN statistics, as a trained network has.
    for k, v in sd.items():
        if k.endswith("running_var"):
            sd[k] = v.clone().uniform_(0.5, 2.0)
        elif k.endswith("running_mean"):
            sd[k] = v.clone().normal_(0, 0.1)
    torch.save({"model": sd, "total_steps": 100}, path)
    return path


# -- tiny detectors, one recipe per registered name ------------------------------------------
def make_detector(name: str, tmp_path_factory, **kw: Any):
    """A tiny instance of detector ``name`` with real, non-trivial weights (memoised files)."""
    import torch

    from afpbench.detectors import load_detector

    root = _root(tmp_path_factory)
    base_name = name.split(".")[0]
    from _zoo_timm import NAMES as ZOO_TIMM
    from _zoo_timm import make_zoo_timm

    if base_name in ZOO_TIMM:  # timm/torchvision zoo: builders in tests/_zoo_timm.py
        return make_zoo_timm(name, tmp_path_factory, **kw)
    if base_name == "antifakeprompt":
        base = tiny_instructblip(tmp_path_factory)
        ckpt = _memo("afp-ckpt", lambda: write_lavis_checkpoint(root / "afp.pth", 32, 48, seed=3))
        return load_detector(name, base=str(base), weights=ckpt, **kw)
    if base_name == "instructblip":
        return load_detector(name, base=str(tiny_instructblip(tmp_path_factory)), **kw)
    if base_name == "instructblip_lora":
        def build() -> Path:
            det = load_detector(name, base=str(tiny_instructblip(tmp_path_factory)), train_init=True)
            g = torch.Generator().manual_seed(5)
            with torch.no_grad():
                for p in det.trainable_parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            return det.save(root / "lora")

        return load_detector(name, weights=_memo("lora", build), base=str(tiny_instructblip(tmp_path_factory)), **kw)
    if base_name == "cnnspot":
        res = tiny_resnet(tmp_path_factory)
        ckpt = _memo("cnnspot-ckpt", lambda: write_cnnspot_checkpoint(root / "blur_jpg_prob0.1.pth", res))
        return load_detector(name, base=str(res), weights=ckpt, image_size=TINY, **kw)
    if base_name == "univfd":
        def probe() -> Path:
            g = torch.Generator().manual_seed(7)
            path = root / "fc_weights.pth"
            torch.save({"weight": torch.randn(1, 16, generator=g), "bias": torch.randn(1, generator=g)}, path)
            return path

        return load_detector(name, base=str(tiny_clip(tmp_path_factory)), weights=_memo("univfd-probe", probe), **kw)
    if base_name == "spectral":
        def fitted() -> Path:
            from afpbench.testing import fakeify

            det = load_detector("spectral", image_size=TINY, train_init=True)
            real = photos(12)
            fake = [fakeify(im) for im in photos(12)]
            x = det.collate([det.preprocess(im) for im in real + fake])
            det.fit([(x, torch.tensor([0] * 12 + [1] * 12))], [])
            return det.save(root / "spectral")

        return load_detector(name, weights=_memo("spectral", fitted), **kw)
    if base_name == "efficientnet":
        def fresh() -> Path:
            torch.manual_seed(0)
            return load_detector("efficientnet", image_size=TINY, train_init=True).save(root / "efficientnet")

        return load_detector(name, weights=_memo("efficientnet", fresh), **kw)
    from _zoo_hf import ZOO_HF, make_zoo_hf  # transformers zoo: builders in tests/_zoo_hf.py

    if base_name in ZOO_HF:
        return make_zoo_hf(name, root, **kw)
    return load_detector(name, **kw)  # constant, random, format, third-party plugins


# -- data ----------------------------------------------------------------------------------------
def make_split(out: Path, n: int, seed: int, prefix: str, size: int = 64, fake_format: str = "png", real_format: str = "png") -> tuple[Path, Path]:
    """A real set (photo crops) and a fake set (fakeified crops), ``n`` rows each."""
    from afpbench.sources.photos import photo_crops
    from afpbench.testing import fakeify, write_images

    real = [c.image for c in photo_crops(n, seed=seed, size=size, prefix=f"{prefix}r")]
    fake = [fakeify(c.image) for c in photo_crops(n, seed=seed + 1000, size=size, prefix=f"{prefix}f")]
    r = write_images(out, f"{prefix}_real", real, 0, image_format=real_format)
    f = write_images(out, f"{prefix}_fake", fake, 1, image_format=fake_format)
    return r, f


def scores_on(det, dirs: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, P(fake)) of a detector over dataset folders, through preprocess + score."""
    from afpbench.dataset import decode_image, open_dataset

    xs, ys = [], []
    for d in dirs:
        for row in open_dataset(d).rows():
            info = {"format": row["format"], "width": row["width"], "height": row["height"], "bytes": len(row["image"]["bytes"])}
            xs.append(det.preprocess(decode_image(row["image"]), info))
            ys.append(row["label"])
    return np.asarray(ys), det.score(det.collate(xs)).numpy()


def one_thread():
    """Generator for a module fixture: tiny models run faster on one torch thread (no
    threading overhead, no oversubscription on a shared 2-core machine); restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
