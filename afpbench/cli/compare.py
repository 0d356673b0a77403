"""``afpbench compare A B``: do two builds share the recipe, and how far apart are their pixels?"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click


@click.command("compare")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Rows that differ most to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def command(a, b, top, as_json):
    """Compare set folders A and B row by row; exit 1 when they are not builds of the same recipe."""
    from afpbench.compare import compare

    r = compare(a, b)
    if as_json:
        click.echo(json.dumps(r.as_dict(top), indent=2, default=lambda x: None if isinstance(x, float) and not math.isfinite(x) else x))
    else:
        s = r.summary()
        click.echo(f"recipe fingerprint : {'same' if r.same_recipe else 'DIFFERENT'} ({r.recipe_fingerprints[0][:12]} / {r.recipe_fingerprints[1][:12]})")
        click.echo(f"content fingerprint: {'same' if r.same_content else 'different'} ({r.content_fingerprints[0][:12]} / {r.content_fingerprints[1][:12]})")
        click.echo(f"rows               : {r.rows_a} / {r.rows_b}; compared {s['compared']}, only in A {len(r.only_a)}, only in B {len(r.only_b)}, other size {len(r.size_mismatch)}")
        click.echo(f"identical          : {s['identical_bytes']} bytes, {s['identical_pixels']} pixels")
        click.echo(f"PSNR (dB)          : median {s['psnr_median']:.2f}, min {s['psnr_min']:.2f}   SSIM: mean {s['ssim_mean']:.6f}, min {s['ssim_min']:.6f}")
        worst = [w for w in r.worst(top) if math.isfinite(w.psnr)]
        for w in worst:
            click.echo(f"  {w.id}: PSNR {w.psnr:.2f} dB, SSIM {w.ssim:.6f}")
    if not r.same_recipe:
        sys.exit(1)
