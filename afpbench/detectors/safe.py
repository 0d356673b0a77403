"""SAFE (Li et al., KDD 2025): the HH wavelet band of a centre crop into a truncated ResNet-50.

Upstream (Ouxiang-Li/SAFE, ``models/resnet.py``): the forward takes the crop in [0, 1]
(no normalisation), computes a one-level DWT (``bior1.3``, ``symmetric`` mode, with
pytorch_wavelets), keeps the diagonal detail band (HH) of each channel, resizes it back
to the crop size (torchvision ``Resize``, bilinear, antialias) and runs the same
truncated ResNet-50 as NPR (3x3 stride-2 stem, ``layer1``-``layer2``) with
``fc1 = Linear(512, 2)``; P(fake) = softmax(logits)[1] (its ``engine_finetune.evaluate``).

The DWT here is a separable strided convolution with PyWavelets' ``bior1.3``
decomposition high-pass filter and half-sample symmetric extension, which is what
``pywt.dwt2(..., mode='symmetric')`` computes (a test checks it against pywt); it runs on
the detector's device inside the forward, as upstream's does.

Release: ``checkpoint/checkpoint-best.pth`` in the repository, written by
``utils.save_model``: ``{'model': model_without_ddp.state_dict(), 'optimizer': ...,
'epoch': 'best', 'scaler': ..., 'args': argparse.Namespace}`` (the Namespace is allowed
when reading; nothing else from the file is used).

Test-time preprocessing is upstream's ``scripts/eval.sh``: ``--input_size 256
--transform_mode crop``, i.e. torchvision ``CenterCrop(256)`` (zero padding when smaller)
then ``ToTensor``. The paper's text and DetectZoo use 200; ``--image-size 200`` selects it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from afpbench.cards import Preprocessing, Variant, WeightsSource
from afpbench.detectors._resnet import TruncatedResNet, arch_options
from afpbench.detectors._weights import load_module, read_state_dict, tensor_dict, torch_load
from afpbench.detectors.base import Detector
from afpbench.errors import WeightsError

_REPO = "https://github.com/Ouxiang-Li/SAFE"
WAVELET = "bior1.3"


def read_safe_checkpoint(path: Path) -> dict[str, Any]:
    """The ``model`` state dict of a file written by SAFE's ``utils.save_model``."""
    import argparse

    if path.suffix == ".safetensors":
        return read_state_dict(path, "a SAFE checkpoint")
    # save_model pickles the training argparse.Namespace next to the weights.
    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = torch_load(path)
    return tensor_dict(obj, path, "a SAFE checkpoint (a dict whose 'model' entry is the network's state dict); use checkpoint-best.pth", unwrap=True)


