"""C2P-CLIP (Tan et al., AAAI 2025): CLIP ViT-L/14 whose image encoder was LoRA-tuned with
category common prompts (LoRA merged into the released weights), and a linear head on
the L2-normalised projected image embedding.

Upstream (``chuangchuangtan/C2P-CLIP-DeepfakeDetection``, ``inference.py``): ``C2P_CLIP``
holds ``self.model = CLIPModel`` with the text tower, text projection and logit scale
deleted and ``self.model.fc = Linear(768, 1)``; ``forward`` = ``fc(e / ||e||)`` with
``e = visual_projection(vision_model(x).pooler_output)``. The release
``C2P_CLIP_release_20240901.zip`` is loaded with ``torch.hub.load_state_dict_from_url``
and ``load_state_dict(strict=True)``: a zip holding one ``torch.save`` state dict whose
keys are ``model.vision_model.*``, ``model.visual_projection.weight``, ``model.fc.*``.

The release carries the whole vision tower, so the backbone here is transformers'
``CLIPVisionModelWithProjection`` built from the ViT-L/14 config (``--base`` names a
folder or hub id whose ``config.json`` describes another size; its weights are not read)
and filled by an explicit key map with shape checks.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from afpbench.cards import Preprocessing, Variant, WeightsSource
from afpbench.detectors._transforms import CLIP_MEAN, CLIP_STD
from afpbench.detectors._weights import check_state_dict, load_safetensors, tensor_dict, torch_load
from afpbench.detectors.base import Detector
from afpbench.errors import WeightsError

# openai/clip-vit-large-patch14's vision tower.
VITL14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224, patch_size=14,
              projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5)
_URL = "https://www.now61.com/f/95OefW/C2P_CLIP_release_20240901.zip"
_POSITION_IDS = "model.vision_model.embeddings.position_ids"


def read_release(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of the release: a zip holding one torch.save file (torch.hub's legacy
    zip layout, as the authors distribute it), or that file extracted."""
    if path.suffix != ".safetensors" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            members = [i for i in zf.infolist() if not i.is_dir()]
            # A torch.save file is itself a zip with many members; the release wraps exactly one.
            if len(members) == 1:
                try:
                    data = zf.read(members[0])
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    raise WeightsError(f"{path} cannot be unpacked ({' '.join(str(exc).split())[:120]}); it is truncated: download it again.") from exc
                try:
                    obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, OSError) as exc:
                    raise WeightsError(f"{path} holds {members[0].filename}, which cannot be read as a PyTorch checkpoint ({' '.join(str(exc).split())[:120]}); download the release again.") from exc
                return _flat(obj, path)
    obj = load_safetensors(path) if path.suffix == ".safetensors" else torch_load(path)
    return _flat(obj, path)


