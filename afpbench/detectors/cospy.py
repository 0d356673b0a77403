"""CO-SPY (Cheng et al., CVPR 2025), the ProGAN-trained variant: a semantic branch (frozen
CLIP ViT-L/14 image embedding + Linear(768, 1)), an artifact branch (NPR residual
``x - up(down(x))`` into a truncated ResNet-50: 3x3 stem, layer1, layer2, average pool,
Linear(512, 1)), and a fusion Linear(2, 1) over the two logits.

Upstream (``Megum1/CO-SPY``, ``detectors/progan/``): ``CoSpyFusionDetector`` loads three
files written by each detector's ``save_weights`` and distributed in ``progan.zip``
(HF ``ruojiruoli/Co-Spy-Pretrained-Weights``):

* ``semantic_weights.pth``: ``{"fc.weight": [1, 768], "fc.bias": [1]}``;
* ``artifact_weights.pth``: the whole ``ArtifactDetector.state_dict()``: ``artifact_encoder.*``
  (with BatchNorm statistics, ``num_batches_tracked`` and the unused ``fc1``) and ``fc.*``;
* ``fusion_weights.pth``: ``{"fc.weight": [1, 2], "fc.bias": [1]}``.

Test-time transform: Resize(256), CenterCrop(224), ToTensor; then inside the model the
semantic branch normalises with CLIP's statistics and the artifact branch with
ImageNet's. P(fake) = sigmoid(fusion logit).

The SD-v1.4 variant (SigLIP-SO400M-384 semantic branch, SD-1.4 VAE reconstruction
residual for the artifact branch) is not bundled: it needs open_clip's SigLIP and a
VAE encode/decode per image (see docs/detectors.md).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from afpbench.cards import Preprocessing, Variant, WeightsSource
from afpbench.detectors._hf import from_pretrained_strict, quiet_transformers
from afpbench.detectors._transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from afpbench.detectors._weights import check_state_dict, tensor_dict
from afpbench.detectors.base import Detector
from afpbench.errors import WeightsError

DEFAULT_BASE = "openai/clip-vit-large-patch14"
_HF = "https://huggingface.co/ruojiruoli/Co-Spy-Pretrained-Weights"
PARTS = ("semantic_weights.pth", "artifact_weights.pth", "fusion_weights.pth")


class ArtifactEncoder(torch.nn.Module):
    """CO-SPY's NPR-based artifact encoder: torchvision Bottleneck blocks after a 3x3 stride-2
    stem, layers 1-2 of ResNet-50 only (512 features). ``fc1`` exists in upstream's module
    (and so in its saved state) but is never used."""

    def __init__(self, layers: tuple[int, int] = (3, 4), width: int = 64):
        from torchvision.models.resnet import Bottleneck

        super().__init__()
        nn = torch.nn
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(Bottleneck, width, layers[0])
        self.layer2 = self._make_layer(Bottleneck, width * 2, layers[1], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.out_features = width * 2 * Bottleneck.expansion
        self.fc1 = nn.Linear(self.out_features, 1)

    def _make_layer(self, block: Any, planes: int, blocks: int, stride: int = 1) -> torch.nn.Sequential:
        nn = torch.nn
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @staticmethod
    def residual(x: torch.Tensor) -> torch.Tensor:
        """NPR's neighbouring-pixel residual: x minus its nearest down (x0.5) / up (x2) copy."""
        f = torch.nn.functional.interpolate
        down = f(x, scale_factor=0.5, mode="nearest", recompute_scale_factor=True)
        return x - f(down, scale_factor=2.0, mode="nearest", recompute_scale_factor=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.residual(x) * 2.0 / 3.0))))
        x = self.layer2(self.layer1(x))
        return torch.flatten(self.avgpool(x), 1)


