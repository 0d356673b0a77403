"""Resumable builds: a build killed at any point continues where it stopped.

The final dataset of an interrupted-then-resumed build has no duplicates, no gaps and
the same fingerprint as an uninterrupted build (same machine, same thread count).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import fail_diffusion_batch

from afpbench.build import build
from afpbench.dataset import PARTIAL_DIR, open_dataset, verify
from afpbench.errors import DatasetError
from afpbench.plan import BuildConfig

PARAMS = {"height": 32, "width": 32, "num_inference_steps": 6}






@pytest.fixture(scope="module")
def captions(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("caps") / "captions.txt"
    p.write_text("\n".join(f"A picture of a {w} in the morning light." for w in ("dog", "bus", "cake", "tree", "boat", "lamp", "chair", "horse")) + "\n")
    return p


def _cfg(out: Path, sd: Path, captions: Path, count: int = 16) -> BuildConfig:
    return BuildConfig(out=out, count=count, batch_size=2, model=str(sd), source=str(captions), params=dict(PARAMS), quiet=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sd, captions) -> dict:
    """An uninterrupted build to compare against."""
    path = build("sd2", _cfg(tmp_path_factory.mktemp("ref"), sd, captions))
    return json.loads((path / "manifest.json").read_text())


def _parts(out: Path) -> list[Path]:
    return sorted((out / PARTIAL_DIR / "sd2" / "parts").glob("part-*.arrow"))


def _check_same_as_reference(path: Path, reference: dict) -> None:
    ids = open_dataset(path).ids()
    assert len(ids) == len(set(ids)) == 16  # no duplicates, no gaps
    m = json.loads((path / "manifest.json").read_text())
    assert m["fingerprint"] == reference["fingerprint"]
    assert verify(path).ok
    assert not (path.parent / PARTIAL_DIR / "sd2").exists()


def test_sigkill_mid_build_then_resume(tmp_path, sd, captions, reference):
    import torch

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "afpbench", "build", "sd2", "--out", str(out), "--count", "16", "--batch-size", "2", "--model", str(sd),
           "--source", str(captions), "--quiet"] + [a for k, v in PARAMS.items() for a in ("--param", f"{k}={v}")]
    # Persist every batch (the default is every 10 s), and use the test process's thread
    # count so the killed and the resumed halves compute exactly like the reference.
    env = {**os.environ, "AFPBENCH_FLUSH_SECONDS": "0", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(_parts(out)) < 2:
            assert proc.poll() is None, f"build ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no part was written in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    written = sum(1 for _ in _parts(out))
    assert 2 <= written < 8 and not (out / "sd2").exists()

    path = build("sd2", _cfg(out, sd, captions))  # the re-run resumes
    _check_same_as_reference(path, reference)


def test_interrupt_resume_and_refusal_of_other_parameters(tmp_path, sd, captions, reference, monkeypatch):
    from afpbench.generate.diffusion import DiffusionBackend

    real_run = DiffusionBackend.run
    fail_diffusion_batch(monkeypatch, 4, KeyboardInterrupt())  # Ctrl-C between batches
    with pytest.raises(KeyboardInterrupt):
        build("sd2", _cfg(tmp_path, sd, captions))
    done = sum(open_dataset_rows(p) for p in _parts(tmp_path))
    assert done == 6 and not (tmp_path / "sd2").exists()  # the three finished batches were kept

    # Other parameters: refused before any model is loaded, and the partial is untouched.
    real_load = DiffusionBackend.load
    monkeypatch.setattr(DiffusionBackend, "load", lambda self: (_ for _ in ()).throw(AssertionError("loaded")))
    with pytest.raises(DatasetError, match="other parameters"):
        build("sd2", _cfg(tmp_path, sd, captions, count=15))
    assert sum(open_dataset_rows(p) for p in _parts(tmp_path)) == 6

    monkeypatch.setattr(DiffusionBackend, "load", real_load)
    monkeypatch.setattr(DiffusionBackend, "run", real_run)
    resumed_batches = {"n": 0}

    def counting(self, items, inputs):
        resumed_batches["n"] += 1
        return real_run(self, items, inputs)

    monkeypatch.setattr(DiffusionBackend, "run", counting)
    path = build("sd2", _cfg(tmp_path, sd, captions))
    assert resumed_batches["n"] == 5  # only the batches not yet written
    _check_same_as_reference(path, reference)


def open_dataset_rows(part: Path) -> int:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with pa.memory_map(str(part)) as src:
        return ipc.open_file(src).read_all().num_rows
