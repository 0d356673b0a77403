"""Tiny bases and upstream-layout weights files for the transformers-based zoo detectors
(dda, rine, c2p_clip, cospy, probe, qwen_vl).

Every released file here is written the way upstream's *saving* code writes it, from a
module tree laid out as upstream's (its attribute names, wrapper modules, Sequential
indices, BatchNorm statistics), never from the afpbench detector's own key list:

* DDA: a timm ``VisionTransformer`` (the torch.hub DINOv2's key layout) whose Linears are
  wrapped like upstream's ``LoRALinear`` (``original_layer`` + ``lora.lora_A/lora_B``),
  inside ``base_model.model`` / ``base_model.fc``, plus the hub model's ``mask_token``;
  saved as ``{"model": ..., "optimizer": AdamW state, "total_steps": ...}`` after one
  optimiser step.
* RINE: upstream's ``Model`` layout (``clip`` + ``alpha`` + Dropout/Linear/ReLU
  Sequentials), saved as ``{k: v for k in state_dict() if "clip" not in k}``.
* C2P-CLIP: a transformers ``CLIPModel`` with the text tower, text projection and logit
  scale deleted and ``fc`` added, its state dict saved and wrapped in a one-file zip.
* CO-SPY: semantic / artifact / fusion detectors saved by their ``save_weights`` rules
  (the artifact one is a full ``state_dict`` with BN buffers and the unused ``fc1``),
  zipped as ``progan/*.pth`` with a ``__MACOSX`` entry like the release.

Each ``Upstream*`` module's ``forward`` is upstream's forward, so tests compare the
detectors against it.
"""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

TINY = 32
ZOO_HF = ("dda", "rine", "c2p_clip", "cospy", "probe", "qwen_vl")
_CACHE: dict[tuple[str, str], Any] = {}


def _memo(root: Path, key: str, build):
    k = (str(root), key)
    if k not in _CACHE:
        _CACHE[k] = build()
    return _CACHE[k]


def _randomise_norms(module: nn.Module, g: torch.Generator) -> None:
    """Non-trivial LayerNorm / BatchNorm / layer-scale values, as a trained network has."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("gamma") or ("norm" in name and name.endswith("weight")):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif "norm" in name and name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) * 1.5 + 0.5)
            elif name.endswith("num_batches_tracked"):
                b.fill_(1234)


# -- DDA ------------------------------------------------------------------------------------
DDA_NATIVE = 40  # the tiny DINOv2's native size (10 x 10 patches of 4 px), like the hub's 518 = 37 x 14


def dinov2_config(out: Path, *, image_size: int = DDA_NATIVE, patch_size: int = 4) -> Path:
    """A tiny DINOv2 config folder (config.json only: DDA's weights come from its release)."""
    from transformers import Dinov2Config

    Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=4, image_size=image_size, patch_size=patch_size, layerscale_value=1.0).save_pretrained(out)
    return out


class UpstreamLoRALinear(nn.Module):
    """Upstream's ``LoRALinear`` layout and forward: ``W x + b + (alpha / r) B A x``."""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float, g: torch.Generator, scale: float = 0.5):
        super().__init__()
        self.original_layer = linear
        self.lora = nn.Module()
        self.lora.lora_A = nn.Parameter(torch.randn(rank, linear.in_features, generator=g) * scale)
        self.lora.lora_B = nn.Parameter(torch.randn(linear.out_features, rank, generator=g) * scale)
        self.alpha, self.rank = alpha, rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lora = torch.einsum("...d,rd->...r", x, self.lora.lora_A)
        lora = torch.einsum("...r,or->...o", lora, self.lora.lora_B)
        return self.original_layer(x) + lora * (self.alpha / self.rank)