def read_release(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """``progan.zip`` -> {part file name: state dict}; macOS metadata entries are skipped."""
    if not zipfile.is_zipfile(path):
        raise WeightsError(f"{path} is not a zip archive; cospy loads the release progan.zip from {_HF} as it is (it holds {', '.join(PARTS)}).")
    out: dict[str, dict[str, torch.Tensor]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            # torch.save writes a zip too (<name>/data.pkl, <name>/data/0, ...): say so instead of "lacks".
            single_checkpoint = any(i.filename.endswith("/data.pkl") for i in zf.infolist())
            for info in zf.infolist():
                base = info.filename.rsplit("/", 1)[-1]
                if info.is_dir() or info.filename.startswith("__MACOSX/") or base not in PARTS:
                    continue
                if base in out:
                    raise WeightsError(f"{path} holds {base} twice; use the release progan.zip.")
                obj = torch.load(io.BytesIO(zf.read(info)), map_location="cpu", weights_only=True)
                out[base] = tensor_dict(obj, f"{path}: {info.filename}", "a state dict", strip_module=True)
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, RuntimeError, ValueError, OSError) as exc:
        raise WeightsError(f"{path} cannot be read ({' '.join(str(exc).split())[:140]}); it is truncated or not the release: download progan.zip again.") from exc
    missing = [p for p in PARTS if p not in out]
    if len(missing) == len(PARTS) and single_checkpoint:
        raise WeightsError(f"{path} is one PyTorch checkpoint, not the release; cospy loads progan.zip from {_HF} as it is (it holds {', '.join(PARTS)}).")
    if missing:
        raise WeightsError(f"{path} lacks {', '.join(missing)}; use the release progan.zip from {_HF}.")
    return out


class CoSpy(Detector):
    """CO-SPY ProGAN variant: CLIP semantic logit + NPR artifact logit -> Linear(2, 1)."""

    name = "cospy"
    description = "CO-SPY (ProGAN): CLIP ViT-L/14 embedding + Linear(768->1) and NPR residual + truncated ResNet-50 + Linear(512->1), fused by Linear(2->1); P(fake) = sigmoid."
    paper = "Cheng, Lyu, Zhang, Guo, Zhang, Xu, Chen, Wang, An, Zhang. CO-SPY: Combining Semantic and Pixel Features to Detect Synthetic Images by AI. CVPR 2025 (arXiv 2503.18286)."
    code = "https://github.com/Megum1/CO-SPY (detectors/progan/, evaluate.py)"
    license = "MIT (code and released weights); CLIP weights: MIT (OpenAI)"
    needs_weights = True
    cuda_dtype = "float32"  # upstream runs fp32
    variants = {
        None: Variant(
            WeightsSource(filename="progan.zip", source=f"{_HF} (progan.zip; pretrained/download.sh)", license="MIT"),
            "ProGAN (CNNDetection training set; semantic and artifact branches trained separately, then the fusion layer)",
        ),
    }
    choices = [
        ("Eval as upstream test_transform: torchvision Resize(256) (bilinear, antialiased) + CenterCrop(224) + ToTensor; "
         "CLIP mean/std for the semantic branch and ImageNet mean/std for the artifact branch, inside the model."),
        "The release progan.zip is read as it is; the three part files are loaded strictly (upstream loads the artifact file with strict=False).",
        "Artifact encoder built from torchvision's ResNet Bottleneck blocks with upstream's 3x3 stride-2 stem and layers 1-2.",
        "Labels as upstream (dataSets/dataset.py: 0_real 0, 1_fake 1; evaluate.py scan() calls sigmoid > 0.5 AI-generated): afpbench's convention unchanged.",
        "Only the ProGAN variant is bundled; the SD-v1.4 variant needs SigLIP-SO400M-384 (open_clip) and a Stable Diffusion VAE pass per image.",
    ]

    def setup(self) -> None:
        from transformers import CLIPVisionModelWithProjection

        quiet_transformers()
        self._transform: Any = None
        p = self.weights_path
        if p is None or p.is_dir():
            raise WeightsError(f"cospy loads the release progan.zip, not {p}.")
        parts = read_release(p)
        self.base = self.base or DEFAULT_BASE
        self.clip = from_pretrained_strict(CLIPVisionModelWithProjection, self.base, "CLIP vision model", dtype=self.dtype)
        self.clip.requires_grad_(False)
        self.clip.eval().to(self.device)
        dim = self.clip.config.projection_dim
        nn = torch.nn
        self.sem_fc = nn.Linear(dim, 1)
        self.art = ArtifactEncoder()
        self.art_fc = nn.Linear(self.art.out_features, 1)
        self.fusion = nn.Linear(2, 1)
        sem, art, fus = (parts[k] for k in PARTS)
        check_state_dict({"fc.weight": (1, dim), "fc.bias": (1,)}, sem, f"{p}:semantic_weights.pth", f"CO-SPY's semantic head for a {dim}-d CLIP projection ('{self.base}')")
        art_expected = {f"artifact_encoder.{k}": tuple(v.shape) for k, v in self.art.state_dict().items()}
        art_expected.update({"fc.weight": (1, self.art.out_features), "fc.bias": (1,)})
        check_state_dict(art_expected, art, f"{p}:artifact_weights.pth", "CO-SPY's artifact detector (NPR residual + ResNet-50 layers 1-2 + fc)")
        check_state_dict({"fc.weight": (1, 2), "fc.bias": (1,)}, fus, f"{p}:fusion_weights.pth", "CO-SPY's fusion layer")
        self.sem_fc.load_state_dict({"weight": sem["fc.weight"], "bias": sem["fc.bias"]}, strict=True)
        self.art.load_state_dict({k[len("artifact_encoder."):]: v for k, v in art.items() if k.startswith("artifact_encoder.")}, strict=True)
        self.art_fc.load_state_dict({"weight": art["fc.weight"], "bias": art["fc.bias"]}, strict=True)
        self.fusion.load_state_dict({"weight": fus["fc.weight"], "bias": fus["fc.bias"]}, strict=True)
        for m in (self.sem_fc, self.art, self.art_fc, self.fusion):
            m.requires_grad_(False)
            m.eval().to(self.device, self.dtype)
        self.image_size = int(self.image_size or 224)
        self.load_size = round(self.image_size * 256 / 224)
        self._interpolate = self.image_size != self.clip.config.image_size
        self._clip_norm = (torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1), torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1))
        self._inet_norm = (torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1))

    # -- scoring ---------------------------------------------------------------------------
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(resize=self.load_size, resize_policy="shorter", interpolation="bilinear", crop=self.image_size, mean=None, std=None,
                             note="torchvision Resize(256) + CenterCrop(224) + ToTensor (upstream test_transform); "
                                  "the semantic branch then normalises with CLIP mean/std and the artifact branch with ImageNet mean/std, inside the model.")

    def preprocess(self, image: Any, row: dict[str, Any] | None = None) -> torch.Tensor:
        if self._transform is None:
            import torchvision.transforms as T

            self._transform = T.Compose([T.Resize(self.load_size), T.CenterCrop(self.image_size), T.ToTensor()])
        return self._transform(image.convert("RGB"))

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, non_blocking=True)

    def branch_logits(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(semantic logit, artifact logit), each [B, 1], from [0, 1] images."""
        x = batch.float()
        x_sem = ((x - self._clip_norm[0]) / self._clip_norm[1]).to(self.dtype)
        x_art = ((x - self._inet_norm[0]) / self._inet_norm[1]).to(self.dtype)
        sem = self.sem_fc(self.clip(pixel_values=x_sem, interpolate_pos_encoding=self._interpolate).image_embeds)
        art = self.art_fc(self.art(x_art))
        return sem, art

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        sem, art = self.branch_logits(batch)
        return self.fusion(torch.cat([sem, art], dim=1)).float()[:, 0]

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(batch))

    def bare_forward(self, batch: torch.Tensor) -> Any:
        return self.logits(batch)


__all__ = ["CoSpy", "ArtifactEncoder", "read_release", "PARTS", "DEFAULT_BASE"]
