"""RINE (Koutlis & Papadopoulos, ECCV 2024): the CLS token of every CLIP ViT-L/14 block,
weighted by a trainable importance estimator, then projections and an MLP head.

Upstream (``mever-team/rine``, ``src/models.py``) registers a forward hook on every
``ln_2`` of OpenAI CLIP's visual transformer (the LayerNorm before each block's MLP) and
stacks the hooked outputs' CLS positions: ``g`` [B, blocks, 1024]. Then
``z = proj1(g)``, ``z = sum_blocks(softmax(alpha, dim=blocks) * z)``, ``p = head(proj2(z))``
with ``proj1 = [Dropout, (Linear, ReLU, Dropout) x nproj]``, ``proj2`` the same at
``proj_dim``, ``head = Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear(proj_dim, 1)``.
The released ``ckpt/model_*_trainable.pth`` are the model's state dict without the CLIP
keys (``{k: v for k in model.state_dict() if "clip" not in k}``): ``alpha``,
``proj1.{1,4,...}``, ``proj2.{1,4,...}``, ``head.{0,3,6}``. P(fake) = sigmoid(p).

Here CLIP is transformers' ``CLIPVisionModel`` (``openai/clip-vit-large-patch14``, or
``--base``), whose ``layer_norm2`` is OpenAI's ``ln_2``; the hooks read it the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from afpbench.cards import Preprocessing, Variant, WeightsSource
from afpbench.detectors._hf import from_pretrained_strict, quiet_transformers
from afpbench.detectors._transforms import CLIP_MEAN, CLIP_STD
from afpbench.detectors._weights import check_state_dict, load_safetensors, tensor_dict, torch_load
from afpbench.detectors.base import Detector
from afpbench.errors import WeightsError

DEFAULT_BASE = "openai/clip-vit-large-patch14"
_REPO = "https://github.com/mever-team/rine"
_COMMIT = "9b7fd5857cc205d0412be6aeee0d7611b95bd620"
_PROGAN = "ProGAN (CNNDetection training set, real LSUN vs ProGAN fakes)"


def _release(n: str, sha256: str | None = None) -> WeightsSource:
    note = f"sha256 computed by afpbench from the file in the repository at commit {_COMMIT[:12]}" if sha256 else ""
    return WeightsSource(filename=f"model_{n}_trainable.pth", source=f"{_REPO} (ckpt/model_{n}_trainable.pth)", sha256=sha256, license="Apache-2.0", note=note)


def build_head(hidden: int, blocks: int, nproj: int, proj_dim: int) -> torch.nn.Module:
    """The trainable part of upstream's Model, with its exact module indices (so keys match the release)."""
    nn = torch.nn
    m = nn.Module()
    m.alpha = nn.Parameter(torch.zeros(1, blocks, proj_dim))
    p1: list[nn.Module] = [nn.Dropout()]
    for i in range(nproj):
        p1 += [nn.Linear(hidden if i == 0 else proj_dim, proj_dim), nn.ReLU(), nn.Dropout()]
    m.proj1 = nn.Sequential(*p1)
    p2: list[nn.Module] = [nn.Dropout()]
    for _ in range(nproj):
        p2 += [nn.Linear(proj_dim, proj_dim), nn.ReLU(), nn.Dropout()]
    m.proj2 = nn.Sequential(*p2)
    m.head = nn.Sequential(nn.Linear(proj_dim, proj_dim), nn.ReLU(), nn.Dropout(), nn.Linear(proj_dim, proj_dim), nn.ReLU(), nn.Dropout(), nn.Linear(proj_dim, 1))
    return m


