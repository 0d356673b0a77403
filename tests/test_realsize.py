"""Real-size architectures built offline from the shipped configs (tests/testdata/configs),
through afpbench's own loading code, on the meta device: parameter counts against the
published figures, the Vicuna-v1.3 tokenizer at its real vocabulary, the real pipeline
components, the T5 drop, IF's stages and the ControlNet's conditioning.

One function per model; AntifakePrompt also gets an authors'-format checkpoint (with the
trainer's buffers) loading into its real-size model, and the dtype of each part under each
precision mode.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONFIGS = Path(__file__).parent / "testdata" / "configs"


def _near(n: int, published: float, rel: float) -> bool:
    return abs(n - published) <= rel * published


@pytest.fixture(scope="module")
def afp():
    """AntifakePrompt at real size on meta: the default base (InstructBLIP + Vicuna v1.3 LLM)."""
    from afpbench.estimate import build_detector

    return build_detector("antifakeprompt", dtype="bf16")


# -- every shipped file says where it came from ------------------------------------------------
def test_every_config_has_a_recorded_source():
    index = json.loads((CONFIGS / "SOURCES.json").read_text())
    files = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*") if p.is_file() and p.name != "SOURCES.json"}
    recorded = {f"{model.replace('/', '--')}/{rel}" for model, entries in index.items() for rel in entries}
    assert files == recorded
    assert all(e["source"] for entries in index.values() for e in entries.values())


# -- AntifakePrompt / InstructBLIP-Vicuna-7B ------------------------------------------------------
def test_antifakeprompt_real_size(afp):
    from afpbench.estimate import count_parameters

    total = count_parameters(afp.model)
    trainable = afp.trainable_parameters()
    # AntifakePrompt (arXiv 2310.17419, sec. 3.2): one pseudo-word, 768 (Q-Former) + 4,096 (LLM) = 4,864 trainable.
    assert [tuple(p.shape) for p in trainable] == [(1, 768), (1, 4096)]
    assert sum(p.numel() for p in trainable) == 4864
    # InstructBLIP-Vicuna-7B is about 7.9B parameters (ViT-g 1.0B + Q-Former 0.19B + Vicuna-7B 6.74B).
    assert _near(total, 7.9e9, 0.01)
    # LLaMA-7B / Vicuna-7B: 6.7B (Touvron et al. 2023, Table 2).
    assert _near(count_parameters(afp.model.language_model), 6.74e9, 0.005)
    # EVA ViT-g/14 without its last layer: about 1B (BLIP-2, Li et al. 2023, sec. 3.2).
    assert _near(count_parameters(afp.model.vision_model), 0.985e9, 0.01)
    assert afp.model.vision_model.embeddings.patch_embedding.weight.is_meta


def test_vicuna_v13_tokenizer_at_real_vocabulary(afp):
    from afpbench.detectors.antifakeprompt import LAVIS_TOKEN_IDS

    tok = afp.llm_tok
    emb = afp.model.language_model.get_input_embeddings()
    # Vicuna v1.3 keeps LLaMA's 32,000 pieces: no <image> token, no [PAD]; the table has 32,000 rows.
    assert emb.num_embeddings == 32000
    assert "<image>" not in tok.get_vocab()
    # [*] is appended after the vocabulary: id 32,000, outside the frozen table (LAVIS puts it at
    # 32,001 after its [PAD]); the pseudo-word embedding answers it, the table never sees it.
    assert afp.llm_pseudo_id == 32000 >= emb.num_embeddings
    ids = afp.encode_llm(afp.prompt)
    assert ids[0] == 2  # the authors' bos_token '</s>'
    assert ids.count(32000) == 1 and all(i < 32000 for i in ids if i != 32000)
    # "▁yes" and "▁no" are single LLaMA pieces (4874, 694): the one-forward rule applies.
    assert afp.answer_ids == [tok.convert_tokens_to_ids("▁yes"), tok.convert_tokens_to_ids("▁no")] == [4874, 694]
    # Q-Former side: bert-base-uncased 30,522 + [DEC] -> [*] = 30,523, the LAVIS id.
    assert afp.q_pseudo_id == LAVIS_TOKEN_IDS["qformer"] == afp.model.qformer.get_input_embeddings().num_embeddings


# -- detector backbones -----------------------------------------------------------------------------
def test_univfd_clip_vit_l14():
    from afpbench.estimate import build_detector, count_parameters

    det = build_detector("univfd", dtype="bf16")
    clip, probe = det.modules["clip"], det.modules["probe"]
    # CLIP ViT-L/14 image tower: about 304M parameters (Radford et al. 2021, Table 20: ViT-L/14 vision width 1024, 24 layers).
    assert _near(count_parameters(clip), 303.97e6, 0.005)
    # UnivFD's probe: 768 -> 1, 769 numbers (Ojha et al. 2023).
    assert clip.config.projection_dim == 768 and count_parameters(probe) == 769


def test_cnnspot_resnet50():
    from afpbench.estimate import build_detector, count_parameters

    det = build_detector("cnnspot", dtype="fp32")
    # ResNet-50 with a 1-output head: 25.56M - 2048 * 999 - 999 (He et al. 2016: 25.6M with 1000 classes).
    assert count_parameters(det.modules["model"]) == 25_557_032 - 2048 * 999 - 999


# -- generators -------------------------------------------------------------------------------------
def _parts(backend) -> dict[str, int]:
    from afpbench.estimate import count_parameters

    return {k: count_parameters(m) for k, m in backend.pipe.components.items() if hasattr(m, "parameters")}


def test_sd21_unet():
    from afpbench.estimate import build_backend

    b = build_backend("sd2")
    parts = _parts(b)
    # SD 2 model card: an 865M UNet; OpenCLIP-ViT/H text encoder (23 of 24 layers) 340M.
    assert _near(parts["unet"], 865e6, 0.002) and _near(parts["text_encoder"], 340e6, 0.005)
    assert b.pipe.unet.config.cross_attention_dim == 1024 and b.pipe.scheduler.config.prediction_type == "v_prediction"


def test_sd3_medium_and_the_t5_drop():
    from afpbench.estimate import build_backend

    full = build_backend("sd3")
    parts = _parts(full)
    # SD3-medium: a 2B MMDiT (Stability AI model card, "2 billion parameters").
    assert _near(parts["transformer"], 2.0e9, 0.02)
    assert set(parts) == {"vae", "text_encoder", "text_encoder_2", "text_encoder_3", "transformer"}
    assert type(full.pipe.text_encoder_3).__name__ == "T5EncoderModel"
    # use_t5: false -> the pipeline is built without text_encoder_3 (and its tokenizer).
    light = build_backend("sd3", params={"use_t5": False})
    assert light.pipe.text_encoder_3 is None and light.pipe.tokenizer_3 is None
    assert "text_encoder_3" not in _parts(light)


def test_sdxl_and_playground_unet():
    from afpbench.estimate import build_backend

    # SDXL's UNet: 2.6B parameters (Podell et al. 2023, Table 1).
    for recipe in ("sdxl", "playground_v25"):
        b = build_backend(recipe)
        assert _near(_parts(b)["unet"], 2.567e9, 0.003)
        assert set(_parts(b)) == {"vae", "text_encoder", "text_encoder_2", "unet"}
    assert type(b.pipe.scheduler).__name__ == "EDMDPMSolverMultistepScheduler"


def test_sd2_inpainting_unet_takes_mask_and_masked_image():
    from afpbench.estimate import build_backend

    b = build_backend("sd2ip")
    # 4 latent + 1 mask + 4 masked-image latent channels.
    assert b.pipe.unet.config.in_channels == 9 and type(b.pipe).__name__ == "StableDiffusionInpaintPipeline"
    assert _near(_parts(b)["unet"], 865e6, 0.002)


def test_x4_upscaler():
    from afpbench.estimate import build_backend

    b = build_backend("sd2sr")
    assert type(b.pipe).__name__ == "StableDiffusionUpscalePipeline"
    # Noisy low-res image (3) + latents (4); the VAE downsamples by 4, not 8.
    assert b.pipe.unet.config.in_channels == 7 and len(b.pipe.vae.config.block_out_channels) == 3
    # Stable Diffusion x4 upscaler: a 473M UNet (Stability-AI/stablediffusion v2 release notes list it beside the 865M base).
    assert _near(_parts(b)["unet"], 473e6, 0.01)


def test_controlnet_canny_conditioning():
    import torch

    from afpbench.estimate import build_backend, count_parameters

    b = build_backend("stylization")
    cn = b.pipe.controlnet
    assert type(cn).__name__ == "ControlNetModel" and b.pipe.unet.config.cross_attention_dim == 768
    # The conditioning encoder takes a 3-channel image at pixel size and brings it to the
    # latent size (/8) with 320 channels: 16 -> 32 -> 96 -> 256, three stride-2 convs.
    emb = cn.controlnet_cond_embedding
    assert emb.conv_in.in_channels == 3 and emb.conv_out.out_channels == 320
    assert sum(1 for m in emb.blocks if m.stride == (2, 2)) == 3
    out = emb(torch.empty(1, 3, 512, 512, device="meta", dtype=emb.conv_in.weight.dtype))
    assert tuple(out.shape) == (1, 320, 64, 64)
    # ControlNet for SD 1.5: 361M parameters (Zhang et al. 2023: a trainable copy of the encoder, 361M as released).
    assert _near(count_parameters(cn), 361e6, 0.01)


def test_if_three_stages():
    from afpbench.catalog import get_generator
    from afpbench.estimate import plan_build

    card = get_generator("deepfloyd-if")
    assert [card.pipeline] + [s.pipeline for s in card.stages] == ["IFPipeline", "IFSuperResolutionPipeline", "StableDiffusionUpscalePipeline"]
    plan = plan_build("if", batch_size=1, gpu=(None, None))
    by = {(p.model_id, p.component): p for p in plan.parts}
    # IF-I-XL 4.3B and IF-II-L 1.2B (model cards; their UNet configs are not shipped: published counts).
    assert by[("DeepFloyd/IF-I-XL-v1.0", "unet")].parameters == 4_300_000_000 and by[("DeepFloyd/IF-I-XL-v1.0", "unet")].source == "published"
    assert by[("DeepFloyd/IF-II-L-v1.0", "unet")].parameters == 1_200_000_000
    # Stage I's T5-v1.1-XXL encoder is built from its config; stage II reuses stage I's embeddings (no second T5).
    assert by[("DeepFloyd/IF-I-XL-v1.0", "text_encoder")].source == "config"
    assert ("DeepFloyd/IF-II-L-v1.0", "text_encoder") not in by
    # Stage III is the x4 upscaler, built from its configs with its own text encoder.
    assert by[("stabilityai/stable-diffusion-x4-upscaler", "unet")].source == "config"
    assert ("stabilityai/stable-diffusion-x4-upscaler", "text_encoder") in by


# -- AntifakePrompt: the authors' checkpoint and the precision modes at real size -----------------
QKEY, LKEY = "Qformer.bert.embeddings.train_word_embeddings.weight", "llm_model.model.train_embed_tokens.weight"
INV_FREQ = "llm_model.model.layers.{}.self_attn.rotary_emb.inv_freq"


@pytest.fixture(scope="module")
def afp_base():
    from afpbench.estimate import _detector_base

    return _detector_base("antifakeprompt")


def _real_size_buffers() -> dict:
    """The buffers the authors' trainer saves beside the two vectors, computed from the shipped
    configs as their code computes them: LAVIS BertEmbeddings' ``arange(max_position_embeddings)
    .expand((1, -1))`` and, per LLM layer, transformers 4.30's LlamaRotaryEmbedding ``1 / base **
    (arange(0, dim, 2) / dim)``, dim = hidden / heads, base 10,000 (LLaMA's; Vicuna's config sets
    no rope_theta)."""
    import torch

    blip = json.loads((CONFIGS / "Salesforce--instructblip-vicuna-7b" / "config.json").read_text())
    vicuna = json.loads((CONFIGS / "lmsys--vicuna-7b-v1.3" / "config.json").read_text())
    n_pos = blip["qformer_config"]["max_position_embeddings"]
    dim = vicuna["hidden_size"] // vicuna["num_attention_heads"]
    assert (n_pos, dim, vicuna["num_hidden_layers"], vicuna.get("rope_theta", 10000.0)) == (512, 128, 32, 10000.0)
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, dim, 2).float() / dim))
    out = {"Qformer.bert.embeddings.position_ids": torch.arange(n_pos).expand((1, -1))}
    out.update({INV_FREQ.format(i): inv_freq.clone() for i in range(vicuna["num_hidden_layers"])})
    return out


def _trainer_file(path: Path, buffers: dict) -> Path:
    import torch
    from _tiny import write_lavis_trainer_checkpoint

    g = torch.Generator().manual_seed(7)
    model = {QKEY: torch.randn(1, 768, generator=g) * 0.02, **buffers, LKEY: torch.randn(1, 4096, generator=g) * 0.02}
    return write_lavis_trainer_checkpoint(path, model)


@pytest.fixture(scope="module")
def afp_authors(afp_base, tmp_path_factory):
    """Real-size AntifakePrompt on meta, authors' precision, from an authors'-format checkpoint."""
    from afpbench.detectors import load_detector

    path = _trainer_file(tmp_path_factory.mktemp("afp-real") / "COCO_150k_SD3_SD2IP.pth", _real_size_buffers())
    return path, load_detector("antifakeprompt", base=afp_base, weights=path, device="meta", options={"precision": "authors"})


def test_authors_checkpoint_with_buffers_loads_at_real_size(afp_authors):
    import torch

    path, det = afp_authors
    obj = torch.load(path, weights_only=True)
    assert list(obj) == ["model", "optimizer", "config", "scaler", "epoch"] and len(obj["model"]) == 2 + 1 + 32
    assert obj["model"][INV_FREQ.format(31)].shape == (64,) and obj["model"]["Qformer.bert.embeddings.position_ids"].shape == (1, 512)
    # Accepted through afpbench's own loading code: the 33 buffers checked against the real-size
    # base and recorded as ignored, the two vectors taken by shape.
    assert det.arguments()["ignored_checkpoint_buffers"] == ["Qformer.bert.embeddings.position_ids"] + [INV_FREQ.format(i) for i in range(32)]
    assert [tuple(p.shape) for p in det.trainable_parameters()] == [(1, 768), (1, 4096)]
    assert det.model.vision_model.embeddings.patch_embedding.weight.is_meta
    # What the base computes is what the authors' code computes (independent reference above).
    computed = det.lavis_buffers()
    for k, v in _real_size_buffers().items():
        assert computed[k].dtype == v.dtype and torch.equal(computed[k], v), k


@pytest.mark.parametrize(
    "case, match",
    [
        # A base with rope_theta 1e6 (a long-context LLaMA): the frequencies differ most at index 6,
        # 1e6 ** -(12/128) = 10 ** -0.5625 = 0.273842 against 1e4 ** -(12/128) = 10 ** -0.375 = 0.421697.
        ("rope_theta", r"buffer llm_model.model.layers.31.self_attn.rotary_emb.inv_freq holds 0.273842 at index 6 where the base computes 0.421697"),
        # A Vicuna-13B file (40 layers): layers 32..39 are not in this base.
        ("vicuna_13b_layers", r"unexpected llm_model.model.layers.32.self_attn.rotary_emb.inv_freq"),
    ],
)
def test_a_wrong_buffer_is_refused_at_real_size(case, match, afp_base, tmp_path):
    import torch

    from afpbench.detectors import load_detector
    from afpbench.errors import WeightsError

    buffers = _real_size_buffers()
    if case == "rope_theta":
        buffers[INV_FREQ.format(31)] = 1.0 / (1e6 ** (torch.arange(0, 128, 2).float() / 128))
    else:
        buffers.update({INV_FREQ.format(i): buffers[INV_FREQ.format(0)].clone() for i in range(32, 40)})
    path = _trainer_file(tmp_path / f"{case}.pth", buffers)
    with pytest.raises(WeightsError, match=match) as err:
        load_detector("antifakeprompt", base=afp_base, weights=path, device="meta", options={"precision": "authors"})
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _part_dtypes(det) -> dict:
    m = det.model
    lm = m.language_model
    pseudo = {id(det.q_pseudo.pseudo)}

    def one(params) -> set:
        return {p.dtype for p in params if id(p) not in pseudo}

    return {
        "vision": one(m.vision_model.parameters()),
        "qformer": one(m.qformer.parameters()),
        "query_tokens": {m.query_tokens.dtype},
        "projection": one(m.language_projection.parameters()),
        "llm_layers": one(lm.model.layers.parameters()),
        "llm_norm_head": one([lm.model.norm.weight, lm.lm_head.weight]),
        "llm_table": {lm.get_input_embeddings().weight.dtype},
        "pseudo_words": {det.q_pseudo.pseudo.dtype, det.llm_pseudo.pseudo.dtype},
        "rotary": {lm.model.rotary_emb.inv_freq.dtype},
    }


def test_dtype_per_part_under_each_precision_mode(afp, afp_authors, afp_base):
    """The parameters each precision mode leaves in each part, at real size. (Where the authors'
    mode computes - the vision tower under fp16 autocast, the Q-Former outside it - is checked by
    running it at tiny size, tests/test_fidelity.py: autocast has no meta device.)"""
    import torch

    from afpbench.detectors import load_detector

    f32, f16, b16 = torch.float32, torch.float16, torch.bfloat16
    _, authors = afp_authors
    # The authors' (LAVIS) arrangement: fp32 vision weights (autocast rounds them), fp32 Q-Former,
    # query tokens and projection, an fp16 LLM whose input table and [*] are fp32 (their
    # textual-inversion LLaMA), rotary frequencies fp32; the autocast dtype is fp16.
    assert authors.precision == "authors" and authors.dtype == f16
    assert _part_dtypes(authors) == {
        "vision": {f32}, "qformer": {f32}, "query_tokens": {f32}, "projection": {f32}, "llm_layers": {f16}, "llm_norm_head": {f16},
        "llm_table": {f32}, "pseudo_words": {f32}, "rotary": {f32},
    }
    uniform = {"bf16": afp}  # build_detector's default: uniform bf16
    for name, dt in (("fp16", "float16"), ("fp32", "float32")):
        uniform[name] = load_detector("antifakeprompt", base=afp_base, device="meta", dtype=dt, train_init=True, options={"precision": "uniform"})
    for name, want in (("bf16", b16), ("fp16", f16), ("fp32", f32)):
        det = uniform[name]
        assert det.precision == "uniform" and det.dtype == want, name
        # Everything in the one dtype, except the [*] rows (trained in fp32, cast on the fly), the rotary
        # frequencies and, under fp16, the query tokens: InstructBLIP lists them in _keep_in_fp32_modules,
        # which from_pretrained(dtype=float16) honours (and the meta build with it).
        assert _part_dtypes(det) == {
            "vision": {want}, "qformer": {want}, "query_tokens": {f32 if want == f16 else want}, "projection": {want}, "llm_layers": {want},
            "llm_norm_head": {want}, "llm_table": {want}, "pseudo_words": {f32}, "rotary": {f32},
        }, name
    # The weights' bytes follow: 7.9B parameters, about half of them fp32 in the authors' mode.
    from afpbench.estimate import count_parameters

    def nbytes(det):
        return sum(p.numel() * p.element_size() for p in det.model.parameters())

    n = count_parameters(authors.model)
    assert nbytes(uniform["fp32"]) == 4 * n and nbytes(uniform["bf16"]) == 2 * n + 2 * 4864
    assert nbytes(uniform["fp16"]) == nbytes(uniform["bf16"]) + 2 * 32 * 768  # the 32 query tokens of width 768 in fp32
    lm = authors.model.language_model
    fp16_params = count_parameters(lm) - lm.get_input_embeddings().weight.numel() - 4096
    assert nbytes(authors) == 4 * (n - fp16_params) + 2 * fp16_params