class DiagonalWavelet(torch.nn.Module):
    """HH band of a one-level 2-D DWT per channel, resized back to the input size.

    Filters come from PyWavelets; extension is pywt's ``symmetric`` (half-sample), so the
    band equals ``pywt.dwt2(x, wavelet, mode='symmetric')[1][2]``.
    """

    def __init__(self, wavelet: str = WAVELET):
        import pywt

        super().__init__()
        w = pywt.Wavelet(wavelet)
        # Correlation with the reversed filter is pywt's convolution.
        self.register_buffer("hi", torch.tensor(w.dec_hi[::-1], dtype=torch.float32), persistent=False)
        self.length = w.dec_len

    def _extend(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        import numpy as np

        n = x.shape[dim]
        # pywt's output sample k reads x[2k + 1 - j]: F - 2 samples before, F - 1 after.
        idx = np.pad(np.arange(n), (self.length - 2, self.length - 1), mode="symmetric")
        return x.index_select(dim, torch.from_numpy(idx).to(x.device))

    def band(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        b, c, _, w = x.shape
        k = self.hi.to(x.dtype)
        y = self._extend(x, 2).reshape(b * c, 1, -1, w)
        y = F.conv2d(y, k.view(1, 1, -1, 1), stride=(2, 1))
        y = F.conv2d(self._extend(y, 3), k.view(1, 1, 1, -1), stride=(1, 2))
        return y.reshape(b, c, y.shape[-2], y.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        return TF.resize(self.band(x), [x.shape[-2], x.shape[-1]], interpolation=InterpolationMode.BILINEAR, antialias=True)


class SAFE(Detector):
    """Crop + wavelet HH band + truncated ResNet-50 (Li et al., KDD 2025)."""

    name = "safe"
    description = "Centre crop (no resize, no normalisation) -> one-level DWT (bior1.3) HH band resized back -> ResNet-50 cut after layer2 -> 2 logits; P(fake) = softmax[1]."
    paper = "Li, Cai, Hao, Jiang, Hu, Feng. Improving Synthetic Image Detection Towards Generalization: An Image Transformation Perspective. KDD 2025."
    code = _REPO
    license = "Apache-2.0 (repository, including checkpoint/checkpoint-best.pth)"
    needs_weights = True
    cuda_dtype = "float32"
    variants = {
        None: Variant(
            WeightsSource(filename="SAFE/checkpoint-best.pth", source=f"{_REPO} (checkpoint/checkpoint-best.pth)", license="Apache-2.0"),
            "ProGAN (CNNDetection/ForenSynths train set), 4 classes: car, cat, chair, horse; crop + ColorJitter + RandomRotation + patch masking",
        ),
    }
    choices = [
        "Crop 256 as upstream's scripts/eval.sh (--input_size 256 --transform_mode crop); torchvision CenterCrop pads smaller images with zeros. --image-size 200 gives the paper's/DetectZoo's 200.",
        "DWT: PyWavelets' bior1.3 filters as a strided convolution with pywt's symmetric extension (equal to pywt.dwt2 and to upstream's pytorch_wavelets), on the device.",
        "Label convention checked from upstream: 0_real/1_fake, CrossEntropy, softmax(logits)[:, 1] = P(fake).",
    ]

    def setup(self) -> None:
        self.arch_name, arch = arch_options(self.base, "resnet50", self.name)
        if self.weights_path is None:
            raise WeightsError(f"{self.full_name} is not trainable here; pass --weights with the released checkpoint-best.pth.")
        state = read_safe_checkpoint(self.weights_path)
        what = f"SAFE's truncated ResNet ('{self.arch_name}': blocks {arch['layers']}, 2 classes)"
        self.model = load_module(lambda: TruncatedResNet(arch["layers"], 2, arch["width_per_group"]), state, self.weights_path, what)
        self.model.requires_grad_(False)
        self.model.eval().to(self.device, self.dtype)
        self.dwt = DiagonalWavelet().to(self.device)
        self.image_size = self.image_size or (32 if self.arch_name == "tiny" else 256)

    def base_description(self) -> str | None:
        return self.arch_name

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(resize=None, resize_policy="none", crop=self.image_size, mean=None, std=None,
                             note="torchvision CenterCrop (zero-padded when smaller, never resized), ToTensor in [0, 1], no normalisation.")

    def preprocess(self, image: Any, row: dict[str, Any] | None = None) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        return TF.to_tensor(TF.center_crop(image.convert("RGB"), [self.image_size, self.image_size]))

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, dtype=self.dtype, non_blocking=True)

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.features(self.dwt(batch)).float()

    def forward_scores(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(self.dwt(batch)).float(), dim=1)[:, 1]

    def gradcam(self) -> tuple[Any, Any]:
        """Grad-CAM target for ``detect --explain``: layer2, and the fake-minus-real logit."""

        def logit(x: torch.Tensor) -> torch.Tensor:
            out = self.model(self.dwt(x))
            return out[:, 1:2] - out[:, 0:1]

        return self.model.layer2, logit

    def bare_forward(self, batch: torch.Tensor) -> Any:
        return self.model(self.dwt(batch))


__all__ = ["SAFE", "DiagonalWavelet", "read_safe_checkpoint"]