def _flat(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    return tensor_dict(obj, path, "a C2P-CLIP state dict (model.vision_model.*, model.visual_projection.weight, model.fc.*)", strip_module=True)


class C2PCLIP(Detector):
    """CLIP ViT-L/14 (C2P-tuned) + linear head on L2-normalised image embeddings."""

    name = "c2p_clip"
    description = "C2P-tuned CLIP ViT-L/14 image embedding (768-d), L2-normalised, + Linear(768 -> 1); P(fake) = sigmoid(logit)."
    paper = "Tan, Tao, Liu, Gu, Wu, Zhao, Wei. C2P-CLIP: Injecting Category Common Prompt in CLIP to Enhance Generalization in Deepfake Detection. AAAI 2025 (arXiv 2408.09647)."
    code = "https://github.com/chuangchuangtan/C2P-CLIP-DeepfakeDetection (inference.py, data.py)"
    license = "none published (no LICENSE in the repository, none stated for the weights): no grant of use, flagged non-commercial"
    noncommercial = True  # no licence granted
    needs_weights = True
    cuda_dtype = "float32"  # upstream runs the fp32 HF CLIPModel
    variants = {
        None: Variant(
            WeightsSource(filename="C2P_CLIP_release_20240901.zip", source=f"{_URL} (inference.py's default --model_path)", license="none stated"),
            "ProGAN (UniversalFakeDetect/CNNDetection protocol; the release's inference script evaluates on the ForenSynths test sets); the README does not state the training classes",
        ),
    }
    choices = [
        "Eval as upstream data.py: torchvision Resize(224) (shorter side, bilinear, antialiased) then CenterCrop(224), ToTensor, CLIP mean/std.",
        "Backbone: transformers CLIPVisionModelWithProjection built from the ViT-L/14 config; every weight comes from the release (it holds the merged vision tower), keys mapped explicitly.",
        "Labels as upstream (data.py: torchvision DatasetFolder over 0_real/1_fake, so real 0 and fake 1; inference.py thresholds sigmoid(logit) at 0.5): afpbench's convention unchanged.",
        "A position_ids buffer (written by transformers < 4.31, where it was persistent) is accepted only when it equals arange(num_positions).",
    ]

    def setup(self) -> None:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        self._transform: Any = None
        p = self.weights_path
        if p is None or p.is_dir():
            raise WeightsError(f"c2p_clip loads the released C2P_CLIP_release_20240901.zip (or the .pth inside it), not {p}.")
        cfg = self._config(CLIPVisionConfig)
        sd = read_release(p)
        model = CLIPVisionModelWithProjection(cfg)
        n_pos = model.vision_model.embeddings.num_positions
        pos_ids = sd.pop(_POSITION_IDS, None)
        if pos_ids is not None and not torch.equal(pos_ids.reshape(-1).long(), torch.arange(n_pos)):
            raise WeightsError(f"{p}: {_POSITION_IDS} is not arange({n_pos}); the file is not a C2P-CLIP release for this CLIP.")
        mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        expected = {"model." + k: s for k, s in mine.items()}
        expected.update({"model.fc.weight": (1, cfg.projection_dim), "model.fc.bias": (1,)})
        check_state_dict(expected, sd, p, f"C2P-CLIP (CLIP vision tower of {cfg.num_hidden_layers} layers, width {cfg.hidden_size}, projection {cfg.projection_dim})")
        model.load_state_dict({k: sd["model." + k] for k in mine}, strict=True)
        self.clip = model
        self.clip.requires_grad_(False)
        self.clip.eval().to(self.device, self.dtype)
        self.fc = torch.nn.Linear(cfg.projection_dim, 1)
        self.fc.load_state_dict({"weight": sd["model.fc.weight"], "bias": sd["model.fc.bias"]}, strict=True)
        self.fc.requires_grad_(False)
        self.fc.eval().to(self.device, self.dtype)
        self.image_size = int(self.image_size or cfg.image_size)
        self._interpolate = self.image_size != cfg.image_size

    def _config(self, cls: Any) -> Any:
        if not self.base:
            return cls(**VITL14)
        try:
            return cls.from_pretrained(self.base)
        except (OSError, ValueError) as exc:
            raise WeightsError(f"Cannot read a CLIP vision config from '{self.base}' ({' '.join(str(exc).split())[:160]}); "
                               "pass --base with a folder holding config.json, or omit it for ViT-L/14.") from exc

    # -- scoring ---------------------------------------------------------------------------
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(resize=self.image_size, resize_policy="shorter", interpolation="bilinear", crop=self.image_size, mean=CLIP_MEAN, std=CLIP_STD,
                             note="torchvision Resize(224) (shorter side, bilinear with antialias) + CenterCrop(224) + CLIP mean/std: upstream data.py (loadSize = cropSize = 224).")

    def preprocess(self, image: Any, row: dict[str, Any] | None = None) -> torch.Tensor:
        if self._transform is None:
            import torchvision.transforms as T

            self._transform = T.Compose([T.Resize(self.image_size), T.CenterCrop(self.image_size), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
        return self._transform(image.convert("RGB"))

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, dtype=self.dtype, non_blocking=True)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        e = self.clip(pixel_values=batch, interpolate_pos_encoding=self._interpolate).image_embeds
        e = e / e.norm(p=2, dim=-1, keepdim=True)
        return self.fc(e).float()[:, 0]

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(batch))

    def bare_forward(self, batch: torch.Tensor) -> Any:
        return self.logits(batch)


__all__ = ["C2PCLIP", "read_release", "VITL14"]
