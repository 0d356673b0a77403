"""Options several subcommands share, declared once: name, type, default and help.

Each factory returns a decorator used like ``click.option`` (``@device_option()``), so a
flag means the same thing, takes the same values and defaults the same way in every
command that has it:

- ``--device``: ``auto`` everywhere; the value reaches the library as typed (lower-cased),
  and ``auto`` is resolved there (a launcher's device, else CUDA when visible, else CPU).
- ``--dtype``: one choice of spellings (``fp16`` and ``float16`` name the same dtype),
  handed to the library in one spelling.
- ``--num-workers``: the one spelling; ``--workers``, its older name in ``train`` and
  ``import``, still works (hidden from ``--help``, read from its old variable too).
- ``--quiet`` and ``--out``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from afpbench._util.devices import DEFAULT_DEVICE, DEVICE_HELP, DTYPE_CHOICES, DTYPES, canonical_dtype
from afpbench.cli._params import Device

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def device_option(*, help: str = "Where to run: " + DEVICE_HELP + ".") -> Decorator:
    return click.option("--device", type=Device(), default=DEFAULT_DEVICE, show_default=True, help=help)


#: The spelling a --dtype reaches the library in, whichever one was typed: the generator
#: cards' (fp16, bf16, fp32), which every library entry point accepts.
SHORT_DTYPE = {canon: spellings[1] for canon, spellings in DTYPES.items()}


def _short_dtype(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return None if value is None else SHORT_DTYPE[canonical_dtype(value)]


def dtype_option(*, help: str) -> Decorator:
    """``--dtype``: any spelling of float32/float16/bfloat16; its default (None) is each command's own, which ``help`` states."""
    return click.option("--dtype", type=click.Choice(DTYPE_CHOICES, case_sensitive=False), default=None, callback=_short_dtype, help=help)


def quiet_option(*, help: str = "No progress bar or messages.") -> Decorator:
    return click.option("--quiet", is_flag=True, help=help)


def out_option(default: str | Path | None = None, *, help: str, required: bool = False, file: bool = False) -> Decorator:
    """``--out``: a folder (refused when a file is in the way), or with ``file`` a file."""
    kind = click.Path(dir_okay=False, path_type=Path) if file else click.Path(file_okay=False, path_type=Path)
    return click.option("--out", type=kind, default=None if default is None else Path(default), required=required,
                        show_default=default is not None, help=help)


def workers_option(*, default: int | None, help: str, minimum: int = 0, old_name: str | None = None) -> Decorator:
    """``--num-workers`` (stored as ``num_workers``); ``old_name`` keeps an older spelling working.

    The older spelling is a hidden option of its own, so it also keeps its own variable
    (``AFPBENCH_TRAIN_WORKERS``); given alone it sets ``num_workers``, and ``--num-workers``
    wins when both are given.
    """
    kind = click.IntRange(min=minimum)
    new = click.option("--num-workers", type=kind, default=default, show_default=default is not None, help=help)
    if old_name is None:
        return new

    dest = old_name.lstrip("-").replace("-", "_") + "_old_name"

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)  # also carries the options declared below this one (click keeps them on the function)
        def merged(*args: Any, **kwargs: Any) -> Any:
            old = kwargs.pop(dest)
            source = click.get_current_context().get_parameter_source("num_workers")
            if old is not None and source in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
                kwargs["num_workers"] = old
            return f(*args, **kwargs)

        merged = click.option(old_name, dest, type=kind, default=None, hidden=True, help="Older name of --num-workers.")(merged)
        return new(merged)

    return decorate


__all__ = ["device_option", "dtype_option", "out_option", "quiet_option", "workers_option"]
