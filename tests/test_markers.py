"""The suite's selection rules (pyproject markers + tests/conftest.py): what a default run,
the quick loop and an opt-in run collect."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO

FILES = ["tests/test_demo.py", "tests/test_diffusion.py"]


def _collected(*args: str) -> set[str]:
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", *args, *FILES],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return {line for line in res.stdout.splitlines() if "::" in line}


def _marked(marker: str) -> set[str]:
    """Node ids carrying ``marker``, read from the source (an independent look at what is marked)."""
    import ast

    out = set()
    for path in FILES:
        tree = ast.parse((REPO / path).read_text())
        module_marked = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                            and marker in ast.unparse(n.value) for n in tree.body)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                if module_marked or any(marker in ast.unparse(d) for d in node.decorator_list):
                    out.add(f"{path}::{node.name}")
    return out


def _names(ids: set[str]) -> set[str]:
    return {i.split("[")[0] for i in ids}


@pytest.mark.parametrize("marker", ["integration", "slow", "gpu"])
def test_the_files_carry_the_marker(marker):
    assert _marked(marker)  # otherwise the checks below prove nothing


def test_default_run_quick_loop_and_opt_in_runs():
    integration, slow, gpu = _marked("integration"), _marked("slow"), _marked("gpu")
    default = _names(_collected())
    # the demo runs by default; slow and gpu tests do not, also where they sit in the demo's file
    assert integration - slow - gpu <= default and integration - slow - gpu and not (slow | gpu) & default
    quick = _names(_collected("-m", "not integration"))
    assert quick == default - integration  # the quick loop: the same minus the demo, still without slow/gpu
    assert _names(_collected("-m", "gpu")) == gpu and gpu & slow  # a slow+gpu test runs under -m gpu as it always did
