"""``afpbench evaluate``: score detectors on sets, write predictions and results files."""

from __future__ import annotations

import sys

import click

from afpbench.cli._options import device_option, dtype_option, out_option, workers_option
from afpbench.cli._params import POSITIVE, SEED
from afpbench.errors import AfpbenchError


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _per_detector(values: tuple[str, ...], detectors: tuple[str, ...], flag: str) -> list[str | None]:
    """One value per detector, in order; missing, empty, 'none' or '-' means the detector's default."""
    if len(values) > len(detectors):
        raise AfpbenchError(f"{len(values)} {flag} for {len(detectors)} --detector; give at most one {flag} per detector, in order.")
    return [None if (x or "").lower() in ("", "none", "-") else x for x in values] + [None] * (len(detectors) - len(values))


def _roles(value: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in _csv(value) or []:
        name, sep, role = item.partition("=")
        if not sep:
            raise AfpbenchError(f"--roles entry '{item}' is not SET=ROLE; write e.g. --roles mine=held-out.")
        out[name] = role
    return out


@click.command("evaluate")
@click.option("--detector", "detectors", multiple=True, required=True, help="Detector name[.tag]; repeat to score several in one pass.")
@click.option("--weights", multiple=True, help="Weights for the detectors, in order ('none' skips one).")
@click.option("--base", "bases", multiple=True, help="Backbone folder or hub id for the detectors, in order ('none' keeps a detector's default); e.g. a local InstructBLIP, or BLIP+LLM.")
@click.option("--detector-option", "detector_option", multiple=True, metavar="KEY=VALUE",
              help="A detector's own option (e.g. tokenization=transformers-4.35, precision=uniform), for every --detector that has it; may repeat.")
@click.option("--data", multiple=True, required=True, type=click.Path(), help="Folder holding one folder per set; may repeat.")
@click.option("--datasets", help="Comma-separated sets to evaluate (default: the profile's, else every folder found).")
@click.option("--profile", help="Benchmark profile: v3 or v1 (sets and held-in/held-out roles).")
@click.option("--perturb", multiple=True, help="Robustness suite (jpeg:Q, webp:Q, blur:S, resize:F, crop:N, noise:S, ..., social, chain, none); may repeat.")
@click.option("--perturb-seed", type=SEED, default=0, show_default=True, help="Seed of the perturbation suites.")
@click.option("--view", "views", multiple=True, help="View of the stored bytes (native, jpeg:Q, codec-matched, size-matched, crop:N); may repeat: every view in one pass.")
@click.option("--view-seed", type=SEED, default=0, show_default=True, help="Seed of the matched views' per-row draws.")
@click.option("--batch-size", type=POSITIVE, default=32, show_default=True)
@device_option()
@dtype_option(help="Default: the detector's.")
@click.option("--limit", type=POSITIVE, default=None, help="Only the first N rows of each set (results cannot be published); leave out for every row.")
@out_option("results", help="Results folder.")
@click.option("--real-pool", help="Comma-separated real sets paired with every fake set (default: held-out real sets).")
@click.option("--calibrate-on", help="Comma-separated sets to calibrate the threshold on (never test sets).")
@click.option("--roles", help="SET=ROLE,... overriding the catalog (held-in/held-out).")
@click.option("--bootstrap", type=POSITIVE, default=1000, show_default=True, help="Bootstrap resamples of every confidence interval.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Bootstrap seed.")
@workers_option(default=None, help="DataLoader workers (default: spare cores, max 4).")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Reuse cached scores of an earlier (killed) run.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def command(detectors, weights, bases, detector_option, data, datasets, profile, perturb, perturb_seed, views, view_seed, batch_size, device, dtype, limit, out,
            real_pool, calibrate_on, roles, bootstrap, seed, num_workers, resume, progress):
    """Evaluate detectors on test sets; writes <out>/<detector>/predictions/*.parquet and results.json."""
    from pathlib import Path

    from afpbench.evaluate import DetectorSpec, EvalConfig, detector_options, evaluate

    w = _per_detector(weights, detectors, "--weights")
    b = _per_detector(bases, detectors, "--base")
    opts = detector_options(list(detectors), list(detector_option))
    cfg = EvalConfig(
        detectors=[DetectorSpec(d, x, y, o) for d, x, y, o in zip(detectors, w, b, opts)], data=[Path(d) for d in data], datasets=_csv(datasets), profile=profile,
        perturb=list(perturb) or [None], perturb_seed=perturb_seed, views=list(views) or [None], view_seed=view_seed, out=Path(out), batch_size=batch_size, device=device, dtype=dtype,
        limit=limit, roles=_roles(roles), real_pool=_csv(real_pool), calibrate_on=_csv(calibrate_on) or [], bootstrap=bootstrap, seed=seed,
        num_workers=num_workers, resume=resume, progress=progress, command=["afpbench", *sys.argv[1:]],
    )
    # Under a multi-process launch only the main process gets the evaluations back.
    for ev in evaluate(cfg):
        click.echo(ev.summary_line())
