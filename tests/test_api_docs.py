"""docs/api.md runs as written: every Python block, in order, in one empty folder."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys

from helpers import REPO

DOC = REPO / "docs" / "api.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_api_doc_examples_run(tmp_path, monkeypatch):
    blocks = _blocks()
    assert len(blocks) >= 7  # one per entry point: build, list, predict, detect, evaluate+leaderboard, audit, train, gallery
    monkeypatch.chdir(tmp_path)
    for i, code in enumerate(blocks):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"docs/api.md block {i + 1}", "exec"), {"__name__": f"api_doc_{i}"})
        assert out.getvalue().strip(), f"block {i + 1} printed nothing"
    # What the examples claim: the set, the results, the site, the audit and the model exist.
    assert (tmp_path / "data" / "photos" / "manifest.json").is_file()
    assert (tmp_path / "results" / "format@codec-matched" / "results.json").is_file()
    assert (tmp_path / "site" / "index.html").is_file() and (tmp_path / "site" / "sets.html").is_file()
    assert (tmp_path / "audit" / "audit.json").is_file() and (tmp_path / "models" / "size").is_dir()


def test_importing_afpbench_stays_torch_free():
    code = "import sys, afpbench; afpbench.list_detectors(); afpbench.list_datasets(); assert 'torch' not in sys.modules, 'torch imported'; print(sorted(afpbench.__all__))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert res.returncode == 0, res.stderr
    for name in ("load_detector", "list_detectors", "list_datasets", "detect", "build", "BuildConfig", "evaluate", "EvalConfig",
                 "train", "TrainConfig", "open_dataset", "audit", "leaderboard"):
        assert name in res.stdout
