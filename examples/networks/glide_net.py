"""OpenAI GLIDE (filtered): base 64 px + upsampler 256 px as a ``module:callable`` factory.

Follows the sampling of ``notebooks/text2im.ipynb`` in https://github.com/openai/glide-text2im:
base model with 100 respaced steps and classifier-free guidance, then the upsampler with
the ``fast27`` schedule and ``upsample_temp`` 0.997. Download ``base.pt`` and
``upsample.pt`` once (the URLs are in ``glide_text2im/download.py``), then::

    pip install git+https://github.com/openai/glide-text2im
    export AFPBENCH_GLIDE_BASE=/path/to/base.pt AFPBENCH_GLIDE_UPSAMPLE=/path/to/upsample.pt
    PYTHONPATH=examples/networks afpbench build glide --model glide_net:make_glide --source coco=...,flickr=...

Convention (afpbench ``text_to_image``): ``net(prompts: list[str], seeds [B] int64,
guidance_scale: float)`` returns ``[B,3,256,256]`` in [0,1]. Each row is sampled under
``torch.manual_seed(seed)``: the diffusion loops draw their noise from torch's global
generator, so seeding per row makes every image reproducible from its row alone.

This file is documentation: afpbench never imports it.
"""

from __future__ import annotations

import os

import torch
from torch import nn

BASE_STEPS = "100"  # the notebook's "fast sampling" respacing
UPSAMPLE_STEPS = "fast27"
UPSAMPLE_TEMP = 0.997


class Glide(nn.Module):
    def __init__(self, model, diffusion, options, model_up, diffusion_up, options_up):
        super().__init__()
        self.model, self.model_up = model, model_up
        self.diffusion, self.diffusion_up = diffusion, diffusion_up
        self.options, self.options_up = options, options_up

    def _tokens(self, model, prompt: str, ctx: int, device):
        tokens, mask = model.tokenizer.padded_tokens_and_mask(model.tokenizer.encode(prompt), ctx)
        return torch.tensor([tokens], device=device), torch.tensor([mask], dtype=torch.bool, device=device)

    @torch.no_grad()
    def _one(self, prompt: str, guidance_scale: float) -> torch.Tensor:
        device = next(self.model.parameters()).device
        size, ctx = self.options["image_size"], self.options["text_ctx"]
        tokens, mask = self._tokens(self.model, prompt, ctx, device)
        empty, empty_mask = self._tokens(self.model, "", ctx, device)

        def guided(x_t, ts, **kwargs):
            # Classifier-free guidance: the conditional and empty-prompt halves share x_t.
            half = x_t[: len(x_t) // 2]
            out = self.model(torch.cat([half, half]), ts, **kwargs)
            eps, rest = out[:, :3], out[:, 3:]
            cond, uncond = torch.split(eps, len(eps) // 2)
            eps = uncond + guidance_scale * (cond - uncond)
            return torch.cat([torch.cat([eps, eps]), rest], dim=1)

        self.model.del_cache()
        low = self.diffusion.p_sample_loop(
            guided, (2, 3, size, size), device=device, clip_denoised=True, progress=False,
            model_kwargs={"tokens": torch.cat([tokens, empty]), "mask": torch.cat([mask, empty_mask])},
        )[:1]
        self.model.del_cache()

        up_size, up_ctx = self.options_up["image_size"], self.options_up["text_ctx"]
        tokens, mask = self._tokens(self.model_up, prompt, up_ctx, device)
        shape = (1, 3, up_size, up_size)
        self.model_up.del_cache()
        up = self.diffusion_up.ddim_sample_loop(
            self.model_up, shape, noise=torch.randn(shape, device=device) * UPSAMPLE_TEMP, device=device,
            clip_denoised=True, progress=False,
            model_kwargs={"low_res": ((low + 1) * 127.5).round() / 127.5 - 1, "tokens": tokens, "mask": mask},
        )[:1]
        self.model_up.del_cache()
        return ((up + 1) / 2).clamp(0, 1)

    def forward(self, prompts: list[str], seeds: torch.Tensor, guidance_scale: float = 3.0) -> torch.Tensor:
        images = []
        for prompt, seed in zip(prompts, seeds.tolist()):
            torch.manual_seed(int(seed))  # also seeds every CUDA device
            images.append(self._one(prompt, float(guidance_scale)))
        return torch.cat(images)


def make_glide() -> nn.Module:
    from glide_text2im.model_creation import create_model_and_diffusion, model_and_diffusion_defaults, model_and_diffusion_defaults_upsampler

    base, upsample = os.environ["AFPBENCH_GLIDE_BASE"], os.environ["AFPBENCH_GLIDE_UPSAMPLE"]
    cuda = torch.cuda.is_available()

    def build(options, steps, path):
        options["use_fp16"] = cuda
        options["timestep_respacing"] = steps
        model, diffusion = create_model_and_diffusion(**options)
        model.eval()
        if cuda:
            model.convert_to_fp16()
        model.load_state_dict(torch.load(path, map_location="cpu"))
        return model, diffusion

    options, options_up = model_and_diffusion_defaults(), model_and_diffusion_defaults_upsampler()
    model, diffusion = build(options, BASE_STEPS, base)
    model_up, diffusion_up = build(options_up, UPSAMPLE_STEPS, upsample)
    net = Glide(model, diffusion, options, model_up, diffusion_up, options_up)
    net.afpbench_weights = [base, upsample]
    return net.eval()
