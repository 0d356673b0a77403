"""`afpbench import`: folders, archives, HF datasets, the authors' layout, and bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from _images import write_messy_folder
from helpers import run_cli

from afpbench.dataset import decode_image, open_dataset, verify
from afpbench.importer import ImportConfig, import_set


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy") / "src"
    return root, write_messy_folder(root)


def _sources(ds_path: Path) -> set[str]:
    return {json.loads(m)["source_path"] for m in open_dataset(ds_path).column("meta")}


def test_messy_folder_imports_good_rejects_bad_with_reasons(messy, tmp_path):
    src, expected = messy
    res = run_cli("import", "dalle2", "--from", str(src), "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "imported 9" in res.stdout and "rejected 6" in res.stdout and "4 converted" in res.stdout
    ds = tmp_path / "dalle2"
    assert verify(ds).ok
    assert _sources(ds) == expected["imported"]
    m = json.loads((ds / "manifest.json").read_text())
    reasons = {r["input"]: r["reason"] for r in m["rejects"]}
    assert set(reasons) == expected["rejected"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "empty" in reasons["empty.png"]
    assert "not an image" in reasons["text.png"]
    assert "bomb" in reasons["bomb.png"]
    assert reasons["zz_copy_of_good.jpg"] == "duplicate of dalle2/good.jpg"  # ids keep the extension
    assert "extension" in reasons["notes.txt"]
    assert m["counts"] == {"real": 0, "fake": 9}


def test_original_bytes_kept_and_conversions_recorded(messy, tmp_path):
    src, expected = messy
    import_set(ImportConfig(name="dalle3", source=src, out=tmp_path))
    r = open_dataset(tmp_path / "dalle3")
    by_src = {json.loads(row["meta"])["source_path"]: row for row in r.rows()}
    assert by_src["good.jpg"]["image"]["bytes"] == (src / "good.jpg").read_bytes()
    assert by_src["good.jpg"]["format"] == "jpeg" and by_src["photo.webp"]["format"] == "webp"
    assert by_src["UPPER.PNG"]["format"] == "png"
    for name in expected["converted"]:
        meta = json.loads(by_src[name]["meta"])
        assert meta["converted_from"] in ("CMYK", "I;16", "P", "RGBA")
        assert by_src[name]["format"] == "png"
        img = decode_image(by_src[name]["image"])
        assert img.mode == "RGB"
    # 16-bit grey must be rescaled, not clipped to white
    deep = decode_image(by_src["deep16.png"]["image"])
    assert 20 < sum(deep.convert("L").getdata()) / (deep.width * deep.height) < 235
    assert by_src["grey.png"]["image"]["bytes"] == (src / "grey.png").read_bytes()


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_archives_give_the_same_dataset_as_the_folder(messy, tmp_path, kind):
    src, _ = messy
    arc = tmp_path / f"in.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(arc, "w") as zf:
            for p in sorted(src.rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(src).as_posix())
    else:
        with tarfile.open(arc, "w:gz" if kind.endswith("gz") else "w") as tf:
            for p in sorted(src.rglob("*"), reverse=True):  # packing order must not matter
                if p.is_file():
                    tf.add(p, p.relative_to(src).as_posix())
    a = import_set(ImportConfig(name="df", source=arc, out=tmp_path / "a"))
    b = import_set(ImportConfig(name="df", source=src, out=tmp_path / "b"))
    fa = json.loads((a.path / "manifest.json").read_text())["fingerprint"]
    fb = json.loads((b.path / "manifest.json").read_text())["fingerprint"]
    assert fa == fb and a.imported == 9


def test_hf_dataset_on_disk(tmp_path, photos):
    import datasets

    imgs = [img.resize((40, 40)) for _, img in photos[:5]]
    ds = datasets.Dataset.from_dict({"image": imgs, "label": [1] * 5, "prompt": [f"a photo {i}" for i in range(5)]},
                                    features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["real", "fake"]), "prompt": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "hf"))
    s = import_set(ImportConfig(name="dalle3", source=tmp_path / "hf", out=tmp_path / "out"))
    assert s.imported == 5
    r = open_dataset(s.path)
    assert sorted(r.column("prompt")) == [f"a photo {i}" for i in range(5)]


def test_count_and_seed_sample_is_deterministic(messy, tmp_path):
    src, expected = messy
    a = import_set(ImportConfig(name="ffpp", source=src, out=tmp_path / "a", count=4, seed=7))
    b = import_set(ImportConfig(name="ffpp", source=src, out=tmp_path / "b", count=4, seed=7))
    c = import_set(ImportConfig(name="ffpp", source=src, out=tmp_path / "c", count=4, seed=8))
    assert a.imported == b.imported == c.imported == 4
    ids = lambda s: open_dataset(s.path).ids()
    assert ids(a) == ids(b) and ids(a) != ids(c)
    # in a sample, whichever of two identical files comes first is kept, never both
    got = _sources(a.path)
    assert got <= expected["imported"] | {"zz_copy_of_good.jpg"}
    assert not {"good.jpg", "zz_copy_of_good.jpg"} <= got


def test_authors_archive_layout_splits_into_sets(tmp_path, photos):
    """`0_real/COCO`, `1_fake/SD2`, folder names of the v1 archive, one command -> several sets."""
    root = tmp_path / "archive" / "test"
    layout = {"0_real/COCO": 3, "0_real/Flickr": 2, "1_fake/SD2IP": 2, "1_fake/commonFake_COCO": 2, "DALLE-2": 2, "ControlNet": 2}
    k = 0
    for folder, n in layout.items():
        (root / folder).mkdir(parents=True)
        for i in range(n):
            photos[k % len(photos)][1].resize((32 + k, 32)).save(root / folder / f"img{i}.JPG")
            k += 1
    # a fake image misfiled under the real folder of COCO must not be scored as real
    (root / "1_fake" / "COCO").mkdir(parents=True)
    photos[0][1].resize((50, 50)).save(root / "1_fake" / "COCO" / "misfiled.png")
    arc = tmp_path / "afp_test.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        tf.add(root.parent / "test", "test")
    res = run_cli("import", "--from", str(arc), "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    got = {p.name: open_dataset(p) for p in (tmp_path / "out").iterdir() if (p / "manifest.json").exists()}
    assert sorted(got) == ["coco", "dalle2", "flickr", "sd2", "sd2ip", "stylization"]
    assert got["coco"].num_rows == 3 and set(got["coco"].labels()) == {0}
    assert got["sd2ip"].labels() == [1, 1] and got["sd2"].num_rows == 2
    rejects = got["coco"].manifest["rejects"]
    assert len(rejects) == 1 and "labelled fake" in rejects[0]["reason"]


@pytest.mark.parametrize("case", ["missing", "empty", "only_text", "unknown_name", "all_bad"])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, case):
    src = tmp_path / "src"
    name = "dalle2"
    if case == "empty":
        src.mkdir()
    elif case == "only_text":
        src.mkdir()
        (src / "a.txt").write_text("x")
        (src / "b.json").write_text("{}")
    elif case == "all_bad":
        src.mkdir()
        (src / "a.png").write_text("not a png")
        (src / "b.jpg").write_bytes(b"")
    elif case == "unknown_name":
        src.mkdir()
        name = "dalle22"
    out = tmp_path / "out"
    res = run_cli("import", name, "--from", str(src), "--out", str(out))
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert {"missing": "does not exist", "empty": "holds no files", "only_text": "none with an image extension",
            "unknown_name": "Did you mean: dalle2", "all_bad": "nothing was written"}[case] in lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_interrupted_import_resumes_to_the_same_dataset(tmp_path, photos):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(60):
        photos[i % len(photos)][1].resize((64 + i, 64)).save(src / f"{i:03d}.png", compress_level=1)
    ref = import_set(ImportConfig(name="dfdc", source=src, out=tmp_path / "ref"))
    out = tmp_path / "out"
    # start an import that flushes every 5 rows and kill it once parts exist
    proc = subprocess.Popen([sys.executable, "-m", "afpbench", "import", "dfdc", "--from", str(src), "--out", str(out), "--flush-rows", "5", "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    parts = out / ".afpbench-partial" / "dfdc" / "parts"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(parts.glob("*.arrow"))) < 2 and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "dfdc" / "manifest.json").exists(), "the kill came too late to test resuming"
    done_before = len(list(parts.glob("*.arrow")))
    assert done_before >= 2
    s = import_set(ImportConfig(name="dfdc", source=src, out=out))
    m_ref = json.loads((ref.path / "manifest.json").read_text())
    m = json.loads((s.path / "manifest.json").read_text())
    assert m["fingerprint"] == m_ref["fingerprint"] and m["num_rows"] == 60
    assert verify(s.path).ok and not (out / ".afpbench-partial").exists()
