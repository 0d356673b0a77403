"""Shared test setup: offline, deterministic, real photos instead of noise, and the
markers a default run leaves out. Fixtures and hooks only; shared helpers live in
helpers.py."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

# Tests never reach a hub; set before any HF library is imported.
for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[key] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `make test` runs two pytest workers on two cores: one torch thread each, or they
# oversubscribe the CPU and small kernels slow down many times over (also in subprocesses).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

sys.path.insert(0, str(Path(__file__).parent))

from helpers import run_cli  # noqa: E402  (tests/ is on sys.path from the line above)

#: Markers a run includes only when its -m expression names them (``pytest -m slow``,
#: ``pytest -m "gpu or slow"``). Deselecting them here rather than with an -m in addopts
#: lets any other -m expression (``pytest -m "not integration"``) keep them out too.
OPT_IN_MARKERS = ("slow", "gpu")


def pytest_collection_modifyitems(config, items):
    # A test marked slow and gpu runs under -m gpu as under -m slow: naming one of its
    # opt-in markers hands it to the -m expression.
    named = set(re.findall(r"\w+", config.getoption("markexpr") or ""))
    drop = []
    for item in items:
        opt_in = [m for m in OPT_IN_MARKERS if item.get_closest_marker(m)]
        if opt_in and not named.intersection(opt_in):
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        dropped = {id(item) for item in drop}
        items[:] = [item for item in items if id(item) not in dropped]


@pytest.fixture(scope="session")
def photos():
    """The bundled real photos as (name, RGB PIL image)."""
    from afpbench.sources.photos import photo_images

    return photo_images()


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def sd(tmp_path_factory):
    """A tiny random Stable Diffusion pipeline saved with save_pretrained (built once per worker)."""
    from afpbench.generate.tiny import build_tiny_pipeline

    return build_tiny_pipeline("sd", tmp_path_factory.mktemp("tiny") / "sd")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op torch thread per pytest worker (OMP_NUM_THREADS above covers torch
    imported later; this covers a torch that a plugin imported first)."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    yield


def pytest_addoption(parser):
    parser.addoption("--update", action="store_true", default=False,
                     help="rewrite the regression fixtures tests/testdata/<recipe>-v<version>.json from this run (see tests/_regression.py)")


@pytest.fixture
def no_weight_cache(tmp_path, monkeypatch):
    """Weights lookups see only what a test puts there, never a developer's cache (~ and AFPBENCH_WEIGHTS)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AFPBENCH_WEIGHTS", raising=False)
