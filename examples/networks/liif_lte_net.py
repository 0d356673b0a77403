"""LIIF and LTE x4 super-resolution as ``module:callable`` factories.

LIIF (https://github.com/yinboc/liif) and LTE (https://github.com/jaewon-lee-b/lte,
built on LIIF's code) query an implicit function at output pixel coordinates; their
``demo.py`` normalises the input to [-1,1], queries every output pixel centre with its
cell size, and maps the prediction back to [0,1]. These factories wrap exactly that.

Usage (copy this file next to your work, or put examples/networks on PYTHONPATH)::

    export AFPBENCH_SR_REPO=/path/to/liif          # or /path/to/lte
    export AFPBENCH_SR_CKPT=/path/to/edsr-baseline-liif.pth
    PYTHONPATH=examples/networks afpbench build liif --model liif_lte_net:make_liif --source ...
    # v1 benchmark:
    AFPBENCH_SR_REPO=/path/to/lte AFPBENCH_SR_CKPT=/path/to/edsr-baseline-lte.pth \
        PYTHONPATH=examples/networks afpbench build lte --model liif_lte_net:make_lte --source ...

Convention (afpbench ``super_resolution``): ``net(low_res [B,3,h,w] in [0,1], scale: int)``
returns ``[B,3,h*scale,w*scale]`` in [0,1]. The checkpoint file is declared in
``afpbench_weights`` so its sha256 joins the recorded revision.

This file is documentation: afpbench never imports it.
"""

from __future__ import annotations

import importlib
import os
import sys

import torch
from torch import nn

QUERY_CHUNK = 30000  # pixels per query, as the upstream demo (bsize=30000)


class ImplicitSR(nn.Module):
    def __init__(self, model: nn.Module, make_coord, scale_max: float | None):
        super().__init__()
        self.model = model
        self.make_coord = make_coord
        self.scale_max = scale_max  # LTE enlarges the cell beyond its training scale range

    @torch.no_grad()
    def forward(self, image: torch.Tensor, scale: int) -> torch.Tensor:
        b, _, h, w = image.shape
        big_h, big_w = h * int(scale), w * int(scale)
        coord = self.make_coord((big_h, big_w)).to(image.device)  # [H*W, 2] pixel centres in [-1,1]
        cell = torch.ones_like(coord)
        cell[:, 0] *= 2 / big_h
        cell[:, 1] *= 2 / big_w
        if self.scale_max is not None:
            cell = cell * max(big_h / h / self.scale_max, 1.0)
        coord = coord.unsqueeze(0).expand(b, -1, -1)
        cell = cell.unsqueeze(0).expand(b, -1, -1)
        self.model.gen_feat((image - 0.5) / 0.5)
        preds = [self.model.query_rgb(coord[:, i : i + QUERY_CHUNK], cell[:, i : i + QUERY_CHUNK]) for i in range(0, coord.shape[1], QUERY_CHUNK)]
        pred = torch.cat(preds, dim=1)  # [B, H*W, 3] in [-1,1]
        return (pred * 0.5 + 0.5).clamp(0, 1).view(b, big_h, big_w, 3).permute(0, 3, 1, 2).contiguous()


def _import_repo(repo: str):
    """Import the repository's ``models`` and ``utils`` without shadowing other packages."""
    sys.path.insert(0, repo)
    try:
        models = importlib.import_module("models")
        make_coord = importlib.import_module("utils").make_coord
    finally:
        sys.path.remove(repo)
    return models, make_coord


def _make(scale_max: float | None) -> nn.Module:
    repo, ckpt = os.environ["AFPBENCH_SR_REPO"], os.environ["AFPBENCH_SR_CKPT"]
    models, make_coord = _import_repo(repo)
    model = models.make(torch.load(ckpt, map_location="cpu")["model"], load_sd=True)
    net = ImplicitSR(model.eval(), make_coord, scale_max)
    net.afpbench_weights = ckpt
    return net.eval()


def make_liif() -> nn.Module:
    return _make(scale_max=None)


def make_lte() -> nn.Module:
    # LTE's demo.py: scale_max = 4, cell scaled by max(scale / scale_max, 1) (= 1 at x4).
    return _make(scale_max=4.0)
