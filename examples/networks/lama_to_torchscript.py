"""Export big-lama as a TorchScript file for ``afpbench build lama --model big-lama.pt``.

Run it from a checkout of https://github.com/advimman/lama with its environment
installed and the ``big-lama`` folder downloaded (it holds ``config.yaml`` and
``models/best.ckpt``)::

    cd lama && export PYTHONPATH=$(pwd)
    python /path/to/afpbench/examples/networks/lama_to_torchscript.py big-lama big-lama.pt

(LaMa's own ``bin/to_jit.py`` makes an equivalent file: it also traces a module taking
``(image, mask)`` and returning ``batch["inpainted"]``.)

The exported module follows afpbench's ``inpaint`` convention: ``image`` [B,3,H,W] in
[0,1] and ``mask`` [B,1,H,W] with 1 = hole, returning [B,3,H,W] in [0,1]. H and W must
be multiples of 8 (afpbench crops 512 px and probes with 64 px).

This file is documentation: afpbench never imports it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf
from torch import nn


class LamaForAfpbench(nn.Module):
    """(image, mask) -> inpainted image, both in [0,1]."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # The training module masks the image, concatenates the mask and composites
        # the prediction into the known pixels (its "inpainted" output).
        out = self.module({"image": image, "mask": (mask > 0).float()})
        return out["inpainted"]


def main(model_dir: str, out_path: str) -> None:
    from saicinpainting.training.trainers import load_checkpoint  # from the LaMa checkout

    folder = Path(model_dir)
    config = OmegaConf.create(yaml.safe_load((folder / "config.yaml").read_text()))
    config.training_model.predict_only = True
    config.visualizer.kind = "noop"
    module = load_checkpoint(config, str(folder / "models" / "best.ckpt"), strict=False, map_location="cpu")
    module.eval()
    wrapper = LamaForAfpbench(module).eval()

    image = torch.rand(1, 3, 512, 512)
    mask = (torch.rand(1, 1, 512, 512) > 0.7).float()
    with torch.no_grad():
        reference = wrapper(image, mask)
        traced = torch.jit.trace(wrapper, (image, mask), strict=False)
    traced.save(out_path)

    # Check the saved file at another size, as afpbench's probe will.
    reloaded = torch.jit.load(out_path)
    with torch.no_grad():
        assert (reloaded(image, mask) - reference).abs().max() < 1e-4
        small = reloaded(torch.rand(1, 3, 64, 64), torch.zeros(1, 1, 64, 64))
    assert small.shape == (1, 3, 64, 64)
    print(f"saved {out_path}; sha256 is recorded as the set's revision")


if __name__ == "__main__":
    main(*sys.argv[1:3])
