"""The ``afpbench`` command line.

One file per subcommand, each a thin wrapper over the library. Subcommands are imported
only when invoked, so ``afpbench list`` never pays for torch. Options can also be set
through ``AFPBENCH_<COMMAND>_<OPTION>`` environment variables (click's auto_envvar_prefix).
"""

from __future__ import annotations

import errno
import importlib
import os
import signal
import sys
import threading
from typing import NoReturn

import click

from afpbench.errors import AfpbenchError

# name -> module (in afpbench.cli) defining a click command called `command`.
SUBCOMMANDS = {
    "list": "list_",
    "build": "build",
    "import": "import_",
    "verify": "verify",
    "push": "push",
    "env": "env",
    "train": "train",
    "evaluate": "evaluate",
    "score": "score",
    "leaderboard": "leaderboard",
    "demo": "demo",
}


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
        return module.command

    def resolve_command(self, ctx, args):
        # Suggest the nearest subcommand instead of click's bare "No such command".
        cmd_name = args[0] if args else None
        if cmd_name and cmd_name not in SUBCOMMANDS and not cmd_name.startswith("-"):
            from afpbench.registry import did_you_mean

            raise click.UsageError(str(did_you_mean(cmd_name, list(SUBCOMMANDS), "command", "Run 'afpbench --help' for the list.")))
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, context_settings={"auto_envvar_prefix": "AFPBENCH", "help_option_names": ["-h", "--help"]})
@click.version_option(package_name="afpbench")
def cli() -> None:
    """Rebuild, evaluate and rank fake-image detectors on the AntifakePrompt benchmark."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    restore_sigterm = _stop_on_sigterm()
    try:
        cli.main(args=argv, prog_name="afpbench", standalone_mode=False)
    except AfpbenchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        _aborted(exc.__cause__)
    except OSError as exc:
        click.echo(f"error: {_os_error_message(exc)}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    finally:
        restore_sigterm()


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


# -- OS errors: one line naming the fix --------------------------------------------------------
def _os_error_message(exc: OSError) -> str:
    """One line for an OS error (disk full, file-size limit, read-only, permissions, paths)."""
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
