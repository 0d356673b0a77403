"""The gallery page: seeded thumbnails with provenance, fakes beside the real pool, checked in a real browser."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from helpers import run_cli
from PIL import Image

from afpbench.dataset import sample_rows
from afpbench.gallery import GalleryConfig, build_gallery
from afpbench.testing import write_images


@pytest.fixture(scope="module")
def data(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("gallery-data")
    imgs = [im.convert("RGB").resize((96, 72)) for _, im in photos]
    write_images(root, "cam_real", imgs, 0, image_format="jpeg")
    write_images(root, "gen_fake", [im.rotate(90, expand=True) for im in imgs], 1, generator="stand-in/sd", prompts=[f"a <b>photo</b> {i} & more" for i in range(len(imgs))])
    return root


def test_sample_is_seeded_and_independent_of_other_sets():
    a = sample_rows(100, 12, 0, "sd3")
    assert a == sample_rows(100, 12, 0, "sd3") and len(set(a)) == 12 and a == sorted(a)
    assert a != sample_rows(100, 12, 1, "sd3") and a != sample_rows(100, 12, 0, "sdxl")
    assert sample_rows(5, 12, 0, "x") == [0, 1, 2, 3, 4]


def test_gallery_writes_thumbnails_with_provenance(data, tmp_path):
    g = build_gallery(GalleryConfig(data=[data], out=tmp_path / "site", per_set=6))
    assert g.real_pool == ["cam_real"] and set(g.sets) == {"cam_real", "gen_fake"}
    fake = g.sets["gen_fake"]
    assert len(fake.thumbs) == 6 and fake.label == "fake" and fake.generator == "stand-in/sd"
    for t in fake.thumbs:
        with Image.open(tmp_path / "site" / t.file) as im:
            assert im.format == "JPEG" and max(im.size) <= 256
        assert (t.width, t.height) == (72, 96) and t.format == "png" and t.id.startswith("gen_fake/")
    page = g.page.read_text()
    # Prompts are escaped, never injected as markup.
    assert "&lt;b&gt;photo&lt;/b&gt;" in page and "<b>photo</b>" not in page
    assert 'id="set-gen_fake"' in page and "real pool (cam_real)" in page
    # Re-running replaces the page in place; the same seed shows the same images.
    again = build_gallery(GalleryConfig(data=[data], out=tmp_path / "site", per_set=6))
    assert [t.id for t in again.sets["gen_fake"].thumbs] == [t.id for t in fake.thumbs]
    assert not any(p.name.startswith(".") for p in (tmp_path / "site").iterdir())


def test_cli_and_bad_input(data, tmp_path):
    res = run_cli("gallery", str(data), "--out", str(tmp_path / "s"), "--per-set", "3")
    assert res.returncode == 0 and "6 thumbnails" in res.stdout, res.stderr
    (tmp_path / "file").write_text("x")
    res = run_cli("gallery", str(data), "--out", str(tmp_path / "file"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "is a file" in res.stderr
    res = run_cli("gallery", str(data), "--per-set", "0")
    assert res.returncode == 2


@pytest.mark.browser
def test_gallery_page_in_headless_chromium(data, tmp_path):
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI must install it (apt-get install chromium)")
        pytest.skip("chromium is not installed here (apt-get install chromium); CI runs this test")
    g = build_gallery(GalleryConfig(data=[data], out=tmp_path / "site", per_set=4))
    url = g.page.resolve().as_uri()
    flags = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--virtual-time-budget=3000", "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    # 4 real + 4 fake + the 4 pool thumbnails beside the fake set, every one decoded by the browser.
    assert any("afpbench-gallery-ready 12/12" in line for line in console), dom.stderr[-2000:]
    assert not [line for line in console if "afpbench-gallery-ready" not in line]
    assert 'data-thumbnails="12"' in dom.stdout and len(re.findall(r"<figure ", dom.stdout)) == 12
    shot = tmp_path / "gallery.png"
    cap = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,900", url], capture_output=True, text=True, timeout=120)
    assert cap.returncode == 0 and shot.is_file(), cap.stderr[-2000:]
    assert len(set(np.asarray(Image.open(shot).convert("L")).ravel().tolist())) > 50  # photos drawn, not a blank page
