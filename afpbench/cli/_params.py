"""Option types every subcommand shares, so bad values are refused while parsing.

A value click refuses becomes one ``error: Invalid value for '--x': ...`` line before any
model, dataset or output folder is touched.
"""

from __future__ import annotations

import math

import click

from afpbench._util.devices import DEVICE_HELP, check_device_name, resolve_device
from afpbench.errors import AfpbenchError

# numpy's legacy seeding, torch.manual_seed and every library afpbench seeds accept 0..2**32-1.
SEED = click.IntRange(0, 2**32 - 1)
POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)


class FiniteFloat(click.FloatRange):
    """A float range that also refuses nan and inf (which compare as in-range)."""

    name = "finite float range"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


class Device(click.ParamType):
    """A ``--device`` value: in the vocabulary of ``afpbench._util.devices``, and present here.

    The value is returned lower-cased and ``auto`` stays ``auto``: the library resolves it
    (a launcher's device, else CUDA when visible, else CPU). Asking for an accelerator
    imports torch to check it is there: the command is about to import torch anyway, and
    failing here beats failing after the data was read.
    """

    name = "device"

    def get_metavar(self, param, ctx=None) -> str:
        return "[auto|cpu|cuda|cuda:N|mps]"

    def convert(self, value, param, ctx):
        if value is None:
            return None
        try:
            dev = check_device_name(value)
        except AfpbenchError:
            self.fail(f"'{value}' is not a device; use {DEVICE_HELP}.", param, ctx)
        if dev not in ("auto", "cpu"):
            try:
                resolve_device(dev)
            except AfpbenchError as exc:
                self.fail(str(exc), param, ctx)
        return dev


__all__ = ["NON_NEGATIVE", "POSITIVE", "SEED", "Device", "FiniteFloat"]
