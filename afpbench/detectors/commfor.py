"""Community Forensics (Park & Owens, CVPR 2025): a ViT-S/16 with one output, trained on
images from thousands of generators.

Upstream (JeongsooP/Community-Forensics, ``models.py``): ``ViTClassifier`` holds a timm
``vit_small_patch16_384.augreg_in21k_ft_in1k`` (or ``..._224...``) as ``self.vit`` whose
``head`` is replaced by ``Linear(384, 1)``; the forward is ``self.vit(x)`` and
``eval.py`` reports ``sigmoid(logit)`` with labels real 0 / fake 1. The network here is
the same timm model (``num_classes=1``), loaded by upstream's key names minus the
``vit.`` prefix.

Released files:

* ``OwensLab/commfor-model-384`` / ``-224`` on the Hugging Face Hub: pushed with
  ``PyTorchModelHubMixin.save_pretrained``, i.e. ``model.safetensors`` (the
  ``ViTClassifier`` state dict: ``vit.cls_token``, ``vit.pos_embed``, ...,
  ``vit.head.weight``) and ``config.json`` (``input_size``, ``model_size``,
  ``patch_size``, ...). Pass the folder or the ``model.safetensors`` file.
* the training checkpoints (``utils.save_checkpoint``): ``{'model': state dict, 'optimizer',
  'scheduler', 'scaler', 'epoch', 'itr'}``; a ``torch.compile``-d model's keys start with
  ``_orig_mod.``, which upstream's loader strips and so does this one.

Test-time preprocessing (``dataloader.get_transform``, mode test): torchvision
``Resize(440)`` (shorter side, bilinear) -> ``CenterCrop(384)`` -> ``ToTensor`` ->
ImageNet mean/std (not timm's 0.5/0.5 for this backbone); the 224 model uses 256 -> 224.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from afpbench.cards import Preprocessing, Variant, WeightsSource
from afpbench.detectors._transforms import IMAGENET_MEAN, IMAGENET_STD
from afpbench.detectors._weights import load_module, load_safetensors, torch_load
from afpbench.detectors.base import Detector
from afpbench.errors import AfpbenchError, WeightsError

_REPO = "https://github.com/JeongsooP/Community-Forensics"
_TRAINING = "Community Forensics dataset (OwensLab/CommunityForensics: real images from many sources and fakes from 4,803 generators, systematic + manual collections)"

# Architectures `base` selects: the timm model, its input size and upstream's resize.
ARCHS: dict[str, dict[str, Any]] = {
    "vit_small_patch16_384.augreg_in21k_ft_in1k": {"timm": "vit_small_patch16_384", "kwargs": {}, "size": 384, "resize": 440},
    "vit_small_patch16_224.augreg_in21k_ft_in1k": {"timm": "vit_small_patch16_224", "kwargs": {}, "size": 224, "resize": 256},
    # Same classes, tiny sizes: for tests, benchmarks and the offline demo.
    "tiny": {"timm": "vit_small_patch16_384", "kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2}, "size": 32, "resize": 37},
}


def read_commfor(path: Path) -> dict[str, Any]:
    """Upstream's ``ViTClassifier`` state dict -> timm ViT keys (``vit.`` removed)."""
    if path.is_dir():
        path = path / "model.safetensors"
        if not path.exists():
            raise WeightsError(f"{path.parent} has no model.safetensors; pass the folder downloaded from OwensLab/commfor-model-384 (or -224).")
    if path.suffix == ".safetensors":
        state = load_safetensors(path)
    else:
        obj = torch_load(path)
        state = obj.get("model") if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else obj
        if not isinstance(state, dict):
            raise WeightsError(f"{path} is not a Community Forensics checkpoint (a ViTClassifier state dict, or a training checkpoint with 'model').")
    out: dict[str, Any] = {}
    other = []
    for k, v in state.items():
        key = k.removeprefix("_orig_mod.")  # as upstream's load_only_weights
        if key.startswith("vit."):
            out[key[len("vit."):]] = v
        else:
            other.append(k)
    if other:
        raise WeightsError(f"{path} does not match Community Forensics' ViTClassifier: unexpected {', '.join(other[:3])}{' ...' if len(other) > 3 else ''}; use the released model.safetensors.")
    return out