class UpstreamDDA(nn.Module):
    """``DINOv2ModelWithLoRA`` on a tiny hub-layout DINOv2 (timm's VisionTransformer has the hub's keys)."""

    def __init__(self, cfg: Any, seed: int = 0, rank: int = 8, alpha: float = 1.0, img_size: int | None = None):
        from timm.models.vision_transformer import VisionTransformer

        super().__init__()
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        vit = VisionTransformer(img_size=img_size or cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.hidden_size, depth=cfg.num_hidden_layers,
                                num_heads=cfg.num_attention_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=True, init_values=1.0, class_token=True,
                                global_pool="token", num_classes=0)
        vit.mask_token = nn.Parameter(torch.zeros(1, cfg.hidden_size))  # the hub model's (unused at inference)
        with torch.no_grad():
            vit.pos_embed.normal_(0, 0.5, generator=g)
            vit.cls_token.normal_(0, 0.5, generator=g)
        _randomise_norms(vit, g)
        for blk in vit.blocks:
            blk.attn.qkv = UpstreamLoRALinear(blk.attn.qkv, rank, alpha, g)
            blk.attn.proj = UpstreamLoRALinear(blk.attn.proj, rank, alpha, g)
            blk.mlp.fc1 = UpstreamLoRALinear(blk.mlp.fc1, rank, alpha, g)
            blk.mlp.fc2 = UpstreamLoRALinear(blk.mlp.fc2, rank, alpha, g)
        self.base_model = nn.Module()
        self.base_model.model = vit
        self.base_model.fc = nn.Linear(cfg.hidden_size, 1)
        with torch.no_grad():
            self.base_model.fc.weight.normal_(0, 0.5, generator=g)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_model.model.forward_features(x)[:, 0]  # x_norm_clstoken

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_model.fc(self.features(x))


def save_dda(model: UpstreamDDA, path: Path, *, module_prefix: bool = False) -> Path:
    """As upstream's BaseModel.save_networks: model, optimizer (after a real step) and step count."""
    params = [p for n, p in model.named_parameters() if ".lora." in n or n.startswith("base_model.fc.")]
    opt = torch.optim.AdamW(params, lr=1e-6)
    x = torch.randn(2, 3, model.base_model.model.patch_embed.img_size[0], model.base_model.model.patch_embed.img_size[1])
    model(x).sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    state = model.state_dict()
    if module_prefix:
        state = {"module." + k: v for k, v in state.items()}
    torch.save({"model": state, "optimizer": opt.state_dict(), "total_steps": 1}, path)
    return path


def write_dda_checkpoint(path: Path, cfg_dir: Path, seed: int = 0, **kw: Any) -> Path:
    from transformers import Dinov2Config

    return save_dda(UpstreamDDA(Dinov2Config.from_pretrained(cfg_dir), seed), path, **kw)


def hub_interpolate(pos_embed: torch.Tensor, w: int, h: int, patch: int) -> torch.Tensor:
    """The torch.hub DINOv2's interpolate_pos_encoding, written from its source (offset 0.1, no antialias)."""
    pe = pos_embed.float()
    n = pe.shape[1] - 1
    m = int(math.sqrt(n))
    w0, h0 = w // patch, h // patch
    kwargs = {"scale_factor": (float(w0 + 0.1) / m, float(h0 + 0.1) / m)}
    patch_pe = nn.functional.interpolate(pe[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2), mode="bicubic", antialias=False, **kwargs)
    return torch.cat((pe[:, 0].unsqueeze(0), patch_pe.permute(0, 2, 3, 1).view(1, -1, pe.shape[-1])), dim=1)


