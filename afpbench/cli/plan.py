"""``afpbench plan``: what a build or an evaluation needs before it starts (models, GPU memory, disk)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from afpbench.cli._options import dtype_option, out_option
from afpbench.errors import AfpbenchError


def _report(plan, as_json: Path | None, force: bool) -> None:
    from afpbench.estimate import refusal

    click.echo(plan.render())
    if as_json is not None:
        as_json.write_text(json.dumps(plan.to_dict(), indent=2, default=str) + "\n")
    reason = refusal(plan)
    if reason and not force:
        raise AfpbenchError(reason)


def _gpu(gib: float | None):
    return None if gib is None else (f"a {gib:g} GiB GPU", int(gib * 1024**3))


@click.group("plan")
def command() -> None:
    """Estimate models to download, GPU memory, images and disk of a run (real architectures, no weights)."""


@command.command("build")
@click.argument("name")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@dtype_option(help="Default: the generator card's dtype.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Rows to build (default: the recipe's count).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Recipe parameter override, e.g. use_t5=false.")
@out_option("out", help="Where the build would write (its disk is checked).")
@click.option("--json", "as_json", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the plan as JSON.")
@click.option("--gpu-memory", type=click.FloatRange(min=0.1), default=None, metavar="GIB", help="Check against a GPU with this much memory instead of this machine's.")
@click.option("--force", is_flag=True, help="Print the plan and exit 0 even when it does not fit.")
def build_cmd(name, batch_size, dtype, count, params, out, as_json, gpu_memory, force):
    """Plan 'afpbench build NAME'."""
    from afpbench.estimate import plan_build
    from afpbench.plan import parse_param_values

    _report(plan_build(name, batch_size=batch_size, dtype=dtype, count=count, params=parse_param_values(params), out=out, gpu=_gpu(gpu_memory)), as_json, force)


@command.command("evaluate")
@click.option("--detector", "detectors", multiple=True, required=True, help="Detector name[.tag]; repeat for several.")
@click.option("--profile", default="v3", show_default=True, help="Benchmark profile whose sets are scored.")
@click.option("--datasets", default=None, help="Comma-separated sets instead of the profile's.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@dtype_option(help="Default: fp16.")
@out_option("results", help="Where the evaluation would write (its disk is checked).")
@click.option("--json", "as_json", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--gpu-memory", type=click.FloatRange(min=0.1), default=None, metavar="GIB", help="Check against a GPU with this much memory instead of this machine's.")
@click.option("--force", is_flag=True, help="Print the plan and exit 0 even when it does not fit.")
def evaluate_cmd(detectors, profile, datasets, batch_size, dtype, out, as_json, gpu_memory, force):
    """Plan 'afpbench evaluate --detector ... --profile v3'."""
    from afpbench.estimate import plan_evaluate

    sets = [s.strip() for s in datasets.split(",") if s.strip()] if datasets else None
    _report(plan_evaluate(list(detectors), profile=None if sets else profile, datasets=sets, batch_size=batch_size, dtype=dtype, out=out, gpu=_gpu(gpu_memory)), as_json, force)
