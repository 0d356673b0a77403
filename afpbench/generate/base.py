"""The contract between ``afpbench.build`` and the generation backends.

``build`` plans every row up front (``afpbench.plan.WorkItem``: id, seed, prompt, what
input to load), then hands batches of items and their loaded input images to a
``Backend``, which returns one ``Output`` per item. Backends never write files and never
draw from a shared random stream: each row is seeded from ``WorkItem.seed`` alone, which
is what makes subsets, resumed builds and builds split over processes give identical
rows. What a backend needs from the sources while it runs (a row's original bytes, a pool
of images) it asks ``self.inputs`` (``afpbench.plan.Inputs``), which ``build`` passes in:
backends never import ``afpbench.sources``.

Only the standard library is imported at module level; torch is imported by the
helpers that need it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from afpbench.errors import AfpbenchError
from afpbench.plan import BuildConfig, Inputs, WorkItem, resolve_params

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from afpbench.catalog import GeneratorCard, Recipe


@dataclass
class Output:
    """One produced row.

    ``image`` is stored as lossless PNG. A backend that copies a real image unchanged
    (the ``sample`` backend) may also pass its original encoded bytes in ``data`` with
    their ``format`` ("jpeg", "webp"...): re-encoding real photos would change exactly the
    compression traces detectors are sensitive to.
    """

    image: "Image.Image"
    meta: dict[str, Any] = field(default_factory=dict)
    data: bytes | None = None
    format: str | None = None


class Backend:
    """Base class of the generation backends (one subclass per file in afpbench/generate/)."""

    #: The registered name (afpbench.registry.BACKENDS) of the backend.
    kind: ClassVar[str] = ""
    #: The recipe tasks it runs.
    tasks: ClassVar[tuple[str, ...]] = ()
    #: The recipe parameters and generator-card defaults it reads (with its source's, every
    #: parameter a recipe may have: another one is a typo; see ``check_recipe``).
    param_names: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, recipe: "Recipe", card: "GeneratorCard | None", config: BuildConfig, inputs: Inputs | None = None):
        self.recipe = recipe
        self.card = card
        self.config = config
        self.params = resolve_params(recipe, config)
        self._inputs = inputs

    @property
    def inputs(self) -> Inputs:
        """The sources' side of the contract, for backends that read more than each row's input."""
        if self._inputs is None:
            raise AfpbenchError(
                f"The {self.kind or type(self).__name__} backend reads its inputs through the sources; construct it with "
                f"inputs=afpbench.sources.SourceInputs() (afpbench.build does)."
            )
        return self._inputs

    def param(self, key: str, default: Any = None) -> Any:
        """A recipe parameter (after --param overrides), else the generator card's default."""
        if key in self.params and self.params[key] is not None:
            return self.params[key]
        if self.card is not None and self.card.defaults.get(key) is not None:
            return self.card.defaults[key]
        return default

    def load(self) -> dict[str, Any]:
        """Load models once, before any work; raise ``AfpbenchError`` (one line naming the fix)
        if a model cannot be loaded. Returns provenance for the manifest: model_id, revision
        actually loaded, pipeline/class, scheduler, dtype, device."""
        return {}

    def run(self, items: list[WorkItem], inputs: list["Image.Image | None"]) -> list[Output]:
        """Produce one batch, seeding each row from ``item.seed`` (never a shared RNG stream)."""
        raise NotImplementedError

    @staticmethod
    def summarize(metas: list[dict[str, Any]]) -> dict[str, Any]:
        """Manifest extras computed from every row's meta at finalize (e.g. attack success rate)."""
        return {}


def check_recipe(backend: type[Backend], recipe: "Recipe", card: "GeneratorCard | None", source_params: frozenset[str] = frozenset()) -> None:
    """Refuse, before anything loads, a recipe the backend cannot run: another task, or a parameter
    (recipe or card default) that neither the backend nor the recipe's source reads."""
    from afpbench.registry import did_you_mean

    name = backend.kind or backend.__name__
    if recipe.task not in backend.tasks:
        raise AfpbenchError(f"'{recipe.name}' has task '{recipe.task}', which the {name} backend does not run ({', '.join(backend.tasks)}); fix recipes/{recipe.name}.yaml.")
    known = sorted(backend.param_names | source_params)
    for key in recipe.params:
        if key not in backend.param_names | source_params:
            raise did_you_mean(key, known, f"parameter of recipe '{recipe.name}'", f"Neither the {name} backend nor the recipe's source reads it; fix recipes/{recipe.name}.yaml.")
    for key in card.defaults if card is not None else ():
        if key not in backend.param_names:
            raise did_you_mean(key, sorted(backend.param_names), f"default of generator card '{card.name}'", f"The {name} backend does not read it; fix generators/{card.name}.yaml.")


# -- device and dtype -----------------------------------------------------------------
def build_dtype(config: BuildConfig, card: "GeneratorCard | None", device: str) -> str:
    """``--dtype`` if given, else the card's dtype on a GPU and float32 elsewhere; float16 off the GPU is refused.

    Returned in the short spelling (fp32, fp16, bf16) that manifests and resume keys
    have always recorded, so builds made before keep matching.
    """
    from afpbench._util.devices import DTYPES, dtype_name, resolve_dtype

    compute = resolve_dtype(device, config.dtype, cuda_default=card.dtype if card is not None else "float32")
    return DTYPES[dtype_name(compute)][1]


__all__ = ["Backend", "Output", "build_dtype", "check_recipe"]
