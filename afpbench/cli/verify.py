"""``afpbench verify DIR...``: recompute every shard hash, row count and the content fingerprint."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("verify")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def command(paths: tuple[Path, ...]) -> None:
    """Exit 1 and name the offending shard if anything differs from manifest.json."""
    from afpbench.dataset import verify

    bad = 0
    for p in paths:
        report = verify(p)
        if report.ok:
            click.echo(f"ok  {p}: {report.num_rows} rows, fingerprint {report.fingerprint[:16]}")
        else:
            bad += 1
            for problem in report.problems:
                click.echo(f"BAD {p}: {problem}", err=True)
    if bad:
        sys.exit(1)
