"""``afpbench env``: versions and devices, for bug reports."""

from __future__ import annotations

import click


@click.command("env")
def command() -> None:
    """Print python, library versions and CUDA/GPU information."""
    from afpbench.envinfo import environment

    for k, v in environment(full=True).items():
        click.echo(f"{k:>14}: {v}")
