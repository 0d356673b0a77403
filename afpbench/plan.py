"""The build contract: what ``afpbench.build`` hands between the sources and the backends.

``afpbench.sources`` plans every row of a build (``WorkItem``: id, seed, prompt, what
input to load) and returns a ``Plan``; ``afpbench.generate``'s backends turn batches of
items into images; ``afpbench.build`` wires the two. Both packages import this module
and neither imports the other, so everything they exchange is declared here: the rows,
the caller's ``BuildConfig``, the parameter parsing, and ``Inputs``, the few things a
backend may ask the sources for while it runs (a row's original bytes, a pool of images).

This module imports nothing from the project but its error type (``afpbench.errors``,
which imports nothing itself), and only the standard library at module level.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from afpbench.errors import AfpbenchError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from afpbench.catalog import Recipe


@dataclass
class BuildConfig:
    """What ``afpbench build`` and library callers choose; ``None`` means the recipe's value."""

    out: Path = Path("out")
    count: int | None = None  # default: recipe.count.value
    seed: int | None = None  # default: recipe.seed
    model: str | None = None  # hub id, local folder, TorchScript file, "module:callable", or a named offline classifier
    source: str | None = None  # path(s) of inputs, "photos" for the bundled photos, or "a=path,b=path" for mixes
    batch_size: int = 4
    device: str | None = "auto"  # auto (a launcher's device, else cuda when visible, else cpu), cpu, cuda, cuda:N, mps
    dtype: str | None = None  # fp16|bf16|fp32 (or float16...); default: the generator card's dtype on GPU, fp32 elsewhere
    quiet: bool = False
    params: dict[str, Any] = field(default_factory=dict)  # --param key=value overrides of recipe params (recorded)
    name: str | None = None  # output set name (default: recipe.name)


@dataclass
class WorkItem:
    """One row to produce, planned cheaply before any model is loaded."""

    index: int  # position in the final dataset (0..count-1)
    id: str  # stable row id, e.g. "sd3/coco-391895-0"
    seed: int  # afpbench.seeding.row_seed(recipe_seed, id)
    prompt: str = ""
    source: str = ""  # caption id / source image id
    # What the source needs to load the input image lazily: a dict whose "kind" is the
    # name of the registered source that planned the row (afpbench.registry.SOURCES).
    image_ref: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """Every row of a build in final order, and what the manifest records about the source."""

    items: list[WorkItem]
    info: dict[str, Any] = field(default_factory=dict)  # recorded as the manifest's "source"


@runtime_checkable
class Inputs(Protocol):
    """What a backend may ask the sources for while it runs (``afpbench.build`` passes one).

    ``load_input`` gives a row's input image (RGB PIL) or None for rows without one;
    ``load_original`` the input's own encoded bytes and format when the row is a whole
    real image, else None; ``image_pool`` ``count`` images named by ``spec`` ("photos"
    for seeded ``size`` px crops of the bundled photos with ids under ``prefix``, or a
    folder whose first files by sorted path are read as they are) as (ids, RGB images).
    """

    def load_input(self, item: WorkItem) -> "Image.Image | None": ...

    def load_original(self, item: WorkItem) -> tuple[bytes, str] | None: ...

    def image_pool(self, spec: str, count: int, *, size: int, seed: int, prefix: str = "pool") -> tuple[list[str], list["Image.Image"]]: ...


# -- parameters -----------------------------------------------------------------------
def resolve_params(recipe: "Recipe", config: BuildConfig) -> dict[str, Any]:
    """The recipe's parameter values with the caller's ``--param`` overrides applied."""
    return {**recipe.resolved_params(), **(config.params or {})}


def parse_param_values(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["steps=2", "height=64", "mask_kind=box"]`` -> typed values (YAML scalars/lists)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise AfpbenchError(f"--param '{pair}' is not key=value; write it as --param num_inference_steps=30.")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key] = value
    return out


def check_param_keys(recipe: "Recipe", params: dict[str, Any]) -> None:
    """Refuse overrides of parameters the recipe does not have (a typo would be silently ignored)."""
    known = list(recipe.params)
    for key in params:
        if key not in recipe.params:
            # Imported here: the registry's message builder is the project's one "did you mean".
            from afpbench.registry import did_you_mean

            raise did_you_mean(key, known, f"parameter of recipe '{recipe.name}'", f"Its parameters: {', '.join(known) or '(none)'}.")


# -- references -----------------------------------------------------------------------
def looks_like_path(ref: str) -> bool:
    """True for references that are meant as local paths rather than hub ids."""
    if ref.startswith(("/", "./", "../", "~", ".")) or ref.endswith(("/", os.sep)):
        return True
    if os.sep != "/" and os.sep in ref:
        return True
    return ref.count("/") > 1  # hub ids are "name" or "org/name"


__all__ = ["BuildConfig", "WorkItem", "Plan", "Inputs", "resolve_params", "parse_param_values", "check_param_keys", "looks_like_path"]
