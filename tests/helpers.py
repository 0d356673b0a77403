"""What several test files share that is not a fixture: the repository root, the CLI in a
subprocess, and a diffusion backend that fails on cue. Tests import these from here,
never from conftest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m afpbench ARGS`` as a user would (separate process, real exit code)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "afpbench", *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout)


def fail_diffusion_batch(monkeypatch, call_no: int, exc: BaseException) -> None:
    """Make the diffusion backend raise ``exc`` on its ``call_no``-th batch (crash, Ctrl-C)."""
    from afpbench.generate.diffusion import DiffusionBackend

    monkeypatch.setenv("AFPBENCH_FLUSH_SECONDS", "0")
    real = DiffusionBackend.run
    calls = {"n": 0}

    def run(self, items, inputs):
        calls["n"] += 1
        if calls["n"] == call_no:
            raise exc
        return real(self, items, inputs)

    monkeypatch.setattr(DiffusionBackend, "run", run)
