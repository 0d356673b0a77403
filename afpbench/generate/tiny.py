"""Tiny random diffusers pipelines built from configs, for tests, the demo and benchmarks.

Real diffusion weights cannot be downloaded on every machine, but the loading and
generation code must still run for real. ``build_tiny_pipeline(kind, out_dir)`` builds
a pipeline of the same classes as the real model (same pipeline, scheduler family, text
encoders and tokenizers) with a few thousand parameters, saves it with
``save_pretrained`` and returns the folder, which ``afpbench build NAME --model DIR``
then loads through the ordinary ``from_pretrained`` path.

Tokenizers are real and offline: the CLIP tokenizer is rebuilt from the CLIP BPE
vocabulary shipped in the ``open_clip_torch`` wheel (read as a data file; open_clip is
never imported because it needs torchvision), and the T5 tokenizer is a small Unigram
model trained with ``tokenizers`` on the bundled demo captions.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from afpbench.errors import AfpbenchError

KINDS = ("sd", "sdxl", "sd3", "sd3-no-t5", "inpaint", "upscale", "controlnet", "if")
# Which tiny kind stands in for a generator card's pipeline class (demo, docs, tests): a
# new diffusion recipe gets its stand-in from its card, without a list of recipes to keep.
PIPELINE_KINDS = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "IFPipeline": "if",
    "StableDiffusionInpaintPipeline": "inpaint",
    "StableDiffusionUpscalePipeline": "upscale",
    "StableDiffusionControlNetPipeline": "controlnet",
}
CLIP_VOCAB_SIZE = 49408  # 256 bytes x2 + 48,894 merges + 2 special tokens
CLIP_MAX_LENGTH = 77
CASCADE_FILE = "afpbench_cascade.json"
# Written into every folder built here, so that a set built from it says it is a
# stand-in (afpbench.build reads it into the manifest and the dataset card).
STANDIN_FILE = "afpbench_standin.json"


# -- tokenizers -----------------------------------------------------------------------
def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes, in CLIP's order.

    Printable Latin-1 bytes stand for themselves; the others are mapped, in byte order,
    to code points from 256 upwards (the GPT-2/CLIP convention).
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    order, symbols = list(printable), [chr(b) for b in printable]
    extra = 0
    for b in range(256):
        if b not in printable:
            order.append(b)
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


@functools.lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """CLIP's 49,408-token vocabulary and its merges, from the open_clip wheel's data file."""
    # find_spec locates the package without executing it (importing open_clip needs torchvision).
    spec = importlib.util.find_spec("open_clip")
    try:
        folder = Path(list(spec.submodule_search_locations)[0])  # type: ignore[union-attr]
        raw = (folder / "bpe_simple_vocab_16e6.txt.gz").read_bytes()
    except (AttributeError, IndexError, TypeError, FileNotFoundError) as exc:
        raise AfpbenchError("The CLIP BPE vocabulary (open_clip/bpe_simple_vocab_16e6.txt.gz) is missing; install open_clip_torch --no-deps (make install).") from exc
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    # Line 0 is a version header; CLIP keeps the first 49152 - 256 - 2 merges.
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def clip_tokenizer(max_length: int = CLIP_MAX_LENGTH):
    """A real CLIP tokenizer (ids match OpenAI CLIP's) built offline."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges], model_max_length=max_length)


def _training_text() -> list[str]:
    text = resources.files("afpbench").joinpath("data/demo_captions.txt").read_text().splitlines()
    # A few extra words so common prompt vocabulary is not all <unk>.
    text += ["a photo of a dog", "a painting of a city street at night", "high quality, detailed, realistic photograph"]
    return [t for t in text if t.strip()]


@functools.lru_cache(maxsize=1)
def _t5_vocab() -> list[tuple[str, float]]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    # T5's layout: <pad>=0, </s>=1, <unk>=2, then the pieces.
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", shrinking_factor=0.75)
    tok.train_from_iterator(_training_text(), trainer)
    model = json.loads(tok.to_str())["model"]
    return [(piece, float(score)) for piece, score in model["vocab"]]


def t5_tokenizer(max_length: int = 77):
    """A T5 tokenizer (Unigram, T5 special-token layout) trained offline on the demo captions."""
    from transformers import T5TokenizerFast

    return T5TokenizerFast(vocab=_t5_vocab(), extra_ids=0, model_max_length=max_length)


# -- components -----------------------------------------------------------------------
def _eval(*modules):
    for m in modules:
        m.eval()
    return modules if len(modules) > 1 else modules[0]


def _clip_text(with_projection: bool = False, hidden: int = 32, projection: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE, hidden_size=hidden, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=CLIP_MAX_LENGTH, projection_dim=projection, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
        hidden_act="gelu", layer_norm_eps=1e-5,
    )
    return _eval((CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg))


def _t5(d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=len(_t5_vocab()), d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return _eval(T5EncoderModel(cfg))


def _vae(levels: int = 2, latent_channels: int = 4, **extra: Any):
    from diffusers import AutoencoderKL

    chans = [32, 32, 64][:levels] if levels == 3 else [32, 64][:levels]
    return _eval(AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=chans, layers_per_block=1,
        down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels, norm_num_groups=32, sample_size=32, **extra,
    ))


def _unet(in_channels: int = 4, out_channels: int = 4, cross: int = 32, sample_size: int = 16, **extra: Any):
    from diffusers import UNet2DConditionModel

    return _eval(UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=out_channels, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross, attention_head_dim=8, norm_num_groups=32, **extra,
    ))


