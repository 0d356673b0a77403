"""`afpbench demo --check`: the whole pipeline offline, as CI runs it."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from helpers import run_cli

ATTACKS = ("adversarial", "backdoor", "data_poisoning")
STANDINS = ("sd2", "sd2ip", "sd2sr")

# The one end-to-end run: in the default suite, left out of the quick loop (pytest -m "not integration").
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    res = run_cli("demo", "--check", "--quiet", "--out", str(out), timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return out, res.stdout


def _auc(board, detector, dataset):
    entry = next(e for e in board["entries"] if e["detector"] == detector and not e["perturbation"])
    return entry["pairs"][dataset]["auc"]["value"]


def test_site_is_published_and_valid(demo):
    import jsonschema

    out, stdout = demo
    site = out / "site"
    for f in ("index.html", "leaderboard.json", "leaderboard.md"):
        assert (site / f).stat().st_size > 0
    board = json.loads((site / "leaderboard.json").read_text())
    schema = json.loads((resources.files("afpbench") / "schemas" / "leaderboard.schema.json").read_text())
    jsonschema.validate(board, schema)
    from afpbench.results import load_leaderboard

    load_leaderboard(site / "leaderboard.json")
    assert "<table" in (site / "index.html").read_text()
    # the summary names the stand-ins and where the site is
    assert "Stand-ins" in stdout and str(site / "index.html") in stdout
    # every step of the pipeline ran and every set verified
    assert stdout.count("      ok ") >= 14 and "[9/9]" in stdout


def test_learned_detectors_beat_constant_and_random_on_attacks(demo):
    out, _ = demo
    board = json.loads((out / "site" / "leaderboard.json").read_text())
    for ds in ATTACKS:
        floor = max(_auc(board, d, ds) for d in ("constant.real", "constant.fake", "random"))
        for det in ("spectral", "efficientnet"):
            assert _auc(board, det, ds) > floor + 0.1, (det, ds)


def test_tiny_antifakeprompt_learns_the_standin_fakes(demo):
    """The soft prompt trained on a small random InstructBLIP separates the stand-in fakes."""
    out, _ = demo
    board = json.loads((out / "site" / "leaderboard.json").read_text())
    for ds in STANDINS:
        assert _auc(board, "antifakeprompt", ds) > max(0.6, _auc(board, "random", ds))


def test_robustness_suite_and_measured_rows_only(demo):
    out, _ = demo
    board = json.loads((out / "site" / "leaderboard.json").read_text())
    assert {e["perturbation"] for e in board["entries"]} >= {None, "jpeg:75"}
    assert all(e["source"] == "measured" for e in board["entries"])
    assert (out / "data" / "flickr" / "manifest.json").exists()
    rejects = json.loads((out / "data" / "flickr" / "manifest.json").read_text())["rejects"]
    assert {r["input"] for r in rejects} == {"zz-duplicate.jpg", "zz-truncated.jpg"}
