"""`afpbench demo --check`: the whole pipeline offline, as CI runs it."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from helpers import run_cli

ATTACKS = ("adversarial", "backdoor", "data_poisoning")
STANDINS = ("sd2", "sd2ip", "sd2sr")

# The one end-to-end run: in the default suite, left out of the quick loop (pytest -m "not integration").
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    # Named as the README's examples name it, so they can run against it as written.
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    res = run_cli("demo", "--check", "--quiet", "--out", str(out), timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return out, res.stdout


def _auc(board, detector, dataset):
    entry = next(e for e in board["entries"] if e["detector"] == detector and not e["perturbation"] and not e.get("view"))
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
    assert stdout.count("      ok ") >= 14 and "[11/11]" in stdout


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
    assert {e["perturbation"] for e in board["entries"]} >= {None, "chain"}
    assert all(e["source"] == "measured" for e in board["entries"])
    assert (out / "data" / "flickr" / "manifest.json").exists()
    rejects = json.loads((out / "data" / "flickr" / "manifest.json").read_text())["rejects"]
    assert {r["input"] for r in rejects} == {"zz-duplicate.jpg", "zz-truncated.jpg"}


def _tables(stdout: str) -> str:
    start, end = stdout.index("Native (the stored files)"), stdout.index("\nsite: ")
    return stdout[start:end]


@pytest.mark.slow  # a second whole demo run (about 2.5 minutes); pytest -m slow tests/test_demo.py
def test_same_tables_whatever_the_thread_count(demo, tmp_path):
    """Every torch computation of the demo runs on one thread (afpbench.demo.THREADS), in this
    process and in its worker processes: float sums depend on how many threads share them,
    so without that the stand-in images, the attacks and the learners' optima (hence the
    table) would move with OMP_NUM_THREADS. The fixture ran with one thread (the suite's
    setting); this run asks for two."""
    out, stdout = demo
    two = run_cli("demo", "--check", "--quiet", "--out", str(tmp_path / "two"), env={"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}, timeout=900)
    assert two.returncode == 0, two.stderr[-2000:]
    assert _tables(two.stdout) == _tables(stdout)


def test_codec_matched_table_and_lead_line(demo):
    _, stdout = demo
    assert "codec-matched" in _tables(stdout) and "loses its lead" in stdout


def test_audit_views_detect_and_gallery(demo):
    out, stdout = demo
    audit = json.loads((out / "audit" / "audit.json").read_text())
    assert audit["real_pool"] == ["flickr", "photos"] and any(p["flagged"] for p in audit["pairs"])
    board = json.loads((out / "site" / "leaderboard.json").read_text())
    views = {e["view"]["name"] for e in board["entries"] if e.get("view")}
    assert views == {"codec-matched"} and board["views"][0]["detectors"]
    fmt = next(d for d in board["views"][0]["detectors"] if d["detector"] == "format")
    assert fmt["flagged"] and fmt["native_auc"] - fmt["view_auc"] > 0.1
    assert {r["suite"] for r in board["robustness"]} == {"chain"}
    assert (out / "site" / "sets.html").is_file() and "check-these" in stdout and "FAKE" in stdout


def _readme_block(section: str, lang: str) -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    body = text[text.index(f"## {section}\n"):]
    return body[body.index(f"```{lang}\n") + len(lang) + 4: body.index("\n```", body.index(f"```{lang}\n"))]


def test_readme_examples_run_on_the_demo_output(demo):
    """README's "Check your own images" command and "Use it from Python" code, as written."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    out, _ = demo
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    shell = subprocess.run(["bash", "-c", _readme_block("Check your own images", "bash")], cwd=out.parent, env=env, capture_output=True, text=True, timeout=300)
    assert shell.returncode == 0, shell.stderr[-2000:]
    assert "efficientnet P(fake)" in shell.stdout and "check-these/sd2.png" in shell.stdout
    assert sorted(p.name for p in (out / "why").iterdir()) == [f"000{i}-{n}.efficientnet.png" for i, n in enumerate(("adversarial", "flickr", "sd2"))]
    py = subprocess.run([sys.executable, "-c", _readme_block("Use it from Python", "python")], cwd=out.parent, env=env, capture_output=True, text=True, timeout=300)
    assert py.returncode == 0, py.stderr[-2000:]
    assert py.stdout.startswith("Prediction(p_fake=") and "check-these/flickr.jpg" in py.stdout


def test_sigterm_stops_the_workers_at_once(tmp_path):
    """SIGTERM (timeout, Slurm, docker stop) during the builds: one line, exit 143, and the
    worker processes are gone within seconds, not after their jobs."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "afpbench", "demo", "--check", "--quiet", "--out", str(tmp_path / "demo-out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("[4/11]"):
                break
        time.sleep(3)  # the workers are spawned and building
        workers = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert len(workers) >= 2
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143 and time.monotonic() - t < 20
        assert "stopped by SIGTERM; run afpbench demo again" in err and "Traceback" not in err
        time.sleep(1)
        assert not [w for w in workers if Path(f"/proc/{w}").exists() and "zombie" not in Path(f"/proc/{w}/status").read_text()]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