# -- pipelines ------------------------------------------------------------------------
def _sd():
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    # SD 2.1 (768-v) predicts v with a DDIM scheduler.
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(
        vae=_vae(), text_encoder=_clip_text(), tokenizer=clip_tokenizer(), unet=_unet(), scheduler=sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def _sdxl():
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    # Two CLIP encoders (hidden 32 each, concatenated to 64 for cross-attention) and the
    # pooled projection plus 6 micro-conditioning numbers (add_time_ids) as extra embedding.
    unet = _unet(
        cross=64, addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=32 + 6 * 8,
        transformer_layers_per_block=(1, 2), use_linear_projection=True,
    )
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=_clip_text(), text_encoder_2=_clip_text(with_projection=True), tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(), unet=unet, scheduler=sched,
    )


def _sd3(with_t5: bool = True):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    # CLIP-L and CLIP-G hidden states are concatenated (32 + 32) and padded to the T5 width,
    # so the joint attention width is 64; pooled = both projections (32 + 32).
    transformer = _eval(SD3Transformer2DModel(
        sample_size=16, patch_size=1, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
        joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64, pos_embed_max_size=32,
    ))
    vae = _vae(shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False, use_post_quant_conv=False)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=_clip_text(with_projection=True), tokenizer=clip_tokenizer(),
        text_encoder_2=_clip_text(with_projection=True), tokenizer_2=clip_tokenizer(),
        text_encoder_3=_t5(64) if with_t5 else None, tokenizer_3=t5_tokenizer() if with_t5 else None,
    )


def _inpaint():
    from diffusers import PNDMScheduler, StableDiffusionInpaintPipeline

    # 4 latent + 1 mask + 4 masked-image latent channels.
    sched = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1)
    return StableDiffusionInpaintPipeline(
        vae=_vae(), text_encoder=_clip_text(), tokenizer=clip_tokenizer(), unet=_unet(in_channels=9), scheduler=sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def _upscale():
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline

    # The x4 upscaler denoises latents at the low-res size (4 latent + 3 image channels,
    # the noise level as class label) and its VAE decodes x4 (three levels).
    unet = _unet(in_channels=7, num_class_embeds=1000, sample_size=16)
    return StableDiffusionUpscalePipeline(
        vae=_vae(levels=3, scaling_factor=0.08333), text_encoder=_clip_text(), tokenizer=clip_tokenizer(), unet=unet,
        low_res_scheduler=DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02),
        scheduler=DDIMScheduler(prediction_type="v_prediction", beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02),
        safety_checker=None, feature_extractor=None, watermarker=None, max_noise_level=350,
    )


