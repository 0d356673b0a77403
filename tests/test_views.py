"""Views act on the stored bytes: codec and size harmonisation checked against what PIL/libjpeg wrote."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from afpbench.audit import image_features
from afpbench.errors import AfpbenchError, UnknownNameError
from afpbench.views import Encoded, PoolStats, ViewRefusal, parse_view, parse_views


def _enc(img: Image.Image, fmt: str, **kw) -> Encoded:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return Encoded(buf.getvalue(), fmt.lower(), img.width, img.height)


@pytest.fixture(scope="module")
def photo(photos):
    return photos[0][1].convert("RGB").resize((160, 120))


@pytest.fixture(scope="module")
def pool(photos):
    """A real pool of JPEGs: 3/4 at q=70 4:2:0 in 4:3 landscape, 1/4 at q=92 4:4:4 in portrait."""
    blobs = []
    for i in range(40):
        im = photos[i % 5][1].convert("RGB")
        if i % 4:
            blobs.append(_enc(im.resize((200, 150)), "JPEG", quality=70, subsampling=2).data)
        else:
            blobs.append(_enc(im.resize((150, 200)), "JPEG", quality=92, subsampling=0).data)
    return PoolStats.from_bytes(["cam"], blobs)


def test_parsing_names_and_errors():
    assert [v.name for v in parse_views(["native", "jpeg:90", "codec-matched", "size-matched", "crop:64"])] == ["native", "jpeg:90", "codec-matched", "size-matched", "crop:64"]
    assert parse_view(None).native and parse_view("Codec-Matched").matched and parse_view("jpeg:90", seed=2).slug == "jpeg-90-seed2"
    with pytest.raises(UnknownNameError, match="codec-matched"):
        parse_view("codec-match")
    with pytest.raises(AfpbenchError, match="1..100"):
        parse_view("jpeg:0")
    with pytest.raises(AfpbenchError, match="integer"):
        parse_view("crop:abc")
    with pytest.raises(AfpbenchError, match="twice"):
        parse_views(["native", "native"])


def test_native_returns_the_stored_file_and_jpeg_reencodes_both_classes(photo):
    png = _enc(photo, "PNG")
    assert parse_view("native").apply(png, 1, "r") is png
    for label in (0, 1):
        out = parse_view("jpeg:83").apply(png, label, "r")
        f = image_features(out.data)
        assert (out.format, f.format, f.jpeg_quality, f.jpeg_quality_exact) == ("jpeg", "jpeg", 83, True)
        assert (out.width, out.height) == (160, 120) and out.nbytes == len(out.data)
        assert out.row_fields()["bytes"] == out.nbytes and out.row_fields()["format"] == "jpeg"


def test_codec_matched_draws_the_pool_codecs_per_row_and_leaves_reals(photo, pool):
    view = parse_view("codec-matched")
    view.pool = pool
    png = _enc(photo, "PNG")
    real = _enc(photo, "JPEG", quality=50)
    assert view.apply(real, 0, "real-1") is real
    drawn = []
    for i in range(120):
        out = view.apply(png, 1, f"fake-{i}")
        f = image_features(out.data)
        assert out.format == f.format == "jpeg" and f.jpeg_quality_exact
        drawn.append((f.jpeg_quality, f.subsampling))
        assert (out.width, out.height) == (160, 120)
    counts = Counter(drawn)
    assert set(counts) == {(70, "4:2:0"), (92, "4:4:4")}
    assert 0.6 < counts[(70, "4:2:0")] / 120 < 0.9  # the pool's 3/4
    # Seeded per row: the same row gets the same file in any order; another seed draws anew.
    again = [view.apply(png, 1, f"fake-{i}").data for i in reversed(range(10))][::-1]
    assert again == [view.apply(png, 1, f"fake-{i}").data for i in range(10)]
    other = parse_view("codec-matched", seed=5)
    other.pool = pool
    assert [other.apply(png, 1, f"fake-{i}").data for i in range(20)] != [view.apply(png, 1, f"fake-{i}").data for i in range(20)]


def test_size_matched_takes_the_pool_sizes_without_stretching(photo, pool):
    view = parse_view("size-matched")
    view.pool = pool
    big = _enc(photo.resize((512, 512)), "PNG")
    sizes = Counter()
    for i in range(80):
        out = view.apply(big, 1, f"f{i}")
        assert out.format == "png" and image_features(out.data).format == "png"
        with Image.open(io.BytesIO(out.data)) as im:
            assert im.size == (out.width, out.height)
        sizes[(out.width, out.height)] += 1
    # The fakes' sizes follow the pool's (3/4 landscape 200x150, 1/4 portrait 150x200).
    assert set(sizes) == {(200, 150), (150, 200)} and 0.6 < sizes[(200, 150)] / 80 < 0.9
    # No stretching: a square of stripes keeps square cells after cover + crop.
    checker = Image.fromarray((np.indices((512, 512)).sum(0) // 64 % 2 * 255).astype(np.uint8)).convert("RGB")
    out = view.apply(_enc(checker, "PNG"), 1, "f0")
    with Image.open(io.BytesIO(out.data)) as im:
        row = np.asarray(im.convert("L"))[out.height // 2] > 127
        col = np.asarray(im.convert("L"))[:, out.width // 2] > 127
    runs = lambda v: np.diff(np.flatnonzero(np.diff(v.astype(int))))  # noqa: E731
    assert abs(np.median(runs(row)) - np.median(runs(col))) <= 1
    # A JPEG fake is re-saved at its own quality (one more generation, same codec).
    jpg = _enc(photo.resize((400, 400)), "JPEG", quality=88)
    out = view.apply(jpg, 1, "j")
    assert image_features(out.data).jpeg_quality == 88 and out.format == "jpeg"
    assert view.apply(big, 0, "real") is big


def test_crop_is_exact_pixels_and_refuses_small_images(photo):
    png = _enc(photo, "PNG")
    out = parse_view("crop:64").apply(png, 0, "r")
    assert (out.width, out.height, out.format) == (64, 64, "png")
    with Image.open(io.BytesIO(out.data)) as im:
        ref = photo.crop((48, 28, 112, 92))
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(ref))
    with pytest.raises(ViewRefusal, match="smaller"):
        parse_view("crop:200").apply(png, 1, "r")


def test_matched_views_need_a_pool(photo):
    with pytest.raises(AfpbenchError, match="real pool"):
        parse_view("codec-matched").apply(_enc(photo, "PNG"), 1, "r")
    with pytest.raises(AfpbenchError, match="no readable image"):
        PoolStats.from_bytes(["cam"], [b"junk"])
