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


# -- views in evaluate: the shortcut rows fall to chance once the shortcut is matched ------------
def _crops(photos, n: int, seed: int, odd: bool = True) -> list[Image.Image]:
    """Seeded crops of the bundled photos; odd sides (never a multiple of 64) when ``odd``."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        im = photos[i % len(photos)][1].convert("RGB")
        w, h = rng.randrange(81, 161, 2), rng.randrange(81, 161, 2)
        w, h = min(w, im.width - 1), min(h, im.height - 1)
        x, y = rng.randint(0, im.width - w), rng.randint(0, im.height - h)
        out.append(im.crop((x, y, x + w, y + h)))
    return out


def _write(root, name, images, label, fmt, quality=None):
    from afpbench.dataset import DatasetWriter, make_row

    with DatasetWriter(root, name, info={"recipe": {"name": name, "version": 1}}) as w:
        for i, im in enumerate(images):
            kw = {"quality": quality[i]} if quality else {}
            enc = _enc(im, fmt, **kw)
            w.add(make_row(id=f"{name}/{i:03d}", image=enc.data, label=label, dataset=name, width=im.width, height=im.height, format=enc.format), index=i)
    w.finalize()


@pytest.fixture(scope="module")
def shortcut_sets(tmp_path_factory, photos):
    """Real JPEGs and two fake sets made of the very same pictures: `codec_fake` differs only
    by its codec (PNG), `size_fake` only by its size (every image 256x256, JPEG like the reals)."""
    import random

    root = tmp_path_factory.mktemp("views-data")
    imgs = _crops(photos, 32, seed=3)
    q = [random.Random(i).choice([75, 85, 95]) for i in range(len(imgs))]
    _write(root, "cam_real", imgs, 0, "JPEG", q)
    _write(root, "codec_fake", imgs, 1, "PNG")
    _write(root, "size_fake", [im.resize((256, 256)) for im in imgs], 1, "JPEG", q)
    return root


def _evaluate(root, out, detectors, views, **kw):
    from afpbench.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(detectors=detectors, data=[root], datasets=["cam_real", "codec_fake", "size_fake"], views=views, out=out,
                     real_pool=["cam_real"], bootstrap=200, progress=False, **{"batch_size": 8, "num_workers": 0, **kw})
    return {e.path.parent.name: e.results for e in evaluate(cfg)}


def _auc(results, fake):
    return next(p for p in results.metrics.pairs if p.fake == fake).auc


def test_format_and_size_rows_fall_to_chance_under_the_matched_views(shortcut_sets, tmp_path):
    res = _evaluate(shortcut_sets, tmp_path / "r", ["format", "size"], ["native", "codec-matched", "size-matched"])
    assert set(res) == {"format", "size", "format@codec-matched", "size@codec-matched", "format@size-matched", "size@size-matched"}
    # Native: format reads the codec, size reads the size; each pair is given away by its shortcut.
    assert _auc(res["format"], "codec_fake").value == 1.0
    assert _auc(res["size"], "size_fake").value == 1.0
    # Matched: the very same shortcut rows fall to chance on the pair whose only difference it was.
    for name, fake in (("format@codec-matched", "codec_fake"), ("size@size-matched", "size_fake")):
        auc = _auc(res[name], fake)
        assert auc.ci_low <= 0.5 <= auc.ci_high and abs(auc.value - 0.5) < 0.1, (name, auc)
    # A view only harmonises its own shortcut: the codec pair still differs in codec under size-matched.
    assert _auc(res["format@size-matched"], "codec_fake").value == 1.0
    # The view is recorded, with the pool it drew from (its sets and their fingerprints).
    v = res["format@codec-matched"].view
    assert v.name == "codec-matched" and v.rows == "fakes" and v.pool["real_pool"] == ["cam_real"]
    assert v.pool["fingerprints"]["cam_real"] == res["format"].datasets[0].fingerprint
    assert set(v.pool["jpeg_qualities"]) == {75, 85, 95} and res["format"].view is None


def test_matched_draws_do_not_depend_on_batch_or_worker(shortcut_sets, tmp_path):
    from afpbench.results import read_predictions

    a = _evaluate(shortcut_sets, tmp_path / "a", ["format"], ["codec-matched"], batch_size=3, num_workers=0)
    _evaluate(shortcut_sets, tmp_path / "b", ["format"], ["codec-matched"], batch_size=16, num_workers=1)
    for d in a["format@codec-matched"].datasets:
        pa = read_predictions(tmp_path / "a" / "format@codec-matched" / d.predictions.path)
        pb = read_predictions(tmp_path / "b" / "format@codec-matched" / d.predictions.path)
        assert pa.ids == pb.ids and np.array_equal(pa.scores, pb.scores)
    # A row-level detector sees the rewritten file: the fakes' format scores now vary with
    # their drawn quality's bits per pixel, not with PNG vs JPEG.
    native = _evaluate(shortcut_sets, tmp_path / "n", ["format"], ["native"])
    p_native = read_predictions(tmp_path / "n" / "format" / "predictions" / "codec_fake.parquet")
    p_view = read_predictions(tmp_path / "a" / "format@codec-matched" / "predictions" / "codec_fake.parquet")
    assert p_native.scores.min() > p_view.scores.max()
    assert native["format"].view is None


def test_crop_view_lists_what_it_leaves_out(shortcut_sets, tmp_path):
    from afpbench.leaderboard import build_leaderboard, load_checked
    from afpbench.results import read_predictions

    res = _evaluate(shortcut_sets, tmp_path / "c", ["size"], ["crop:128"])["size@crop-128"]
    for d in res.datasets:
        p = read_predictions(tmp_path / "c" / "size@crop-128" / d.predictions.path)
        assert len(p.ids) == d.rows_evaluated and d.rows_evaluated + len(d.refused or []) == d.rows_total
        assert not set(p.ids) & set(d.refused or [])
    real = next(d for d in res.datasets if d.name == "cam_real")
    assert real.refused  # some 81-159 px crops are smaller than 128
    # Every crop is exactly 128x128: the size row cannot tell the sets apart any more.
    assert _auc(res, "size_fake").value == 0.5
    # The leaderboard accepts the rows a view refused (they are listed, not missing).
    board = build_leaderboard(load_checked([tmp_path / "c" / "size@crop-128" / "results.json"]), profile=None, reported=False)
    assert board.entries and board.entries[0].view.name == "crop:128"


def test_chain_suite_records_each_image_s_draw(shortcut_sets, tmp_path):
    from afpbench.perturb import parse_perturbation
    from afpbench.results import read_predictions

    res = _evaluate(shortcut_sets, tmp_path / "ch", ["format"], ["native"], perturb=[None, "chain"], perturb_seed=5)
    chain = res["format@chain-seed5"]
    assert chain.perturbation.name == "chain" and chain.perturbation.families["jpeg"] == [30, 95]
    suite = parse_perturbation("chain", seed=5)
    p = read_predictions(tmp_path / "ch" / "format@chain-seed5" / "predictions" / "codec_fake.parquet")
    assert p.conditions == [suite.condition(rid) for rid in p.ids] and len(set(p.conditions)) > 5
    # Clean rows carry no per-image condition; the chain moves the format row off its perfect score.
    assert read_predictions(tmp_path / "ch" / "format" / "predictions" / "codec_fake.parquet").conditions is None
    assert _auc(chain, "codec_fake").value < _auc(res["format"], "codec_fake").value == 1.0


def test_cli_views(shortcut_sets, tmp_path):
    from helpers import run_cli

    res = run_cli("evaluate", "--detector", "format", "--data", str(shortcut_sets), "--datasets", "cam_real,codec_fake", "--view", "native",
                  "--view", "codec-matched", "--out", str(tmp_path / "r"), "--bootstrap", "50", "--no-progress", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "r" / "format@codec-matched" / "results.json").is_file()
    res = run_cli("evaluate", "--detector", "format", "--data", str(shortcut_sets), "--view", "codec-match", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "codec-matched" in res.stderr and res.stderr.count("\n") == 1