# -- CLIP-based ----------------------------------------------------------------------------
def clip_vision(out: Path, seed: int = 0, *, image_size: int = TINY, layers: int = 2, projection_dim: int = 16) -> Path:
    """A tiny CLIPVisionModelWithProjection (also loads as CLIPVisionModel)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4, image_size=image_size, patch_size=8, projection_dim=projection_dim)
    model = CLIPVisionModelWithProjection(cfg).eval()
    _randomise_norms(model, torch.Generator().manual_seed(seed + 100))
    model.save_pretrained(out)
    return out


class UpstreamRINE(nn.Module):
    """Upstream src/models.py ``Model``: clip + alpha + proj1/proj2/head with its module indices."""

    def __init__(self, clip: nn.Module, blocks: int, hidden: int, nproj: int, proj_dim: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.clip = clip
        self.alpha = nn.Parameter(torch.randn([1, blocks, proj_dim], generator=g))
        p1: list[nn.Module] = [nn.Dropout()]
        for i in range(nproj):
            p1.extend([nn.Linear(hidden if i == 0 else proj_dim, proj_dim), nn.ReLU(), nn.Dropout()])
        self.proj1 = nn.Sequential(*p1)
        p2: list[nn.Module] = [nn.Dropout()]
        for _ in range(nproj):
            p2.extend([nn.Linear(proj_dim, proj_dim), nn.ReLU(), nn.Dropout()])
        self.proj2 = nn.Sequential(*p2)
        self.head = nn.Sequential(nn.Linear(proj_dim, proj_dim), nn.ReLU(), nn.Dropout(), nn.Linear(proj_dim, proj_dim), nn.ReLU(), nn.Dropout(), nn.Linear(proj_dim, 1))
        with torch.no_grad():  # trained-looking scales: default inits squash the tiny model's logits to ~0
            for m in [*self.proj1, *self.proj2, *self.head]:
                if isinstance(m, nn.Linear):
                    m.weight.normal_(0, 1.5 / math.sqrt(m.in_features), generator=g)
                    m.bias.normal_(0, 0.1, generator=g)

    def ln2_cls(self, x: torch.Tensor) -> torch.Tensor:
        """The CLS token at each block's ln_2, ln_2(h + attn(ln_1(h))), from each block's input h (no hooks)."""
        hs = self.clip(pixel_values=x, output_hidden_states=True).hidden_states
        out = []
        for h, layer in zip(hs, getattr(self.clip, "vision_model", self.clip).encoder.layers):
            a = layer.self_attn(layer.layer_norm1(h))[0]
            out.append(layer.layer_norm2(h + a)[:, 0])
        return torch.stack(out, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.proj1(self.ln2_cls(x).float())
        z = torch.sum(torch.softmax(self.alpha, dim=1) * g, dim=1)
        return self.head(self.proj2(z))


def rine_state(model: UpstreamRINE) -> dict[str, torch.Tensor]:
    """Upstream's store rule: every state-dict entry whose key does not contain 'clip'."""
    return {k: v for k, v in model.state_dict().items() if "clip" not in k}


def upstream_rine(clip_dir: Path, tag: str | None, seed: int = 0) -> UpstreamRINE:
    from transformers import CLIPVisionModel

    from afpbench.detectors.rine import RINE

    clip = CLIPVisionModel.from_pretrained(clip_dir).eval()
    opts = RINE.variants[tag].options
    return UpstreamRINE(clip, clip.config.num_hidden_layers, clip.config.hidden_size, opts["nproj"], opts["proj_dim"], seed).eval()


class UpstreamC2P(nn.Module):
    """Upstream inference.py ``C2P_CLIP`` on a tiny CLIPModel."""

    def __init__(self, projection_dim: int = 16, seed: int = 0):
        from transformers import CLIPConfig, CLIPModel

        super().__init__()
        torch.manual_seed(seed)
        cfg = CLIPConfig(
            text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=64, max_position_embeddings=8,
                             bos_token_id=0, eos_token_id=1, pad_token_id=1),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=TINY, patch_size=8, projection_dim=projection_dim),
            projection_dim=projection_dim,
        )
        self.model = CLIPModel(cfg)
        del self.model.text_model
        del self.model.text_projection
        del self.model.logit_scale
        self.model.fc = nn.Linear(projection_dim, 1)
        _randomise_norms(self.model, torch.Generator().manual_seed(seed + 1))
        with torch.no_grad():
            self.model.fc.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(seed + 2))

    def image_embeds(self, img: torch.Tensor) -> torch.Tensor:
        return self.model.visual_projection(self.model.vision_model(pixel_values=img)[1])

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        e = self.image_embeds(img)
        return self.model.fc(e / e.norm(p=2, dim=-1, keepdim=True))


def c2p_config(out: Path, projection_dim: int = 16) -> Path:
    """The base folder c2p_clip reads (config only): the tiny CLIP vision tower's config."""
    from transformers import CLIPVisionConfig

    CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=TINY, patch_size=8, projection_dim=projection_dim).save_pretrained(out)
    return out


def save_c2p_release(model: UpstreamC2P, path: Path, *, extra: dict[str, torch.Tensor] | None = None) -> Path:
    """The release layout: one torch.save state dict wrapped in a zip (torch.hub's legacy zip)."""
    buf = io.BytesIO()
    torch.save({**model.state_dict(), **(extra or {})}, buf)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("C2P_CLIP_release_20240901.pth", buf.getvalue())
    return path


