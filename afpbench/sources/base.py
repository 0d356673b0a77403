"""The base class of the registered sources (``afpbench.registry.SOURCES``).

A source turns a recipe and the user's ``--source`` into every row of a build
(``plan``), then loads one row's input when its batch is about to run (``load_input``),
and, for rows that copy a whole real image, that image's own encoded bytes
(``load_original``). The rows it plans carry ``image_ref = {"kind": <source name>, ...}``
so that ``afpbench.sources.load_input`` finds the source again from the row alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from afpbench.plan import BuildConfig, Plan, WorkItem

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from afpbench.catalog import Recipe


class Source:
    """One kind of input (captions, an image folder, a dataset...)."""

    #: The registered name, also the ``kind`` of the ``image_ref`` of the rows it plans.
    name: ClassVar[str] = ""
    #: The recipe parameters it reads (see ``afpbench.generate.base.check_recipe``).
    param_names: ClassVar[frozenset[str]] = frozenset()

    def plan(self, recipe: "Recipe", config: BuildConfig, given: dict[str, str]) -> Plan:
        """Every row, in final order. ``config.count`` is set; ``given`` is the parsed ``--source``
        (``{"": PATH}`` for one path, ``{key: PATH}`` for a mix; see ``afpbench.sources.parse_source``)."""
        raise NotImplementedError

    def load_input(self, item: WorkItem) -> "Image.Image | None":
        """The row's input image (RGB PIL); None for rows without one."""
        return None

    def load_original(self, item: WorkItem) -> tuple[bytes, str] | None:
        """The input's own encoded bytes and format when the row is a whole real image, else None."""
        return None


def recipe_seed(recipe: "Recipe", config: BuildConfig) -> int:
    """The build's base seed: ``--seed``, else the recipe's."""
    return recipe.seed if config.seed is None else config.seed


def sample_indices(pool_size: int, n: int, seed: int) -> list[tuple[int, int]]:
    """``n`` (pool index, repetition) pairs: a seeded permutation, repeated if ``n`` exceeds the pool."""
    from afpbench.seeding import permutation

    if pool_size == 0:
        return []
    order = permutation(pool_size, seed)
    return [(order[i % pool_size], i // pool_size) for i in range(n)]


def scale_mix(mix: dict[str, int], count: int) -> dict[str, int]:
    """The recipe's mix scaled to ``count`` rows (largest remainder; keys keep their order)."""
    total = sum(mix.values())
    if total == count:
        return dict(mix)
    exact = {k: v * count / total for k, v in mix.items()}
    out = {k: int(x) for k, x in exact.items()}
    for k in sorted(mix, key=lambda k: (-(exact[k] - out[k]), list(mix).index(k)))[: count - sum(out.values())]:
        out[k] += 1
    return out


def check_keys(recipe: "Recipe", given: dict[str, Any], keys: list[str]) -> None:
    """Refuse a ``--source`` mix that lacks one of the recipe's collections or names another."""
    from afpbench.errors import AfpbenchError

    missing = [k for k in keys if k not in given]
    unknown = [k for k in given if k not in keys]
    if missing or unknown:
        raise AfpbenchError(
            f"'{recipe.name}' reads {', '.join(keys)}"
            + (f"; --source lacks {', '.join(missing)}" if missing else "")
            + (f"; --source has unknown {', '.join(unknown)}" if unknown else "")
            + f". Pass --source {','.join(f'{k}=PATH' for k in keys)} (or a single PATH for all rows)."
        )


def collection_keys(recipe: "Recipe") -> list[str]:
    """The names of the recipe's source collections (its mix keys, else its dataset or kind)."""
    return list(recipe.source.mix) or [recipe.source.dataset or recipe.source.kind]


__all__ = ["Source", "recipe_seed", "sample_indices", "scale_mix", "check_keys", "collection_keys"]
