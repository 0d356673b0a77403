"""Small real networks following afpbench's network conventions, for the tests.

Each ``make_*`` is a factory (called with no arguments, as ``--model _nets:make_inpainter``
does) that returns a seeded, TorchScript-compatible module, so the same network is
tested both as a ``module:callable`` and scripted and saved as a TorchScript file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyInpainter(nn.Module):
    """(image [B,3,H,W] in [0,1], mask [B,1,H,W], 1 = hole) -> image in [0,1]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Like LaMa, the network never sees the pixels under the hole.
        x = torch.cat([image * (1 - mask), mask], dim=1)
        return torch.sigmoid(self.conv2(torch.relu(self.conv1(x))))


class TinySR(nn.Module):
    """(low-res [B,3,h,w] in [0,1], scale) -> [B,3,h*scale,w*scale] in [0,1]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, image: torch.Tensor, scale: int) -> torch.Tensor:
        up = F.interpolate(image, scale_factor=float(scale), mode="bilinear", align_corners=False)
        return (up + 0.1 * torch.tanh(self.conv(up))).clamp(0, 1)


class TinyGenerator(nn.Module):
    """(z [B,D], class ids [B], truncation psi) -> [B,3,R,R] in [-1,1], StyleGAN-like."""

    def __init__(self, z_dim: int = 16, num_classes: int = 1000, resolution: int = 32) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.resolution = resolution
        self.embed = nn.Embedding(num_classes, z_dim)
        self.mapping = nn.Linear(2 * z_dim, 32)
        self.register_buffer("w_avg", torch.zeros(32))
        self.synthesis = nn.Linear(32, 3 * 8 * 8)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, z: torch.Tensor, class_ids: torch.Tensor, truncation_psi: float) -> torch.Tensor:
        w = torch.relu(self.mapping(torch.cat([z, self.embed(class_ids)], dim=1)))
        w = self.w_avg + truncation_psi * (w - self.w_avg)  # the truncation trick
        x = self.synthesis(w).view(-1, 3, 8, 8)
        x = F.interpolate(x, size=[self.resolution, self.resolution], mode="bilinear", align_corners=False)
        return torch.tanh(self.conv(x))


class TinyTextToImage(nn.Module):
    """(prompts, seeds [B] int64, guidance_scale) -> [B,3,S,S] in [0,1].

    Randomness comes only from the seeds (a per-row hash-like pattern), and the prompt
    shifts the colours, so both inputs visibly matter.
    """

    def __init__(self, size: int = 32) -> None:
        super().__init__()
        self.size = size
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, prompts: list[str], seeds: torch.Tensor, guidance_scale: float = 1.0) -> torch.Tensor:
        b = seeds.shape[0]
        coords = torch.arange(self.size * self.size, dtype=torch.float32).view(1, 1, self.size, self.size)
        phase = (seeds.to(torch.float32) % 9973.0).view(b, 1, 1, 1)
        codes: list[float] = []
        for p in prompts:
            h = 0
            for ch in p:
                h = (h * 31 + ord(ch)) % 1000
            codes.append(float(h) / 1000.0)
        tint = torch.tensor(codes, dtype=torch.float32).view(b, 1, 1, 1)
        base = torch.sin(coords * 0.37 + phase).expand(b, 3, self.size, self.size)
        x = self.conv(base) * guidance_scale * 0.1 + tint
        return torch.sigmoid(x)


class WrongShapeInpainter(nn.Module):
    """Returns half the input size: the backend must refuse it before any work."""

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return image[:, :, ::2, ::2]


class WrongShapeTextToImage(nn.Module):
    def forward(self, prompts: list[str], seeds: torch.Tensor) -> torch.Tensor:
        return torch.zeros(seeds.shape[0], 1, 8, 8)


class TinyClassifier(nn.Module):
    """[0,1] images -> logits over 10 classes, with a ``features`` method (penultimate)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 5, stride=4, padding=2)
        self.fc = nn.Linear(8, num_classes)

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x - 0.5)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _seeded(cls, *args, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return cls(*args, **kwargs).eval()


def make_inpainter() -> nn.Module:
    return _seeded(TinyInpainter)


def make_sr() -> nn.Module:
    return _seeded(TinySR)


def make_generator() -> nn.Module:
    return _seeded(TinyGenerator)


def make_text_to_image() -> nn.Module:
    return _seeded(TinyTextToImage)


def make_wrong_inpainter() -> nn.Module:
    return WrongShapeInpainter()


def make_wrong_text_to_image() -> nn.Module:
    return WrongShapeTextToImage()


def make_classifier() -> nn.Module:
    return _seeded(TinyClassifier)


def make_sr_from_checkpoint() -> nn.Module:
    """Like the upstream exporters in docs/networks.md: weights from a file named by an
    environment variable, declared in ``afpbench_weights`` so their hash is recorded."""
    import os

    path = os.environ["AFPBENCH_TEST_SR_WEIGHTS"]
    net = TinySR()
    net.load_state_dict(torch.load(path, map_location="cpu"))
    net.afpbench_weights = path
    return net.eval()


def needs_args(width: int) -> nn.Module:
    """Not a factory: it needs an argument, which the backend reports."""
    return TinySR()


FACTORIES = {
    "inpaint": make_inpainter,
    "super_resolution": make_sr,
    "class_to_image": make_generator,
    "text_to_image": make_text_to_image,
}


def save_scripted(factory, path) -> str:
    """Script a factory's network with torch.jit.script and save it as TorchScript."""
    torch.jit.script(factory()).save(str(path))
    return str(path)
