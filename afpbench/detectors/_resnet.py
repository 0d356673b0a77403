"""The truncated ResNet-50 NPR and SAFE share (upstream's ``networks/resnet.py`` of both).

Both cut torchvision's ResNet-50 after ``layer2``, replace the 7x7 stem by a 3x3 stride-2
convolution and classify the average-pooled 512 features with ``fc1``; they differ in
what they feed it (NPR's up/down-sampling residual, SAFE's wavelet band) and in the
number of outputs. The keys are upstream's, so released state dicts load by their own names.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from afpbench.errors import AfpbenchError

# Architectures `base` selects: upstream's (ResNet-50 blocks 3 + 4) and a tiny one of the
# same classes for tests, benchmarks and the offline demo.
ARCHS: dict[str, dict[str, Any]] = {
    "resnet50": {"layers": (3, 4), "width_per_group": 64},
    "tiny": {"layers": (1, 1), "width_per_group": 16},
}


class TruncatedResNet(nn.Module):
    """torchvision's ResNet-50 stem and ``layer1``-``layer2`` with the NPR/SAFE changes.

    Keys are upstream's: ``conv1`` (3x3, stride 2), ``bn1``, ``layer1.*``, ``layer2.*``,
    ``fc1`` (512 -> ``num_classes``). ``width_per_group`` only exists to build tiny test
    models (64 is ResNet-50).
    """

    def __init__(self, layers: tuple[int, int] = (3, 4), num_classes: int = 1, width_per_group: int = 64):
        from torchvision.models.resnet import Bottleneck, ResNet

        super().__init__()
        # torchvision builds all four stages; upstream keeps two, so the rest is dropped.
        net = ResNet(Bottleneck, [layers[0], layers[1], 1, 1], width_per_group=width_per_group)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1, self.relu, self.maxpool = net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2 = net.layer1, net.layer2
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc1 = nn.Linear(128 * Bottleneck.expansion, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(self.features(x))


def arch_options(name: str | None, default: str, detector: str) -> tuple[str, dict[str, Any]]:
    """(name, options) of the architecture ``--base`` picks, or a one-line error."""
    name = name or default
    if name not in ARCHS:
        raise AfpbenchError(f"Unknown --base '{name}' for {detector}; use one of {', '.join(ARCHS)} (the default is upstream's architecture).")
    return name, ARCHS[name]


__all__ = ["ARCHS", "TruncatedResNet", "arch_options"]