class CommunityForensics(Detector):
    """ViT-S/16 + linear head trained on thousands of generators (Park & Owens, CVPR 2025)."""

    name = "commfor"
    description = "timm ViT-S/16 (AugReg IN21k->IN1k init) with a 1-output head, fine-tuned end to end on Community Forensics; P(fake) = sigmoid(logit)."
    paper = "Park, Owens. Community Forensics: Using Thousands of Generators to Train Fake Image Detectors. CVPR 2025."
    code = _REPO
    license = "MIT (code and the Hugging Face weights)"
    needs_weights = True
    cuda_dtype = "float32"
    variants = {
        None: Variant(
            WeightsSource(filename="commfor-model-384/model.safetensors", source="https://huggingface.co/OwensLab/commfor-model-384 (model.safetensors)", license="MIT",
                          note="Download the repository into <weights dir>/commfor-model-384/."),
            _TRAINING, options={"arch": "vit_small_patch16_384.augreg_in21k_ft_in1k"},
        ),
        "224": Variant(
            WeightsSource(filename="commfor-model-224/model.safetensors", source="https://huggingface.co/OwensLab/commfor-model-224 (model.safetensors)", license="MIT",
                          note="Download the repository into <weights dir>/commfor-model-224/."),
            _TRAINING, options={"arch": "vit_small_patch16_224.augreg_in21k_ft_in1k"},
        ),
    }
    choices = [
        "Preprocessing exactly as upstream's test transform: torchvision Resize(440) + CenterCrop(384) (224 model: 256 + 224), ImageNet mean/std.",
        "Label convention checked from upstream: real 0 / fake 1, BCEWithLogits, sigmoid(logit) = P(fake).",
        "A training checkpoint's '_orig_mod.' prefix is stripped as upstream's loader does; every other key must be 'vit.*'.",
    ]

    def setup(self) -> None:
        import timm

        self.arch_name = self.base or self.variant.options["arch"]
        if self.arch_name not in ARCHS:
            raise AfpbenchError(f"Unknown --base '{self.arch_name}' for commfor; use one of {', '.join(ARCHS)}.")
        arch = ARCHS[self.arch_name]
        if self.image_size not in (None, arch["size"]):
            raise AfpbenchError(f"commfor's ViT takes {arch['size']} px inputs ('{self.arch_name}'); leave --image-size out.")
        self.image_size = arch["size"]
        if self.weights_path is None:
            raise WeightsError(f"{self.full_name} is not trainable here; pass --weights with the released model.safetensors.")
        self._check_config(self.weights_path, arch)
        state = read_commfor(self.weights_path)
        build = lambda: timm.create_model(arch["timm"], pretrained=False, num_classes=1, **arch["kwargs"])
        self.model = load_module(build, state, self.weights_path, f"Community Forensics' ViT ('{self.arch_name}')")
        self.model.requires_grad_(False)
        self.model.eval().to(self.device, self.dtype)

    def _check_config(self, path: Path, arch: dict[str, Any]) -> None:
        """The Hub folder's config.json names its input size: say which tag fits."""
        cfg = (path if path.is_dir() else path.parent) / "config.json"
        if not cfg.exists() or self.arch_name == "tiny":
            return
        try:
            size = json.loads(cfg.read_text()).get("input_size")
        except (OSError, json.JSONDecodeError):
            return
        if size is not None and int(size) != arch["size"]:
            tag = "commfor.224" if int(size) == 224 else "commfor"
            raise WeightsError(f"{path} is the {size}-px Community Forensics model (its config.json says so); use --detector {tag}.")

    def base_description(self) -> str | None:
        return self.arch_name

    def training_data(self) -> str:
        # A Hub folder is not an afpbench folder: its training data is the release's.
        return self.variant.training_data

    def preprocessing(self) -> Preprocessing:
        arch = ARCHS[self.arch_name]
        return Preprocessing(resize=arch["resize"], resize_policy="shorter", interpolation="bilinear", crop=arch["size"], mean=IMAGENET_MEAN, std=IMAGENET_STD,
                             note="torchvision Resize(shorter side) + CenterCrop + ToTensor + Normalize, as upstream's test transform.")

    def preprocess(self, image: Any, row: dict[str, Any] | None = None) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        arch = ARCHS[self.arch_name]
        image = TF.center_crop(TF.resize(image.convert("RGB"), arch["resize"]), [arch["size"], arch["size"]])
        return TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, dtype=self.dtype, non_blocking=True)

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        """The class-token features the head reads."""
        return self.model.forward_head(self.model.forward_features(batch), pre_logits=True).float()

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(batch).float()[:, 0])

    def bare_forward(self, batch: torch.Tensor) -> Any:
        return self.model(batch)


__all__ = ["ARCHS", "CommunityForensics", "read_commfor"]
