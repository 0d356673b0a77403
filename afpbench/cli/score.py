"""``afpbench score``: recompute every metric from predictions files alone."""

from __future__ import annotations

import click

from afpbench.cli._options import out_option
from afpbench.cli._params import POSITIVE, SEED


@click.command("score")
@click.argument("predictions", nargs=-1, required=True, type=click.Path())
@click.option("--data", multiple=True, type=click.Path(), help="Check each file's dataset fingerprint against the sets here.")
@click.option("--real-pool", default=None, help="Comma-separated real sets to pair with (default: as recorded).")
@click.option("--bootstrap", type=POSITIVE, default=None, help="Bootstrap resamples (default: as recorded).")
@click.option("--seed", type=SEED, default=None, help="Bootstrap seed (default: as recorded).")
@out_option(file=True, help="Write the metrics as JSON to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON instead of a table.")
def command(predictions, data, real_pool, bootstrap, seed, out, as_json):
    """Recompute accuracy, averages and pair metrics from <results>/<detector>/predictions/*.parquet."""
    from pathlib import Path

    from afpbench.scoring import score_predictions

    pool = [p.strip() for p in real_pool.split(",") if p.strip()] if real_pool else None
    metrics, _ = score_predictions(predictions, data=[Path(d) for d in data], real_pool=pool, bootstrap=bootstrap, seed=seed)
    text = metrics.model_dump_json(indent=2)
    if out:
        Path(out).write_text(text + "\n")
    if as_json:
        click.echo(text)
        return
    pct = lambda m: "-" if m is None or m.value is None else f"{100 * m.value:6.2f} [{100 * m.ci_low:6.2f}, {100 * m.ci_high:6.2f}]"  # noqa: E731
    for name, m in metrics.per_set.items():
        click.echo(f"{name:>16} ({m.label}, n={m.n}): {pct(m.accuracy)}")
    click.echo(f"{'average':>16} ({metrics.averages.n_sets} sets): {pct(metrics.averages.all)}")
    click.echo(f"{'held-out':>16} ({metrics.averages.n_held_out} sets): {pct(metrics.averages.held_out)}")
    for p in metrics.pairs:
        click.echo(f"{p.fake:>16} vs {'+'.join(p.real) or 'itself'}: AUC {p.auc.value:.4f} AP {p.ap.value:.4f} EER {p.eer.value:.4f} "
                   f"TPR@1% {p.tpr_at_fpr_1.value:.4f} TPR@5% {p.tpr_at_fpr_5.value:.4f}")