class UpstreamArtifact(nn.Module):
    """Upstream ``ArtifactDetector``: ``artifact_encoder`` (NPR ResNet: 3x3 stem, torchvision
    ResNet-50 layer1/layer2, unused fc1) + ``fc``; forward written from upstream's."""

    def __init__(self, seed: int = 0):
        from torchvision.models import resnet50

        super().__init__()
        torch.manual_seed(seed)
        ref = resnet50()
        enc = nn.Module()
        enc.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        enc.bn1 = nn.BatchNorm2d(64)
        enc.relu = nn.ReLU(inplace=True)
        enc.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        enc.layer1, enc.layer2 = ref.layer1, ref.layer2
        enc.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        enc.fc1 = nn.Linear(512, 1)
        self.artifact_encoder = enc
        self.fc = nn.Linear(512, 1)
        _randomise_norms(self, torch.Generator().manual_seed(seed + 3))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        e = self.artifact_encoder
        f = nn.functional.interpolate
        artifact = x - f(f(x, scale_factor=0.5, mode="nearest", recompute_scale_factor=True), scale_factor=1 / 0.5, mode="nearest", recompute_scale_factor=True)
        y = e.maxpool(e.relu(e.bn1(e.conv1(artifact * 2.0 / 3.0))))
        return e.avgpool(e.layer2(e.layer1(y))).view(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class UpstreamCoSpy(nn.Module):
    """Semantic fc + artifact detector + fusion fc, with upstream's fusion forward."""

    def __init__(self, clip_dir: Path, seed: int = 0):
        from transformers import CLIPVisionModelWithProjection

        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.clip = CLIPVisionModelWithProjection.from_pretrained(clip_dir).eval()
        self.sem_fc = nn.Linear(self.clip.config.projection_dim, 1)
        self.art = UpstreamArtifact(seed).eval()
        self.fusion = nn.Linear(2, 1)
        with torch.no_grad():
            self.sem_fc.weight.normal_(0, 1.0 / math.sqrt(self.sem_fc.in_features), generator=g)
            self.art.fc.weight.normal_(0, 1.0 / math.sqrt(self.art.fc.in_features), generator=g)
            self.art.fc.bias.zero_()
            self.fusion.weight.normal_(0, 1.0, generator=g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torchvision.transforms as T

        from afpbench.detectors._transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

        sem = self.sem_fc(self.clip(pixel_values=T.Normalize(CLIP_MEAN, CLIP_STD)(x)).image_embeds)
        art = self.art(T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(x))
        return self.fusion(torch.cat([sem, art], dim=1))

    def save_release(self, path: Path, *, drop: str | None = None) -> Path:
        """progan.zip as released: progan/{semantic,artifact,fusion}_weights.pth (+ macOS metadata)."""
        parts = {
            "semantic_weights.pth": {"fc.weight": self.sem_fc.weight.detach().cpu(), "fc.bias": self.sem_fc.bias.detach().cpu()},
            "artifact_weights.pth": {k: v.cpu() for k, v in self.art.state_dict().items()},
            "fusion_weights.pth": {"fc.weight": self.fusion.weight.detach().cpu(), "fc.bias": self.fusion.bias.detach().cpu()},
        }
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("progan/", b"")
            for name, sd in parts.items():
                if name == drop:
                    continue
                buf = io.BytesIO()
                torch.save(sd, buf)
                zf.writestr(f"progan/{name}", buf.getvalue())
                zf.writestr(f"__MACOSX/progan/._{name}", b"\x00\x05\x16\x07 macOS resource fork")
        return path


# -- probe backbones -------------------------------------------------------------------------
def dinov2_model(out: Path, seed: int = 0) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2, image_size=TINY, patch_size=8)).eval().save_pretrained(out)
    return out


def siglip_model(out: Path, seed: int = 0) -> Path:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=TINY, patch_size=8)).eval().save_pretrained(out)
    return out


def probe_base(root: Path, family: str) -> Path:
    build = {"dinov2": dinov2_model, "siglip2": siglip_model, "clip_l14": clip_vision}[family]
    return _memo(root, f"probe-base-{family}", lambda: build(root / f"probe-{family}"))


