"""The timm/torchvision detector zoo: Community Forensics, NPR, DRCT, SAFE, LaDeDa,
Tiny-LaDeDa, B-Free.

Every weights file here is written the way its upstream's saving code writes it (see
tests/_zoo_timm.py) for a tiny configuration of the same architecture. Checked per
detector: the release format loads exactly (by upstream's key names), wrong or truncated
files are refused in one line, the label convention (a final layer set so that upstream's
'fake' output responds to a feature we control must give the fake-looking image the higher
P(fake)), the preprocessing against upstream's own transforms or hand-computed cases,
and architecture facts against published numbers.
"""

from __future__ import annotations

import math
import shutil

import _zoo_timm as Z
import numpy as np
import pytest
import torch
from _tiny import one_thread, photos

from afpbench.detectors import load_detector
from afpbench.errors import AfpbenchError, WeightsError
from afpbench.testing import fakeify

NAMES = ["commfor", "npr", "drct", "safe", "ladeda", "tiny_ladeda", "bfree"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


# Weights lookups see only what a test puts there (conftest.no_weight_cache).
pytestmark = pytest.mark.usefixtures("no_weight_cache")


def _scores(det, images):
    return det.score(det.collate([det.preprocess(im) for im in images]))


# -- the label convention, for every detector ----------------------------------------------------
def _direction(det, real, fake):
    """A final layer (w, b) with logit = +2 on ``fake`` and -2 on ``real`` for ``det``'s features."""
    f = det.features(det.to_device(det.collate([det.preprocess(real), det.preprocess(fake)]))).double()
    d = f[1] - f[0]
    assert d.norm() > 0, "the tiny network must see a difference between the two images"
    w = d * (4.0 / float(d @ d))
    b = -float(w @ (f[0] + f[1])) / 2
    return w.float(), torch.tensor([b], dtype=torch.float32)


def _signed_file(name, det, tmp_path, w, b):
    """The tiny release of ``name`` again, with upstream's 'fake' output wired to (w, b)."""
    if name == "commfor":
        model = Z.commfor_classifier(0)
        with torch.no_grad():
            model.vit.head.weight.copy_(w[None]), model.vit.head.bias.copy_(b)
        return Z.write_commfor_hub(tmp_path / "signed", model=model)
    if name == "npr":
        sd = Z.truncated_resnet_state(1, seed=1)
        sd["fc1.weight"], sd["fc1.bias"] = w[None], b
        return Z.write_npr(tmp_path / "signed.pth", state=sd)
    if name == "safe":  # two classes: index 1 is fake upstream; index 0 stays at 0
        sd = Z.truncated_resnet_state(2, seed=2)
        sd["fc1.weight"], sd["fc1.bias"] = torch.stack([torch.zeros_like(w), w]), torch.cat([torch.zeros(1), b])
        return Z.write_safe(tmp_path / "signed.pth", state=sd)
    if name == "drct":
        model = Z.drct_model(3)
        with torch.no_grad():
            model.fc.weight.copy_(torch.stack([torch.zeros_like(w), w])), model.fc.bias.copy_(torch.cat([torch.zeros(1), b]))
        return Z.write_drct(tmp_path / "signed.pth", model=model)
    if name in ("ladeda", "tiny_ladeda"):
        sd = Z.ladeda_state(4) if name == "ladeda" else Z.tiny_ladeda_state(5)
        sd["fc.weight"], sd["fc.bias"] = w[None], b
        return Z.write_state(tmp_path / "signed.pth", sd)
    if name == "bfree":
        model = Z.bfree_vit(6)
        with torch.no_grad():
            model.head.weight.copy_(w[None]), model.head.bias.copy_(b)
        return Z.write_bfree(tmp_path / "signed.pth", model=model)
    raise KeyError(name)


@pytest.mark.parametrize("name", NAMES)
def test_upstream_fake_output_means_fake(name, tmp_path, tmp_path_factory):
    real = photos(1)[0]
    fake = fakeify(real)
    det = Z.make_zoo_timm(name, tmp_path_factory)
    w, b = _direction(det, real, fake)
    signed = load_detector(name, weights=_signed_file(name, det, tmp_path, w, b), **Z.tiny_file(name, tmp_path_factory)[1])
    s_real, s_fake = _scores(signed, [real, fake]).tolist()
    assert s_fake > 0.8 and s_real < 0.2, (s_real, s_fake)


# -- refusing wrong files, for every detector ------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_truncated_and_mismatched_files_are_refused_in_one_line(name, tmp_path, tmp_path_factory):
    path, opts = Z.tiny_file(name, tmp_path_factory)
    src = path / "model.safetensors" if path.is_dir() else path
    data = src.read_bytes()
    cut = tmp_path / ("cut" + src.suffix)
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError) as err:
        load_detector(name, weights=cut, **opts)
    assert str(cut) in str(err.value) and "\n" not in str(err.value)
    if name == "tiny_ladeda":  # one architecture only: LaDeDa's file is the wrong one
        other, _ = Z.tiny_file("ladeda", tmp_path_factory)
        with pytest.raises(WeightsError, match=r"does not match .*unexpected layer1.0.conv3") as err:
            load_detector(name, weights=other)
    else:  # the tiny file against upstream's full-size architecture (checked on the meta device)
        with pytest.raises(WeightsError, match="does not match .*shape mismatch") as err:
            load_detector(name, weights=path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_no_weights_says_where_to_get_them(name):
    with pytest.raises(WeightsError, match="--weights") as err:
        load_detector(name)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_cards_state_licence_preprocessing_and_convention(name, tmp_path_factory):
    det = Z.make_zoo_timm(name, tmp_path_factory)
    card = det.card
    assert card.paper and card.code.startswith("https://github.com/") and card.license and card.training_data
    assert card.weights is not None and card.weights.source and card.threshold == 0.5
    assert any("P(fake)" in c for c in card.choices), "the card must state the label convention"
    assert card.noncommercial is (name in ("npr", "drct", "ladeda", "tiny_ladeda", "bfree"))
    assert card.base == det.base_description()


# -- Community Forensics -------------------------------------------------------------------------
def test_commfor_hub_and_training_checkpoints_load_the_same_weights(tmp_path, tmp_path_factory):
    model = Z.commfor_classifier(7)
    ckpt = Z.write_commfor_training_checkpoint(tmp_path / "checkpoint_4.pt", model)
    # torch.compile-d training runs prefix every key with _orig_mod.; upstream strips it.
    compiled = Z.write_commfor_training_checkpoint(tmp_path / "compiled.pt", model, prefix="_orig_mod.")
    hub = Z.write_commfor_hub(tmp_path / "hub", model=model)
    assert sorted(p.name for p in hub.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    ims = photos(3)
    det = load_detector("commfor", weights=hub, base="tiny")
    ref = _scores(det, ims)
    assert torch.equal(_scores(load_detector("commfor", weights=compiled, base="tiny"), ims), ref)
    # The checkpoint written one training step earlier holds other weights.
    assert not torch.equal(_scores(load_detector("commfor", weights=ckpt, base="tiny"), ims), ref)
    from safetensors.torch import load_file

    raw = load_file(str(hub / "model.safetensors"))
    assert torch.equal(det.model.state_dict()["head.weight"].cpu(), raw["vit.head.weight"])


def test_commfor_refuses_the_other_input_size_with_the_right_tag(tmp_path, tmp_path_factory):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="has no model.safetensors"):
        load_detector("commfor", weights=tmp_path / "empty", base="tiny")
    hub, _ = Z.tiny_file("commfor", tmp_path_factory)
    other = tmp_path / "commfor-model-224"
    shutil.copytree(hub, other)
    (other / "config.json").write_text('{"input_size": 224, "model_size": "small", "patch_size": 16}')
    with pytest.raises(WeightsError, match="224-px .*--detector commfor.224"):
        load_detector("commfor", weights=other)
    with pytest.raises(AfpbenchError, match="takes 32 px"):
        load_detector("commfor", weights=hub, base="tiny", image_size=64)


def test_commfor_preprocessing_is_upstreams_test_transform(tmp_path_factory):
    from torchvision import transforms

    det = Z.make_zoo_timm("commfor", tmp_path_factory)
    p = det.card.preprocessing
    upstream = transforms.Compose([
        transforms.Resize(p.resize), transforms.CenterCrop(p.crop), transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    for im in photos(3):
        assert torch.equal(det.preprocess(im), upstream(im))
    from afpbench.detectors.commfor import ARCHS

    assert (ARCHS["vit_small_patch16_384.augreg_in21k_ft_in1k"]["resize"], ARCHS["vit_small_patch16_224.augreg_in21k_ft_in1k"]["resize"]) == (440, 256)


# -- NPR ------------------------------------------------------------------------------------------
def test_npr_trims_odd_sizes_and_scores_mixed_sizes_one_by_one(tmp_path_factory):
    from PIL import Image

    det = Z.make_zoo_timm("npr", tmp_path_factory)
    odd = photos(1)[0].crop((0, 0, 33, 31))
    x = det.preprocess(odd)
    assert x.shape == (3, 30, 32)
    ims = [odd, photos(2)[1], Image.new("RGB", (64, 48), (120, 30, 200))]
    batch = det.collate([det.preprocess(im) for im in ims])
    assert isinstance(batch, list)
    alone = torch.cat([_scores(det, [im]) for im in ims])
    assert torch.allclose(det.score(batch), alone, atol=1e-6)


def test_npr_residual_is_zero_on_nearest_upsampled_images(tmp_path_factory):
    """NPR's premise: a 2x nearest-upsampled image has no neighbouring-pixel residual."""
    from afpbench.detectors.npr import NPR

    small = torch.rand(1, 3, 8, 10)
    up = small.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.equal(NPR.residual(up), torch.zeros_like(up))
    assert NPR.residual(torch.rand(1, 3, 16, 20)).abs().sum() > 0


def test_npr_release_is_a_bare_state_dict(tmp_path_factory):
    path, _ = Z.tiny_file("npr", tmp_path_factory)
    raw = torch.load(path, weights_only=True)
    det = Z.make_zoo_timm("npr", tmp_path_factory)
    own = det.model.state_dict()
    assert set(own) == set(raw) and "fc1.weight" in raw and "conv1.weight" in raw and not any(k.startswith("module.") for k in raw)
    assert torch.equal(own["layer2.0.bn2.running_var"], raw["layer2.0.bn2.running_var"])
    assert own["conv1.weight"].shape == (64, 3, 3, 3)


# -- SAFE -----------------------------------------------------------------------------------------
def test_safe_wavelet_band_equals_pywt():
    import pywt

    from afpbench.detectors.safe import DiagonalWavelet

    dwt = DiagonalWavelet()
    for h, w in [(32, 32), (33, 30), (7, 9)]:
        a = np.random.default_rng(h).random((2, 3, h, w))
        hh = pywt.dwt2(a, "bior1.3", mode="symmetric")[1][2]
        got = dwt.band(torch.from_numpy(a).float()).double().numpy()
        assert got.shape == hh.shape and np.abs(got - hh).max() < 1e-5
    x = torch.rand(1, 3, 32, 32)
    assert dwt(x).shape == x.shape  # resized back to the crop, as upstream


def test_safe_reads_save_model_checkpoints_and_crops_like_torchvision(tmp_path_factory):
    from torchvision import transforms

    path, _ = Z.tiny_file("safe", tmp_path_factory)
    import pickle

    with pytest.raises(pickle.UnpicklingError, match="argparse.Namespace"):  # the pickled training args need allowing
        torch.load(path, weights_only=True)
    det = Z.make_zoo_timm("safe", tmp_path_factory)
    raw = torch.load(path, weights_only=False)
    assert raw["epoch"] == "best" and raw["args"].input_size == 256
    assert torch.equal(det.model.state_dict()["fc1.weight"], raw["model"]["fc1.weight"])
    upstream = transforms.Compose([transforms.CenterCrop([32, 32]), transforms.ToTensor()])
    small = photos(1)[0].resize((20, 40))  # smaller than the crop in one direction: zero padding
    for im in [photos(1)[0], small]:
        assert torch.equal(det.preprocess(im), upstream(im))
    assert load_detector("safe", weights=path, base="tiny", image_size=40).preprocess(small).shape == (3, 40, 40)


def test_safe_real_architecture_has_the_papers_parameter_count():
    from afpbench.detectors._resnet import TruncatedResNet

    with torch.device("meta"):
        net = TruncatedResNet((3, 4), 2)
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 2) == 1.44  # "1.44M parameters" (SAFE paper)


# -- DRCT -----------------------------------------------------------------------------------------
def test_drct_keys_follow_contrastive_models(tmp_path_factory):
    path, _ = Z.tiny_file("drct", tmp_path_factory)
    raw = torch.load(path, weights_only=True)
    assert raw["fc.weight"].shape == (2, 16) and raw["model.head.fc.weight"].shape == (16, 32)
    det = Z.make_zoo_timm("drct", tmp_path_factory)
    assert torch.equal(det.model.state_dict()["model.stages.1.downsample.1.weight"], raw["model.stages.1.downsample.1.weight"])


def test_drct_pads_black_and_crops_with_albumentations_offsets(tmp_path_factory):
    from PIL import Image

    det = Z.make_zoo_timm("drct", tmp_path_factory)
    a = np.random.default_rng(0).integers(0, 256, (20, 41, 3), dtype=np.uint8)  # h 20 < 32, w 41 > 32
    x = det.preprocess(Image.fromarray(a))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    black = (0 - mean) / std
    # PadIfNeeded: (32 - 20) // 2 = 6 rows on top, 6 below; CenterCrop: x offset (41 - 32) // 2 = 4.
    expect = (torch.from_numpy(a[:, 4:36]).permute(2, 0, 1).float() / 255 - mean) / std
    assert torch.allclose(x[:, 6:26], expect, atol=1e-6)
    assert torch.allclose(x[:, :6], black.expand(3, 6, 32)) and torch.allclose(x[:, 26:], black.expand(3, 6, 32))


# -- LaDeDa / Tiny-LaDeDa ----------------------------------------------------------------------------
def test_ladeda_image_logit_is_the_mean_patch_logit_and_patches_are_local(tmp_path_factory):
    det = Z.make_zoo_timm("ladeda", tmp_path_factory)
    x = det.collate([det.preprocess(im) for im in photos(2)])
    with torch.no_grad():
        maps = det.patch_logits(x)
        image = det.model(x)[:, 0]
    assert maps.shape == (2, 3, 3)  # 32 px: stride 8, 9x9 receptive field
    assert torch.allclose(maps.mean(dim=(1, 2)), image, atol=1e-5)
    # A change at pixel (20, 3) reaches only the patches whose 10x10 window (9x9 plus the
    # NPR 2x2 block) contains it: patch rows 1-2 and column 0.
    y = x.clone()
    y[0, :, 20, 3] += 5.0
    with torch.no_grad():
        changed = (det.patch_logits(y)[0] != maps[0]).nonzero().tolist()
    assert changed and all(r in (1, 2) and c == 0 for r, c in changed)


def test_tiny_ladeda_matches_the_released_layout_and_scores_patches_alone(tmp_path_factory):
    from afpbench.detectors.ladeda import LaDeDaNet, TinyLaDeDaNet

    # The 21 tensors of upstream's weights/Tiny_LaDeDa/*.pth, as released.
    released = {
        "conv1.weight": (8, 3, 1, 1), "conv2.weight": (8, 8, 3, 3), "layer1.0.conv1.weight": (8, 8, 1, 1), "layer1.0.conv2.weight": (8, 8, 3, 3),
        "fc.weight": (1, 8), "fc.bias": (1,),
        **{f"{bn}.{s}": ((8,) if s != "num_batches_tracked" else ()) for bn in ("bn1", "layer1.0.bn1", "layer1.0.bn2")
           for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")},
    }
    own = {k: tuple(v.shape) for k, v in TinyLaDeDaNet().state_dict().items()}
    assert own == released
    with torch.device("meta"):
        ratio = sum(p.numel() for p in LaDeDaNet().parameters()) / sum(p.numel() for p in TinyLaDeDaNet().parameters())
    assert 9_000 < ratio < 12_000  # "10,000x more parameter-efficient than LaDeDa"
    det = Z.make_zoo_timm("tiny_ladeda", tmp_path_factory)  # 64 px: 7x7 patches of 10x10, stride 8
    x = det.collate([det.preprocess(im) for im in photos(2)])
    maps = det.patch_logits(x)
    assert maps.shape == (2, 7, 7)
    with torch.no_grad():
        alone = det.model(x[1:2, :, 16:26, 40:50])[0, 0]  # patch (2, 5), scored on its own
    assert torch.allclose(maps[1, 2, 5], alone, atol=1e-6)
    assert torch.allclose(det.score(x), torch.sigmoid(maps.mean(dim=(1, 2))))


def test_tiny_ladeda_release_hashes_are_checked_from_the_cache(tmp_path, tmp_path_factory, monkeypatch):
    path, _ = Z.tiny_file("tiny_ladeda", tmp_path_factory)
    cache = tmp_path / "weights"
    cache.mkdir()
    shutil.copy(path, cache / "ForenSynth_Tiny_LaDeDa.pth")
    monkeypatch.setenv("AFPBENCH_WEIGHTS", str(cache))
    with pytest.raises(WeightsError, match="sha256 .* the release's is 4624258c70"):
        load_detector("tiny_ladeda.forensynth")
    assert load_detector("tiny_ladeda.forensynth", weights=cache / "ForenSynth_Tiny_LaDeDa.pth").variant.options["preprocess"] == "NPR"


# -- B-Free ---------------------------------------------------------------------------------------
def test_bfree_real_architecture_matches_the_release_schema():
    import timm

    from afpbench.detectors.bfree import ARCHS

    arch = ARCHS["vit_base_patch14_reg4_dinov2.lvd142m"]
    with torch.device("meta"):
        sd = timm.create_model(arch["timm"], pretrained=False, num_classes=1, **arch["kwargs"]).state_dict()
    # model_epoch_best.pth: 177 tensors, 86,526,721 numbers (pos_embed for a 36x36 grid).
    assert len(sd) == 177 and sum(v.numel() for v in sd.values()) == 86_526_721
    assert sd["pos_embed"].shape == (1, 1296, 768) and sd["reg_token"].shape == (1, 4, 768)


def test_bfree_five_crops_are_upstreams_windows(tmp_path_factory):
    det = Z.make_zoo_timm("bfree", tmp_path_factory)  # patch 4, 8x8 grid: 32-px crops
    model = det.model

    def logit(t):
        with torch.no_grad():
            return model(t[None])[0, 0]

    x = torch.randn(3, 35, 70)  # 8 x 17 patches; the last 3 rows and 2 columns are unused
    from afpbench.detectors.bfree import five_crops

    crops = five_crops(x, 4, 8)
    assert crops.shape == (5, 3, 32, 32)
    # Centre window starts at patch column (17 - 8) // 2 = 4; corners at columns 0 and 9, rows 0.
    for got, (r, c) in zip(crops, [(0, 16), (0, 0), (0, 0), (0, 36), (0, 36)]):
        assert torch.equal(got, x[:, r:r + 32, c:c + 32])
    with torch.no_grad():
        expect = torch.stack([logit(x[:, 0:32, c:c + 32]) for c in (16, 0, 0, 36, 36)]).mean()
        assert torch.allclose(det.score(crops[None].to(det.dtype)), torch.sigmoid(expect)[None], atol=1e-6)
    # Smaller than the grid: tiled, then the top-left 8x8 patches (all five windows equal).
    small = torch.randn(3, 13, 40)  # 3 x 10 patches
    tiled = five_crops(small, 4, 8)
    ref = small[:, :12, :40].repeat(1, 3, 1)[:, :32, :32]
    assert all(torch.equal(c, ref) for c in tiled)
    assert not math.isnan(float(det.score(tiled[None])[0]))


def test_bfree_preprocess_keeps_full_resolution(tmp_path_factory):
    det = Z.make_zoo_timm("bfree", tmp_path_factory)
    im = photos(1)[0]  # 512 x 512: 128 x 128 patches of 4 px
    x = det.preprocess(im)
    assert x.shape == (5, 3, 32, 32)
    from torchvision.transforms import functional as TF

    full = TF.normalize(TF.to_tensor(im), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert torch.equal(x[1], full[:, :32, :32]) and torch.equal(x[3], full[:, -32:, -32:])
    assert torch.equal(x[0], full[:, 240:272, 240:272])  # centre: patch (128 - 8) // 2 = 60


# -- evaluate runs them end to end ---------------------------------------------------------------
def test_evaluate_runs_full_resolution_and_crop_detectors(tmp_path, tmp_path_factory):
    """NPR's mixed-size batches (lists) and B-Free's crop stacks go through evaluate,
    its DataLoader worker included, and every row gets a score in [0, 1]."""
    from afpbench.evaluate import EvalConfig, evaluate
    from afpbench.results import load_results, read_predictions
    from afpbench.testing import write_images

    ims = [im.resize((im.width // 4 * 2, im.height // 4 * 2)) for im in photos(6)]  # mixed sizes
    data = tmp_path / "data"
    write_images(data, "coco", ims, 0)
    write_images(data, "sd2", [fakeify(im) for im in ims], 1)
    dets = [Z.make_zoo_timm("npr", tmp_path_factory), Z.make_zoo_timm("bfree", tmp_path_factory)]
    cfg = EvalConfig(detectors=dets, data=[data], datasets=["coco", "sd2"], profile="v3", out=tmp_path / "out",
                     batch_size=4, bootstrap=50, num_workers=1, progress=False)
    paths = [e.path for e in evaluate(cfg)]
    assert sorted(p.parent.name for p in paths) == ["bfree", "npr"]
    for det in dets:
        folder = tmp_path / "out" / det.name / "predictions"
        coco, sd2 = read_predictions(folder / "coco.parquet"), read_predictions(folder / "sd2.parquet")
        scores = np.concatenate([coco.scores, sd2.scores])
        assert len(scores) == 12 and np.all((scores >= 0) & (scores <= 1))
        # Batched in evaluate (4 mixed sizes, a worker process) = each image alone here.
        alone = [float(det.score(det.collate([det.preprocess(im.convert("RGB"))]))) for im in ims]
        assert np.allclose(coco.scores[np.argsort(coco.ids)], alone, atol=1e-5)
        res = load_results(tmp_path / "out" / det.name)
        assert res.detector.card.noncommercial is True
