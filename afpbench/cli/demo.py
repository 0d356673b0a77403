"""``afpbench demo``: the offline mini benchmark, end to end."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo-out"), show_default=True)
@click.option("--check", is_flag=True, help="Smaller sizes (under 3 minutes on 2 CPU cores); what CI runs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--keep", is_flag=True, help="Reuse sets and models an earlier run left in --out.")
def command(out: Path, check: bool, seed: int, quiet: bool, keep: bool) -> None:
    """Build a mini benchmark offline, train, evaluate every detector, publish the leaderboard."""
    from afpbench.demo import DemoConfig, run_demo

    run_demo(DemoConfig(out=out, check=check, seed=seed, quiet=quiet, keep=keep))
