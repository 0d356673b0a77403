"""Images <-> tensors for the backends that run torch networks (network, attacks)."""

from __future__ import annotations

import torch


def pil_to_tensor(image) -> torch.Tensor:
    """RGB PIL -> float [3,H,W] in [0,1]."""
    import numpy as np

    arr = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def tensor_to_pil(x: torch.Tensor):
    """float [3,H,W] in [0,1] -> RGB PIL, rounded to the nearest 8-bit level."""
    from PIL import Image

    arr = x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, mode="RGB")


__all__ = ["pil_to_tensor", "tensor_to_pil"]