class RINE(Detector):
    """Intermediate CLIP CLS tokens + trainable importance estimator (Koutlis & Papadopoulos, ECCV 2024)."""

    name = "rine"
    description = "CLS tokens of all 24 CLIP ViT-L/14 blocks (at ln_2) -> projection, softmax block weights, projection, MLP head; P(fake) = sigmoid(logit)."
    paper = "Koutlis, Papadopoulos. Leveraging Representations from Intermediate Encoder-blocks for Synthetic Image Detection. ECCV 2024 (arXiv 2402.19091)."
    code = f"{_REPO} (src/models.py, src/utils.py)"
    license = "Apache-2.0 (code and checkpoints); CLIP weights: MIT (OpenAI)"
    needs_weights = True
    cuda_dtype = "float16"  # clip.load on a GPU gives an fp16 CLIP; the heads run in fp32 (g.float())
    variants = {
        None: Variant(_release("4class"), f"{_PROGAN}, 4 classes (car, cat, chair, horse)", options={"nproj": 2, "proj_dim": 1024}),
        "1class": Variant(_release("1class"), f"{_PROGAN}, 1 class (horse)", options={"nproj": 4, "proj_dim": 1024}),
        "2class": Variant(_release("2class", "680d301b6d191da85b9dabcebf42cd3df20c5c669fa8320c498f835d02bf5ccb"), f"{_PROGAN}, 2 classes (chair, horse)", options={"nproj": 4, "proj_dim": 128}),
        "ldm": Variant(_release("ldm"), "Latent-diffusion training set of Corvi et al. (grip-unina/DMimageDetection: LDM fakes vs COCO/LSUN reals)",
                       options={"nproj": 4, "proj_dim": 1024, "ten_crop": True}),
    }
    choices = [
        "Eval as upstream (src/utils.py get_transforms): torchvision CenterCrop(224) without resizing (smaller images are zero-padded by CenterCrop), CLIP mean/std.",
        "rine.ldm: TenCrop(224) and the mean of the ten logits, as upstream evaluates its LDM-trained model; images smaller than 224 are first zero-padded to 224 (TenCrop itself would fail).",
        "Labels as upstream (src/data.py: 0_real -> 0, 1_fake -> 1; demo.py prints sigmoid(logit) as the probability to be fake): afpbench's convention unchanged.",
        "Features: forward hooks on transformers' CLIP layer_norm2 (OpenAI's ln_2), CLS position; (nproj, proj_dim) per tag as upstream's get_our_trained_model.",
    ]

    def setup(self) -> None:
        from transformers import CLIPVisionModel

        quiet_transformers()
        self._transform: Any = None
        p = self.weights_path
        if p is None or p.is_dir():
            raise WeightsError(f"rine loads a released checkpoint file (ckpt/model_*_trainable.pth), not {p}.")
        state = self._read(p)
        self.base = self.base or DEFAULT_BASE
        self.clip = from_pretrained_strict(CLIPVisionModel, self.base, "CLIP vision model", dtype=self.dtype)
        self.clip.requires_grad_(False)
        self.clip.eval().to(self.device)
        cfg = self.clip.config
        self.image_size = int(self.image_size or 224)
        self._interpolate = self.image_size != cfg.image_size
        opts = self.variant.options
        self.head = build_head(cfg.hidden_size, cfg.num_hidden_layers, int(opts["nproj"]), int(opts["proj_dim"]))
        expected = {k: tuple(v.shape) for k, v in self.head.state_dict().items()}
        check_state_dict(expected, state, p,
                         f"RINE's trainable part for {self.full_name} (nproj={opts['nproj']}, proj_dim={opts['proj_dim']}) on {cfg.num_hidden_layers} CLIP blocks of width {cfg.hidden_size}")
        self.head.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        self.head.requires_grad_(False)
        self.head.eval().to(self.device)
        # One hook per block's ln_2 (transformers: layer_norm2), in block order, as upstream.
        self._taps: list[torch.Tensor | None] = [None] * cfg.num_hidden_layers
        tower = getattr(self.clip, "vision_model", self.clip)  # transformers 5 flattens CLIPVisionModel
        for i, layer in enumerate(tower.encoder.layers):
            layer.layer_norm2.register_forward_hook(self._tap(i))

    def _tap(self, i: int):
        def hook(module: Any, args: Any, output: torch.Tensor) -> None:
            self._taps[i] = output[:, 0]

        return hook

    @staticmethod
    def _read(p: Path) -> dict[str, torch.Tensor]:
        obj = load_safetensors(p) if p.suffix == ".safetensors" else torch_load(p)
        return tensor_dict(obj, p, "a RINE checkpoint (a flat state dict: alpha, proj1.*, proj2.*, head.*)", strip_module=True)

    # -- scoring ---------------------------------------------------------------------------
    @property
    def ten_crop(self) -> bool:
        return bool(self.variant.options.get("ten_crop"))

    def preprocessing(self) -> Preprocessing:
        c = self.image_size
        how = f"TenCrop({c}) (four corners + centre, and their horizontal flips); the score is sigmoid of the mean logit" if self.ten_crop else f"CenterCrop({c}) (zero-padded when smaller)"
        return Preprocessing(resize=None, resize_policy="none", crop=self.image_size, mean=CLIP_MEAN, std=CLIP_STD,
                             note=f"No resize; torchvision {how}; ToTensor; CLIP mean/std (upstream src/utils.py get_transforms).")

    def preprocess(self, image: Any, row: dict[str, Any] | None = None) -> torch.Tensor:
        import torchvision.transforms as T

        image = image.convert("RGB")
        size = self.image_size
        if self._transform is None:
            norm = T.Normalize(CLIP_MEAN, CLIP_STD)
            if self.ten_crop:
                self._transform = T.Compose([T.TenCrop(size), T.Lambda(lambda crops: torch.stack([norm(T.functional.to_tensor(c)) for c in crops]))])
            else:
                self._transform = T.Compose([T.CenterCrop(size), T.ToTensor(), norm])
        if self.ten_crop and min(image.size) < size:
            image = T.functional.center_crop(image, [max(image.height, size), max(image.width, size)])
        return self._transform(image)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, dtype=self.dtype, non_blocking=True)

    def block_tokens(self, batch: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> the CLS token at every block's ln_2, [B, blocks, hidden] in float32."""
        self._taps = [None] * len(self._taps)
        self.clip(pixel_values=batch, interpolate_pos_encoding=self._interpolate)
        return torch.stack(self._taps, dim=1).float()  # type: ignore[arg-type]

    def head_logits(self, g: torch.Tensor) -> torch.Tensor:
        h = self.head
        z = h.proj1(g)
        z = (torch.softmax(h.alpha, dim=1) * z).sum(dim=1)
        return h.head(h.proj2(z))[:, 0]

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dim() == 5:  # ten crops per image: mean of the crops' logits
            b, n = batch.shape[:2]
            return self.head_logits(self.block_tokens(batch.flatten(0, 1))).view(b, n).mean(dim=1)
        return self.head_logits(self.block_tokens(batch))

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(batch))

    def bare_forward(self, batch: torch.Tensor) -> Any:
        return self.logits(batch)


__all__ = ["RINE", "build_head", "DEFAULT_BASE"]
