"""``afpbench detect PATH... --detector NAME``: is this image fake? One line per image, every detector."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from afpbench.cli._options import device_option, dtype_option, workers_option
from afpbench.cli._params import POSITIVE


@click.command("detect")
@click.argument("paths", nargs=-1, required=True)
@click.option("--detector", "detectors", multiple=True, required=True, help="Detector name[.tag]; repeat to ask several (each image is decoded once).")
@click.option("--weights", multiple=True, help="Weights for the detectors, in order ('none' skips one).")
@click.option("--base", "bases", multiple=True, help="Backbone folder or hub id for the detectors, in order ('none' keeps a detector's default).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True, help="table for people (fakes first), json or csv for scripts.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the output to this file instead of standard output.")
@click.option("--explain", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write a heat map per image and detector into this folder, for detectors that can say where they look (patch scores, Grad-CAM).")
@click.option("--batch-size", type=POSITIVE, default=16, show_default=True)
@click.option("--max-megapixels", type=POSITIVE, default=64, show_default=True, help="Refuse images declaring more pixels (decompression-bomb guard).")
@device_option()
@dtype_option(help="Default: the detector's.")
@workers_option(default=0, help="DataLoader workers decoding the images (0: this process).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def command(paths, detectors, weights, bases, fmt, out, explain, batch_size, max_megapixels, device, dtype, num_workers, progress):
    """Score image files, folders (recursively) or archives; PATH '-' reads one path per line from standard input.

    Exit code: 0 when every readable image was scored, 1 when none could be read, 2 for a
    user error (unknown detector, missing weights).
    """
    from afpbench.cli.evaluate import _per_detector
    from afpbench.detect import DetectConfig, detect
    from afpbench.evaluate import DetectorSpec

    items: list[str] = []
    for p in paths:
        if p == "-":
            items += [line.strip() for line in sys.stdin if line.strip()]
        else:
            items.append(p)
    w = _per_detector(weights, detectors, "--weights")
    b = _per_detector(bases, detectors, "--base")
    report = detect(DetectConfig(
        paths=items, detectors=[DetectorSpec(d, x, y) for d, x, y in zip(detectors, w, b)], batch_size=batch_size, device=device, dtype=dtype,
        num_workers=num_workers, progress=progress, max_megapixels=max_megapixels, explain=explain,
    ))
    text = {"table": report.as_table, "json": report.as_json, "csv": report.as_csv}[fmt]()
    if out is not None:
        from afpbench._util.io import atomic_write_text

        atomic_write_text(out, text if text.endswith("\n") else text + "\n")
        click.echo(f"wrote {out} ({len(report.images)} images scored, {len(report.unreadable)} unreadable)", err=True)
    else:
        click.echo(text)
    sys.exit(report.exit_code)
