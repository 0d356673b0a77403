"""``afpbench gallery DATA... --out SITE``: a page of seeded thumbnails per set, fakes beside the real pool."""

from __future__ import annotations

from pathlib import Path

import click

from afpbench.cli._options import out_option
from afpbench.cli._params import SEED


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.command("gallery")
@click.argument("data", nargs=-1, required=True, type=click.Path(path_type=Path))
@out_option("site", help="Site folder: writes sets.html and sets/.")
@click.option("--datasets", help="Comma-separated sets to show (default: the profile's, else every set found).")
@click.option("--profile", help="Benchmark profile (v3, v1): its sets, roles and real pool.")
@click.option("--real-pool", help="Comma-separated real sets shown beside every fake set (default: the held-out real sets).")
@click.option("--per-set", type=click.IntRange(min=1, max=200), default=12, show_default=True, help="Thumbnails per set.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the sample.")
def command(data, out, datasets, profile, real_pool, per_set, seed):
    """Write SITE/sets.html: what every set's images look like, with id, prompt, generator, seed and size."""
    from afpbench.gallery import GalleryConfig, build_gallery

    g = build_gallery(GalleryConfig(data=list(data), out=out, datasets=_csv(datasets), profile=profile, real_pool=_csv(real_pool), per_set=per_set, seed=seed))
    n = sum(len(s.thumbs) for s in g.sets.values())
    click.echo(f"wrote {g.page} ({len(g.sets)} sets, {n} thumbnails; real pool: {', '.join(g.real_pool) or 'none'})")
