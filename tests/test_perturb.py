"""Robustness perturbations on real photos: parsing, effects, seeding, records."""

from __future__ import annotations

from collections import Counter

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


# -- perturbations on the stored file --------------------------------------------------------
def _file(img: Image.Image, fmt: str, **kw):
    import io

    from afpbench.views import Encoded

    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return Encoded(buf.getvalue(), fmt.lower(), img.width, img.height)


def test_file_after_a_perturbation_describes_the_perturbed_image(photo):
    from afpbench.audit import image_features

    png, jpg = _file(photo, "PNG"), _file(photo, "JPEG", quality=90)
    out = parse_perturbation("jpeg:75").apply_encoded(png, "r")
    f = image_features(out.data)
    assert (out.format, f.jpeg_quality, f.jpeg_quality_exact, out.width, out.height) == ("jpeg", 75, True, 256, 256)
    # A pixel step re-encodes in the current container: PNG stays PNG, JPEG is re-saved at its quality.
    half = parse_perturbation("resize:0.5").apply_encoded(png, "r")
    assert (half.format, half.width, half.height, image_features(half.data).format) == ("png", 128, 128, "png")
    half = parse_perturbation("resize:0.5").apply_encoded(jpg, "r")
    assert (half.format, image_features(half.data).jpeg_quality, half.width) == ("jpeg", 90, 128)
    # The last codec step makes the file; a pixel step after it is saved in that codec.
    assert parse_perturbation("blur:1+webp:60").apply_encoded(png, "r").format == "webp"
    after = parse_perturbation("jpeg:40+blur:1").apply_encoded(png, "r")
    assert after.format == "jpeg" and image_features(after.data).jpeg_quality == 40
    # Same pixels as the image path for a deterministic chain.
    from afpbench.views import decode

    p = parse_perturbation("crop:100+noise:4")
    assert np.array_equal(_arr(decode(p.apply_encoded(png, "row-9"))), _arr(p(photo, "row-9")))


def test_new_single_operations(photo):
    grey = Image.new("RGB", (64, 64), (64, 64, 64))
    assert _arr(parse_perturbation("gamma:2")(grey, "a")).mean() == pytest.approx(255 * (64 / 255) ** 0.5, abs=1)
    assert parse_perturbation("cropf:0.5")(photo, "a").size == (128, 128)
    j = parse_perturbation("jitter:0.3")
    assert not np.array_equal(_arr(j(photo, "a")), _arr(photo)) and np.array_equal(_arr(j(photo, "a")), _arr(j(photo, "a")))
    def detail(img):
        a = _arr(img.convert("L"))
        return np.abs(np.diff(a, axis=1)).mean()
    assert detail(parse_perturbation("sharpen:200")(photo, "a")) > detail(photo)
    with pytest.raises(AfpbenchError, match="cannot be chained"):
        parse_perturbation("chain+jpeg:50")


def test_chain_suite_draws_per_row_and_records_the_draw(photo):
    from afpbench.perturb import CHAIN_FAMILIES, draw_chain

    chain = parse_perturbation("chain", seed=3)
    assert chain.name == "chain" and chain.slug == "chain-seed3"
    draws = {f"set/{i:04d}": chain.ops_for(f"set/{i:04d}") for i in range(300)}
    lengths = Counter(len(ops) for ops in draws.values())
    assert set(lengths) == {1, 2, 3, 4, 5}
    assert {o.kind for ops in draws.values() for o in ops} == set(CHAIN_FAMILIES)
    for rid, ops in draws.items():
        assert len({o.kind for o in ops}) == len(ops)
        for o in ops:
            lo, hi = CHAIN_FAMILIES[o.kind]
            assert lo <= o.param <= hi
        # The recorded condition is itself a valid perturbation with the same steps.
        assert parse_perturbation(chain.condition(rid)).ops == ops
    assert draw_chain(3, "set/0001") == chain.ops_for("set/0001") != draw_chain(4, "set/0001")
    # Same file for a row whatever the order rows arrive in.
    png = _file(photo.resize((96, 96)), "PNG")
    ids = list(draws)[:6]
    fwd = [chain.apply_encoded(png, r).data for r in ids]
    assert fwd == [chain.apply_encoded(png, r).data for r in reversed(ids)][::-1]
    rec = chain.record()
    assert rec["name"] == "chain" and rec["families"]["jpeg"] == [30, 95] and rec["length"] == [1, 5]
