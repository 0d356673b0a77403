"""``afpbench build NAME``: regenerate or sample one test set into ``--out``."""

from __future__ import annotations

import click

from afpbench.cli._options import device_option, dtype_option, out_option, quiet_option
from afpbench.cli._params import SEED


@click.command("build")
@click.argument("name")
@out_option("out", help="Folder that receives <out>/<name>/.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Rows to build (default: the recipe's count).")
@click.option("--model", default=None, help="Hub id or local folder replacing the generator card's model (comma-separated per stage for cascades).")
@click.option("--source", default=None, help="Input path(s): PATH, key=PATH,key=PATH for mixes, or 'photos' for the bundled photos.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@device_option()
@dtype_option(help="Default: the card's dtype on GPU, fp32 on CPU.")
@click.option("--seed", type=SEED, default=None, help="Recipe seed override (row seeds derive from it and the row id).")
@quiet_option()
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Override a recipe parameter (recorded in the manifest); repeatable.")
@click.option("--name", "out_name", default=None, help="Output set name (default: the recipe name).")
@click.option("--overwrite", is_flag=True, help="Replace a different dataset already at <out>/<name> (the same build is never redone, and a partial one resumes without it).")
def command(name, out, count, model, source, batch_size, device, dtype, seed, quiet, params, out_name, overwrite):
    """Build the test set NAME (see 'afpbench list'); an interrupted build resumes when re-run."""
    from afpbench.build import build
    from afpbench.plan import BuildConfig, parse_param_values

    config = BuildConfig(
        out=out, count=count, seed=seed, model=model, source=source, batch_size=batch_size,
        device=None if device == "auto" else device, dtype=dtype,
        quiet=quiet, params=parse_param_values(params), name=out_name,
    )
    path = build(name, config, overwrite=overwrite)
    click.echo(str(path))
