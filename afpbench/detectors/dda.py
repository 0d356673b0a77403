"""DDA (Chen et al., NeurIPS 2025): DINOv2 ViT-L/14 with LoRA and a linear head, trained
on COCO photos and their VAE reconstructions aligned in pixels and frequencies.

Upstream (``roy-ch/Dual-Data-Alignment``): ``DINOv2ModelWithLoRA`` wraps the torch.hub
``dinov2_vitl14`` in ``base_model.model`` and replaces every ``attn.qkv``, ``attn.proj``,
``mlp.fc1`` and ``mlp.fc2`` Linear by a ``LoRALinear`` (``original_layer`` + ``lora.lora_A``
[r, in] + ``lora.lora_B`` [out, r], output ``W x + b + (alpha / r) B A x`` with r = 8,
alpha = 1); the head ``base_model.fc`` reads the normalised CLS token. The training code
saves ``{"model": model.state_dict(), "optimizer": ..., "total_steps": ...}``, so a release
holds the whole backbone, not only the adapters.

Here the backbone is transformers' ``Dinov2Model`` built from a config (ViT-L/14 by
default; ``--base`` names a folder or hub id whose ``config.json`` describes another size,
its weights are not read). Every upstream key is mapped explicitly (``qkv`` is split into
``q_proj``/``k_proj``/``v_proj``), the LoRA pairs are attached with peft (``LoraConfig(r=8,
lora_alpha=1)``: the same ``alpha / r`` scaling) and merged into the weights, so scoring
costs one plain DINOv2 forward. The hub model interpolates its 37x37 position embeddings
to the input grid with a historical 0.1 offset in the scale factor; transformers' port
interpolates to the size instead, which gives slightly different numbers. afpbench
therefore computes the embeddings for the crop grid once, the hub's way, and installs
them for that size.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from afpbench.cards import Preprocessing, Variant, WeightsSource
from afpbench.detectors._transforms import CLIP_MEAN, CLIP_STD
from afpbench.detectors._weights import check_state_dict, load_safetensors, tensor_dict, torch_load
from afpbench.detectors.base import Detector
from afpbench.errors import AfpbenchError, WeightsError

# facebook/dinov2-large's architecture (torch.hub dinov2_vitl14: img_size 518, patch 14,
# layer scale 1.0, LayerNorm eps 1e-6, GELU MLP of ratio 4).
VITL14 = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4, image_size=518, patch_size=14,
              layerscale_value=1.0, layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True, use_swiglu_ffn=False)
LORA_RANK = 8
LORA_ALPHA = 1.0
# The hub model's position-embedding interpolation offset (dinov2 hub backbones: interpolate_offset=0.1).
INTERPOLATE_OFFSET = 0.1
# Linears that upstream wraps with LoRA, as (upstream name, transformers name).
_LORA_TARGETS = (("attn.qkv", None), ("attn.proj", "attention.o_proj"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))

_HF_RELEASE = "https://huggingface.co/Junwei-Xi/Dual-Data-Alignment"
_MS_LEGACY = "https://www.modelscope.cn/datasets/roych1997/Dual_Data_Alignment/files"
_TRAINING = ("MSCOCO train2017 photos (real) and their Stable Diffusion VAE reconstructions with pixel and frequency "
             "alignment (DDA-Training-Set); note: COCO train2017 contains train2014, the source of AntifakePrompt's COCO reals")


def upstream_keys(cfg: Any, rank: int = LORA_RANK) -> dict[str, tuple[int, ...]]:
    """Every key (-> shape) of upstream's ``DINOv2ModelWithLoRA.state_dict()`` for a DINOv2 config."""
    d, p = cfg.hidden_size, cfg.patch_size
    h = int(d * cfg.mlp_ratio)
    n = (cfg.image_size // p) ** 2
    pre = "base_model.model."
    out: dict[str, tuple[int, ...]] = {
        pre + "cls_token": (1, 1, d), pre + "pos_embed": (1, n + 1, d), pre + "mask_token": (1, d),
        pre + "patch_embed.proj.weight": (d, cfg.num_channels, p, p), pre + "patch_embed.proj.bias": (d,),
        pre + "norm.weight": (d,), pre + "norm.bias": (d,), "base_model.fc.weight": (1, d), "base_model.fc.bias": (1,),
    }
    linears = {"attn.qkv": (3 * d, d), "attn.proj": (d, d), "mlp.fc1": (h, d), "mlp.fc2": (d, h)}
    for i in range(cfg.num_hidden_layers):
        b = f"{pre}blocks.{i}."
        for norm in ("norm1", "norm2"):
            out[b + norm + ".weight"] = (d,)
            out[b + norm + ".bias"] = (d,)
        out[b + "ls1.gamma"] = (d,)
        out[b + "ls2.gamma"] = (d,)
        for name, (o, k) in linears.items():
            out[f"{b}{name}.original_layer.weight"] = (o, k)
            out[f"{b}{name}.original_layer.bias"] = (o,)
            out[f"{b}{name}.lora.lora_A"] = (rank, k)
            out[f"{b}{name}.lora.lora_B"] = (o, rank)
    return out


def hub_position_embeddings(pos_embed: torch.Tensor, grid: int, offset: float = INTERPOLATE_OFFSET) -> torch.Tensor:
    """The torch.hub DINOv2's ``interpolate_pos_encoding`` for a square ``grid`` (float32, bicubic, no antialias)."""
    n = pos_embed.shape[1] - 1
    m = int(math.sqrt(n))
    if m * m != n:
        raise WeightsError(f"pos_embed holds {n} patch positions, not a square grid; the file is not a DINOv2 checkpoint.")
    if grid == m:
        return pos_embed
    dim = pos_embed.shape[-1]
    pe = pos_embed.float()
    patch = pe[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2)
    scale = float(grid + offset) / m
    patch = torch.nn.functional.interpolate(patch, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    if tuple(patch.shape[-2:]) != (grid, grid):  # pragma: no cover - the offset guards against this
        raise AfpbenchError(f"position-embedding interpolation gave {tuple(patch.shape[-2:])}, expected {(grid, grid)}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return torch.cat([pe[:, :1], patch], dim=1).to(pos_embed.dtype)


def map_state(sd: dict[str, torch.Tensor], cfg: Any, grid: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Upstream state dict (checked) -> (Dinov2Model state, peft LoRA tensors keyed by module path, head)."""
    d = cfg.hidden_size
    pre = "base_model.model."
    hf: dict[str, torch.Tensor] = {
        "embeddings.cls_token": sd[pre + "cls_token"],
        "embeddings.mask_token": sd[pre + "mask_token"],
        "embeddings.position_embeddings": hub_position_embeddings(sd[pre + "pos_embed"], grid),
        "embeddings.patch_embeddings.projection.weight": sd[pre + "patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd[pre + "patch_embed.proj.bias"],
        "layernorm.weight": sd[pre + "norm.weight"],
        "layernorm.bias": sd[pre + "norm.bias"],
    }
    lora: dict[str, torch.Tensor] = {}
    for i in range(cfg.num_hidden_layers):
        b, L = f"{pre}blocks.{i}.", f"encoder.layer.{i}."
        for norm in ("norm1", "norm2"):
            for s in ("weight", "bias"):
                hf[f"{L}{norm}.{s}"] = sd[f"{b}{norm}.{s}"]
        hf[L + "layer_scale1.lambda1"] = sd[b + "ls1.gamma"]
        hf[L + "layer_scale2.lambda1"] = sd[b + "ls2.gamma"]
        for up, mine in _LORA_TARGETS:
            w, bias = sd[f"{b}{up}.original_layer.weight"], sd[f"{b}{up}.original_layer.bias"]
            a, bb = sd[f"{b}{up}.lora.lora_A"], sd[f"{b}{up}.lora.lora_B"]
            if mine is None:  # fused qkv: rows [q; k; v] (the hub reshapes the output to (3, heads, head_dim))
                for j, part in enumerate(("q_proj", "k_proj", "v_proj")):
                    rows = slice(j * d, (j + 1) * d)
                    hf[f"{L}attention.{part}.weight"], hf[f"{L}attention.{part}.bias"] = w[rows], bias[rows]
                    # The shared A and this part's rows of B give exactly this part's rows of B A x.
                    lora[f"{L}attention.{part}.lora_A"], lora[f"{L}attention.{part}.lora_B"] = a, bb[rows]
            else:
                hf[f"{L}{mine}.weight"], hf[f"{L}{mine}.bias"] = w, bias
                lora[f"{L}{mine}.lora_A"], lora[f"{L}{mine}.lora_B"] = a, bb
    head = {"weight": sd["base_model.fc.weight"], "bias": sd["base_model.fc.bias"]}
    return hf, lora, head


def read_release(path: Path) -> dict[str, torch.Tensor]:
    """The model state of a DDA checkpoint: ``{"model": state}`` as the training code saves it
    (optimizer and step entries are ignored), a bare state dict, ``module.``-prefixed or not."""
    obj = load_safetensors(path) if path.suffix == ".safetensors" else torch_load(path)
    return tensor_dict(obj, path, "a DDA checkpoint (a dict whose 'model' entry is the DINOv2ModelWithLoRA state dict)", unwrap=True, strip_module=True)


class DDA(Detector):
    """DINOv2 ViT-L/14 + LoRA (r = 8) + linear head on the CLS token (Chen et al., NeurIPS 2025)."""

    name = "dda"
    description = "DINOv2 ViT-L/14 with merged LoRA (r=8) + Linear(1024 -> 1) on the normalised CLS token; P(fake) = sigmoid(logit)."
    paper = "Chen, Xi, Yan, Zhang, Wu, Xie, Chen, Xu, Guan, Yao, Ding. Dual Data Alignment Makes AI-Generated Image Detector Easier Generalizable. NeurIPS 2025 (arXiv 2505.14359)."
    code = "https://github.com/roy-ch/Dual-Data-Alignment (Inference/inference.py, Inference/models/)"
    license = "code Apache-2.0 (repository LICENSE); weights: no separate licence stated; DINOv2 backbone Apache-2.0"
    needs_weights = True
    cuda_dtype = "float32"  # upstream runs fp32
    variants = {
        None: Variant(WeightsSource(filename="dda_ckpt.pth", source=f"{_HF_RELEASE} (the official checkpoint, 2026/02, which inference.py loads as pretrained/ckpt.pth; save it as dda_ckpt.pth)",
                                    license="Apache-2.0 (repository)"), _TRAINING),
        "legacy": Variant(WeightsSource(filename="dda_legacy_ckpt.pth",
                                        source=f"{_MS_LEGACY} (first release, 2025, which the authors say differs slightly from the paper; save it as dda_legacy_ckpt.pth)",
                                        license="Apache-2.0 (repository)"), _TRAINING),
    }
    choices = [
        "Eval as upstream Inference/inference.py: torchvision CenterCrop(336) without resizing (smaller images are zero-padded by CenterCrop), ToTensor, CLIP mean/std (not ImageNet's).",
        "Backbone: transformers Dinov2Model built from the ViT-L/14 config; every weight comes from the release (it holds the whole backbone), keys mapped explicitly, fused qkv split.",
        "LoRA (r=8, alpha=1) attached with peft and merged into the weights before scoring (mathematically identical to upstream's W x + (alpha/r) B A x).",
        "Labels as upstream (Training/networks/trainer.py: real and real_resized 0, fake and fake_resized 1); inference.py reports sigmoid(logit) = P(fake), afpbench's convention unchanged.",
        "Position embeddings interpolated once to the crop grid with the torch.hub DINOv2 rule (scale (grid + 0.1) / 37, bicubic, no antialias), not transformers' size-based rule.",
    ]

    def setup(self) -> None:
        from transformers import Dinov2Config, Dinov2Model

        self._transform: Any = None
        p = self.weights_path
        if p is None:  # pragma: no cover - needs_weights guards this
            raise WeightsError("dda needs its released checkpoint (--weights).")
        if p.is_dir():
            raise WeightsError(f"{p} is a folder; dda loads the released checkpoint file (a .pth holding {{'model': ...}}).")
        cfg = self._config()
        self.image_size = int(self.image_size or 336)
        if self.image_size % cfg.patch_size:
            raise AfpbenchError(f"dda's crop ({self.image_size}) must be a multiple of the patch size {cfg.patch_size}.")
        grid = self.image_size // cfg.patch_size
        sd = read_release(p)
        check_state_dict(upstream_keys(cfg), sd, p, f"DDA's DINOv2ModelWithLoRA ({cfg.num_hidden_layers} blocks of width {cfg.hidden_size}, LoRA r={LORA_RANK})")
        hf_state, lora, head = map_state(sd, cfg, grid)
        # Built for the crop size, so the installed (hub-interpolated) embeddings are used as they are.
        run_cfg = Dinov2Config(**{**cfg.to_dict(), "image_size": self.image_size})
        model = Dinov2Model(run_cfg)
        model.load_state_dict(hf_state, strict=True)
        self.backbone = self._merge_lora(model, lora, p)
        self.backbone.requires_grad_(False)
        self.backbone.eval().to(self.device, self.dtype)
        self.head = torch.nn.Linear(cfg.hidden_size, 1)
        self.head.load_state_dict(head, strict=True)
        self.head.requires_grad_(False)
        self.head.eval().to(self.device, self.dtype)

    def _config(self) -> Any:
        from transformers import Dinov2Config

        if not self.base:
            return Dinov2Config(**VITL14)
        try:
            return Dinov2Config.from_pretrained(self.base)
        except (OSError, ValueError) as exc:
            raise WeightsError(f"Cannot read a DINOv2 config from '{self.base}' ({' '.join(str(exc).split())[:160]}); pass --base with a folder holding config.json, or omit it for ViT-L/14.") from exc

    @staticmethod
    def _merge_lora(model: Any, lora: dict[str, torch.Tensor], source: Path) -> Any:
        from peft import LoraConfig, get_peft_model

        targets = sorted({k.rsplit(".", 2)[-2] for k in lora})
        config = LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0, bias="none", target_modules=targets)
        peft_model = get_peft_model(model, config)
        params = dict(peft_model.named_parameters())
        # peft names each adapter tensor <module>.lora_A/B.default.weight under base_model.model.
        names = {key: "base_model.model.{}.{}.default.weight".format(*key.rsplit(".", 1)) for key in lora}
        placed = {k for k in params if ".lora_" in k}
        if placed != set(names.values()):
            raise WeightsError(f"{source}: peft placed LoRA on other modules than the release has ({len(placed)} vs {len(names)} tensors); this transformers/peft version is not supported.")
        with torch.no_grad():
            for key, value in lora.items():
                params[names[key]].copy_(value)
        return peft_model.merge_and_unload()

    # -- scoring ---------------------------------------------------------------------------
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(resize=None, resize_policy="none", crop=self.image_size, mean=CLIP_MEAN, std=CLIP_STD,
                             note=f"torchvision CenterCrop({self.image_size}) of the full-resolution image (no resize; smaller images are zero-padded by CenterCrop), "
                                  "ToTensor, CLIP mean/std: upstream's Inference/inference.py (crop 336).")

    def preprocess(self, image: Any, row: dict[str, Any] | None = None) -> torch.Tensor:
        if self._transform is None:
            import torchvision.transforms as T

            self._transform = T.Compose([T.CenterCrop(self.image_size), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
        return self._transform(image.convert("RGB"))

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, dtype=self.dtype, non_blocking=True)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(pixel_values=batch).pooler_output).float()[:, 0]

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(batch))

    def bare_forward(self, batch: torch.Tensor) -> Any:
        return self.head(self.backbone(pixel_values=batch).pooler_output)


__all__ = ["DDA", "upstream_keys", "hub_position_embeddings", "map_state", "read_release", "VITL14", "LORA_RANK", "LORA_ALPHA"]
