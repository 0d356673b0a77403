"""``afpbench leaderboard``: results files -> leaderboard.json, leaderboard.md, index.html."""

from __future__ import annotations

import click

from afpbench.cli._options import out_option


@click.command("leaderboard")
@click.argument("results", nargs=-1, required=True, type=click.Path())
@out_option("site", help="Folder for the site.")
@click.option("--profile", default=None, help="Profile the results must belong to (v3, v1); default: theirs.")
@click.option("--reported/--no-reported", default=True, show_default=True, help="Add the paper's reported rows (marked 'reported').")
@click.option("--audit", "audit", default=None, type=click.Path(), help="An 'afpbench audit' folder (or its audit.json): adds the shortcut audit section.")
@click.option(
    "--data", "data", multiple=True, type=click.Path(),
    help="Data folders the results were evaluated on: builds the sets gallery (sets.html) into the site and links each column to it (repeatable).",
)
@click.option("--same-recipe", is_flag=True, default=False, help="Accept results on different builds of a set when their recipe fingerprints agree; such rows are marked.")
def command(results, out, profile, reported, audit, data, same_recipe):
    """Build the leaderboard (JSON, Markdown, HTML with plots) from results files."""
    from afpbench.leaderboard import build_site

    path = build_site(list(results), out, profile=profile, reported=reported, audit=audit, data=list(data) or None, same_recipe=same_recipe)
    site = path.parent
    extra = ", sets.html" if data else ""
    click.echo(f"wrote {site / 'index.html'}, {site / 'leaderboard.md'}{extra} and {path}")
