"""Where a detector looks: heat maps for ``afpbench detect --explain``.

Two kinds of detector can say it:

* patch scorers (LaDeDa, Tiny-LaDeDa) score every patch and average; their patch logits
  *are* the map (``patch_logits(batch) -> [B, h, w]``);
* CNNs (CNNSpot, NPR, SAFE) get Grad-CAM (Selvaraju et al. 2017) from captum's
  ``LayerGradCam`` on the last spatial layer the detector names with
  ``gradcam() -> (layer, forward)``, where ``forward`` maps its input to the fake logit.

The map is drawn over the image as the detector sees it (its preprocessing's resize and
crop, normalisation undone), so map and picture are aligned. Detectors without either
hook (the VLMs, CLIP probes, row-level sanity detectors) say so instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from afpbench.errors import AfpbenchError


def can_explain(det: Any) -> bool:
    return hasattr(det, "patch_logits") or hasattr(det, "gradcam")


def detector_view(det: Any, x: Any) -> Any:
    """The preprocessed tensor [C, H, W] back as the RGB picture the detector sees."""
    from PIL import Image

    p = det.card.preprocessing
    arr = x.detach().float().cpu().numpy()
    if p.mean is not None and p.std is not None and arr.shape[0] == 3:
        arr = arr * np.asarray(p.std, dtype=np.float32)[:, None, None] + np.asarray(p.mean, dtype=np.float32)[:, None, None]
    arr = np.clip(arr.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).convert("RGB")


def explain_image(det: Any, image: Any, row: dict[str, Any] | None = None) -> tuple[Any, np.ndarray]:
    """(the detector's view of ``image``, a heat map in [0, 1] of the same size; high = looks fake)."""
    import torch

    x = det.preprocess(image, row)
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise AfpbenchError(f"{det.full_name} does not turn an image into a [C, H, W] tensor, so it cannot draw a heat map.")
    batch = det.to_device(x.unsqueeze(0))
    if hasattr(det, "patch_logits"):
        with torch.inference_mode():
            heat = det.patch_logits(batch)[0].float()
    elif hasattr(det, "gradcam"):
        from captum.attr import LayerGradCam

        layer, forward = det.gradcam()
        with torch.enable_grad():
            inp = batch.detach().clone().requires_grad_(True)
            attr = LayerGradCam(forward, layer).attribute(inp, target=0, relu_attributions=True)
        heat = attr[0].detach().float().sum(dim=0) if attr.dim() == 4 else attr[0].detach().float()
    else:
        raise AfpbenchError(f"{det.full_name} has no spatial explanation; afpbench detect --explain lists the detectors that have one.")
    heat = heat.cpu().numpy()
    lo, hi = float(heat.min()), float(heat.max())
    heat = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
    view = detector_view(det, x)
    from PIL import Image

    big = Image.fromarray((heat * 255).astype(np.uint8)).resize(view.size, Image.Resampling.BILINEAR)
    return view, np.asarray(big, dtype=np.float32) / 255.0


def overlay(view: Any, heat: np.ndarray, alpha: float = 0.5) -> Any:
    """The heat map (matplotlib's 'inferno') blended over the picture."""
    from matplotlib import colormaps
    from PIL import Image

    colours = (colormaps["inferno"](heat)[:, :, :3] * 255).astype(np.uint8)
    return Image.blend(view.convert("RGB"), Image.fromarray(colours), alpha)


__all__ = ["can_explain", "detector_view", "explain_image", "overlay"]
