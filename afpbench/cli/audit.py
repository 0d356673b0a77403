"""``afpbench audit DIR...``: each set's encoding, and how well it alone separates fakes from reals."""

from __future__ import annotations

from pathlib import Path

import click

from afpbench.cli._options import out_option
from afpbench.cli._params import SEED


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.command("audit")
@click.argument("data", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--datasets", help="Comma-separated sets to audit (default: the profile's, else every set found).")
@click.option("--profile", help="Benchmark profile (v3, v1): its sets, roles and real pool.")
@click.option("--real-pool", help="Comma-separated real sets paired with every fake set (default: the held-out real sets).")
@out_option("audit", help="Folder for audit.json, audit.md, images.parquet and plots/.")
@click.option("--bootstrap", type=click.IntRange(min=1), default=1000, show_default=True, help="Bootstrap resamples of each AUC interval.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the folds and the bootstrap.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Read only the first N rows of each set (a quick look).")
@click.option("--no-plots", is_flag=True, help="Skip the matplotlib plots.")
def command(data, datasets, profile, real_pool, out, bootstrap, seed, limit, no_plots):
    """Audit DATA folders (one folder per set inside) or set folders for codec and size shortcuts."""
    from afpbench.audit import SHORTCUTS, AuditConfig, audit

    report = audit(AuditConfig(
        data=list(data), datasets=_csv(datasets), profile=profile, out=out, real_pool=_csv(real_pool),
        bootstrap=bootstrap, seed=seed, limit=limit, plots=not no_plots,
    ))
    n = sum(s.n for s in report.sets.values())
    click.echo(f"read {n} images from {len(report.sets)} sets ({report.images_per_second:,.0f} images/s); real pool: {', '.join(report.real_pool) or '(none)'}")
    for p in report.pairs:
        aucs = "  ".join(f"{k} {p.shortcuts[k].value:.2f}" for k in (*SHORTCUTS, "all"))
        click.echo(f"{'FLAG' if p.flagged else 'ok  '} {p.fake:>16}: {aucs}" + (f"\n     {'':>16}  {p.summary}" if p.flagged else ""))
    click.echo(f"wrote {out / 'audit.json'}, {out / 'audit.md'}")
