"""``afpbench push DIR --repo-id ORG/NAME``: publish a dataset folder to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("push")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--repo-id", required=True, help="Dataset repo on the Hub, ORG/NAME.")
@click.option("--private", is_flag=True, help="Create the repo private.")
@click.option("--dry-run", is_flag=True, help="Verify the folder, validate the card and list what would be uploaded; no network.")
def command(folder: Path, repo_id: str, private: bool, dry_run: bool) -> None:
    """Upload README.md, manifest.json and the parquet shards of FOLDER."""
    from afpbench.push import plan_push, push

    plan = plan_push(folder, repo_id, private)
    if dry_run:
        click.echo("\n".join(plan.lines()))
        click.echo("card: valid")
        return
    click.echo(f"pushed {len(plan.files)} files to {push(plan)}")
