"""The Detector contract, tested over the whole registry, plus each baseline's weights loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from _tiny import (
    TINY,
    hf_to_torchvision,
    make_detector,
    one_thread,
    photo_rows,
    photos,
    tiny_clip,
    tiny_instructblip,
    tiny_resnet,
    torchvision_resnet50_keys,
    write_cnnspot_checkpoint,
)

from afpbench.cards import DetectorCard
from afpbench.detectors import BUNDLED, load_detector
from afpbench.errors import AfpbenchError, UnknownNameError, WeightsError
from afpbench.registry import DETECTORS

pytest_plugins = ["pytester"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


# Weights lookups see only what a test puts there (conftest.no_weight_cache).
pytestmark = pytest.mark.usefixtures("no_weight_cache")


def test_registering_detectors_imports_no_torch():
    code = "import sys, afpbench.detectors as d; from afpbench.registry import DETECTORS; n = DETECTORS.names(); assert 'torch' not in sys.modules, 'torch imported'; print(','.join(n))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip().split(",")
    assert set(BUNDLED) <= set(out)


@pytest.mark.parametrize("name", DETECTORS.names())
def test_every_detector_scores_photos(name, tmp_path_factory):
    det = make_detector(name, tmp_path_factory)
    images = photos(8)
    rows = photo_rows(images)
    items = [det.preprocess(im, row) for im, row in zip(images, rows)]
    assert all(isinstance(x, torch.Tensor) and x.is_floating_point() for x in items)
    batch = det.collate(items)
    s8 = det.score(batch)
    assert s8.dtype == torch.float32 and s8.device.type == "cpu" and s8.shape == (8,)
    assert torch.all((s8 >= 0) & (s8 <= 1))
    assert torch.equal(s8, det.score(batch)), "scores must be deterministic"
    s1 = torch.cat([det.score(det.collate([x])) for x in items])
    assert torch.allclose(s1, s8, atol=1e-5), f"batch size changes scores: {s1} vs {s8}"
    card = det.card
    assert isinstance(card, DetectorCard) and card.name == name.split(".")[0]
    assert det.full_name in card.variants
    assert 0.0 <= det.threshold <= 1.0 and det.threshold_policy
    json.dumps(det.arguments())  # a results file must be able to record it
    if name not in ("constant", "random", "format", "size"):
        assert s8.std() > 0, "a learned detector should not give every photo the same score"


def test_unknown_names_suggest_the_nearest():
    with pytest.raises(UnknownNameError, match="antifakeprompt"):
        load_detector("antifakeprmpt")
    with pytest.raises(UnknownNameError, match="antifakeprompt.lama"):
        load_detector("antifakeprompt.lamma")


def test_missing_released_weights_say_where_to_get_them(tmp_path_factory):
    with pytest.raises(WeightsError) as err:
        load_detector("antifakeprompt.lama", base=str(tiny_instructblip(tmp_path_factory)))
    msg = str(err.value)
    assert "COCO_150k_SD3_SD2IP_lama.pth" in msg and "--weights" in msg and "AFPBENCH_WEIGHTS" in msg and "\n" not in msg
    with pytest.raises(WeightsError, match="do not exist"):
        load_detector("univfd", weights="/nonexistent/fc_weights.pth")
    with pytest.raises(WeightsError, match="afpbench train"):
        load_detector("efficientnet")


def test_weights_are_found_in_the_cache_dir(tmp_path, tmp_path_factory, monkeypatch):
    cache = tmp_path / "weights"
    cache.mkdir()
    monkeypatch.setenv("AFPBENCH_WEIGHTS", str(cache))
    torch.save({"weight": torch.ones(1, 16), "bias": torch.zeros(1)}, cache / "fc_weights.pth")
    det = load_detector("univfd", base=str(tiny_clip(tmp_path_factory)))
    assert det.weights_path == cache / "fc_weights.pth" and len(det.weights_sha256) == 64


def test_bad_device_and_dtype_are_one_line_errors():
    with pytest.raises(AfpbenchError, match="float16 is not supported on CPU"):
        load_detector("constant", dtype="float16")
    with pytest.raises(AfpbenchError, match="Unknown dtype"):
        load_detector("constant", dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(AfpbenchError, match="no CUDA device"):
            load_detector("constant", device="cuda")


def test_unloadable_base_is_a_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="--base"):
        load_detector("instructblip", base=str(tmp_path / "no-such-model"))


# -- cnnspot -------------------------------------------------------------------------------------
def test_cnnspot_key_mapping_covers_torchvision_resnet50():
    from transformers import ResNetForImageClassification

    from afpbench.detectors.cnnspot import resnet50_config, torchvision_to_hf

    model = ResNetForImageClassification(resnet50_config())
    hf = model.state_dict()
    tv = torchvision_resnet50_keys()
    mapped = [torchvision_to_hf(k) for k in tv]
    assert None not in mapped and len(set(mapped)) == len(tv)
    assert set(mapped) == set(hf), set(mapped) ^ set(hf)
    assert sum(p.numel() for p in model.parameters()) == 23_510_081  # torchvision resnet50 with a 1-output fc
    assert all(torchvision_to_hf(hf_to_torchvision(k)) == k for k in hf)


def test_cnnspot_loads_the_release_format_exactly(tmp_path, tmp_path_factory):
    res = tiny_resnet(tmp_path_factory)
    path = write_cnnspot_checkpoint(tmp_path / "blur_jpg_prob0.5.pth", res, seed=1)
    det = load_detector("cnnspot.blur_jpg_prob0.5", weights=path, base=str(res), image_size=TINY)
    raw = torch.load(path, weights_only=True)["model"]
    loaded = det.model.state_dict()
    assert torch.equal(loaded["resnet.encoder.stages.0.layers.0.layer.1.normalization.running_var"], raw["layer1.0.bn2.running_var"])
    assert torch.equal(loaded["classifier.1.weight"], raw["fc.weight"])
    assert det.card.weights.filename == "blur_jpg_prob0.5.pth" and det.variant.options["aug_prob"] == 0.5


def test_cnnspot_refuses_bad_files(tmp_path, tmp_path_factory):
    res = tiny_resnet(tmp_path_factory)
    good = write_cnnspot_checkpoint(tmp_path / "good.pth", res)
    data = good.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="trunc.pth"):
        load_detector("cnnspot", weights=tmp_path / "trunc.pth", base=str(res), image_size=TINY)
    sd = torch.load(good, weights_only=True)["model"]
    sd["extra_head.weight"] = torch.zeros(1)
    torch.save({"model": sd}, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match="unexpected extra_head.weight"):
        load_detector("cnnspot", weights=tmp_path / "extra.pth", base=str(res), image_size=TINY)
    # The tiny file into the real ResNet-50 architecture: every shape differs.
    with pytest.raises(WeightsError, match="good.pth does not match the ResNet of cnnspot"):
        load_detector("cnnspot", weights=good, image_size=TINY)


# -- univfd ---------------------------------------------------------------------------------------
def test_univfd_probe_shapes_are_checked(tmp_path, tmp_path_factory):
    clip = str(tiny_clip(tmp_path_factory))
    torch.save({"weight": torch.ones(1, 768), "bias": torch.zeros(1)}, tmp_path / "fc.pth")
    with pytest.raises(WeightsError, match=r"shape mismatch weight \(1, 768\) != \(1, 16\)"):
        load_detector("univfd", weights=tmp_path / "fc.pth", base=clip)
    torch.save({"fc.weight": torch.ones(1, 16), "fc.bias": torch.zeros(1)}, tmp_path / "prefixed.pth")
    with pytest.raises(WeightsError, match="missing weight, bias"):
        load_detector("univfd", weights=tmp_path / "prefixed.pth", base=clip)
    # The probe is applied to the projected CLIP embedding.
    w, b = torch.randn(1, 16), torch.randn(1)
    torch.save({"weight": w, "bias": b}, tmp_path / "ok.pth")
    det = load_detector("univfd", weights=tmp_path / "ok.pth", base=clip)
    x = det.collate([det.preprocess(im) for im in photos(3)])
    with torch.no_grad():
        expect = torch.sigmoid(det.clip(pixel_values=x).image_embeds @ w.T + b)[:, 0]
    assert torch.allclose(det.score(x), expect, atol=1e-6)


# -- efficientnet ----------------------------------------------------------------------------------
def test_efficientnet_starts_from_the_real_imagenet_weights():
    from afpbench.detectors.efficientnet import imagenet_weights

    det = load_detector("efficientnet", image_size=TINY, train_init=True)
    ref = torch.load(imagenet_weights(), map_location="cpu", weights_only=True)
    own = det.model.state_dict()
    assert torch.equal(own["_conv_stem.weight"], ref["_conv_stem.weight"])
    assert torch.equal(own["_blocks.5._depthwise_conv.weight"], ref["_blocks.5._depthwise_conv.weight"])
    assert own["_fc.weight"].shape == (1, 1280)


# -- sanity detectors -------------------------------------------------------------------------------
def test_constant_tags():
    x = torch.zeros(3, 1)
    assert load_detector("constant.real").score(x).tolist() == [0.0] * 3
    assert load_detector("constant.fake").score(x).tolist() == [1.0] * 3
    assert load_detector("constant").score(x).tolist() == [1.0] * 3


def test_random_is_content_addressed_and_seeded():
    det = load_detector("random")
    a, b = photos(2)
    s_ab = det.score(det.collate([det.preprocess(a), det.preprocess(b)]))
    s_ba = det.score(det.collate([det.preprocess(b), det.preprocess(a)]))
    assert s_ab.tolist() == s_ba.flip(0).tolist()
    other = load_detector("random.1")
    assert other.score(other.collate([other.preprocess(a)])).item() != s_ab[0].item()
    many = load_detector("random")
    s = many.score(many.collate([many.preprocess(im.rotate(k)) for k, im in enumerate(photos(64))])).numpy()
    assert 0.3 < s.mean() < 0.7 and s.std() > 0.15  # roughly uniform
    with pytest.raises(AfpbenchError, match="seed"):
        load_detector("random.abc")


def test_format_reads_the_file_not_the_pixels():
    det = load_detector("format")
    im = photos(1)[0]
    png_square = det.preprocess(im, {"format": "png", "width": 512, "height": 512, "bytes": 400_000})
    jpeg_camera = det.preprocess(im, {"format": "jpeg", "width": 640, "height": 480, "bytes": 60_000})
    s = det.score(torch.stack([png_square, jpeg_camera]))
    assert s[0] > 0.9 and s[1] < 0.1
    with pytest.raises(AfpbenchError, match="row"):
        det.preprocess(im.copy())  # a bare image has no file format


# A third-party package's detectors, installed through the entry-point group: one that
# honours the contract and one whose scores depend on the batch they come in.
PLUGIN_SOURCE = '''
import numpy as np
import torch

from afpbench.cards import Variant
from afpbench.detectors.base import Detector


class MeanGrey(Detector):
    name = "plugin_mean"
    variants = {None: Variant(training_data="none")}

    def preprocess(self, image, row=None):
        return torch.tensor([float(np.asarray(image.convert("L")).mean()) / 255.0])

    def forward_scores(self, batch):
        return batch[:, 0]


class BatchRelative(MeanGrey):
    name = "plugin_batchy"

    def forward_scores(self, batch):
        return torch.sigmoid(batch[:, 0] - batch[:, 0].mean())
'''


def test_registry_test_covers_plugins_too(pytester, monkeypatch):
    """The registry-parametrized contract test collects an installed plugin and fails a bad one."""
    site = pytester.mkdir("site")
    (site / "afpbench_plugin_example.py").write_text(PLUGIN_SOURCE)
    dist = site / "afpbench_plugin_example-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: afpbench-plugin-example\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[afpbench.detectors]\nplugin_mean = afpbench_plugin_example:MeanGrey\nplugin_batchy = afpbench_plugin_example:BatchRelative\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p))
    here = os.path.abspath(__file__)
    result = pytester.runpytest_subprocess(here, "-v", "-p", "no:cacheprovider", "-k", "test_every_detector_scores_photos and plugin_")
    result.stdout.fnmatch_lines([
        "*test_every_detector_scores_photos?plugin_batchy? FAILED*",
        "*test_every_detector_scores_photos?plugin_mean? PASSED*",
    ])
    result.stdout.fnmatch_lines(["*batch size changes scores*"])
    result.assert_outcomes(passed=1, failed=1)


def test_bundled_declarations_agree_with_the_classes():
    """What BUNDLED says without importing a detector (tags, training, weights, licence) is what its class says."""
    from afpbench.detectors import detector_class, trainable_names
    from afpbench.detectors.base import Detector, training_kind

    for name, entry in BUNDLED.items():
        cls = detector_class(name)
        assert issubclass(cls, Detector) and cls.name == name and f"{cls.__module__}:{cls.__qualname__}" == entry.target, name
        assert entry.tags == tuple(t or "" for t in cls.variants), name
        assert entry.training == training_kind(cls), name
        assert entry.needs_weights == cls.needs_weights, name
        licensed = {t or "" for t, v in cls.variants.items() if (cls.noncommercial if v.noncommercial is None else v.noncommercial)}
        assert {t for t in entry.tags if entry.is_noncommercial(t)} == licensed, name
    assert set(trainable_names()) == {n for n in BUNDLED if training_kind(detector_class(n)) and n != "test_toy"}
    # A detector that mixes in no training contract has no training method to call by mistake.
    constant = load_detector("constant")
    assert not any(hasattr(constant, m) for m in ("trainable_parameters", "training_loss", "fit", "save", "trainable_state"))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("AFPBENCH_REAL_CLIP"), reason="set AFPBENCH_REAL_CLIP to a local openai/clip-vit-large-patch14 folder")
def test_univfd_real_clip_has_768_features(tmp_path):
    torch.save({"weight": torch.zeros(1, 768), "bias": torch.zeros(1)}, tmp_path / "fc_weights.pth")
    det = load_detector("univfd", weights=tmp_path / "fc_weights.pth", base=os.environ["AFPBENCH_REAL_CLIP"])
    assert det.probe.in_features == 768 and det.image_size == 224
    assert np.allclose(det.score(det.collate([det.preprocess(im) for im in photos(2)])).numpy(), 0.5)
