"""UnivFD (Ojha, Li, Lee 2023): a linear probe on frozen CLIP ViT-L/14 image features.

The backbone is transformers' ``CLIPVisionModelWithProjection`` (``openai/clip-vit-large-
patch14`` by default, any folder or hub id with ``--base``); its projected image
embedding (768-d for ViT-L/14) goes through one linear layer to a logit. The released
probe ``fc_weights.pth`` is ``{"weight": [1, 768], "bias": [1]}``; both keys and shapes
are checked against the backbone's projection size. ``afpbench train`` trains the probe
only (the backbone stays frozen).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from afpbench.cards import Preprocessing, Variant, WeightsSource
from afpbench.detectors._hf import from_pretrained_strict, quiet_transformers
from afpbench.detectors._transforms import CLIP_MEAN, CLIP_STD, apply_preprocessing, blur_jpeg
from afpbench.detectors._weights import check_state_dict, load_safetensors, read_saved, torch_load
from afpbench.detectors.base import Detector, Trainable
from afpbench.errors import WeightsError

DEFAULT_BASE = "openai/clip-vit-large-patch14"


class UnivFD(Detector, Trainable):
    """Linear probe on CLIP image features (Ojha et al., CVPR 2023)."""

    name = "univfd"
    description = "Frozen CLIP ViT-L/14 image embedding + a linear probe (768 -> 1); P(fake) = sigmoid(logit)."
    paper = "Ojha, Li, Lee. Towards Universal Fake Image Detectors that Generalize Across Generative Models. CVPR 2023."
    code = "https://github.com/WisconsinAIVision/UniversalFakeDetect"
    license = "probe: see the UniversalFakeDetect repository; CLIP weights: MIT (OpenAI)"
    needs_weights = True
    cuda_dtype = "float16"
    variants = {
        None: Variant(
            WeightsSource(filename="fc_weights.pth", source="https://github.com/WisconsinAIVision/UniversalFakeDetect (pretrained_weights/fc_weights.pth)", license="see repository"),
            "ProGAN (CNNSpot's training set, 4 classes as in the paper's main setting)",
            options={"aug_prob": 0.5},
        ),
    }
    train_recipe = {"lr": 1e-4, "weight_decay": 0.0, "batch_size": 256, "epochs": 10, "scheduler": "constant"}
    choices = [
        "Eval: no downscaling, center crop to the backbone's size (224), images smaller are resized up; CLIP mean/std.",
        "Features: the projected CLIP image embedding (CLIPVisionModelWithProjection.image_embeds), as UnivFD's encode_image.",
        "-F training: probe only, AdamW lr 1e-4 without weight decay, constant schedule, batch 256, blur+JPEG p=0.5, random crop + flip.",
    ]

    def setup(self) -> None:
        from transformers import CLIPVisionModelWithProjection

        quiet_transformers()
        p = self.weights_path
        state: dict[str, Any] | None = None
        meta: dict[str, Any] = {}
        if p is not None and p.is_dir():
            meta, state = read_saved(p, self.name)
        elif p is not None:
            obj = load_safetensors(p) if p.suffix == ".safetensors" else torch_load(p)
            if not isinstance(obj, dict):
                raise WeightsError(f"{p} is not a UnivFD probe (a dict with 'weight' [1, 768] and 'bias' [1]).")
            state = dict(obj)
        self.base = self.base or meta.get("base") or DEFAULT_BASE
        self.clip = from_pretrained_strict(CLIPVisionModelWithProjection, self.base, "CLIP vision model", dtype=self.dtype)
        self.clip.requires_grad_(False)
        self.clip.eval().to(self.device)
        native = self.clip.config.image_size
        self.image_size = self.image_size or meta.get("image_size") or native
        self._interpolate = self.image_size != native
        dim = self.clip.config.projection_dim
        # The probe stays in float32: its 769 numbers cost nothing and fp16 would round them.
        self.probe = torch.nn.Linear(dim, 1).to(self.device)
        if state is not None:
            self.load_trainable_state(state, p)
        else:
            torch.nn.init.zeros_(self.probe.weight)
            torch.nn.init.zeros_(self.probe.bias)
        self.probe.requires_grad_(False)

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(resize=None, resize_policy="upscale_only", interpolation="bicubic", crop=self.image_size, mean=CLIP_MEAN, std=CLIP_STD,
                             note="UnivFD's evaluation: center crop without resizing (upscaled only when smaller), CLIP normalisation.")

    def train_preprocess(self, image: Any, row: dict[str, Any] | None, rng: Any) -> torch.Tensor:
        image = blur_jpeg(image.convert("RGB"), rng, float(self.variant.options.get("aug_prob", 0.5)))
        return apply_preprocessing(image, self.preprocessing(), rng=rng, flip=True)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, dtype=self.dtype, non_blocking=True)

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        kw = {"interpolate_pos_encoding": True} if self._interpolate else {}
        return self.clip(pixel_values=batch, **kw).image_embeds.float()

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        return self.probe(self.features(batch))[:, 0]

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(batch))

    def bare_forward(self, batch: torch.Tensor) -> Any:
        kw = {"interpolate_pos_encoding": True} if self._interpolate else {}
        return self.probe(self.clip(pixel_values=batch, **kw).image_embeds.float())

    # -- training ------------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        self.probe.requires_grad_(True)
        return list(self.probe.parameters())

    def training_loss(self, batch: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # the backbone is frozen: no graph through CLIP
            feats = self.features(batch)
        logits = self.probe(feats)[:, 0]
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.device).float())

    def set_training(self, training: bool) -> None:
        self.clip.eval()
        self.probe.train(training)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().float().cpu().clone() for k, v in self.probe.state_dict().items()}

    def load_trainable_state(self, state: dict[str, Any], source: Path | str) -> None:
        dim = self.probe.in_features
        check_state_dict({"weight": (1, dim), "bias": (1,)}, state, source, f"UnivFD's linear probe for a {dim}-d CLIP projection ('{self.base}')")
        self.probe.load_state_dict({k: state[k].float() for k in ("weight", "bias")}, strict=True)


__all__ = ["UnivFD", "DEFAULT_BASE"]