def fitted_probe(root: Path, tag: str | None, n: int = 12) -> Path:
    """A probe fitted by its own fit() on photos (real, 0) against fakeified photos (fake, 1)."""
    from _tiny import photos

    from afpbench.detectors import load_detector
    from afpbench.testing import fakeify

    family = tag or "dinov2"

    def build() -> Path:
        name = f"probe.{tag}" if tag else "probe"
        det = load_detector(name, base=str(probe_base(root, family)), image_size=TINY, train_init=True)
        real = photos(n)
        x = det.collate([det.preprocess(im) for im in real + [fakeify(im) for im in real]])
        det.fit([(x, torch.tensor([0] * n + [1] * n))], [])
        return det.save(root / f"probe-fit-{family}")

    return _memo(root, f"probe-fit-{family}", build)


# -- Qwen2.5-VL ---------------------------------------------------------------------------------
_CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
_QWEN_CORPUS = ["Is this photo real?", "Yes", "No", "Yes.", "No.", "Yes, it is real.", "No, it is not.", "system", "user", "assistant",
                "You are a helpful assistant.", "a photo of a cat on a sofa", "yes no real fake photo image picture"]


def qwen_tokenizer():
    """A byte-level BPE (Qwen2's pre-tokenisation) trained offline, with Qwen's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=_QWEN_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_QWEN_CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def qwen_vl(out: Path, seed: int = 0) -> Path:
    """A tiny Qwen2.5-VL (2-layer vision tower with window + full attention, 2-layer LM) and
    its processor (Qwen2-VL image processor with 4 px patches, offline tokenizer, ChatML template)."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
    )
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import (
        Qwen2VLImageProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import (
        Qwen2VLVideoProcessor,
    )

    tok = qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in _QWEN_SPECIALS}
    ip = Qwen2VLImageProcessor(patch_size=4, merge_size=2, temporal_patch_size=2, size={"shortest_edge": 16 * 16, "longest_edge": 48 * 48})
    vp = Qwen2VLVideoProcessor(patch_size=4, merge_size=2, temporal_patch_size=2)
    proc = Qwen2_5_VLProcessor(image_processor=ip, tokenizer=tok, video_processor=vp, chat_template=_CHATML)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=4, spatial_merge_size=2, temporal_patch_size=2,
                           window_size=16, out_hidden_size=32, fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    Qwen2_5_VLForConditionalGeneration(cfg).eval().save_pretrained(out)
    proc.save_pretrained(out)
    return out


# -- the registry's tiny instances ---------------------------------------------------------------
def make_zoo_hf(name: str, root: Path, **kw: Any):
    """A tiny instance of one of this module's detectors with non-trivial upstream-layout weights."""
    from afpbench.detectors import load_detector
    from afpbench.registry import split_tag

    base_name, tag = split_tag(name)
    if base_name == "dda":
        cfg = _memo(root, "dda-cfg", lambda: dinov2_config(root / "dda-cfg"))
        ckpt = _memo(root, "dda-ckpt", lambda: write_dda_checkpoint(root / "dda_ckpt.pth", cfg, seed=1))
        return load_detector(name, base=str(cfg), weights=ckpt, image_size=TINY, **kw)
    if base_name == "rine":
        clip = _memo(root, "zoo-clip", lambda: clip_vision(root / "zoo-clip"))
        ckpt = _memo(root, f"rine-{tag}", lambda: _save(rine_state(upstream_rine(clip, tag, seed=2)), root / f"rine-{tag}.pth"))
        return load_detector(name, base=str(clip), weights=ckpt, image_size=TINY, **kw)
    if base_name == "c2p_clip":
        cfg = _memo(root, "c2p-cfg", lambda: c2p_config(root / "c2p-cfg"))
        rel = _memo(root, "c2p-rel", lambda: save_c2p_release(UpstreamC2P(seed=3), root / "C2P_CLIP_release_20240901.zip"))
        return load_detector(name, base=str(cfg), weights=rel, **kw)
    if base_name == "cospy":
        clip = _memo(root, "zoo-clip", lambda: clip_vision(root / "zoo-clip"))
        rel = _memo(root, "cospy-rel", lambda: UpstreamCoSpy(clip, seed=4).save_release(root / "progan.zip"))
        return load_detector(name, base=str(clip), weights=rel, image_size=TINY, **kw)
    if base_name == "probe":
        return load_detector(name, weights=fitted_probe(root, tag), **kw)
    if base_name == "qwen_vl":
        return load_detector(name, base=str(_memo(root, "qwen", lambda: qwen_vl(root / "qwen"))), **kw)
    raise KeyError(name)


def _save(obj: Any, path: Path) -> Path:
    torch.save(obj, path)
    return path
