"""CNNSpot (Wang et al. 2020): a ResNet-50 binary classifier trained on ProGAN images.

The released weights (``blur_jpg_prob0.1.pth``, ``blur_jpg_prob0.5.pth``) are torchvision
ResNet-50 state dicts with a 1-output ``fc``, stored under the key ``model``. torchvision
is not usable here, so the network is transformers' ``ResNetForImageClassification``
(same bottleneck v1.5 architecture) and each torchvision key is mapped explicitly to its
HF name; every key must be used and every shape must match.

Training (-F protocol: retrain on the AntifakePrompt data) starts from the released
weights (``--weights``) or from an ImageNet ResNet-50 in HF format (``--base``, e.g.
``microsoft/resnet-50``; its 1000-way head is replaced by a fresh 1-output head), with
CNNSpot's augmentation: blur + JPEG with the tag's probability, resize 256, random crop
224, horizontal flip; Adam lr 1e-4.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from afpbench.cards import Preprocessing, Variant, WeightsSource
from afpbench.detectors._hf import quiet_transformers
from afpbench.detectors._transforms import IMAGENET_MEAN, IMAGENET_STD, apply_preprocessing, blur_jpeg, resize_shorter
from afpbench.detectors._weights import check_state_dict, load_safetensors, read_saved, torch_load
from afpbench.detectors.base import Detector, Trainable
from afpbench.errors import WeightsError

_SOURCE = "https://github.com/PeterWang512/CNNDetection (weights/download_weights.sh)"


def resnet50_config() -> Any:
    """torchvision's ResNet-50 as a transformers ResNetConfig with one output."""
    from transformers import ResNetConfig

    return ResNetConfig(
        embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3], layer_type="bottleneck",
        hidden_act="relu", downsample_in_first_stage=False, downsample_in_bottleneck=False, num_labels=1,
    )


def torchvision_to_hf(key: str) -> str | None:
    """Map one torchvision ResNet key to the transformers ResNet key (None if unknown)."""
    if key.startswith("module."):  # saved from DataParallel
        key = key[len("module.") :]
    m = re.fullmatch(r"(conv1|bn1)\.(\w+)", key)
    if m:
        part = "convolution" if m[1] == "conv1" else "normalization"
        return f"resnet.embedder.embedder.{part}.{m[2]}"
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(conv|bn)(\d)\.(\w+)", key)
    if m:
        part = "convolution" if m[3] == "conv" else "normalization"
        return f"resnet.encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.layer.{int(m[4]) - 1}.{part}.{m[5]}"
    m = re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.([01])\.(\w+)", key)
    if m:
        part = "convolution" if m[3] == "0" else "normalization"
        return f"resnet.encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.shortcut.{part}.{m[4]}"
    m = re.fullmatch(r"fc\.(weight|bias)", key)
    if m:
        return f"classifier.1.{m[1]}"
    return None


