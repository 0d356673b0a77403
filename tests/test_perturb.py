"""Robustness perturbations on real photos: parsing, effects, seeding, records."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from afpbench.errors import AfpbenchError, UnknownNameError
from afpbench.perturb import SUITES, parse_perturbation, perturbation_from_record


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(skdata.astronaut()).resize((256, 256))


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64)


def _psnr(a: Image.Image, b: Image.Image) -> float:
    mse = np.mean((_arr(a) - _arr(b)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def test_parse_canonical_defaults_and_suites():
    assert parse_perturbation(None) is None and parse_perturbation("none") is None and parse_perturbation("clean") is None
    assert parse_perturbation("jpeg").spec == "jpeg:75"
    assert parse_perturbation("JPEG:50").spec == "jpeg:50"
    assert parse_perturbation("blur:1.50").spec == "blur:1.5"
    chain = parse_perturbation("resize:0.5+jpeg:30")
    assert [o.kind for o in chain.ops] == ["resize", "jpeg"] and chain.slug == "resize-0.5+jpeg-30"
    social = parse_perturbation("social")
    assert social.spec == SUITES["social"] and social.name == "social" and social.slug == "social"
    assert parse_perturbation("noise:8", seed=3).slug == "noise-8-seed3"


def test_parse_errors_name_the_fix():
    with pytest.raises(UnknownNameError, match="Did you mean: jpeg"):
        parse_perturbation("jepg:50")
    with pytest.raises(AfpbenchError, match="out of range.*1..100"):
        parse_perturbation("jpeg:0")
    with pytest.raises(AfpbenchError, match="integer"):
        parse_perturbation("crop:10.5")
    with pytest.raises(AfpbenchError, match="non-numeric"):
        parse_perturbation("blur:abc")
    with pytest.raises(AfpbenchError, match="cannot be chained"):
        parse_perturbation("social+blur:1")


def test_jpeg_quality_orders_distortion(photo):
    low, high = parse_perturbation("jpeg:10"), parse_perturbation("jpeg:95")
    assert _psnr(photo, low(photo, "r0")) < _psnr(photo, high(photo, "r0")) - 5
    assert low(photo, "r0").size == photo.size and low(photo, "r0").mode == "RGB"


def test_blur_removes_high_frequencies(photo):
    def detail(img):
        a = _arr(img.convert("L"))
        return np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean()

    b1, b3 = parse_perturbation("blur:1")(photo, "r"), parse_perturbation("blur:3")(photo, "r")
    assert detail(b3) < detail(b1) < detail(photo)


def test_resize_and_crop_sizes(photo):
    assert parse_perturbation("resize:0.5")(photo, "r").size == (128, 128)
    assert parse_perturbation("resize:1.5")(photo, "r").size == (384, 384)
    crop = parse_perturbation("crop:100")
    assert crop(photo, "r").size == (100, 100)
    # Larger than the image: clipped, not padded.
    assert parse_perturbation("crop:1000")(photo, "r").size == (256, 256)
    # Crop position: same for the same row id, different across ids (seeded per row).
    assert np.array_equal(_arr(crop(photo, "row-1")), _arr(crop(photo, "row-1")))
    positions = {_arr(crop(photo, f"row-{i}")).tobytes() for i in range(8)}
    assert len(positions) > 4


def test_noise_level_and_seeding(photo):
    grey = Image.new("RGB", (128, 128), (128, 128, 128))
    noisy = parse_perturbation("noise:8")(grey, "a")
    assert np.std(_arr(noisy) - 128) == pytest.approx(8, rel=0.05)
    assert np.array_equal(_arr(noisy), _arr(parse_perturbation("noise:8")(grey, "a")))
    assert not np.array_equal(_arr(noisy), _arr(parse_perturbation("noise:8")(grey, "b")))
    assert not np.array_equal(_arr(noisy), _arr(parse_perturbation("noise:8", seed=1)(grey, "a")))


def test_result_independent_of_order_and_process(photo):
    # Per-image seeds come from (suite seed, row id): the order images arrive in (batch,
    # worker, process) cannot change them.
    p = parse_perturbation("crop:128+noise:4")
    ids = [f"set/{i:05d}" for i in range(6)]
    forward = [_arr(p(photo, i)) for i in ids]
    backward = [_arr(p(photo, i)) for i in reversed(ids)][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(forward, backward))


def test_social_chain_and_record_roundtrip(photo):
    social = parse_perturbation("social", seed=2)
    out = social(photo, "x")
    assert out.size == (128, 128)
    rec = social.record()
    assert rec == {"name": "social", "spec": "resize:0.5+jpeg:75", "seed": 2, "ops": [{"kind": "resize", "param": 0.5}, {"kind": "jpeg", "param": 75.0}], "extension": True}
    again = perturbation_from_record(rec)
    assert again == social
    assert np.array_equal(_arr(again(photo, "x")), _arr(out))
