"""The leaderboard: JSON/Markdown/HTML from real results, refusals, and the page in a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import jsonschema
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import REPO
from PIL import Image

from afpbench.cli import cli as cli_group
from afpbench.errors import AfpbenchError
from afpbench.harness import EvalConfig, evaluate
from afpbench.leaderboard import build_site, render_text_table
from afpbench.results import SCHEMA_VERSION, load_leaderboard
from afpbench.testing import write_images

SETS = ["coco", "flickr", "sd2", "sdxl"]


class Toy:
    """A plugin-style detector: P(fake) from high-frequency energy."""

    name = "toy"

    def __init__(self, tag=None, gain=40.0):
        self.tag, self.gain = tag, gain
        self.weights_sha256, self.threshold, self.threshold_policy = None, 0.5, "fixed: 0.5"

    def arguments(self):
        return {"gain": self.gain}

    def preprocess(self, image, row=None):
        return torch.from_numpy(np.asarray(image.convert("L").resize((48, 48)), dtype=np.float32) / 255.0)[None]

    def collate(self, items):
        return torch.stack(items)

    def score(self, batch):
        hf = (batch[..., 1:, :] - batch[..., :-1, :]).abs().mean(dim=(1, 2, 3))
        return torch.sigmoid((hf - 0.06) * self.gain)


def _crops(photos, n, offset, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = photos[(offset + i) % len(photos)][1]
        s = min(img.size) // 2
        crop = img.crop((i * 11 % (img.width - s), i * 7 % (img.height - s), i * 11 % (img.width - s) + s, i * 7 % (img.height - s) + s)).resize((64, 64))
        if noise:
            crop = Image.fromarray(np.clip(np.asarray(crop, np.float32) + rng.normal(0, noise, (64, 64, 3)), 0, 255).astype(np.uint8))
        out.append(crop)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, photos):
    """Real results: two detectors, one robustness suite, plus variants to refuse."""
    root = tmp_path_factory.mktemp("lb")
    data = root / "data"
    write_images(data, "coco", _crops(photos, 8, 0), 0)
    write_images(data, "flickr", _crops(photos, 10, 4), 0)
    write_images(data, "sd2", _crops(photos, 10, 2, 25, 1), 1)
    write_images(data, "sdxl", _crops(photos, 8, 6, 12, 2), 1)
    other = root / "other"  # a different build of sd2
    write_images(other, "sd2", _crops(photos, 10, 3, 25, 5), 1)
    for name in ("coco", "flickr", "sdxl"):
        shutil.copytree(data / name, other / name)

    def run(out, dets, **kw):
        cfg = dict(detectors=dets, data=[data], datasets=SETS, profile="v3", out=root / out, batch_size=8, bootstrap=100, num_workers=0, progress=False)
        cfg.update(kw)
        return evaluate(EvalConfig(**cfg))

    main = run("main", [Toy(), Toy("sharp", 80.0)], perturb=[None, "jpeg:30"])
    return {
        "root": root,
        "main": main,
        "limit": run("limit", [Toy()], limit=4)[0],
        "custom": run("custom", [Toy("custom")], profile=None)[0],
        "otherdata": run("otherdata", [Toy("other")], data=[other])[0],
        "dup": run("dup", [Toy()])[0],
    }


def test_site_files_and_json(world, tmp_path):
    path = build_site(world["main"], tmp_path / "site")
    site = path.parent
    for name in ("leaderboard.json", "leaderboard.md", "index.html", "accuracy_per_set.png", "roc.png"):
        assert (site / name).is_file() and (site / name).stat().st_size > 0, name
    assert Image.open(site / "roc.png").size[0] > 100
    data = json.loads(path.read_text())
    assert list(data)[0] == "schema_version"
    jsonschema.validate(data, json.loads((REPO / "afpbench" / "schemas" / "leaderboard.schema.json").read_text()))
    board = load_leaderboard(path)
    assert board.profile == "v3" and [s.name for s in board.sets][:3] == ["coco", "flickr", "sd2"] and len(board.sets) == 23
    measured = [e for e in board.entries if e.source == "measured"]
    reported = {e.detector: e for e in board.entries if e.source == "reported"}
    assert sorted((e.detector, e.perturbation or "") for e in measured) == [("toy", ""), ("toy", "jpeg:30"), ("toy.sharp", ""), ("toy.sharp", "jpeg:30")]
    assert board.suites == ["jpeg:30"]
    # Reported rows: the paper's numbers, as fractions, never with intervals.
    afp = reported["AntifakePrompt"]
    assert round(100 * afp.average_all.value, 2) == 91.81 and round(100 * afp.average_held_out.value, 2) == 92.11
    assert afp.per_set["sd2"].value == pytest.approx(0.9833) and afp.per_set["sd2"].ci_low is None and afp.results_file is None
    assert len(reported) == 18
    toy = next(e for e in measured if e.detector == "toy" and not e.perturbation)
    assert set(toy.per_set) == set(SETS) and toy.per_set["sd2"].ci_low is not None and toy.mean_auc is not None
    assert toy.families and set(toy.pairs) == {"sd2", "sdxl"} and toy.results_sha256
    assert any("evaluated on 4 of 23 sets" in n for n in board.notes)
    md = (site / "leaderboard.md").read_text()
    assert "| AntifakePrompt | reported |" in md and "| toy | measured (4/23 sets) |" in md and "## Robustness" in md and "91.81" in md
    # Self-contained: no external resources.
    page = (site / "index.html").read_text()
    assert not re.search(r'(src|href)="(?!data:|#)', page)


def test_without_reported_rows_or_profile(world, tmp_path):
    board = load_leaderboard(build_site(world["main"], tmp_path / "a", reported=False))
    assert all(e.source == "measured" for e in board.entries)
    custom = load_leaderboard(build_site([world["custom"]], tmp_path / "b"))
    assert custom.profile is None and [s.name for s in custom.sets] == SETS and all(e.source == "measured" for e in custom.entries)
    # The terminal table the demo prints, from the JSON.
    text = render_text_table(json.loads((tmp_path / "b" / "leaderboard.json").read_text()))
    header, rule, row = text.splitlines()
    assert header.split()[:6] == ["detector", "source", *SETS] and "mean" in header and set(rule) <= {"-", " "}
    entry = custom.entries[0]
    assert row.split()[0] == "toy.custom" and row.split()[3] == f"{100 * entry.per_set['flickr'].value:.2f}"


def test_refusals_each_with_one_line_reason(world, tmp_path):
    main = world["main"]
    cases = [
        ([*main, world["limit"]], "run with --limit 4; evaluate without --limit"),
        ([*main, world["otherdata"]], "Set 'sd2' has different data"),
        ([*main, world["custom"]], "mix profile versions"),
        ([*main, world["dup"]], "Two results for toy"),
    ]
    for files, message in cases:
        with pytest.raises(AfpbenchError, match=re.escape(message)) as exc:
            build_site(files, tmp_path / "x")
        assert "\n" not in str(exc.value)
    with pytest.raises(AfpbenchError, match="evaluated on profile v3, not v1"):
        build_site(main, tmp_path / "x", profile="v1")
    # A file failing schema validation, and one from a newer schema.
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    data = json.loads(main[0].read_text())
    data["run"]["batch_size"] = "eight"
    bad.write_text(json.dumps(data))
    with pytest.raises(AfpbenchError, match="fails results schema validation at run.batch_size"):
        build_site([bad], tmp_path / "x")
    data = json.loads(main[0].read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    bad.write_text(json.dumps(data))
    with pytest.raises(AfpbenchError, match="newer than this afpbench reads"):
        build_site([bad], tmp_path / "x")
    # Predictions edited after the results were written.
    copy = tmp_path / "copy"
    shutil.copytree(main[0].parent, copy)
    pred = copy / "predictions" / "sd2.parquet"
    pred.write_bytes(pred.read_bytes() + b"\0")
    with pytest.raises(AfpbenchError, match="changed since"):
        build_site([copy / "results.json"], tmp_path / "x")


def test_cli_writes_site_and_refuses_with_exit_2(world, tmp_path, cli):
    out = CliRunner().invoke(cli_group, ["leaderboard", *map(str, world["main"]), "--out", str(tmp_path / "site")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "site" / "index.html").is_file()
    proc = cli("leaderboard", str(world["main"][0]), str(world["limit"]), "--out", str(tmp_path / "no"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--limit" in proc.stderr


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.browser
def test_page_in_headless_chromium(world, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI must install it (apt-get install chromium) to test the leaderboard page")
        pytest.skip("chromium is not installed here (apt-get install chromium); CI runs this test")
    site = build_site(world["main"], tmp_path / "site").parent
    url = (site / "index.html").resolve().as_uri()
    flags = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--virtual-time-budget=3000", "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert any("afpbench-leaderboard-ready" in line for line in console), dom.stderr[-2000:]
    problems = [line for line in console if "afpbench-leaderboard-ready" not in line]
    assert not problems, problems
    assert "Uncaught" not in dom.stderr
    html = dom.stdout
    assert 'data-ready="1"' in html  # the script ran to its end
    rows = re.findall(r'<tr class="(measured|reported)" data-source="\w+" data-detector="([^"]+)"', html)
    assert ("measured", "toy") in rows and ("measured", "toy.sharp") in rows and ("reported", "AntifakePrompt") in rows
    assert len([r for r in rows if r[0] == "reported"]) == 18
    # The initial sort (held-out average, best first) was applied by the page's script.
    assert "sorted-desc" in html
    order = [d for _, d in rows]
    assert order.index("AntifakePrompt-LaMa") < order.index("AntifakePrompt") < order.index("LASTED-F")
    shot = tmp_path / "leaderboard.png"
    cap = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1400,900", url], capture_output=True, text=True, timeout=120)
    assert cap.returncode == 0 and shot.is_file(), cap.stderr[-2000:]
    img = Image.open(shot)
    assert img.size == (1400, 900)
    # Not a blank page: the table draws many distinct colours.
    assert len(set(np.asarray(img.convert("L")).ravel().tolist())) > 20