class CNNSpot(Detector, Trainable):
    """ResNet-50 real/fake classifier (Wang et al., CVPR 2020)."""

    name = "cnnspot"
    description = "ResNet-50 binary classifier trained on ProGAN images with blur+JPEG augmentation; P(fake) = sigmoid(logit)."
    paper = "Wang, Wang, Zhang, Owens, Efros. CNN-generated images are surprisingly easy to spot... for now. CVPR 2020."
    code = "https://github.com/PeterWang512/CNNDetection"
    license = "CC BY-NC-SA 4.0 (CNNDetection code and weights)"
    needs_weights = True
    cuda_dtype = "float32"
    variants = {
        None: Variant(WeightsSource(filename="blur_jpg_prob0.1.pth", source=_SOURCE, license="CC BY-NC-SA 4.0"), "ProGAN (20 LSUN classes, 720k images), blur+JPEG augmentation with p=0.1",
                      options={"aug_prob": 0.1}),
        "blur_jpg_prob0.5": Variant(WeightsSource(filename="blur_jpg_prob0.5.pth", source=_SOURCE, license="CC BY-NC-SA 4.0"), "ProGAN, blur+JPEG augmentation with p=0.5", options={"aug_prob": 0.5}),
    }
    train_recipe = {"lr": 1e-4, "weight_decay": 0.0, "batch_size": 64, "epochs": 10, "scheduler": "constant"}
    choices = [
        "Eval: no downscaling (CNNSpot evaluates full-size images); images are center-cropped to 224 so they batch, and only images smaller than 224 are resized up.",
        "Network: transformers ResNetForImageClassification with explicit torchvision->HF key mapping (torchvision is not installable here).",
        "-F training: Adam-style lr 1e-4 (AdamW, no weight decay), constant schedule, batch 64, resize 256 + random crop 224 + flip after blur/JPEG.",
    ]

    def setup(self) -> None:
        from transformers import ResNetConfig, ResNetForImageClassification

        p = self.weights_path
        state: dict[str, Any] | None = None
        config = None
        if p is not None and p.is_dir():
            meta, state = read_saved(p, self.name)
            config = ResNetConfig(**{k: v for k, v in meta["resnet_config"].items() if k != "num_labels"})
            config.num_labels = 1
            self.image_size = self.image_size or meta.get("image_size")
        elif p is not None:
            state = self._read_release(p)
        if config is None and self.base:
            try:
                config = ResNetConfig.from_pretrained(self.base)
            except (OSError, ValueError) as exc:
                raise WeightsError(f"Cannot load the ResNet config from '{self.base}' ({' '.join(str(exc).split())[:160]}); pass --base with a local HF ResNet folder.") from exc
            config.num_labels = 1
            config.id2label, config.label2id = {0: "fake"}, {"fake": 0}
        config = config or resnet50_config()
        self.image_size = self.image_size or 224
        if state is None:
            if not self.base:
                raise WeightsError("cnnspot training needs a starting point: --weights blur_jpg_prob0.1.pth (released) or --base an ImageNet ResNet-50 in HF format (e.g. microsoft/resnet-50).")
            self.model = self._from_base(config)
        else:
            self.model = ResNetForImageClassification(config)
            expected = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
            # BatchNorm's batch counter is bookkeeping, not a weight: old torch files lack it.
            for k in expected:
                if k.endswith("num_batches_tracked") and k not in state:
                    state[k] = torch.zeros((), dtype=torch.long)
            self.load_trainable_state(state, p)
        self.model.requires_grad_(False)
        self.model.eval().to(self.device, self.dtype)

    def _read_release(self, p: Path) -> dict[str, Any]:
        obj = load_safetensors(p) if p.suffix == ".safetensors" else torch_load(p)
        if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
            obj = obj["model"]
        if not isinstance(obj, dict):
            raise WeightsError(f"{p} is not a CNNSpot checkpoint (a dict whose 'model' entry is a torchvision ResNet-50 state dict).")
        mapped: dict[str, Any] = {}
        unknown = []
        for k, v in obj.items():
            hf = torchvision_to_hf(k)
            if hf is None:
                unknown.append(k)
            else:
                mapped[hf] = v
        if unknown:
            raise WeightsError(f"{p} does not match a torchvision ResNet-50: unexpected {', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}; use the released CNNSpot weights.")
        return mapped

    def _from_base(self, config: Any) -> Any:
        from transformers import ResNetForImageClassification

        quiet_transformers()
        try:
            model, info = ResNetForImageClassification.from_pretrained(self.base, config=config, ignore_mismatched_sizes=True, output_loading_info=True)
        except (OSError, ValueError) as exc:
            raise WeightsError(f"Cannot load the ResNet from '{self.base}' ({' '.join(str(exc).split())[:160]}); pass --base with a local HF ResNet folder.") from exc
        # Only the classification head may be new (1 output instead of ImageNet's 1000).
        missing = [k for k in list(info.get("missing_keys") or []) + [str(m[0]) if isinstance(m, tuple) else str(m) for m in info.get("mismatched_keys") or []] if not k.startswith("classifier")]
        if missing:
            raise WeightsError(f"The ResNet in '{self.base}' lacks {len(missing)} backbone weights (e.g. {missing[0]}); use a complete checkpoint.")
        return model

    # -- scoring -------------------------------------------------------------------------
    def preprocessing(self) -> Preprocessing:
        size = self.image_size or 224
        return Preprocessing(resize=None, resize_policy="upscale_only", interpolation="bilinear", crop=size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                             note="No downscaling (as CNNSpot's evaluation); center crop so batches stack; images smaller than the crop are resized up.")

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, dtype=self.dtype, non_blocking=True)

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(pixel_values=batch).logits.float()[:, 0])

    def gradcam(self) -> tuple[Any, Any]:
        """Grad-CAM target for ``detect --explain``: the last ResNet stage, and the fake logit."""
        return self.model.resnet.encoder.stages[-1], lambda x: self.model(pixel_values=x).logits[:, :1]

    def bare_forward(self, batch: torch.Tensor) -> Any:
        return self.model(pixel_values=batch).logits

    # -- training ------------------------------------------------------------------------
    def train_preprocess(self, image: Any, row: dict[str, Any] | None, rng: Any) -> torch.Tensor:
        image = blur_jpeg(image.convert("RGB"), rng, float(self.variant.options.get("aug_prob", 0.1)))
        size = self.image_size or 224
        image = resize_shorter(image, round(size * 256 / 224), "bilinear")
        return apply_preprocessing(image, self.preprocessing(), rng=rng, flip=True)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        self.model.requires_grad_(True)
        return list(self.model.parameters())

    def training_loss(self, batch: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.model(pixel_values=batch).logits.float()[:, 0]
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.device).float())

    def set_training(self, training: bool) -> None:
        self.model.train(training)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def load_trainable_state(self, state: dict[str, Any], source: Path | str) -> None:
        expected = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        check_state_dict(expected, state, source, f"the ResNet of cnnspot ({sum(self.model.config.depths)} bottleneck blocks, widths {self.model.config.hidden_sizes})")
        self.model.load_state_dict(state, strict=True)

    def saved_meta(self) -> dict[str, Any]:
        meta = super().saved_meta()
        cfg = self.model.config.to_dict()
        keep = ("embedding_size", "hidden_sizes", "depths", "layer_type", "hidden_act", "downsample_in_first_stage", "downsample_in_bottleneck", "num_channels")
        meta["resnet_config"] = {k: cfg[k] for k in keep if k in cfg}
        return meta


__all__ = ["CNNSpot", "torchvision_to_hf", "resnet50_config"]
