"""StyleGAN-XL (class-conditional ImageNet) as a ``module:callable`` factory.

StyleGAN-XL (https://github.com/autonomousvision/stylegan-xl) ships its generators as
network pickles that need the repository's ``dnnlib``, ``legacy`` and ``torch_utils``
(and custom CUDA ops), so a ``module:callable`` is simpler than a TorchScript export.
The wrapper does what the repository's ``gen_images.py`` / ``gen_utils.get_w_from_seed``
do for one class: one-hot label, ``G.mapping``, truncation towards the class's average
w (``G.mapping.w_avg`` holds one row per class), ``G.synthesis`` with constant noise.

Usage::

    export AFPBENCH_SGXL_REPO=/path/to/stylegan-xl
    export AFPBENCH_SGXL_PKL=/path/to/imagenet256.pkl
    PYTHONPATH=examples/networks afpbench build sgxl --model stylegan_xl_net:make_generator

Convention (afpbench ``class_to_image``): ``net(z [B,z_dim], class_ids [B] int64,
truncation_psi: float)`` returns ``[B,3,R,R]`` in [-1,1]; ``net.z_dim`` tells afpbench
the latent size (64 for StyleGAN-XL). afpbench draws z from each row's seed and the
class from the row, and passes the recipe's ``truncation_psi``.

This file is documentation: afpbench never imports it.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F
from torch import nn


class ClassConditionalGenerator(nn.Module):
    def __init__(self, G: nn.Module):
        super().__init__()
        self.G = G
        self.z_dim = int(G.z_dim)

    @torch.no_grad()
    def forward(self, z: torch.Tensor, class_ids: torch.Tensor, truncation_psi: float) -> torch.Tensor:
        G = self.G
        labels = F.one_hot(class_ids, G.c_dim).to(z.dtype)
        w = G.mapping(z, labels)  # [B, num_ws, w_dim]
        w_avg = G.mapping.w_avg
        w_avg = w_avg.index_select(0, class_ids) if w_avg.dim() == 2 else w_avg.unsqueeze(0).expand(len(z), -1)
        w_avg = w_avg.unsqueeze(1).repeat(1, G.mapping.num_ws, 1)
        w = w_avg + (w - w_avg) * truncation_psi
        # Constant noise: the image depends on z and the class only, so a row is
        # reproducible from its seed.
        return G.synthesis(w, noise_mode="const")


def make_generator() -> nn.Module:
    repo, pkl = os.environ["AFPBENCH_SGXL_REPO"], os.environ["AFPBENCH_SGXL_PKL"]
    if repo not in sys.path:
        sys.path.append(repo)  # the pickle refers to dnnlib / torch_utils by module name
    import dnnlib
    import legacy

    with dnnlib.util.open_url(pkl) as f:
        G = legacy.load_network_pkl(f)["G_ema"]
    net = ClassConditionalGenerator(G.eval().requires_grad_(False))
    net.afpbench_weights = pkl
    return net.eval()