def _controlnet():
    from diffusers import ControlNetModel, PNDMScheduler, StableDiffusionControlNetPipeline

    unet = _unet()
    # One stride-2 step in the conditioning embedding matches the tiny VAE's x2 latent.
    controlnet = _eval(ControlNetModel(
        in_channels=4, block_out_channels=(32, 64), layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32, conditioning_embedding_out_channels=(16, 32),
    ))
    sched = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1)
    return StableDiffusionControlNetPipeline(
        vae=_vae(), text_encoder=_clip_text(), tokenizer=clip_tokenizer(), unet=unet, controlnet=controlnet, scheduler=sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def _if_stages():
    from diffusers import DDPMScheduler, IFPipeline, IFSuperResolutionPipeline

    # Stage I: 8 px pixels from T5 embeddings, learned variance (6 output channels).
    stage1 = IFPipeline(
        tokenizer=t5_tokenizer(), text_encoder=_t5(32),
        unet=_unet(in_channels=3, out_channels=6, sample_size=8),
        scheduler=DDPMScheduler(variance_type="learned_range", beta_schedule="squaredcos_cap_v2", thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.0),
        safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False,
    )
    # Stage II: 16 px from the upsampled stage I image (3 + 3 channels), the noise level
    # as a timestep-embedded class label. It reuses stage I's prompt embeddings, so it is
    # saved without a text encoder, as the real IF-II is used.
    stage2 = IFSuperResolutionPipeline(
        tokenizer=None, text_encoder=None,
        unet=_unet(in_channels=6, out_channels=6, sample_size=16, class_embed_type="timestep"),
        scheduler=DDPMScheduler(variance_type="learned_range", beta_schedule="squaredcos_cap_v2", thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.0),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False,
    )
    return [stage1, stage2, _upscale()]


_BUILDERS: dict[str, Callable[[], Any]] = {
    "sd": _sd,
    "sdxl": _sdxl,
    "sd3": lambda: _sd3(True),
    "sd3-no-t5": lambda: _sd3(False),
    "inpaint": _inpaint,
    "upscale": _upscale,
    "controlnet": _controlnet,
}


def kind_for(pipeline: str | None) -> str | None:
    """The tiny kind of a generator card's pipeline class, None when there is none."""
    return PIPELINE_KINDS.get(pipeline or "")


def stands_in_for(kind: str) -> list[str]:
    """The catalog recipes whose generator a tiny pipeline of ``kind`` stands in for."""
    from afpbench import catalog

    return sorted(n for n, r in catalog.recipes().items() if r.generator and kind_for(catalog.get_generator(r.generator).pipeline) == kind)


def build_tiny_pipeline(kind: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build a tiny random pipeline of ``kind`` (see ``KINDS``), save it, return its folder.

    For ``"if"`` the folder holds the cascade as ``stage_1/``, ``stage_2/``, ``stage_3/``
    (IF stage I, IF stage II, SD x4 upscaler), which ``--model`` accepts as one path.
    Weights come from ``seed``, so two builds of the same kind are identical.
    """
    import torch

    if kind not in KINDS:
        from afpbench.registry import did_you_mean

        raise did_you_mean(kind, list(KINDS), "tiny pipeline kind")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if kind == "if":
        for i, stage in enumerate(_if_stages(), start=1):
            stage.save_pretrained(out / f"stage_{i}", safe_serialization=True)
        (out / CASCADE_FILE).write_text(json.dumps({"stages": ["stage_1", "stage_2", "stage_3"]}) + "\n")
    else:
        _BUILDERS[kind]().save_pretrained(out, safe_serialization=True)
    marker = {
        "standin": True, "kind": kind, "seed": seed, "builder": "afpbench.generate.tiny.build_tiny_pipeline",
        "stands_in_for": stands_in_for(kind),
        "note": "random weights in a tiny version of the real architecture, built from configs; its images are not the real model's",
    }
    (out / STANDIN_FILE).write_text(json.dumps(marker, indent=1) + "\n")
    return out
