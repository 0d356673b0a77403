"""``afpbench leaderboard``: results files -> leaderboard.json, leaderboard.md, index.html."""

from __future__ import annotations

import click

from afpbench.cli._options import out_option


@click.command("leaderboard")
@click.argument("results", nargs=-1, required=True, type=click.Path())
@out_option("site", help="Folder for the site.")
@click.option("--profile", default=None, help="Profile the results must belong to (v3, v1); default: theirs.")
@click.option("--reported/--no-reported", default=True, show_default=True, help="Add the paper's reported rows (marked 'reported').")
def command(results, out, profile, reported):
    """Build the leaderboard (JSON, Markdown, HTML with plots) from results files."""
    from afpbench.leaderboard import build_site

    path = build_site(list(results), out, profile=profile, reported=reported)
    click.echo(f"wrote {path.parent / 'index.html'}, {path.parent / 'leaderboard.md'} and {path}")
