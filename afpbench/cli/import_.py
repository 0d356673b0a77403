"""``afpbench import``: package existing images (folder, archive, saved HF dataset) as afpbench datasets."""

from __future__ import annotations

from pathlib import Path

import click

from afpbench.cli._options import out_option, workers_option
from afpbench.cli._params import POSITIVE, SEED


@click.command("import")
@click.argument("name", required=False)
@click.option("--from", "source", required=True, type=click.Path(path_type=Path), help="Folder, .tar/.tar.gz/.zip archive, or a dataset saved with datasets' save_to_disk.")
@out_option("out", help="Folder that receives one dataset folder per set.")
@click.option("--count", type=POSITIVE, help="Keep a seeded sample of N images (default: all).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--label", type=click.Choice(["real", "fake"]), help="Class of a set outside the catalog.")
@click.option("--max-megapixels", type=POSITIVE, default=64, show_default=True, help="Reject images declaring more pixels (decompression-bomb guard).")
@workers_option(default=2, minimum=1, old_name="--workers", help="Threads that decode and check images.")
@click.option("--flush-rows", type=POSITIVE, default=256, hidden=True)
@click.option("--overwrite", is_flag=True, help="Replace a different dataset already at <out>/<name> (the same import re-run with the same content needs no flag).")
def command(name, source, out, count, seed, label, max_megapixels, num_workers, flush_rows, overwrite) -> None:
    """Import NAME from --from; without NAME, split the authors' test archive into its sets."""
    from afpbench.importer import ImportConfig, import_archive, import_set

    cfg = ImportConfig(name=name, source=source, out=out, count=count, seed=seed, label=label,
                       max_pixels=max_megapixels * 1_000_000, workers=num_workers, flush_rows=flush_rows, overwrite=overwrite)
    # Every entry seen is counted once: imported, rejected by reason, not examined, unmatched.
    result = import_set(cfg) if name else import_archive(cfg)
    for line in result.lines():
        click.echo(line)
