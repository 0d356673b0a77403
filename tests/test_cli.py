"""The command line: list (without torch), verify, push, env, error conventions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from helpers import run_cli

from afpbench.testing import write_images


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, photos):
    out = tmp_path_factory.mktemp("cli")
    return write_images(out, "photos", [img.resize((40, 40)) for _, img in photos[:4]], 0)


def test_list_datasets_prints_the_23_v3_sets_with_their_facts():
    res = run_cli("list", "datasets")
    assert res.returncode == 0
    assert "(23 rows)" in res.stdout
    header = res.stdout.splitlines()[0].split()
    assert header[:3] == ["name", "paper", "name"] and "role" in header and "count" in header
    line = next(line for line in res.stdout.splitlines() if line.startswith("sd3 "))
    assert "fake" in line and "held-in" in line and "regenerate" in line and "3000" in line
    assert "import" in next(line for line in res.stdout.splitlines() if line.startswith("dalle3 "))


def test_list_v1_profile_and_generators_and_json():
    v1 = run_cli("list", "datasets", "--profile", "v1", "--json")
    rows = json.loads(v1.stdout)
    assert len(rows) == 16 and "lte" in [r["name"] for r in rows]
    assert next(r for r in rows if r["name"] == "sd2")["role"] == "held-in"
    gens = run_cli("list", "generators")
    assert "sd3-medium" in gens.stdout and "StableDiffusion3Pipeline" in gens.stdout and "(15 rows)" in gens.stdout


def test_list_does_not_import_torch():
    code = "import sys; from afpbench.cli import main\ntry:\n main(['list', 'datasets'])\nexcept SystemExit: pass\nprint('TORCH' if 'torch' in sys.modules else 'NOTORCH')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().endswith("NOTORCH"), out.stdout[-200:]


def test_list_detectors_shows_variants_trainability_and_licence_without_torch():
    code = (
        "import json, sys; from afpbench.cli import main\ntry:\n main(['list', 'detectors', '--json'])\nexcept SystemExit: pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    text, _, flag = out.stdout.rstrip().rpartition("\n")
    assert flag == "NOTORCH", out.stdout[-300:] + out.stderr[-300:]
    rows = {r["name"]: r for r in json.loads(text)}
    detectors = [r for r in rows.values() if r["kind"] == "detector"]
    assert len({r["name"].split(".")[0] for r in detectors}) >= 16 and len(detectors) > 30
    # One row per name.tag, with how it trains, whether it needs weights, and its licence flag.
    assert rows["antifakeprompt.lama"]["trainable"] == "gradient" and rows["antifakeprompt.lama"]["weights"] == "needed"
    assert rows["probe.siglip2"]["trainable"] == "closed-form" and rows["npr.paper"]["trainable"] == "-"
    assert rows["qwen_vl.3b"]["licence"] == "non-commercial" and rows["qwen_vl"]["licence"] == "-"
    assert rows["bfree"]["licence"] == "non-commercial" and rows["format"]["kind"] == "sanity" and rows["test_toy"]["kind"] == "test"
    assert "random.<seed>" in rows and rows["cnnspot.blur_jpg_prob0.5"]["implemented by"] == "afpbench.detectors.cnnspot:CNNSpot"
    table = run_cli("list", "detectors").stdout
    assert table.splitlines()[0].split() == ["name", "kind", "trainable", "weights", "licence", "implemented", "by"]
    assert f"({len(rows)} rows)" in table


def test_unknown_command_and_profile_suggest_the_nearest():
    res = run_cli("lsit")
    assert res.returncode == 2 and "Did you mean: list" in res.stderr
    res = run_cli("list", "datasets", "--profile", "v33")
    assert res.returncode == 2 and res.stderr.startswith("error: Unknown profile 'v33'") and "v3" in res.stderr


def test_verify_ok_and_bad_exit_codes(dataset, tmp_path):
    ok = run_cli("verify", str(dataset))
    assert ok.returncode == 0 and ok.stdout.startswith("ok")
    bad = tmp_path / "photos"
    shutil.copytree(dataset, bad)
    shard = next((bad / "data").glob("*.parquet"))
    raw = bytearray(shard.read_bytes())
    raw[100] ^= 1
    shard.write_bytes(bytes(raw))
    res = run_cli("verify", str(bad))
    assert res.returncode == 1 and shard.name in res.stderr
    missing = run_cli("verify", str(tmp_path / "none"))
    assert missing.returncode == 2 and "manifest.json" in missing.stderr


def test_push_dry_run_lists_files_and_validates_card(dataset):
    res = run_cli("push", str(dataset), "--repo-id", "my-lab/afpbench-photos", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "README.md" in res.stdout and "manifest.json" in res.stdout and "data/test-00000-of-00001.parquet" in res.stdout
    assert "card: valid" in res.stdout and "my-lab/afpbench-photos" in res.stdout


def test_push_refuses_bad_card_and_bad_repo_id(dataset, tmp_path):
    bad = tmp_path / "photos"
    shutil.copytree(dataset, bad)
    (bad / "README.md").write_text("no front matter here\n")
    res = run_cli("push", str(bad), "--repo-id", "lab/x", "--dry-run")
    assert res.returncode == 2 and "front matter" in res.stderr
    res = run_cli("push", str(dataset), "--repo-id", "no-owner", "--dry-run")
    assert res.returncode == 2 and "ORG/NAME" in res.stderr


def test_push_offline_fails_at_once_with_one_line(dataset):
    res = run_cli("push", str(dataset), "--repo-id", "my-lab/afpbench-photos", env={"HF_HUB_OFFLINE": "1"}, timeout=30)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "offline" in res.stderr and "--dry-run" in res.stderr


def test_push_without_login_names_the_fix(dataset, tmp_path):
    res = run_cli("push", str(dataset), "--repo-id", "my-lab/afpbench-photos",
                  env={"HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": ""}, timeout=30)
    assert res.returncode == 2 and "hf auth login" in res.stderr


def test_env_prints_versions():
    res = run_cli("env")
    assert res.returncode == 0
    for key in ("python", "torch", "diffusers", "transformers", "datasets", "accelerate", "cuda available"):
        assert key in res.stdout
    from importlib.metadata import version

    # The installed torch's own version string, not a pinned literal.
    assert version("torch") in res.stdout


# -- options every command shares (afpbench/cli/_options.py) ------------------------------------
def _commands():
    import click

    from afpbench.cli import SUBCOMMANDS, cli

    ctx = click.Context(cli)
    for name in SUBCOMMANDS:
        command = cli.get_command(ctx, name)
        subs = command.commands.items() if isinstance(command, click.Group) else [(None, command)]
        for sub, cmd in subs:
            yield " ".join(filter(None, (name, sub))), cmd


def _option(command, flag):
    return next((p for p in command.params if flag in getattr(p, "opts", ())), None)


def test_shared_options_mean_the_same_in_every_command():
    import click

    from afpbench._util.devices import DTYPE_CHOICES

    seen = {"--device": [], "--dtype": [], "--num-workers": []}
    for name, command in _commands():
        if (p := _option(command, "--device")) is not None:
            seen["--device"].append(name)
            assert p.default == "auto" and p.type.name == "device", name
        if (p := _option(command, "--dtype")) is not None:
            seen["--dtype"].append(name)
            assert isinstance(p.type, click.Choice) and tuple(p.type.choices) == DTYPE_CHOICES and not p.type.case_sensitive, name
        if (p := _option(command, "--num-workers")) is not None:
            seen["--num-workers"].append(name)
        assert _option(command, "--workers") is None or _option(command, "--workers").hidden, name
        if (p := _option(command, "--out")) is not None:
            assert isinstance(p.type, click.Path) and p.help, name
    assert sorted(seen["--device"]) == ["build", "detect", "evaluate", "train"]
    assert sorted(seen["--dtype"]) == ["build", "detect", "evaluate", "plan build", "plan evaluate", "train"]
    assert sorted(seen["--num-workers"]) == ["detect", "evaluate", "import", "train"]


def test_dtype_spellings_reach_the_library_as_one():
    import click

    from afpbench.cli import cli

    for name in ("build", "evaluate"):
        command = cli.get_command(click.Context(cli), name)
        base = ["photos"] if name == "build" else ["--detector", "x", "--data", "."]
        got = {typed: command.make_context(name, [*base, "--dtype", typed]).params["dtype"] for typed in ("float16", "FP16", "half", "bfloat16", "fp32")}
        assert got == {"float16": "fp16", "FP16": "fp16", "half": "fp16", "bfloat16": "bf16", "fp32": "fp32"}, name


def _run_main(capsys, *args):
    from afpbench.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("given", "expected"), [((), 3), (("--num-workers", "2"), 2), (("--num-workers", "1"), 1)])
def test_the_old_workers_spelling_still_sets_num_workers(given, expected, tmp_path, capsys, monkeypatch):
    import afpbench.importer

    seen = []

    class Result:
        def lines(self):
            return ["imported"]

    monkeypatch.setattr(afpbench.importer, "import_set", lambda cfg: seen.append(cfg.workers) or Result())
    code, out, err = _run_main(capsys, "import", "mine", "--from", str(tmp_path), "--workers", "3", *given)
    assert code == 0 and out == "imported\n", err
    assert seen == [expected]
    # The old variable still works, and --help shows only the new name.
    monkeypatch.setenv("AFPBENCH_IMPORT_WORKERS", "5")
    code, _, err = _run_main(capsys, "import", "mine", "--from", str(tmp_path))
    assert code == 0 and seen[-1] == 5, err
    code, out, _ = _run_main(capsys, "import", "--help")
    assert code == 0 and "--num-workers" in out and "--workers" not in out.replace("--num-workers", "")


def test_log_level_shows_the_library_logger_tree_on_stderr(capsys, monkeypatch):
    import logging

    import afpbench.listing

    def rows(what, profile):
        log = logging.getLogger("afpbench.listing")
        log.debug("looking at %s", what)
        log.info("read %d recipes", 3)
        log.warning("one recipe is old")
        logging.getLogger("elsewhere").warning("not ours")
        return ["name"], [["x"]]

    monkeypatch.setattr(afpbench.listing, "listing_rows", rows)
    code, out, err = _run_main(capsys, "list")
    assert code == 0 and out.startswith("name")  # results on stdout, messages on stderr
    assert "read 3 recipes\nWARNING afpbench.listing: one recipe is old\n" in err and "looking at" not in err
    code, _, err = _run_main(capsys, "--log-level", "debug", "list")
    assert code == 0 and "DEBUG afpbench.listing: looking at datasets\nread 3 recipes\n" in err
    monkeypatch.setenv("AFPBENCH_LOG_LEVEL", "warning")
    code, _, err = _run_main(capsys, "list")
    assert code == 0 and "read 3 recipes" not in err and err.count("one recipe is old") == 1  # one handler, however often main() runs
    code, _, err = _run_main(capsys, "--log-level", "error", "list")
    assert code == 0 and "one recipe is old" not in err
    # The handler goes when the command ends: a program embedding main() keeps its own logging.
    assert not logging.getLogger("afpbench").handlers
    code, _, err = _run_main(capsys, "--log-level", "loud", "list")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "'loud' is not one of" in err
