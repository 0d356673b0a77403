"""Generation backends, one file per kind, registered lazily in ``BACKENDS``.

Importing this package is cheap: each backend module (and torch, diffusers...) is
imported only when ``BACKENDS.get(name)`` asks for it. ``backend_for`` says which
backend runs a recipe, from its generator card or, without one, from its acquisition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from afpbench.errors import AfpbenchError
from afpbench.registry import BACKENDS

if TYPE_CHECKING:
    from afpbench.catalog import GeneratorCard, Recipe

BACKENDS.register_lazy("diffusion", "afpbench.generate.diffusion:DiffusionBackend")
BACKENDS.register_lazy("network", "afpbench.generate.network:NetworkBackend")
BACKENDS.register_lazy("attacks", "afpbench.generate.attacks:AttackBackend")
BACKENDS.register_lazy("sample", "afpbench.generate.sample:SampleBackend")

# Source kinds whose rows are real images that the sample backend copies or crops.
_SAMPLED_KINDS = ("photos", "images", "import", "hf_dataset")


def backend_for(recipe: "Recipe", card: "GeneratorCard | None") -> str:
    """The registered backend name that builds ``recipe``.

    A generator card names its backend; "classifier" cards (the ImageNet classifier the
    attack recipes target) are run by the ``attacks`` backend. Recipes without a
    generator are buildable only when they sample real images (coco, flickr, photos).
    """
    if card is not None:
        return "attacks" if card.backend == "classifier" else card.backend
    if recipe.acquisition in ("sample", "import") and recipe.task == "sample" and recipe.source.kind in _SAMPLED_KINDS:
        return "sample"
    raise AfpbenchError(
        f"'{recipe.name}' cannot be regenerated (its images come from a closed model or a dataset you supply); "
        f"package your copy with 'afpbench import {recipe.name} PATH'."
    )
