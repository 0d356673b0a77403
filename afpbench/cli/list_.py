"""``afpbench list datasets|generators|profiles|detectors``: the catalog at a glance (never imports torch)."""

from __future__ import annotations

import json

import click


@click.command("list")
@click.argument("what", type=click.Choice(["datasets", "generators", "profiles", "detectors"]), default="datasets")
@click.option("--profile", default="v3", show_default=True, help="Benchmark version for 'datasets' (v3: 23 sets, v1: 16 sets); 'all' lists every recipe.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def command(what: str, profile: str, as_json: bool) -> None:
    """List the test sets, generator models, benchmark profiles or detectors."""
    from afpbench.listing import listing_rows, render_table

    headers, rows = listing_rows(what, profile)
    click.echo(json.dumps([dict(zip(headers, r)) for r in rows], indent=1) if as_json else render_table(headers, rows))
