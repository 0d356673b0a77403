"""The ``afpbench`` command line.

One file per subcommand, each a thin wrapper over the library. Subcommands are imported
only when invoked, so ``afpbench list`` never pays for torch. Options can also be set
through ``AFPBENCH_<COMMAND>_<OPTION>`` environment variables (click's auto_envvar_prefix).
"""

from __future__ import annotations

import importlib
import sys

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
    "push": "push",
    "env": "env",
    "train": "train",
    "evaluate": "evaluate",
    "score": "score",
    "leaderboard": "leaderboard",
    "demo": "demo",
    "plan": "plan",
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
    try:
        cli.main(args=argv, prog_name="afpbench", standalone_mode=False)
    except AfpbenchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
