"""The transformers-based zoo detectors: DDA, RINE, C2P-CLIP, CO-SPY, probe.<backbone>, qwen_vl.

Each detector is checked against upstream's own computation on a tiny configuration of
the same architecture (the ``Upstream*`` modules of ``_zoo_hf``, built with upstream's
layout and forward), loads files written the way upstream's saving code writes them,
refuses mismatched or truncated files in one line, and scores a fake-looking image above
its real counterpart once its head is set with a known sign (a flipped label convention
would fail). The registry-wide contract (determinism, batch-size invariance, [0, 1]) runs
in test_detectors.py.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import _zoo_hf as Z
import numpy as np
import pytest
import torch
from _tiny import TINY, make_split, one_thread, photos

from afpbench.detectors import load_detector
from afpbench.errors import WeightsError
from afpbench.testing import fakeify


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


# Weights lookups see only what a test puts there (conftest.no_weight_cache).
pytestmark = pytest.mark.usefixtures("no_weight_cache")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("zoo-hf")


def batch(det, images):
    return det.collate([det.preprocess(im) for im in images])


def one_line_error(exc_info, *needles: str) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


def truncate(path: Path, out: Path) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


# -- DDA -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dda_cfg(root) -> Path:
    return Z.dinov2_config(root / "dda-cfg")


@pytest.fixture(scope="module")
def dda_upstream(root, dda_cfg):
    from transformers import Dinov2Config

    model = Z.UpstreamDDA(Dinov2Config.from_pretrained(dda_cfg), seed=5)
    path = Z.save_dda(model, root / "dda.pth")
    return model.eval(), path


def test_dda_release_layout_is_upstreams(dda_upstream, dda_cfg):
    from transformers import Dinov2Config

    from afpbench.detectors.dda import upstream_keys

    _model, path = dda_upstream
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"model", "optimizer", "total_steps"} and obj["optimizer"]["state"]
    # afpbench's expected key list is exactly what upstream's module tree saves.
    assert {k: tuple(v.shape) for k, v in obj["model"].items()} == upstream_keys(Dinov2Config.from_pretrained(dda_cfg))
    assert "base_model.model.blocks.1.attn.qkv.lora.lora_B" in obj["model"] and "base_model.model.mask_token" in obj["model"]


def test_dda_default_architecture_is_the_hub_dinov2_vitl14():
    """The built-in ViT-L/14 config expects exactly the hub layout (timm's DINOv2 ViT-L/14, built on the meta device)."""
    import timm
    from transformers import Dinov2Config

    from afpbench.detectors.dda import VITL14, upstream_keys

    with torch.device("meta"):
        hub = timm.create_model("vit_large_patch14_dinov2", pretrained=False, num_classes=0)
    expected = {k: tuple(v.shape) for k, v in hub.state_dict().items()}
    mine = {k.removeprefix("base_model.model.").replace(".original_layer", ""): s for k, s in upstream_keys(Dinov2Config(**VITL14)).items()
            if ".lora." not in k and not k.startswith("base_model.fc.") and k != "base_model.model.mask_token"}
    assert mine == expected
    assert expected["pos_embed"] == (1, 1 + 37 * 37, 1024) and sum(np.prod(s) for s in expected.values()) > 3e8


def test_dda_matches_upstream_forward_at_the_native_grid(dda_upstream, dda_cfg):
    model, path = dda_upstream
    det = load_detector("dda", weights=path, base=str(dda_cfg), image_size=Z.DDA_NATIVE)
    x = batch(det, photos(4))
    with torch.no_grad():
        ref = model(x)[:, 0]
        without_lora = model.base_model.fc(_no_lora_features(model, x))[:, 0]
    assert torch.allclose(det.logits(x), ref, atol=1e-5), (det.logits(x), ref)
    assert (without_lora - ref).abs().max() > 1e-2  # the LoRA deltas matter, so the match above checks them
    assert torch.allclose(det.score(x), torch.sigmoid(ref), atol=1e-6)


def _no_lora_features(model, x):
    """Upstream's features with every LoRA branch switched off (original layers only)."""
    saved = {}
    for name, m in model.named_modules():
        if isinstance(m, Z.UpstreamLoRALinear):
            saved[name] = m.alpha
            m.alpha = 0.0
    try:
        return model.features(x)
    finally:
        for name, m in model.named_modules():
            if name in saved:
                m.alpha = saved[name]


def test_dda_interpolates_position_embeddings_as_the_hub_model(dda_upstream, dda_cfg):
    from afpbench.detectors.dda import hub_position_embeddings

    model, path = dda_upstream
    det = load_detector("dda", weights=path, base=str(dda_cfg), image_size=TINY)  # 8 x 8 patches, trained at 10 x 10
    pos = model.base_model.model.pos_embed.detach()
    hub = Z.hub_interpolate(pos, TINY, TINY, 4)
    assert torch.allclose(det.backbone.embeddings.position_embeddings.detach(), hub, atol=1e-6)
    assert torch.allclose(hub_position_embeddings(pos, 8), hub, atol=1e-6)
    # transformers' own rule (interpolate to the size) gives other numbers: the hub rule is not a no-op here.
    size_based = torch.nn.functional.interpolate(pos[:, 1:].reshape(1, 10, 10, -1).permute(0, 3, 1, 2), size=(8, 8), mode="bicubic", align_corners=False)
    assert (size_based.permute(0, 2, 3, 1).reshape(1, 64, -1) - hub[:, 1:]).abs().max() > 1e-3
    # Upstream's forward at 32 px: the same network with the hub-interpolated embeddings.
    small = _upstream_at(model, dda_cfg, TINY, hub)
    x = batch(det, photos(3))
    with torch.no_grad():
        assert torch.allclose(det.logits(x), small(x)[:, 0], atol=1e-5)


def _upstream_at(model, cfg_dir, size, pos):
    from transformers import Dinov2Config

    small = Z.UpstreamDDA(Dinov2Config.from_pretrained(cfg_dir), seed=0, img_size=size)
    state = dict(model.state_dict())
    state["base_model.model.pos_embed"] = pos
    small.load_state_dict(state, strict=True)
    return small.eval()


def test_dda_preprocessing_is_upstreams_center_crop_with_padding(dda_upstream, dda_cfg):
    import torchvision.transforms as T

    from afpbench.detectors._transforms import CLIP_MEAN, CLIP_STD

    _, path = dda_upstream
    det = load_detector("dda", weights=path, base=str(dda_cfg), image_size=TINY)
    big, small = photos(1)[0], photos(1)[0].resize((20, 24))
    ref = T.Compose([T.CenterCrop(TINY), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
    assert torch.equal(det.preprocess(big), ref(big))
    x = det.preprocess(small)
    assert x.shape == (3, TINY, TINY) and torch.equal(x, ref(small))
    # Zero padding (black before normalisation), not an upscale: the corner is -mean/std.
    assert torch.allclose(x[:, 0, 0], -torch.tensor(CLIP_MEAN) / torch.tensor(CLIP_STD))
    card = det.card
    assert card.preprocessing.crop == TINY and card.preprocessing.mean == CLIP_MEAN and card.preprocessing.resize is None
    assert "336" in card.preprocessing.note and not card.noncommercial


def test_dda_loads_module_prefixed_files_and_refuses_bad_ones(dda_upstream, dda_cfg, root, tmp_path):
    from transformers import Dinov2Config

    _model, path = dda_upstream
    det = load_detector("dda", weights=path, base=str(dda_cfg), image_size=TINY)
    x = batch(det, photos(2))
    prefixed = Z.save_dda(Z.UpstreamDDA(Dinov2Config.from_pretrained(dda_cfg), seed=5), tmp_path / "dp.pth", module_prefix=True)
    assert torch.allclose(load_detector("dda", weights=prefixed, base=str(dda_cfg), image_size=TINY).score(x), det.score(x), atol=1e-6)
    with pytest.raises(WeightsError) as err:
        load_detector("dda", weights=truncate(path, tmp_path / "trunc.pth"), base=str(dda_cfg), image_size=TINY)
    one_line_error(err, "trunc.pth", "download it again")
    wide = Z.dinov2_config(tmp_path / "wide-cfg")
    cfg = Dinov2Config.from_pretrained(wide)
    cfg.hidden_size = 48
    cfg.save_pretrained(wide)
    with pytest.raises(WeightsError) as err:
        load_detector("dda", weights=path, base=str(wide), image_size=TINY)
    one_line_error(err, "dda.pth does not match DDA", "shape mismatch")
    sd = torch.load(path, weights_only=True)["model"]
    del sd["base_model.model.blocks.0.mlp.fc2.lora.lora_A"]
    torch.save({"model": sd}, tmp_path / "nolora.pth")
    with pytest.raises(WeightsError) as err:
        load_detector("dda", weights=tmp_path / "nolora.pth", base=str(dda_cfg), image_size=TINY)
    one_line_error(err, "missing base_model.model.blocks.0.mlp.fc2.lora.lora_A")
    # The default architecture is ViT-L/14: a tiny file does not fit it.
    with pytest.raises(WeightsError, match="1024"):
        load_detector("dda", weights=path)


def test_dda_known_sign(dda_upstream, dda_cfg, tmp_path):
    model, _ = dda_upstream
    real = photos(2)
    fake = [fakeify(im) for im in real]
    det0 = load_detector("dda", weights=dda_upstream[1], base=str(dda_cfg), image_size=TINY)
    small = _upstream_at(model, dda_cfg, TINY, Z.hub_interpolate(model.base_model.model.pos_embed.detach(), TINY, TINY, 4))
    with torch.no_grad():
        fr, ff = small.features(batch(det0, real)), small.features(batch(det0, fake))
        w = (ff - fr).mean(0)
        model.base_model.fc.weight.copy_(w[None])
        model.base_model.fc.bias.fill_(-float(w @ (ff + fr).mean(0)) / 2)
    path = Z.save_dda(model, tmp_path / "signed.pth")
    det = load_detector("dda", weights=path, base=str(dda_cfg), image_size=TINY)
    s_real, s_fake = det.score(batch(det, real)), det.score(batch(det, fake))
    assert torch.all(s_fake > s_real), (s_fake, s_real)
    assert s_fake.mean() > 0.5 > s_real.mean()


# -- RINE ------------------------------------------------------------------------------------------
# The real ckpt/model_2class_trainable.pth of mever-team/rine (commit 9b7fd58), read once:
# its keys and shapes, for CLIP ViT-L/14 (24 blocks, width 1024) with nproj = 4, proj_dim = 128.
RINE_2CLASS_RELEASE = {"alpha": (1, 24, 128), "proj1.1.weight": (128, 1024), "proj1.1.bias": (128,)} | {
    f"{s}.{i}.{p}": ((128, 128) if p == "weight" else (128,)) for s, idx in (("proj1", (4, 7, 10)), ("proj2", (1, 4, 7, 10)), ("head", (0, 3))) for i in idx for p in ("weight", "bias")
} | {"head.6.weight": (1, 128), "head.6.bias": (1,)}


def test_rine_head_layout_is_the_released_files():
    from afpbench.detectors.rine import RINE, build_head

    opts = RINE.variants["2class"].options
    assert len(RINE_2CLASS_RELEASE) == 23
    assert {k: tuple(v.shape) for k, v in build_head(1024, 24, opts["nproj"], opts["proj_dim"]).state_dict().items()} == RINE_2CLASS_RELEASE
    assert RINE.variants[None].options == {"nproj": 2, "proj_dim": 1024}  # upstream get_our_trained_model(ncls=4)


@pytest.fixture(scope="module")
def rine_clip(root) -> Path:
    return Z.clip_vision(root / "rine-clip", seed=1)


@pytest.mark.parametrize("tag", ["2class", "ldm"])
def test_rine_matches_upstream_forward(tag, rine_clip, root):
    import torchvision.transforms as T

    up = Z.upstream_rine(rine_clip, tag, seed=6)
    path = root / f"rine-{tag}.pth"
    torch.save(Z.rine_state(up), path)
    det = load_detector(f"rine.{tag}", weights=path, base=str(rine_clip), image_size=TINY)
    ims = photos(3)
    x = batch(det, ims)
    with torch.no_grad():
        if tag == "ldm":  # upstream: TenCrop, the model on every crop, sigmoid of the mean logit
            assert x.shape == (3, 10, 3, TINY, TINY)
            crops = torch.stack([torch.stack([T.Normalize(Z_CLIP_MEAN, Z_CLIP_STD)(T.functional.to_tensor(c)) for c in T.TenCrop(TINY)(im)]) for im in ims])
            assert torch.equal(x, crops)
            ref = up(crops.flatten(0, 1))[:, 0].view(3, 10).mean(1)
        else:
            ref = up(x)[:, 0]
    assert torch.allclose(det.logits(x), ref, atol=1e-5), (det.logits(x), ref)
    assert torch.allclose(det.score(x), torch.sigmoid(ref), atol=1e-6)


Z_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
Z_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def test_rine_refuses_bad_files(rine_clip, root, tmp_path, monkeypatch):
    up = Z.upstream_rine(rine_clip, "2class", seed=6)
    path = tmp_path / "model_2class_trainable.pth"
    torch.save(Z.rine_state(up), path)
    with pytest.raises(WeightsError) as err:  # the 2-class file under the 4-class tag
        load_detector("rine", weights=path, base=str(rine_clip), image_size=TINY)
    one_line_error(err, "does not match RINE", "shape mismatch alpha (1, 2, 128) != (1, 2, 1024)")
    with pytest.raises(WeightsError) as err:
        load_detector("rine.2class", weights=truncate(path, tmp_path / "half.pth"), base=str(rine_clip), image_size=TINY)
    one_line_error(err, "half.pth")
    # Found in the cache without --weights, the 2-class file must be the release (sha256 published in the card).
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "model_2class_trainable.pth").write_bytes(path.read_bytes())
    monkeypatch.setenv("AFPBENCH_WEIGHTS", str(cache))
    with pytest.raises(WeightsError) as err:
        load_detector("rine.2class", base=str(rine_clip), image_size=TINY)
    one_line_error(err, "sha256", "680d301b6d19")


def test_rine_known_sign(rine_clip, tmp_path):
    up = Z.upstream_rine(rine_clip, "2class", seed=7)
    real = photos(2)
    fake = [fakeify(im) for im in real]
    path = tmp_path / "rine.pth"
    torch.save(Z.rine_state(up), path)
    det = load_detector("rine.2class", weights=path, base=str(rine_clip), image_size=TINY)
    with torch.no_grad():
        def z(ims):
            g = up.proj1(up.ln2_cls(batch(det, ims)))
            return up.proj2(torch.sum(torch.softmax(up.alpha, dim=1) * g, dim=1))

        # head = Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear: make the last two layers read
        # the identity of positive activations, then weigh them by the fake-minus-real direction.
        h = up.head
        h0 = torch.relu(h[0](z(real))), torch.relu(h[0](z(fake)))
        h[3].weight.copy_(torch.eye(h[3].weight.shape[0]))
        h[3].bias.zero_()
        w = (h0[1] - h0[0]).mean(0)
        h[6].weight.copy_(w[None])
        h[6].bias.fill_(-float(w @ (h0[0] + h0[1]).mean(0)) / 2)
    torch.save(Z.rine_state(up), path)
    det = load_detector("rine.2class", weights=path, base=str(rine_clip), image_size=TINY)
    s_real, s_fake = det.score(batch(det, real)), det.score(batch(det, fake))
    assert torch.all(s_fake > s_real) and s_fake.mean() > 0.5 > s_real.mean(), (s_fake, s_real)


# -- C2P-CLIP --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def c2p(root):
    model = Z.UpstreamC2P(seed=8).eval()
    return model, Z.save_c2p_release(model, root / "C2P_CLIP_release_20240901.zip"), Z.c2p_config(root / "c2p-cfg")


def test_c2p_matches_upstream_forward_and_preprocessing(c2p, tmp_path):
    import torchvision.transforms as T

    model, rel, cfg = c2p
    det = load_detector("c2p_clip", weights=rel, base=str(cfg))
    ims = photos(3)
    x = batch(det, ims)
    ref_t = T.Compose([T.Resize(TINY), T.CenterCrop(TINY), T.ToTensor(), T.Normalize(Z_CLIP_MEAN, Z_CLIP_STD)])  # upstream data.py
    assert torch.equal(x, torch.stack([ref_t(im) for im in ims]))
    with torch.no_grad():
        ref = model(x)[:, 0]
    assert torch.allclose(det.logits(x), ref, atol=1e-5)
    # The .pth inside the zip loads the same; so does a file from transformers < 4.31 (persistent position_ids).
    with zipfile.ZipFile(rel) as zf:
        (tmp_path / "c2p.pth").write_bytes(zf.read(zf.infolist()[0]))
    assert torch.allclose(load_detector("c2p_clip", weights=tmp_path / "c2p.pth", base=str(cfg)).score(x), det.score(x))
    n = model.model.vision_model.embeddings.num_positions
    old = Z.save_c2p_release(model, tmp_path / "old.zip", extra={"model.vision_model.embeddings.position_ids": torch.arange(n)[None]})
    assert torch.allclose(load_detector("c2p_clip", weights=old, base=str(cfg)).score(x), det.score(x))
    bad = Z.save_c2p_release(model, tmp_path / "bad.zip", extra={"model.vision_model.embeddings.position_ids": torch.arange(n)[None].flip(1)})
    with pytest.raises(WeightsError) as err:
        load_detector("c2p_clip", weights=bad, base=str(cfg))
    one_line_error(err, "position_ids is not arange")
    card = det.card
    assert card.noncommercial and card.preprocessing.resize == TINY and card.preprocessing.interpolation == "bilinear"


def test_c2p_refuses_bad_files(c2p, tmp_path):
    model, rel, cfg = c2p
    with pytest.raises(WeightsError) as err:
        load_detector("c2p_clip", weights=truncate(rel, tmp_path / "cut.zip"), base=str(cfg))
    one_line_error(err, "cut.zip")
    other = Z.save_c2p_release(Z.UpstreamC2P(projection_dim=24, seed=1), tmp_path / "p24.zip")
    with pytest.raises(WeightsError) as err:
        load_detector("c2p_clip", weights=other, base=str(cfg))
    one_line_error(err, "p24.zip does not match C2P-CLIP", "model.visual_projection.weight (24, 32) != (16, 32)")
    sd = dict(model.state_dict())
    sd["model.logit_scale"] = torch.ones(())  # a full CLIPModel (text tower not deleted) is not the release
    buf = io.BytesIO()
    torch.save(sd, buf)
    (tmp_path / "full.pth").write_bytes(buf.getvalue())
    with pytest.raises(WeightsError) as err:
        load_detector("c2p_clip", weights=tmp_path / "full.pth", base=str(cfg))
    one_line_error(err, "unexpected model.logit_scale")


def test_c2p_known_sign(c2p, tmp_path):
    model, _, cfg = c2p
    real = photos(2)
    fake = [fakeify(im) for im in real]
    det = load_detector("c2p_clip", weights=c2p[1], base=str(cfg))
    with torch.no_grad():
        def e(ims):
            v = model.image_embeds(batch(det, ims))
            return v / v.norm(dim=-1, keepdim=True)

        er, ef = e(real), e(fake)
        w = (ef - er).mean(0)
        model.model.fc.weight.copy_(w[None] * 50)
        model.model.fc.bias.fill_(-50 * float(w @ (ef + er).mean(0)) / 2)
    det = load_detector("c2p_clip", weights=Z.save_c2p_release(model, tmp_path / "signed.zip"), base=str(cfg))
    s_real, s_fake = det.score(batch(det, real)), det.score(batch(det, fake))
    assert torch.all(s_fake > s_real) and s_fake.mean() > 0.5 > s_real.mean(), (s_fake, s_real)


# -- CO-SPY ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cospy(root, rine_clip):
    up = Z.UpstreamCoSpy(rine_clip, seed=9).eval()
    return up, up.save_release(root / "progan.zip"), rine_clip


def test_cospy_matches_upstream_forward(cospy):
    import torchvision.transforms as T

    up, rel, clip = cospy
    det = load_detector("cospy", weights=rel, base=str(clip), image_size=TINY)
    ims = photos(3)
    x = batch(det, ims)
    load = round(TINY * 256 / 224)
    assert torch.equal(x, torch.stack([T.Compose([T.Resize(load), T.CenterCrop(TINY), T.ToTensor()])(im) for im in ims]))
    with torch.no_grad():
        ref = up(x)[:, 0]
        art = up.art(T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(x))
        _, mine = det.branch_logits(x)
    assert torch.allclose(mine, art, atol=1e-5)
    assert torch.allclose(det.logits(x), ref, atol=1e-5)
    assert det.art.out_features == 512 and sum(p.numel() for p in det.art.parameters()) == 1_437_761  # conv1 1,728 + bn1 128 + ResNet-50 layer1 215,808 + layer2 1,219,584 + fc1 513


def test_cospy_refuses_bad_files(cospy, tmp_path):
    up, rel, clip = cospy
    with pytest.raises(WeightsError) as err:
        load_detector("cospy", weights=up.save_release(tmp_path / "nofusion.zip", drop="fusion_weights.pth"), base=str(clip), image_size=TINY)
    one_line_error(err, "lacks fusion_weights.pth")
    with pytest.raises(WeightsError) as err:
        load_detector("cospy", weights=truncate(rel, tmp_path / "cut.zip"), base=str(clip), image_size=TINY)
    one_line_error(err, "cut.zip")
    torch.save({"fc.weight": torch.zeros(1, 2)}, tmp_path / "fusion_weights.pth")
    with pytest.raises(WeightsError) as err:
        load_detector("cospy", weights=tmp_path / "fusion_weights.pth", base=str(clip), image_size=TINY)
    one_line_error(err, "one PyTorch checkpoint", "progan.zip")
    # An artifact file saved from DataParallel-less upstream has no 'module.'; one missing its BN statistics is refused.
    sd = {k: v for k, v in up.art.state_dict().items() if not k.endswith("layer2.3.bn3.running_var")}
    with zipfile.ZipFile(rel) as src, zipfile.ZipFile(tmp_path / "nobn.zip", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "progan/artifact_weights.pth":
                buf = io.BytesIO()
                torch.save(sd, buf)
                data = buf.getvalue()
            dst.writestr(info, data)
    with pytest.raises(WeightsError) as err:
        load_detector("cospy", weights=tmp_path / "nobn.zip", base=str(clip), image_size=TINY)
    one_line_error(err, "artifact_weights.pth does not match", "missing artifact_encoder.layer2.3.bn3.running_var")


def test_cospy_known_sign(cospy, tmp_path):
    up, _, clip = cospy
    real = photos(2)
    fake = [fakeify(im) for im in real]
    det = load_detector("cospy", weights=cospy[1], base=str(clip), image_size=TINY)
    with torch.no_grad():
        import torchvision.transforms as T

        def feats(ims):
            x = batch(det, ims)
            return up.clip(pixel_values=T.Normalize(Z_CLIP_MEAN, Z_CLIP_STD)(x)).image_embeds, up.art.features(T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(x))

        (sr, ar), (sf, af) = feats(real), feats(fake)
        for fc, fr, ff in ((up.sem_fc, sr, sf), (up.art.fc, ar, af)):
            w = (ff - fr).mean(0)
            fc.weight.copy_(w[None] / w.norm())
            fc.bias.fill_(-float(w @ (ff + fr).mean(0)) / 2 / float(w.norm()))
        up.fusion.weight.fill_(5.0)
        up.fusion.bias.zero_()
    det = load_detector("cospy", weights=up.save_release(tmp_path / "signed.zip"), base=str(clip), image_size=TINY)
    s_real, s_fake = det.score(batch(det, real)), det.score(batch(det, fake))
    assert torch.all(s_fake > s_real) and s_fake.mean() > 0.5 > s_real.mean(), (s_fake, s_real)


# -- probe -----------------------------------------------------------------------------------------
def _features(det, dirs):
    """(backbone features, labels) of dataset folders through the detector's eval transform."""
    from afpbench.dataset import decode_image, open_dataset

    xs, ys = [], []
    for d in dirs:
        for r in open_dataset(d).rows():
            xs.append(det.preprocess(decode_image(r["image"])))
            ys.append(r["label"])
    with torch.no_grad():
        return det.features(det.collate(xs)).numpy(), np.asarray(ys), det.score(det.collate(xs)).numpy()


def test_probe_trains_on_cached_features_with_afpbench_train(root, tmp_path, monkeypatch):
    from sklearn.linear_model import LogisticRegression
    from transformers import CLIPVisionModelWithProjection

    from afpbench.train import TrainConfig, train

    base = Z.probe_base(root, "clip_l14")
    tr = make_split(tmp_path / "data", 10, seed=0, prefix="tr", size=48)
    va = make_split(tmp_path / "data", 6, seed=50, prefix="va", size=48)
    seen: list[int] = []
    forward = CLIPVisionModelWithProjection.forward

    def counting(self, pixel_values=None, **kw):
        seen.append(pixel_values.shape[0])
        return forward(self, pixel_values=pixel_values, **kw)

    monkeypatch.setattr(CLIPVisionModelWithProjection, "forward", counting)
    res = train(TrainConfig(detector="probe.clip_l14", train=[str(d) for d in tr], val=[str(d) for d in va], out=str(tmp_path / "run"),
                            base=str(base), image_size=TINY, quiet=True, epochs=5))
    assert sum(seen) == 20 + 12  # every train and val image through the backbone exactly once
    monkeypatch.setattr(CLIPVisionModelWithProjection, "forward", forward)
    assert len(res.epochs) == 1 and res.epochs[0].val_loss is not None
    det = load_detector("probe.clip_l14", weights=res.best_checkpoint)
    assert det.base == str(base) and det.image_size == TINY
    # Independent reference: scikit-learn's logistic regression on the same standardised features.
    f, y, _ = _features(det, tr)
    mean, std = f.mean(0), f.std(0) + 1e-6
    clf = LogisticRegression(C=1.0, max_iter=5000).fit((f - mean) / std, y)
    fva, _, pva = _features(det, va)
    assert np.allclose(pva, clf.predict_proba((fva - mean) / std)[:, 1], atol=1e-4)


@pytest.mark.parametrize("tag", ["dinov2", "siglip2", "clip_l14"])
def test_probe_known_sign(tag, root):
    det = load_detector(f"probe.{tag}", weights=Z.fitted_probe(root, tag))
    real = photos(16)[12:]  # photos the fit did not see
    fake = [fakeify(im) for im in real]
    s_real, s_fake = det.score(batch(det, real)), det.score(batch(det, fake))
    assert s_fake.mean() > 0.5 > s_real.mean() and (s_fake > s_real).float().mean() >= 0.75, (s_fake, s_real)
    assert det.card.trainable and det.card.preprocessing.mean == Z_family_mean(tag)


def Z_family_mean(tag):
    from afpbench.detectors.probe import FAMILIES

    return FAMILIES[tag].mean


def test_probe_refuses_other_families_and_bases(root, tmp_path):
    fit = Z.fitted_probe(root, "dinov2")
    with pytest.raises(WeightsError) as err:
        load_detector("probe.siglip2", weights=fit, base=str(Z.probe_base(root, "siglip2")))
    one_line_error(err, "probe.dinov2 fit, not probe.siglip2")
    wide = Z.clip_vision(tmp_path / "clip24", projection_dim=24)
    with pytest.raises(WeightsError) as err:
        load_detector("probe.clip_l14", weights=Z.fitted_probe(root, "clip_l14"), base=str(wide))
    one_line_error(err, "shape mismatch mean (16,) != (24,)")
    with pytest.raises(WeightsError) as err:
        load_detector("probe.siglip2", base=str(Z.probe_base(root, "siglip2")))
    one_line_error(err, "afpbench train --detector probe")
    assert load_detector("probe", weights=fit).family_name == "dinov2"
    import shutil

    cut = tmp_path / "cut-fit"
    shutil.copytree(fit, cut)
    truncate(fit / "model.safetensors", cut / "model.safetensors")
    with pytest.raises(WeightsError) as err:
        load_detector("probe", weights=cut)
    one_line_error(err, "model.safetensors", "truncated or corrupt")


# -- qwen_vl ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qwen(root) -> Path:
    return Z.qwen_vl(root / "qwen")


def test_qwen_batch_is_the_processors_own(qwen):
    from transformers import AutoProcessor

    det = load_detector("qwen_vl", base=str(qwen))
    ims = [im.resize(s) for im, s in zip(photos(3), [(40, 40), (64, 30), (24, 90)])]
    mine = batch(det, ims)
    proc = AutoProcessor.from_pretrained(qwen)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is this photo real?"}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n") and "Is this photo real?" in text
    ref = proc(text=[text] * 3, images=ims, padding=True, padding_side="left", return_tensors="pt")
    for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"):
        assert torch.equal(mine[k], ref[k].to(mine[k].dtype)), k
    assert (mine["attention_mask"][:, 0] == 0).any()  # different token counts: left padding is exercised
    # P(fake) is the (Yes, No) softmax of the model's own next-token logits.
    with torch.no_grad():
        logits = det.model(**{k: v for k, v in ref.items()}, use_cache=False).logits[:, -1]
    yes, no = proc.tokenizer.convert_tokens_to_ids(["Yes", "No"])
    assert torch.allclose(det.score(mine), logits[:, [yes, no]].softmax(-1)[:, 1], atol=1e-6)
    card = det.card
    assert "Is this photo real?" in " ".join(card.choices) and "add_generation_prompt=True" in " ".join(card.choices)
    assert not card.noncommercial and load_detector("qwen_vl.3b", base=str(qwen)).card.noncommercial


def test_qwen_known_sign(qwen, tmp_path):
    """Tune the LM head's Yes/No rows on final hidden states so fakes answer No: fakes then score higher."""
    import shutil

    from sklearn.linear_model import LogisticRegression
    from transformers import Qwen2_5_VLForConditionalGeneration

    folder = tmp_path / "qwen-signed"
    shutil.copytree(qwen, folder)
    det = load_detector("qwen_vl", base=str(folder))
    real = photos(12)
    fake = [fakeify(im) for im in real]
    with torch.no_grad():
        hidden = det.model(**batch(det, real + fake), output_hidden_states=True, use_cache=False).hidden_states[-1][:, -1].numpy()
    y = np.array([0] * 12 + [1] * 12)
    coef = LogisticRegression(C=10.0, fit_intercept=False, max_iter=5000).fit(hidden[:8].tolist() + hidden[12:20].tolist(), np.r_[y[:8], y[12:20]]).coef_[0]
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder)
    yes, no = det.answer_ids
    with torch.no_grad():
        w = model.lm_head.weight
        w[no] = w[yes] + torch.tensor(coef, dtype=w.dtype)
    model.save_pretrained(folder)
    det = load_detector("qwen_vl", base=str(folder))
    s_real, s_fake = det.score(batch(det, real[8:])), det.score(batch(det, fake[8:]))  # held out from the tuning
    assert s_fake.mean() > 0.5 > s_real.mean() and (s_fake > s_real).float().mean() >= 0.75, (s_fake, s_real)


def test_qwen_refuses_weights_and_bad_bases(qwen, tmp_path):
    with pytest.raises(WeightsError) as err:
        load_detector("qwen_vl", base=str(tmp_path / "nowhere"))
    one_line_error(err, "--base")
    (tmp_path / "w.pth").write_bytes(b"x")
    with pytest.raises(WeightsError) as err:
        load_detector("qwen_vl", base=str(qwen), weights=tmp_path / "w.pth")
    one_line_error(err, "zero-shot")


# -- the real releases (slow: need the downloaded files and full-size bases) ---------------------------
_RELEASES = [("dda", "dda_ckpt.pth", False), ("rine", "model_4class_trainable.pth", True), ("rine.2class", "model_2class_trainable.pth", True),
             ("c2p_clip", "C2P_CLIP_release_20240901.zip", False), ("cospy", "progan.zip", True)]


@pytest.mark.slow
@pytest.mark.parametrize("name,filename,needs_clip", _RELEASES)
def test_real_release_loads_and_scores(name, filename, needs_clip):
    """Set AFPBENCH_ZOO_WEIGHTS to a folder holding the released files (names as in the cards) and
    AFPBENCH_REAL_CLIP to a local openai/clip-vit-large-patch14 for the CLIP-backed ones."""
    import os

    folder, clip = os.environ.get("AFPBENCH_ZOO_WEIGHTS"), os.environ.get("AFPBENCH_REAL_CLIP")
    if not folder or not (Path(folder) / filename).exists():
        pytest.skip(f"set AFPBENCH_ZOO_WEIGHTS to a folder holding {filename}")
    if needs_clip and not clip:
        pytest.skip("set AFPBENCH_REAL_CLIP to a local openai/clip-vit-large-patch14 folder")
    det = load_detector(name, weights=Path(folder) / filename, base=clip if needs_clip else None)
    s = det.score(batch(det, photos(4)))
    assert s.shape == (4,) and torch.all((s >= 0) & (s <= 1)) and s.std() > 0


@pytest.mark.slow
def test_real_qwen_vl_scores():
    import os

    base = os.environ.get("AFPBENCH_REAL_QWEN_VL")
    if not base:
        pytest.skip("set AFPBENCH_REAL_QWEN_VL to a local Qwen/Qwen2.5-VL-7B-Instruct (or 3B) folder")
    det = load_detector("qwen_vl", base=base, image_size=224)
    s = det.score(batch(det, photos(2)))
    assert s.shape == (2,) and torch.all((s >= 0) & (s <= 1))
