"""`afpbench detect` and `Detector.predict`: anyone's own images, through evaluate's own pass."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import numpy as np
import pytest
from _tiny import make_detector
from helpers import run_cli
from PIL import Image

from afpbench.detect import DetectConfig, detect

DETECTORS = ["format", "size", "test_toy"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, photos):
    """Photos in the shapes people have: JPEG, PNG, an RGBA PNG, a CMYK JPEG, a nested folder,
    a broken file and a text file."""
    root = tmp_path_factory.mktemp("mine")
    imgs = [im.convert("RGB").resize((96 + 8 * i, 80 + 4 * i)) for i, (_, im) in enumerate(photos[:6])]
    imgs[0].save(root / "a.jpg", quality=88)
    imgs[1].save(root / "b.png")
    rgba = imgs[2].convert("RGBA")
    rgba.putalpha(200)
    rgba.save(root / "c-alpha.png")
    imgs[3].convert("CMYK").save(root / "d-cmyk.jpg")
    (root / "nested").mkdir()
    imgs[4].save(root / "nested" / "e.webp", quality=80)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 110, 3), dtype=np.uint8))
    noise.save(root / "nested" / "f-noise.png")
    (root / "broken.jpg").write_bytes((root / "a.jpg").read_bytes()[:400])
    (root / "notes.txt").write_text("hello")
    return root


def test_detect_scores_what_evaluate_scores_on_the_imported_files(folder, tmp_path):
    from afpbench.evaluate import EvalConfig, evaluate
    from afpbench.importer import ImportConfig, import_set
    from afpbench.results import read_predictions

    report = detect(DetectConfig(paths=[folder], detectors=DETECTORS, progress=False))
    assert report.detectors == ["format", "size", "test_toy"] and report.exit_code == 0
    assert sorted(u.path.rsplit("/", 1)[1] for u in report.unreadable) == ["broken.jpg", "notes.txt"]
    assert len(report.images) == 6
    # The same files imported as a set and evaluated: identical scores, file by file.
    import_set(ImportConfig(name="mine", source=folder, out=tmp_path / "data", label="fake", quiet=True))
    evaluate(EvalConfig(detectors=DETECTORS, data=[tmp_path / "data"], datasets=["mine"], out=tmp_path / "r", bootstrap=20, progress=False))
    for d in DETECTORS:
        p = read_predictions(tmp_path / "r" / d / "predictions" / "mine.parquet")
        by_source = {rid.split("/", 1)[1]: s for rid, s in zip(p.ids, p.scores)}
        for im in report.images:
            rel = im.path[len(str(folder)) + 1:]
            v = next(v for v in im.verdicts if v.detector == d)
            assert v.p_fake == by_source[rel], (d, rel)
            assert v.fake == (v.p_fake > v.threshold)
    # What the row says is the file: a CMYK JPEG is converted losslessly (as import does).
    fmt = {im.path.rsplit("/", 1)[1]: im.format for im in report.images}
    assert fmt == {"a.jpg": "jpeg", "b.png": "png", "c-alpha.png": "png", "d-cmyk.jpg": "png", "e.webp": "webp", "f-noise.png": "png"}


def test_outputs_for_people_and_scripts(folder):
    report = detect(DetectConfig(paths=[folder / "a.jpg", folder / "nested", folder / "missing.png"], detectors=DETECTORS, progress=False))
    data = json.loads(report.as_json())
    assert [i["path"].rsplit("/", 1)[1] for i in data["images"]] == ["a.jpg", "e.webp", "f-noise.png"]
    assert data["unreadable"] == [{"path": str(folder / "missing.png"), "reason": "no such file or folder"}]
    rows = list(csv.DictReader(io.StringIO(report.as_csv())))
    assert len(rows) == 3 * 3 + 1 and {r["detector"] for r in rows if r["detector"]} == set(DETECTORS)
    table = report.as_table().splitlines()
    # Fakes first: the noise image is the toy's most confident fake.
    assert "f-noise.png" in table[2] and "FAKE" in table[2]
    assert any(line.startswith("unreadable: ") and "missing.png" in line for line in table)


def test_cli_exit_codes_stdin_and_archives(folder, tmp_path):
    res = run_cli("detect", str(folder), "--detector", "format", "--format", "json", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)["images"]) == 6
    # Nothing readable: exit 1; an unknown detector: exit 2 with one line.
    res = run_cli("detect", str(folder / "notes.txt"), "--detector", "format", "--no-progress")
    assert res.returncode == 1 and "unreadable" in res.stdout
    res = run_cli("detect", str(folder), "--detector", "formt", "--no-progress")
    assert res.returncode == 2 and "Did you mean: format" in res.stderr and res.stderr.count("\n") == 1
    # Paths from standard input, and a zip archive; --out writes the file.
    import subprocess
    import sys

    listing = f"{folder / 'a.jpg'}\n{folder / 'b.png'}\n"
    p = subprocess.run([sys.executable, "-m", "afpbench", "detect", "-", "--detector", "size", "--format", "csv", "--no-progress"],
                       input=listing, capture_output=True, text=True)
    assert p.returncode == 0 and sum(1 for line in p.stdout.splitlines()[1:] if line) == 2
    with zipfile.ZipFile(tmp_path / "mine.zip", "w") as z:
        for f in ("a.jpg", "b.png"):
            z.write(folder / f, f"pics/{f}")
    res = run_cli("detect", str(tmp_path / "mine.zip"), "--detector", "format", "--format", "json", "--out", str(tmp_path / "o.json"), "--no-progress")
    assert res.returncode == 0 and [i["path"] for i in json.loads((tmp_path / "o.json").read_text())["images"]] == [f"{tmp_path / 'mine.zip'}:pics/a.jpg", f"{tmp_path / 'mine.zip'}:pics/b.png"]


def test_predict_takes_paths_images_and_arrays(folder):
    from afpbench.detectors import load_detector
    from afpbench.errors import AfpbenchError

    det = load_detector("test_toy")
    noise = Image.open(folder / "nested" / "f-noise.png")
    preds = det.predict([folder / "nested" / "f-noise.png", noise, np.asarray(noise)])
    # A PNG file and its pixels (scored as a lossless PNG) give the same score.
    assert preds[0].p_fake == preds[1].p_fake == preds[2].p_fake and preds[0].fake
    report = detect(DetectConfig(paths=[folder / "nested" / "f-noise.png"], detectors=["test_toy"], progress=False))
    assert report.images[0].verdicts[0].p_fake == preds[0].p_fake
    with pytest.raises(AfpbenchError, match="cannot be scored"):
        det.predict([folder / "broken.jpg"])


def test_explain_writes_heat_maps_or_says_why_not(folder, tmp_path, tmp_path_factory):
    ladeda = make_detector("tiny_ladeda", tmp_path_factory)
    cnn = make_detector("cnnspot", tmp_path_factory)
    eff = make_detector("efficientnet", tmp_path_factory)
    report = detect(DetectConfig(paths=[folder / "b.png", folder / "nested" / "f-noise.png"], detectors=[ladeda, cnn, eff, "format"], progress=False,
                                 explain=tmp_path / "heat"))
    assert report.no_explanation.keys() == {"format"}
    for im in report.images:
        assert set(im.explanations) == {ladeda.full_name, cnn.full_name, eff.full_name}
        for path in im.explanations.values():
            with Image.open(path) as heat:
                assert heat.mode == "RGB" and min(heat.size) > 8
                assert len(set(np.asarray(heat.convert("L")).ravel().tolist())) > 10  # a map, not a flat colour
    assert "no heat map from format" in report.as_table()


def test_patch_map_marks_the_changed_region(tmp_path_factory):
    """A known-location change: noise pasted into one corner lights up that corner's patches."""
    from afpbench.detectors.explain import explain_image

    det = make_detector("tiny_ladeda", tmp_path_factory)
    base = Image.new("RGB", (256, 256), (120, 120, 120))
    patch = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    img = base.copy()
    img.paste(patch, (192, 192))
    _, heat = explain_image(det, img, None)
    h, w = heat.shape
    corner, rest = heat[h * 3 // 4:, w * 3 // 4:].mean(), heat[: h // 2, : w // 2].mean()
    # The map is the patch logits: the flat part is one value, the changed corner departs from it.
    assert heat[: h // 2, : w // 2].std() < 0.01 and abs(corner - rest) > 0.1
