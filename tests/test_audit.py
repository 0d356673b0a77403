"""The shortcut audit: header features checked against libjpeg/PIL, shortcuts flagged on sets made to have them."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
from helpers import REPO, run_cli
from PIL import Image

from afpbench.audit import AUDIT_SCHEMA_VERSION, AuditConfig, audit, audit_schema, estimate_jpeg_quality, image_features, load_audit
from afpbench.dataset import DatasetWriter, make_row
from afpbench.errors import AfpbenchError


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _crops(n: int, seed: int) -> list[Image.Image]:
    """Seeded crops of the bundled photos, of varied sizes (a camera-like size spread)."""
    from afpbench.sources.photos import photo_images

    photos = [im for _, im in photo_images()]
    rng = random.Random(seed)
    out = []
    for i in range(n):
        im = photos[i % len(photos)].convert("RGB")
        w, h = rng.randint(96, 200), rng.randint(96, 200)
        w, h = min(w, im.width), min(h, im.height)
        x, y = rng.randint(0, im.width - w), rng.randint(0, im.height - h)
        out.append(im.crop((x, y, x + w, y + h)))
    return out


def _write_set(root: Path, name: str, images: list[Image.Image], label: int, encode) -> None:
    with DatasetWriter(root, name, info={"recipe": {"name": name, "version": 1}}) as w:
        for i, im in enumerate(images):
            data, fmt = encode(i, im)
            w.add(make_row(id=f"{name}/{i:04d}", image=data, label=label, dataset=name, width=im.width, height=im.height, format=fmt), index=i)
    w.finalize()


def _jpeg(qualities):
    return lambda i, im: (_encode(im, "JPEG", quality=qualities[i]), "jpeg")


@pytest.mark.parametrize("quality", [5, 10, 25, 49, 50, 51, 75, 90, 95, 100])
def test_jpeg_quality_is_what_libjpeg_was_asked(quality, photos):
    img = photos[0][1].convert("RGB").resize((64, 48))
    f = image_features(_encode(img, "JPEG", quality=quality))
    assert f.format == "jpeg" and (f.jpeg_quality, f.jpeg_quality_exact) == (quality, True)
    grey = image_features(_encode(img.convert("L"), "JPEG", quality=quality))
    assert (grey.jpeg_quality, grey.jpeg_quality_exact) == (quality, True)


def test_custom_tables_get_the_nearest_quality_not_an_exact_one(photos):
    img = photos[1][1].convert("RGB").resize((64, 64))
    # libjpeg's own q=60 tables (read back through PIL) with one entry nudged: no IJG quality
    # gives them exactly, and q=60 is the nearest.
    with Image.open(io.BytesIO(_encode(img, "JPEG", quality=60))) as ref:
        tables = {k: list(v) for k, v in ref.quantization.items()}
    tables[0][10] += 1
    assert estimate_jpeg_quality(tables) == (60, False)
    f = image_features(_encode(img, "JPEG", qtables=[tables[0], tables[1]]))
    assert (f.jpeg_quality, f.jpeg_quality_exact) == (60, False)


def test_header_features_match_what_was_written(photos):
    img = photos[2][1].convert("RGB").resize((120, 80))
    icc = b"\0" * 128  # PIL stores whatever profile bytes it is given
    exif = Image.Exif()
    exif[0x010F] = "afpbench-test"  # Make
    for subsampling, name in ((0, "4:4:4"), (1, "4:2:2"), (2, "4:2:0")):
        data = _encode(img, "JPEG", quality=80, subsampling=subsampling)
        f = image_features(data)
        assert f.subsampling == name and not f.progressive and not f.exif and not f.icc
    data = _encode(img, "JPEG", quality=80, progressive=True, exif=exif.tobytes(), icc_profile=icc)
    f = image_features(data)
    assert f.progressive and f.exif and f.icc and (f.width, f.height) == (120, 80)
    assert f.bytes == len(data) and f.bits_per_pixel == pytest.approx(len(data) * 8 / (120 * 80))
    assert f.aspect_ratio == pytest.approx(1.5)
    png = image_features(_encode(img, "PNG"))
    assert png.format == "png" and png.jpeg_quality is None and png.qtable_hash is None
    # The table hash tells two qualities apart and two files of one quality alike.
    a, b, c = (image_features(_encode(img, "JPEG", quality=q)).qtable_hash for q in (70, 70, 71))
    assert a == b != c
    bad = image_features(b"not an image at all")
    assert bad.format == "unreadable" and bad.error


@pytest.fixture(scope="module")
def shortcut_data(tmp_path_factory):
    """One real pool and three fake sets, each built to carry (or not) one shortcut."""
    root = tmp_path_factory.mktemp("audit-data")
    n = 48
    rng = random.Random(7)
    real_imgs = _crops(n, seed=1)
    fake_imgs = _crops(n, seed=2)
    q_real = [rng.randint(80, 95) for _ in range(n)]
    q_fake = [rng.randint(80, 95) for _ in range(n)]
    _write_set(root, "cam_real", real_imgs, 0, _jpeg(q_real))
    # Same content and sizes as other crops, only the codec differs: PNG vs JPEG.
    _write_set(root, "gen_png", fake_imgs, 1, lambda i, im: (_encode(im, "PNG"), "png"))
    # The same codec distribution (JPEG q 80-95) and sizes: nothing to find.
    _write_set(root, "gen_same", fake_imgs, 1, _jpeg(q_fake))
    # The same codec, but every fake is a 256x256 square.
    _write_set(root, "gen_big", [im.resize((256, 256)) for im in fake_imgs], 1, _jpeg(q_fake))
    return root


def test_audit_flags_exactly_the_shortcuts_each_set_has(shortcut_data, tmp_path):
    out = tmp_path / "audit"
    report = audit(AuditConfig(data=[shortcut_data], out=out, bootstrap=300))
    assert report.real_pool == ["cam_real"]
    pairs = {p.fake: p for p in report.pairs}
    assert set(pairs) == {"gen_png", "gen_same", "gen_big"}

    png = pairs["gen_png"]
    assert png.shortcuts["format"].flagged and png.shortcuts["format"].value > 0.95
    assert png.shortcuts["jpeg_quality"].flagged and png.shortcuts["all"].flagged
    assert not png.shortcuts["pixel_count"].flagged and not png.shortcuts["aspect_ratio"].flagged
    assert "PNG" in png.summary and "JPEG q≈" in png.summary

    same = pairs["gen_same"]
    assert not same.flagged and same.summary == ""
    assert all(same.shortcuts[k].ci_low < 0.6 for k in same.shortcuts)

    big = pairs["gen_big"]
    assert big.shortcuts["pixel_count"].flagged and big.shortcuts["aspect_ratio"].flagged
    assert not big.shortcuts["format"].flagged
    assert "256²" in big.summary

    # Distributions side by side: the real pool's and each set's encoding.
    assert report.sets["gen_png"].formats == {"png": 48} and report.pool.formats == {"jpeg": 48}
    assert 80 <= report.pool.jpeg_quality.p05 and report.pool.jpeg_quality.p95 <= 95
    assert report.pool.jpeg_quality_exact == 48
    assert report.sets["gen_big"].sizes == {"256x256": 48}

    # Files: the JSON reads back as the model, the Markdown names the flagged pairs, plots are PNGs.
    again = load_audit(out)
    assert again == report
    md = (out / "audit.md").read_text()
    assert "**gen_png**" in md and "**gen_same**" not in md
    for p in report.pairs:
        for rel in p.plots:
            with Image.open(out / rel) as im:
                assert im.format == "PNG" and im.width > 100
    import pyarrow.parquet as pq

    t = pq.read_table(out / "images.parquet")
    assert t.num_rows == 4 * 48 and set(t.column("dataset").to_pylist()) == {"cam_real", "gen_png", "gen_same", "gen_big"}


def test_audit_is_reproducible_and_independent_of_other_sets(shortcut_data, tmp_path):
    a = audit(AuditConfig(data=[shortcut_data], out=tmp_path / "a", bootstrap=200, plots=False))
    b = audit(AuditConfig(data=[shortcut_data], datasets=["gen_png", "cam_real"], out=tmp_path / "b", bootstrap=200, plots=False))
    pa = next(p for p in a.pairs if p.fake == "gen_png")
    pb = next(p for p in b.pairs if p.fake == "gen_png")
    assert pa.shortcuts == pb.shortcuts


def test_schema_is_shipped_and_newer_files_are_refused(tmp_path):
    for folder in (REPO / "afpbench" / "schemas", REPO / "docs" / "schemas"):
        shipped = json.loads((folder / "audit.schema.json").read_text())
        assert shipped == json.loads(json.dumps(audit_schema())), f"{folder}/audit.schema.json is stale"
    assert list(audit_schema()["properties"])[0] == "schema_version"
    (tmp_path / "audit.json").write_text(json.dumps({"schema_version": AUDIT_SCHEMA_VERSION + 1}))
    with pytest.raises(AfpbenchError, match="upgrade afpbench") as exc:
        load_audit(tmp_path)
    assert "\n" not in str(exc.value)
    (tmp_path / "audit.json").write_text(json.dumps({"schema_version": 1, "pairs": "x"}))
    with pytest.raises(AfpbenchError, match="not an afpbench audit"):
        load_audit(tmp_path / "audit.json")


def test_cli_prints_flags_and_refuses_bad_input_in_one_line(shortcut_data, tmp_path):
    res = run_cli("audit", str(shortcut_data), "--datasets", "cam_real,gen_png", "--out", str(tmp_path / "a"), "--bootstrap", "100", "--no-plots")
    assert res.returncode == 0, res.stderr
    assert "FLAG" in res.stdout and "gen_png" in res.stdout and "images/s" in res.stdout
    assert (tmp_path / "a" / "audit.json").is_file()
    res = run_cli("audit", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "b"))
    assert res.returncode == 2 and res.stderr.startswith("error:") and res.stderr.count("\n") == 1
    res = run_cli("audit", str(shortcut_data), "--datasets", "cam_real,gen_png", "--bootstrap", "0")
    assert res.returncode == 2 and "--bootstrap" in res.stderr
