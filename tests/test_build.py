"""``afpbench build``: the CLI, determinism, manifests, skipping, safety of existing sets."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import fail_diffusion_batch

from afpbench.build import build
from afpbench.dataset import open_dataset, verify
from afpbench.errors import AfpbenchError
from afpbench.plan import BuildConfig, parse_param_values

SMALL = {"height": 32, "width": 32, "num_inference_steps": 2}


@pytest.fixture(scope="module")
def captions(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("caps") / "captions.txt"
    p.write_text("\n".join(f"A photo of thing number {i} on a table." for i in range(10)) + "\n")
    return p


def _cfg(out, sd, captions, **kw) -> BuildConfig:
    base = dict(out=out, count=6, model=str(sd), source=str(captions), params=dict(SMALL), quiet=True, batch_size=3)
    base.update(kw)
    return BuildConfig(**base)


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _run_cli(capsys, args: list[str]) -> tuple[int, str, str]:
    """Run ``afpbench`` in-process through its real entry point, ``main()`` (exit code, stdout, stderr)."""
    from afpbench.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


# -- CLI ------------------------------------------------------------------------------
def test_cli_builds_photos_with_no_other_input(tmp_path, capsys):
    code, out, err = _run_cli(capsys, ["build", "photos", "--out", str(tmp_path), "--count", "5", "--quiet"])
    assert code == 0, err
    assert out.strip() == str(tmp_path / "photos")
    assert verify(tmp_path / "photos").ok and open_dataset(tmp_path / "photos").num_rows == 5


def test_cli_diffusion_build_with_params_and_name(tmp_path, sd, captions, capsys):
    args = ["build", "sd2", "--out", str(tmp_path), "--count", "3", "--model", str(sd), "--source", str(captions), "--batch-size", "2",
            "--param", "height=32", "--param", "width=32", "--param", "num_inference_steps=2", "--name", "sd2_tiny", "--seed", "5", "--quiet", "--dtype", "fp32", "--device", "cpu"]
    code, out, err = _run_cli(capsys, args)
    assert code == 0, err
    m = _manifest(tmp_path / "sd2_tiny")
    assert m["name"] == "sd2_tiny" and m["seed"] == 5 and m["num_rows"] == 3
    assert m["recipe"]["params"]["height"] == 32 and "overridden with --param" in m["recipe"]["choices"]["height"]["note"]
    assert m["build"]["batch_size"] == 2 and m["build"]["device"] == "cpu"
    assert all(r["dataset"] == "sd2_tiny" and r["id"].startswith("sd2/") for r in open_dataset(tmp_path / "sd2_tiny").rows(columns=["id", "dataset"]))


@pytest.mark.parametrize(
    "args, match",
    [
        (["build", "sd3x"], "Did you mean"),
        (["build", "sd2", "--param", "num_inference_stpes=2"], "num_inference_steps"),
        (["build", "sd2", "--param", "steps"], "key=value"),
        (["build", "dalle2"], "afpbench import dalle2"),
        (["build", "photos", "--name", "../x"], "plain folder name"),
    ],
)
def test_cli_errors_are_one_line(args, match, tmp_path, capsys):
    code, _, err = _run_cli(capsys, args + ["--out", str(tmp_path)])
    assert code == 2 and match in err and "\n" not in err.strip() and err.startswith("error: ")


def test_entry_point_exit_code(tmp_path):
    # The real console script: user errors exit 2 with one line on stderr.
    res = subprocess.run([sys.executable, "-m", "afpbench", "build", "sd2", "--out", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error:") and "--source" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_cheap_imports_stay_light():
    code = "import sys, afpbench.generate, afpbench.sources, afpbench.cli.build, afpbench.generate.base; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "False"]


def test_param_values_are_typed():
    assert parse_param_values(["a=2", "b=0.5", "c=true", "d=[1, 2]", "e=box", "f="]) == {"a": 2, "b": 0.5, "c": True, "d": [1, 2], "e": "box", "f": None}


# -- determinism ----------------------------------------------------------------------
def test_same_recipe_same_rows_and_bytes(tmp_path, sd, captions):
    a = build("sd2", _cfg(tmp_path / "a", sd, captions))
    b = build("sd2", _cfg(tmp_path / "b", sd, captions))
    assert _manifest(a)["fingerprint"] == _manifest(b)["fingerprint"]
    # A smaller build is the prefix of the larger one: same ids, prompts, seeds; and the
    # same bytes for rows whose batch is the same (batches are cut at fixed positions).
    small = build("sd2", _cfg(tmp_path / "c", sd, captions, count=3))
    big_rows = list(open_dataset(a).rows())
    small_rows = list(open_dataset(small).rows())
    for s, g in zip(small_rows, big_rows[:3]):
        assert (s["id"], s["prompt"], s["seed"]) == (g["id"], g["prompt"], g["seed"])
        assert s["image"]["bytes"] == g["image"]["bytes"]
    # Another seed: other rows.
    other = build("sd2", _cfg(tmp_path / "d", sd, captions, seed=1))
    assert _manifest(other)["fingerprint"] != _manifest(a)["fingerprint"]


def test_manifest_provenance(tmp_path, sd, captions):
    m = _manifest(build("sd2", _cfg(tmp_path, sd, captions)))
    assert m["recipe"]["name"] == "sd2" and m["recipe"]["version"] >= 1
    assert m["label"] == "fake" and m["counts"] == {"real": 0, "fake": 6}
    assert m["generator"]["name"] == "sd2-1" and m["generator"]["license"]
    assert m["generator"]["revision"].startswith("sha256:") and m["generator"]["pipeline"] == "StableDiffusionPipeline"
    assert m["generator"]["scheduler"] == "DDIMScheduler"
    assert m["source"]["kind"] == "captions" and m["source"]["collections"]["text"]["captions"] == 10
    assert m["build"]["key"]["model"] == str(sd) and m["build"]["images_per_second"] > 0
    assert m["libraries"]["diffusers"] and "resume_key" not in m


def test_loads_with_the_datasets_client(tmp_path, sd, captions):
    import datasets

    path = build("sd2", _cfg(tmp_path, sd, captions, count=3))
    ds = datasets.load_dataset(str(path), split="test")
    assert len(ds) == 3 and ds.features["label"].names == ["real", "fake"]
    assert ds[0]["image"].size == (32, 32) and ds[0]["prompt"]


# -- writing, progress, skipping, safety ----------------------------------------------
def test_png_encoding_runs_in_the_writer_thread(tmp_path, sd, captions, monkeypatch):
    import afpbench.dataset as dataset

    threads = set()
    real = dataset.encode_png

    def spy(image):
        threads.add(threading.current_thread().name)
        return real(image)

    monkeypatch.setattr(dataset, "encode_png", spy)
    build("sd2", _cfg(tmp_path, sd, captions, count=4, batch_size=2))
    assert threads == {"afpbench-writer"}


def test_progress_bar_and_quiet(tmp_path, sd, captions, capsys, caplog):
    # The progress bar is drawn on stderr; messages go through logging (the CLI shows them).
    caplog.set_level("INFO", logger="afpbench.build")
    build("sd2", _cfg(tmp_path / "loud", sd, captions, count=2, quiet=False))
    err = capsys.readouterr().err
    assert "img/s" in err and "built" in caplog.text
    caplog.clear()
    build("sd2", _cfg(tmp_path / "quiet", sd, captions, count=2, quiet=True))
    assert capsys.readouterr().err == "" and caplog.text == ""


def test_finished_build_is_not_redone(tmp_path, sd, captions, monkeypatch):
    from afpbench.generate.diffusion import DiffusionBackend

    path = build("sd2", _cfg(tmp_path, sd, captions, count=3))
    before = (path / "manifest.json").read_text()

    def boom(self):
        raise AssertionError("the model must not be loaded again")

    monkeypatch.setattr(DiffusionBackend, "load", boom)
    assert build("sd2", _cfg(tmp_path, sd, captions, count=3)) == path
    assert (path / "manifest.json").read_text() == before
    # Other parameters are refused without --overwrite, before the model loads...
    with pytest.raises(AfpbenchError, match="--overwrite"):
        build("sd2", _cfg(tmp_path, sd, captions, count=4))
    # ...and with it they rebuild (and here fail at load, leaving the set as it was).
    with pytest.raises(AssertionError):
        build("sd2", _cfg(tmp_path, sd, captions, count=4), overwrite=True)
    assert (path / "manifest.json").read_text() == before


def test_failed_rebuild_keeps_the_existing_dataset(tmp_path, sd, captions):
    path = build("sd2", _cfg(tmp_path, sd, captions, count=3))
    fp = _manifest(path)["fingerprint"]
    with pytest.raises(AfpbenchError, match="does not exist"):
        build("sd2", _cfg(tmp_path, sd, captions, count=3, model=str(tmp_path / "missing-model")), overwrite=True)
    with pytest.raises(AfpbenchError, match="holds a IFPipeline|no model_index"):
        build("sd2", _cfg(tmp_path, sd, captions, count=3, model=str(tmp_path)), overwrite=True)
    report = verify(path)
    assert report.ok and report.fingerprint == fp
    assert not (tmp_path / ".afpbench-partial").exists()


def test_errors_during_generation_keep_finished_rows(tmp_path, sd, captions, monkeypatch):
    """A crash mid-build: finished batches are on disk, the final folder is not touched."""
    fail_diffusion_batch(monkeypatch, 3, RuntimeError("out of memory (simulated)"))
    with pytest.raises(RuntimeError, match="simulated"):
        build("sd2", _cfg(tmp_path, sd, captions, count=6, batch_size=1))
    parts = list((tmp_path / ".afpbench-partial" / "sd2" / "parts").glob("part-*.arrow"))
    assert parts and not (tmp_path / "sd2").exists()
