"""Distributed builds: K processes split the rows and give the same dataset as one.

On CPU, ``accelerate launch --cpu --num_processes 2`` starts a single process, so the
multi-process path is driven with ``torchrun --nproc_per_node 2 -m afpbench build``; the
build then uses ``PartialState(cpu=True)`` (MULTI_CPU over gloo). torchrun gives each
worker one thread, so the single-process reference runs with one thread too: CPU
kernels split their sums by thread, and identical bytes need identical thread counts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from afpbench._util.runtime import ProcessGroup
from afpbench.build import build
from afpbench.dataset import open_dataset, verify
from afpbench.plan import BuildConfig

PARAMS = {"height": 32, "width": 32, "num_inference_steps": 2}






@pytest.fixture(scope="module")
def captions(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("caps") / "captions.txt"
    p.write_text("\n".join(f"A {c} umbrella leaning on a wall." for c in ("red", "blue", "green", "yellow", "black", "white")) + "\n")
    return p


def _torchrun() -> list[str]:
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


def test_single_process_does_not_start_a_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    procs = ProcessGroup.detect()
    assert (procs.rank, procs.world, procs.state) == (0, 1, None)
    assert procs.split(list(range(5))) == [0, 1, 2, 3, 4]


def test_two_processes_equal_one(tmp_path, sd, captions):
    import torch

    out = tmp_path / "k2"
    cmd = _torchrun() + ["--standalone", "--nproc_per_node", "2", "-m", "afpbench", "build", "sd2", "--out", str(out), "--count", "10",
                         "--batch-size", "2", "--model", str(sd), "--source", str(captions), "--quiet"]
    cmd += [a for k, v in PARAMS.items() for a in ("--param", f"{k}={v}")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    m2 = json.loads((out / "sd2" / "manifest.json").read_text())
    assert m2["build"]["processes"] == 2
    assert m2["build"]["rows_by_rank"] == {"0": 6, "1": 4}  # 5 batches of 2, split 3 + 2
    assert verify(out / "sd2").ok

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = build("sd2", BuildConfig(out=tmp_path / "k1", count=10, batch_size=2, model=str(sd), source=str(captions), params=dict(PARAMS), quiet=True))
    finally:
        torch.set_num_threads(threads)
    m1 = json.loads((ref / "manifest.json").read_text())
    assert m1["build"]["processes"] == 1 and m1["build"]["torch_threads"] == 1 == m2["build"]["torch_threads"]
    assert open_dataset(ref).ids() == open_dataset(out / "sd2").ids()
    assert m1["fingerprint"] == m2["fingerprint"]
