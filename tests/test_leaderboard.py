"""The leaderboard: JSON/Markdown/HTML from real results, refusals, and the page in a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import REPO
from PIL import Image

from afpbench.cli import cli as cli_group
from afpbench.errors import AfpbenchError
from afpbench.evaluate import EvalConfig, evaluate
from afpbench.leaderboard import build_site, render_text_table
from afpbench.results import SCHEMA_VERSION, load_leaderboard, load_results, read_predictions
from afpbench.testing import ToyDetector, write_images

SETS = ["coco", "flickr", "sd2", "sdxl"]


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
        return [e.path for e in evaluate(EvalConfig(**cfg))]

    main = run("main", [ToyDetector(), ToyDetector("sharp", gain=80.0)], perturb=[None, "jpeg:30"])
    return {
        "root": root,
        "main": main,
        "limit": run("limit", [ToyDetector()], limit=4)[0],
        "custom": run("custom", [ToyDetector("custom")], profile=None)[0],
        "otherdata": run("otherdata", [ToyDetector("other")], data=[other])[0],
        "dup": run("dup", [ToyDetector()])[0],
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
    assert sorted((e.detector, e.perturbation or "") for e in measured) == [("test_toy", ""), ("test_toy", "jpeg:30"), ("test_toy.sharp", ""), ("test_toy.sharp", "jpeg:30")]
    assert board.suites == ["jpeg:30"]
    # Reported rows: the paper's numbers, as fractions, never with intervals.
    afp = reported["AntifakePrompt"]
    assert round(100 * afp.average_all.value, 2) == 91.81 and round(100 * afp.average_held_out.value, 2) == 92.11
    assert afp.per_set["sd2"].value == pytest.approx(0.9833) and afp.per_set["sd2"].ci_low is None and afp.results_file is None
    assert len(reported) == 18
    toy = next(e for e in measured if e.detector == "test_toy" and not e.perturbation)
    assert set(toy.per_set) == set(SETS) and toy.per_set["sd2"].ci_low is not None and toy.mean_auc is not None
    assert toy.families and set(toy.pairs) == {"sd2", "sdxl"} and toy.results_sha256
    assert any("evaluated on 4 of 23 sets" in n for n in board.notes)
    md = (site / "leaderboard.md").read_text()
    assert "| AntifakePrompt | reported |" in md and "| test_toy | measured (4/23 sets) |" in md and "## Robustness" in md and "91.81" in md
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
    assert row.split()[0] == "test_toy.custom" and row.split()[3] == f"{100 * entry.per_set['flickr'].value:.2f}"


def test_refusals_each_with_one_line_reason(world, tmp_path):
    main = world["main"]
    cases = [
        ([*main, world["limit"]], "run with --limit 4; evaluate without --limit"),
        ([*main, world["otherdata"]], "Set 'sd2' has different data"),
        ([*main, world["custom"]], "mix profile versions"),
        ([*main, world["dup"]], "Two results for test_toy"),
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


def _dump(flags: list[str], page: Path, ready: str) -> str:
    """The page's DOM after its scripts ran in headless chromium; fails on any console message but ``ready``."""
    dom = subprocess.run([*flags, "--virtual-time-budget=3000", "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert any(ready in line for line in console), dom.stderr[-2000:]
    problems = [line for line in console if ready not in line]
    assert not problems, problems
    assert "Uncaught" not in dom.stderr
    return dom.stdout


@pytest.mark.browser
def test_page_in_headless_chromium(world, bias, tmp_path):
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
    assert ("measured", "test_toy") in rows and ("measured", "test_toy.sharp") in rows and ("reported", "AntifakePrompt") in rows
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

    # The full page: views side by side, the chained-degradation table, the shortcut audit,
    # non-commercial rows, and the sets gallery the column headers link to.
    full = bias["site"]
    html = _dump(flags, full / "index.html", "afpbench-leaderboard-ready")
    assert 'data-ready="1"' in html and '<a href="sets.html#set-sd2">sd2</a>' in html
    assert re.search(r'<tr class="measured" data-detector="format">.*?0\.500 ▼', html)
    assert 'id="robust-auc-table"' in html and 'id="audit-table"' in html and 'class="badge nc"' in html
    # Plots embedded: accuracy, ROC, robustness and the audit's two per flagged pair.
    assert html.count('src="data:image/png;base64,') == 3 + 2 * 2
    # The links' target is there (test_gallery loads that page in chromium).
    gallery = (full / "sets.html").read_text()
    assert all(f'id="set-{name}"' in gallery for name in BIAS_SETS)


# -- views, audit, chained degradations, gallery, --same-recipe, non-commercial rows -------------
BIAS_SETS = ["flickr", "sd2", "sdxl"]


class NCToy(ToyDetector):
    """The test_toy with a card saying its licence forbids commercial use."""

    noncommercial = True


def _view_copy(src: Path, dst: Path, names: list[str], view) -> None:
    """The sets as ``view`` shows them: every row's stored bytes rewritten by afpbench.views
    (what ``evaluate --view`` feeds the detectors), written as dataset folders."""
    from afpbench.dataset import DatasetWriter, WriterOptions, make_row, open_dataset
    from afpbench.views import Encoded

    for name in names:
        reader = open_dataset(src / name)
        info = {"recipe": reader.manifest["recipe"], "family": reader.manifest.get("family", "")}
        with DatasetWriter(dst, name, info=info, options=WriterOptions(overwrite=True)) as w:
            for i, row in enumerate(r for batch in reader.iter_batches(64) for r in batch):
                enc = view.apply(Encoded.from_row(row), row["label"], row["id"])
                w.add(make_row(
                    id=row["id"], image=enc.data, label=row["label"], dataset=name, family=row["family"], prompt=row["prompt"],
                    seed=row["seed"], width=enc.width, height=enc.height, format=enc.format,
                ), index=i)
        w.finalize()


def _as_view(results: list[Path], view, native_fingerprints: dict[str, str]) -> None:
    """Results of the viewed copy become results of the stored sets under ``view``: what
    ``evaluate --view`` records (the stored sets' fingerprints, the view in the predictions
    and results). The scores are the real evaluation's on the viewed bytes."""
    from afpbench.results import ViewInfo, dump_json, load_results, write_predictions

    for path in results:
        r = load_results(path)
        for d in r.datasets:
            pfile = path.parent / d.predictions.path
            p = read_predictions(pfile)
            meta = p.meta.model_copy(update={"fingerprint": native_fingerprints[d.name], "view": ViewInfo(**view.record())})
            d.predictions.sha256 = write_predictions(pfile, p.ids, p.labels, p.scores, p.preds, meta)
            d.fingerprint = native_fingerprints[d.name]
        r.view = ViewInfo(**view.record())
        dump_json(r, path)


@pytest.fixture(scope="module")
def bias(tmp_path_factory, photos):
    """The format shortcut of issue 13: JPEG reals, PNG fakes. Native and chained-degradation
    results of format, two toys and a non-commercial toy; codec-matched results of the same
    detectors; and the shortcut audit of the sets."""
    from afpbench.audit import AuditConfig, audit
    from afpbench.dataset import open_dataset
    from afpbench.views import PoolStats, parse_view

    root = tmp_path_factory.mktemp("bias")
    data = root / "data"
    write_images(data, "flickr", _crops(photos, 12, 4), 0, image_format="jpeg")
    write_images(data, "sd2", _crops(photos, 10, 2, 25, 1), 1)
    write_images(data, "sdxl", _crops(photos, 10, 6, 12, 2), 1)

    def dets():
        return ["format", ToyDetector(), ToyDetector("sharp", gain=80.0), NCToy("nc")]

    def run(out, folder, **kw):
        return [e.path for e in evaluate(EvalConfig(detectors=dets(), data=[folder], datasets=BIAS_SETS, out=root / out, batch_size=8, bootstrap=100, num_workers=0, progress=False, **kw))]

    native = run("native", data, perturb=[None, "chain"])
    pool = [r["image"]["bytes"] for b in open_dataset(data / "flickr").iter_batches(64) for r in b]
    view = parse_view("codec-matched")
    view.pool = PoolStats.from_bytes(["flickr"], pool)
    _view_copy(data, root / "viewed", BIAS_SETS, view)
    matched = run("matched", root / "viewed")
    _as_view(matched, view, {n: open_dataset(data / n).fingerprint for n in BIAS_SETS})
    report = audit(AuditConfig(data=[data], datasets=BIAS_SETS, out=root / "audit", bootstrap=200))
    # The full site, built once for the tests that read it.
    site = build_site([*native, *matched], root / "site", audit=root / "audit", data=[data]).parent
    return {
        "root": root, "data": data, "native": {p.parent.name: p for p in native}, "matched": {p.parent.name: p for p in matched},
        "audit": root / "audit", "report": report, "site": site, "board": load_leaderboard(site / "leaderboard.json"),
    }


def _mean_auc(results_json: Path, fakes=("sd2", "sdxl")) -> float:
    """Mean over the fake sets of scikit-learn's AUC of each fake set vs flickr, from the predictions files."""
    from sklearn.metrics import roc_auc_score

    preds = {p.stem: read_predictions(p) for p in (results_json.parent / "predictions").glob("*.parquet")}
    real = preds["flickr"]
    return float(np.mean([roc_auc_score(np.r_[real.labels, preds[f].labels], np.r_[real.scores, preds[f].scores]) for f in fakes]))


def _entry(board, detector, view=None, perturbation=None):
    [e] = [e for e in board.entries if e.detector == detector and (e.view.name if e.view else None) == view and e.perturbation == perturbation]
    return e


def test_views_side_by_side_with_rank_correlation_and_drops(bias):
    from scipy.stats import kendalltau

    from afpbench.leaderboard._summaries import view_comparisons

    board = bias["board"]
    [cmp] = board.views
    assert cmp.view.name == "codec-matched" and cmp.view.kind == "codec-matched" and cmp.fake_sets == ["sd2", "sdxl"]
    by = {d.detector: d for d in cmp.detectors}
    assert set(by) == {"format", "test_toy", "test_toy.sharp", "test_toy.nc"}
    native, matched = bias["native"], bias["matched"]
    for det, row in by.items():
        # Independent reference: scikit-learn on the predictions files of each side.
        assert row.native_auc == pytest.approx(_mean_auc(native[det]), abs=1e-12)
        assert row.view_auc == pytest.approx(_mean_auc(matched[det]), abs=1e-12)
        assert row.drop == pytest.approx(row.native_auc - row.view_auc, abs=1e-12) and row.flagged == (row.drop > 0.1)
    # format reads the file only: JPEG reals vs PNG fakes is all it sees, and the matched
    # codec takes it to chance; the pixel detectors keep their lead.
    assert by["format"].native_auc == 1.0 and by["format"].view_auc == 0.5 and by["format"].flagged
    assert not by["test_toy"].flagged and not by["test_toy.sharp"].flagged
    names = list(by)
    tau = kendalltau([by[d].native_auc for d in names], [by[d].view_auc for d in names])[0]
    assert cmp.kendall_tau.value == pytest.approx(tau, abs=1e-12) and cmp.kendall_tau.n_detectors == 4
    assert -1 <= cmp.kendall_tau.ci_low <= cmp.kendall_tau.ci_high <= 1 and cmp.kendall_tau.resampled == ["sd2", "sdxl"]
    # The bootstrap is seeded: the same interval every time; another seed draws other resamples.
    assert view_comparisons(board.entries, [s.name for s in board.sets])[0].kendall_tau == cmp.kendall_tau
    assert view_comparisons(board.entries, [s.name for s in board.sets], seed=7)[0].kendall_tau.seed == 7
    # Entries are keyed by (detector, view, perturbation); the main table stays native.
    assert _entry(board, "format", "codec-matched").mean_auc == by["format"].view_auc
    assert _entry(board, "format").mean_auc == by["format"].native_auc
    md = (bias["site"] / "leaderboard.md").read_text()
    assert "## Views: native vs harmonised" in md and "| format | 1.000 | 0.500 ▼ | +0.500 |" in md
    assert f"Kendall τ native vs codec-matched: {cmp.kendall_tau.value:.3f}" in md
    page = (bias["site"] / "index.html").read_text()
    assert 'id="views-table"' in page and 'data-view="codec-matched"' in page
    # The main table lists each detector once (native); the view rows are in their own tables.
    assert len(re.findall(r'<tr class="measured" data-source="measured" data-detector="format"', page)) == 1


def test_view_results_are_checked_like_the_others(bias, tmp_path):
    from afpbench.results import write_predictions

    copy = tmp_path / "format-view"
    shutil.copytree(bias["matched"]["format"].parent, copy)
    results = copy / "results.json"
    data = json.loads(results.read_text())
    assert data["view"]["name"] == "codec-matched"
    # Predictions that say they are native under a results file of a view.
    d = data["datasets"][1]
    p = read_predictions(copy / d["predictions"]["path"])
    d["predictions"]["sha256"] = write_predictions(copy / d["predictions"]["path"], p.ids, p.labels, p.scores, p.preds, p.meta.model_copy(update={"view": None}))
    results.write_text(json.dumps(data))
    with pytest.raises(AfpbenchError, match=r"holds predictions under view native, the results file says codec-matched") as exc:
        build_site([bias["native"]["format"], results], tmp_path / "x")
    assert "\n" not in str(exc.value)
    # The same detector and view twice (native and view of one detector are two entries).
    with pytest.raises(AfpbenchError, match=r"Two results for format under view codec-matched"):
        build_site([bias["native"]["format"], bias["matched"]["format"], results], tmp_path / "x")


def test_robustness_table_from_the_chain_suite(bias):
    board = bias["board"]
    assert board.suites == ["chain"]
    rows = {r.detector: r for r in board.robustness}
    assert set(rows) == {"format", "test_toy", "test_toy.sharp", "test_toy.nc"} and {r.suite for r in rows.values()} == {"chain"}
    folders = bias["native"]
    for det, r in rows.items():
        assert r.clean_auc == pytest.approx(_mean_auc(folders[det]), abs=1e-12)
        assert r.robust_auc == pytest.approx(_mean_auc(folders[f"{det}@chain"]), abs=1e-12)
        assert r.drop == pytest.approx(r.clean_auc - r.robust_auc, abs=1e-12)
    # The chain draws its degradations per image: it does move the scores.
    assert any(abs(r.drop) > 1e-6 for r in rows.values())
    site = bias["site"]
    assert Image.open(site / "robustness.png").size[0] > 100
    md = (site / "leaderboard.md").read_text()
    assert "## Clean vs robust AUC" in md and f"| test_toy | chain | {rows['test_toy'].clean_auc:.3f} | {rows['test_toy'].robust_auc:.3f} | {rows['test_toy'].drop:+.3f} |" in md
    assert 'id="robust-auc-table"' in (site / "index.html").read_text()


def test_noncommercial_detectors_are_flagged(bias):
    board = bias["board"]
    flags = {e.detector: e.noncommercial for e in board.entries if not e.perturbation and e.view is None}
    assert flags == {"format": False, "test_toy": False, "test_toy.sharp": False, "test_toy.nc": True}
    md = (bias["site"] / "leaderboard.md").read_text()
    assert "| test_toy.nc (NC) | measured |" in md and "| test_toy | measured |" in md and "commercial use" in md
    # ... in every table, the views and clean-vs-robust ones included.
    assert "| test_toy.nc (NC) | chain |" in md and "| test_toy.nc (NC) | native | clean |" in md and "| test_toy.nc (NC) | 0." in md
    page = (bias["site"] / "index.html").read_text()
    assert re.search(r'data-detector="test_toy\.nc"><td class="text"[^>]*>test_toy\.nc<span class="badge nc"', page)
    assert "test_toy.nc(NC)" in render_text_table(board)


def test_shortcut_audit_section(bias, tmp_path):
    report = bias["report"]
    assert {p.fake for p in report.pairs if p.flagged} == {"sd2", "sdxl"}  # JPEG reals vs PNG fakes
    a = bias["board"].audit
    assert a is not None and a.real_pool == ["flickr"] and a.shortcuts[0] == "format" and a.shortcuts[-1] == "all"
    by = {p.fake: p for p in a.pairs}
    assert set(by) == {"sd2", "sdxl"} and by["sd2"].flagged and by["sd2"].summary == next(p.summary for p in report.pairs if p.fake == "sd2")
    assert by["sd2"].shortcuts["format"].value == next(p.shortcuts["format"].value for p in report.pairs if p.fake == "sd2")
    site = bias["site"]
    for rel in by["sd2"].plots:  # copied into the site
        assert (site / rel).is_file() and (site / rel).read_bytes() == (bias["audit"] / rel.removeprefix("audit/")).read_bytes()
    md = (site / "leaderboard.md").read_text()
    assert "## Shortcut audit" in md and f"- **sd2** vs flickr: {by['sd2'].summary}" in md and f"]({by['sd2'].plots[0]})" in md
    page = (site / "index.html").read_text()
    assert 'id="audit-table"' in page and "flagged</span>" in page and by["sd2"].summary.split(";")[0] in page
    # Rebuilt without --audit: the audit folder of the previous site goes.
    site = tmp_path / "site"
    build_site([bias["native"]["format"]], site, audit=bias["audit"])
    assert (site / "audit").is_dir()
    build_site([bias["native"]["format"]], site)
    assert not (site / "audit").exists() and load_leaderboard(site / "leaderboard.json").audit is None
    # An audit of another build of a set describes images nobody scored.
    other = tmp_path / "other-audit"
    shutil.copytree(bias["audit"], other)
    data = json.loads((other / "audit.json").read_text())
    data["fingerprints"]["sd2"] = "0" * 64
    (other / "audit.json").write_text(json.dumps(data))
    with pytest.raises(AfpbenchError, match=r"audited another build of set 'sd2' .* run afpbench audit on the evaluated data") as exc:
        build_site([bias["native"]["format"]], tmp_path / "x", audit=other / "audit.json")
    assert "\n" not in str(exc.value)
    with pytest.raises(AfpbenchError, match=r"No audit at"):
        build_site([bias["native"]["format"]], tmp_path / "x", audit=tmp_path / "nowhere")


def test_gallery_in_the_site_and_column_links(world, tmp_path):
    site = tmp_path / "site"
    board = load_leaderboard(build_site(world["main"], site, data=[world["root"] / "data"]))
    assert board.gallery == "sets.html"
    gallery = (site / "sets.html").read_text()
    for name in SETS:
        assert f'id="set-{name}"' in gallery and len(list((site / "sets" / name).glob("*.jpg"))) > 0
    page = (site / "index.html").read_text()
    assert '<a href="sets.html#set-sd2">sd2</a>' in page and '<a href="sets.html">Sets</a>' in page
    # Unmeasured profile columns have no gallery entry to link to... but still a header.
    assert "[sd2](sets.html#set-sd2)" in (site / "leaderboard.md").read_text()
    # The only links out of the page go to the gallery beside it.
    assert not re.search(r'(src|href)="(?!data:|#|sets\.html)', page)
    # --data holding another build of a set than the one evaluated is refused.
    with pytest.raises(AfpbenchError, match=r"--data holds another build of set 'sd2'") as exc:
        build_site(world["main"][:1], tmp_path / "x", data=[world["root"] / "other"])
    assert "\n" not in str(exc.value) and not (tmp_path / "x" / "index.html").exists()


def _with_recipe_fingerprints(results: Path, data: Path, dst: Path) -> Path:
    """A copy of a results folder whose sets record their recipe fingerprint (what evaluate
    copies from the manifest), computed from the evaluated data by afpbench.compare."""
    from afpbench.compare import recipe_fingerprint_of

    shutil.copytree(results.parent, dst)
    data_json = json.loads((dst / "results.json").read_text())
    for d in data_json["datasets"]:
        d["recipe_fingerprint"] = recipe_fingerprint_of(data / d["name"])
    (dst / "results.json").write_text(json.dumps(data_json))
    return dst / "results.json"


def test_same_recipe_combines_other_builds_and_marks_them(world, tmp_path):
    root = world["root"]
    main = [_with_recipe_fingerprints(p, root / "data", tmp_path / f"main-{i}") for i, p in enumerate(world["main"])]
    other = _with_recipe_fingerprints(world["otherdata"], root / "other", tmp_path / "other")
    # The default still refuses, naming the option.
    with pytest.raises(AfpbenchError, match=r"Set 'sd2' has different data .* or pass --same-recipe"):
        build_site([*main, other], tmp_path / "x")
    board = load_leaderboard(build_site([*main, other], tmp_path / "site", same_recipe=True))
    assert board.same_recipe
    sd2 = next(s for s in board.sets if s.name == "sd2")
    assert sd2.fingerprint == load_results(world["main"][0]).datasets[2].fingerprint  # the build most results used
    assert sd2.recipe_fingerprint is not None
    assert _entry(board, "test_toy.other").other_build == ["sd2"] and _entry(board, "test_toy").other_build == []
    md = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "| test_toy.other | measured (4/23 sets), other build of the same recipe: sd2 |" in md
    assert 'class="badge build"' in (tmp_path / "site" / "index.html").read_text()
    # A results file without the recipe fingerprint (written before evaluate recorded it)
    # cannot be compared: one line naming the fix.
    bare = tmp_path / "bare"
    shutil.copytree(world["otherdata"].parent, bare)
    stripped = json.loads((bare / "results.json").read_text())
    for d in stripped["datasets"]:
        d.pop("recipe_fingerprint", None)
    (bare / "results.json").write_text(json.dumps(stripped))
    with pytest.raises(AfpbenchError, match=r"does not record the recipe fingerprint of set 'sd2'.*evaluate it again") as exc:
        build_site([*main, bare / "results.json"], tmp_path / "x", same_recipe=True)
    assert "\n" not in str(exc.value)
    # Another recipe (a different fingerprint) is refused even with --same-recipe.
    data = json.loads(other.read_text())
    next(d for d in data["datasets"] if d["name"] == "sd2")["recipe_fingerprint"] = "1" * 64
    other.write_text(json.dumps(data))
    with pytest.raises(AfpbenchError, match=r"Set 'sd2' in .* comes from different recipes"):
        build_site([*main, other], tmp_path / "x", same_recipe=True)


def test_cli_audit_data_and_same_recipe_options(bias, tmp_path, cli):
    files = [str(bias["native"][d]) for d in ("format", "test_toy")]
    out = CliRunner().invoke(cli_group, ["leaderboard", *files, "--audit", str(bias["audit"]), "--data", str(bias["data"]), "--out", str(tmp_path / "site")])
    assert out.exit_code == 0, out.output
    assert "sets.html" in out.output and (tmp_path / "site" / "sets.html").is_file() and (tmp_path / "site" / "audit").is_dir()
    proc = cli("leaderboard", files[0], "--same-recipe", "--audit", str(tmp_path / "none"), "--out", str(tmp_path / "no"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "No audit at" in proc.stderr


def test_renderers_format_the_models_numbers(world, tmp_path):
    """Renderers never recompute: a number changed in the model is the number they print."""
    from afpbench.leaderboard import render_html, render_markdown
    from afpbench.leaderboard._summaries import PAIR_KEYS
    from afpbench.metrics import PAIR_METRICS
    from afpbench.results import PairSummary

    assert tuple(PairSummary.model_fields) == PAIR_KEYS and set(PAIR_KEYS) < set(PAIR_METRICS)
    board = load_leaderboard(build_site(world["main"], tmp_path / "site"))
    toy = _entry(board, "test_toy")
    assert toy.pair_means.auc.value == toy.mean_auc == pytest.approx(np.mean([p.auc.value for p in toy.pairs.values()]))
    assert toy.pair_means.auc.ci_low is None  # a mean of intervals is no interval
    assert toy.threshold.kind == "fixed" and toy.threshold.value == 0.5
    family = min(toy.families)
    toy.pair_means.eer.value = 0.123456
    toy.families[family] = 0.987654
    md = render_markdown(board)
    [tf_row] = [line for line in md.splitlines() if line.startswith("| test_toy | native | clean | ")]
    assert tf_row.split(" | ")[5] == "0.123"  # Detector, View, Perturbation, AUC, AP, EER
    [fam_row] = [line for line in md.splitlines() if line.startswith("| test_toy | measured | ")]
    assert fam_row.split(" | ")[2 + board.families.index(family)] == "98.77"
    page = render_html(board, {})
    assert 'data-value="0.123456"' in page and 'data-value="0.987654"' in page


def test_leaderboards_with_text_thresholds_still_read(world, tmp_path):
    path = build_site(world["main"], tmp_path / "site")
    data = json.loads(path.read_text())
    for e in data["entries"]:
        if e["source"] == "measured":
            e["threshold"] = f"{e['threshold']['kind']} {e['threshold']['value']:g}"  # as 0.1.0 wrote it
            del e["pair_means"], e["view"], e["noncommercial"], e["other_build"]
    for key in ("families", "views", "robustness", "audit", "gallery", "same_recipe"):
        del data[key]
    for s in data["sets"]:
        del s["recipe_fingerprint"]
    path.write_text(json.dumps(data))
    board = load_leaderboard(path)
    toy = _entry(board, "test_toy")
    assert toy.threshold.kind == "fixed" and toy.threshold.value == 0.5 and set(toy.pairs["sd2"].model_fields) == {"auc", "ap", "eer", "tpr_at_fpr_1", "tpr_at_fpr_5"}
    assert render_text_table(data).splitlines()[0].startswith("detector")
