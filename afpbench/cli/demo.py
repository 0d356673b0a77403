"""``afpbench demo``: the offline mini benchmark, end to end."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from afpbench.cli._options import out_option, quiet_option
from afpbench.cli._params import SEED
from afpbench.errors import AfpbenchError

# The demo starts by deleting --out; these say a folder is one it made and may delete.
MARKER = ".afpbench-demo"
DEMO_ENTRIES = {"data", "train", "models", "results", "site", "incoming", "audit", MARKER}


def _check_replaceable(out: Path) -> None:
    """Refuse to delete a folder the demo did not make (``--out ~`` must not empty a home)."""
    if not out.is_dir() or (out / MARKER).exists():
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_ENTRIES)
    if foreign:
        raise AfpbenchError(
            f"--out {out} holds files the demo did not write (e.g. '{foreign[0]}') and the demo starts by deleting its --out; "
            "pass a new or empty folder (or an earlier demo's folder)."
        )


@click.command("demo")
@out_option("demo-out", help="Folder the demo replaces (a new, empty or earlier demo folder; anything else is refused).")
@click.option("--check", is_flag=True, help="Smaller sizes (under 3 minutes on 2 CPU cores); what CI runs.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@quiet_option(help="No progress bars.")
@click.option("--keep", is_flag=True, help="Reuse sets and models an earlier run left in --out.")
def command(out: Path, check: bool, seed: int, quiet: bool, keep: bool) -> None:
    """Build a mini benchmark offline, train, evaluate every detector, publish the leaderboard."""
    if not keep:
        _check_replaceable(out)
    from afpbench.cli import TERMINATED_EXIT_CODE, Terminated
    from afpbench.demo import DemoConfig, run_demo

    try:
        report = run_demo(DemoConfig(out=out, check=check, seed=seed, quiet=quiet, keep=keep), progress=click.echo)
    except Terminated:
        # The demo starts clean each time, so "run it again to resume" would not be true here.
        click.echo("error: stopped by SIGTERM; run afpbench demo again to start over.", err=True)
        sys.exit(TERMINATED_EXIT_CODE)
    finally:
        if out.is_dir():
            (out / MARKER).touch()
    click.echo("")
    click.echo("Native (the stored files): accuracy in %, mean AUC against the real pool")
    click.echo(report.table)
    if report.views_table:
        click.echo("")
        click.echo("The same sets with every fake re-encoded with a codec drawn from the real pool's (codec-matched view):")
        click.echo(report.views_table)
    if report.lead_line:
        click.echo(report.lead_line)
    click.echo("")
    click.echo(f"site: {report.site / 'index.html'}  (leaderboard.json, leaderboard.md beside it)")
    click.echo(f"total: {report.seconds:.0f}s")
    click.echo("  " + report.note)
