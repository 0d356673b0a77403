"""Option types every subcommand shares, so bad values are refused while parsing.

A value click refuses becomes one ``error: Invalid value for '--x': ...`` line before any
model, dataset or output folder is touched.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import click

# numpy's legacy seeding, torch.manual_seed and every library afpbench seeds accept 0..2**32-1.
SEED = click.IntRange(0, 2**32 - 1)
POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)

# Names the detectors accept (afpbench.detectors.base), the short and the torch spelling.
DETECTOR_DTYPES = ["fp32", "fp16", "bf16", "float32", "float16", "bfloat16"]


def cuda_or_cpu() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class FiniteFloat(click.FloatRange):
    """A float range that also refuses nan and inf (which compare as in-range)."""

    name = "finite float range"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


class Device(click.ParamType):
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, and one that this machine has.

    ``auto`` converts to ``auto_value`` (each command's own meaning of "pick for me"; a
    callable is called to pick).
    Asking for an accelerator imports torch to check it is there: the command is about to
    import torch anyway, and failing here beats failing after the data was read.
    """

    name = "device"
    _PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

    def __init__(self, auto_value: str | None | Callable[[], str] = "auto"):
        self.auto_value = auto_value

    def get_metavar(self, param, ctx=None) -> str:
        return "[auto|cpu|cuda|cuda:N|mps]"

    def convert(self, value, param, ctx):
        if value is None:
            return None
        dev = str(value).strip().lower()
        if not self._PATTERN.match(dev):
            self.fail(f"'{value}' is not a device; use auto, cpu, cuda, cuda:N or mps.", param, ctx)
        if dev == "auto":
            return self.auto_value() if callable(self.auto_value) else self.auto_value
        if dev.startswith("cuda"):
            import torch

            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            index = int(dev.partition(":")[2] or 0)
            if count == 0:
                self.fail(f"'{dev}' asked for, but no CUDA device is visible; use cpu (or auto).", param, ctx)
            if index >= count:
                self.fail(f"'{dev}' asked for, but only {count} CUDA device(s) are visible (cuda:0..cuda:{count - 1}).", param, ctx)
        elif dev == "mps":
            import torch

            if not torch.backends.mps.is_available():
                self.fail("'mps' asked for, but this torch has no usable Apple GPU (mps); use cpu (or auto).", param, ctx)
        return dev


__all__ = ["DETECTOR_DTYPES", "NON_NEGATIVE", "POSITIVE", "SEED", "Device", "FiniteFloat", "cuda_or_cpu"]
