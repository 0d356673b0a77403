"""The catalog: test-set recipes, generator cards and benchmark profiles, all YAML.

``recipes/*.yaml`` (one per test set), ``recipes/profiles/*.yaml`` (v3, v1) and
``generators/*.yaml`` (one per generator model) live at the top of the repository and
ship inside the wheel as ``afpbench/_catalog``. They are validated here with pydantic
so a typo in a recipe fails loudly, once, with the file named.

Every parameter carries ``choice``: true when the paper does not document it and
afpbench decided (the dataset card lists these), false when it is the paper's.
Only yaml and pydantic are imported: ``afpbench list`` must stay light.
"""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from afpbench._util.schema import first_error
from afpbench.errors import AfpbenchError
from afpbench.registry import did_you_mean


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Param(_Strict):
    """One recipe parameter and whether the paper documents it."""

    value: Any = Field(description="The value used when building the set.")
    choice: bool = Field(description="True: not documented by the paper, decided by afpbench.")
    note: str = Field("", description="Why this value (source of the fact, or reason for the choice).")


class SourceSpec(_Strict):
    """Where a set's inputs come from."""

    kind: Literal["captions", "images", "imagenet", "hf_dataset", "photos", "classes", "import"] = Field(
        description="captions: COCO/Flickr caption files; images: COCO/Flickr image folders; imagenet: an "
        "ImageNet-style folder; hf_dataset: a Hugging Face dataset; photos: the bundled offline photos; "
        "classes: class ids for a class-conditional network; import: images the user supplies."
    )
    mix: dict[str, int] = Field(default_factory=dict, description="How many rows come from each source collection.")
    dataset: str | None = Field(None, description="Hugging Face dataset id (hf_dataset) or collection name.")
    config: str | None = Field(None, description="Dataset configuration name, when it has several.")
    split: str | None = Field(None, description="Which split of the source collection.")
    choice: bool = Field(False, description="True when the source or its mix is an afpbench choice.")
    note: str = ""


class Recipe(_Strict):
    """A test set: what it is, how afpbench obtains it, with every parameter."""

    name: str
    version: int = Field(ge=1, description="Bumped whenever a change alters the rows or the images.")
    paper_name: str = Field(description="The set's name in the paper's tables.")
    label: Literal["real", "fake"] = Field(description="Every set is single-class.")
    role: Literal["held-in", "held-out"] = Field(description="Role in the v3 benchmark (profiles may override).")
    family: str
    acquisition: Literal["regenerate", "import", "sample"]
    description: str
    count: Param
    seed: int = 0
    generator: str | None = Field(None, description="A generators/*.yaml name, for regenerated sets.")
    task: str | None = Field(None, description="What the backend does: text2image, inpaint, upscale, controlnet, attack, backdoor, poison, sample, gan, super_resolution.")
    source: SourceSpec
    params: dict[str, Param] = Field(default_factory=dict)
    aliases: list[str] = Field(default_factory=list, description="Folder names of this set in the authors' archives.")
    profiles: list[str] = Field(default_factory=list, description="Profiles listing this set (filled from profiles/*.yaml).")

    @property
    def label_id(self) -> int:
        return 0 if self.label == "real" else 1

    def resolved_params(self) -> dict[str, Any]:
        return {k: p.value for k, p in self.params.items()}

    def choices(self) -> dict[str, Param]:
        """Everything in this recipe that afpbench decided (for the dataset card)."""
        out = {k: p for k, p in self.params.items() if p.choice}
        if self.count.choice:
            out = {"count": self.count, **out}
        if self.source.choice:
            out = {"source": Param(value=self.source.mix or self.source.dataset, choice=True, note=self.source.note), **out}
        return out

    @model_validator(mode="after")
    def _check(self) -> "Recipe":
        if self.acquisition == "regenerate" and not self.generator:
            raise ValueError("a regenerated set needs a generator")
        if self.source.mix and sum(self.source.mix.values()) != self.count.value:
            raise ValueError(f"source.mix adds up to {sum(self.source.mix.values())}, not count {self.count.value}")
        return self


class Stage(_Strict):
    pipeline: str
    model_id: str
    revision: str | None = None
    dtype: str | None = None


class GeneratorCard(_Strict):
    """A generator model: which backend runs it, how, and under what license."""

    name: str
    backend: Literal["diffusion", "network", "attacks", "sample", "classifier"]
    description: str
    pipeline: str | None = Field(None, description="diffusers pipeline class, or the network's I/O kind.")
    model_id: str | None = Field(None, description="Hub id or a local path; overridden with --model.")
    revision: str | None = Field(None, description="Pinned hub revision; None = the default branch, resolved and recorded at build time.")
    dtype: Literal["fp16", "bf16", "fp32"] = "fp16"
    variant: str | None = Field(None, description="Weights variant to load (e.g. fp16).")
    stages: list[Stage] = Field(default_factory=list, description="Extra pipelines run after the first (cascades).")
    defaults: dict[str, Any] = Field(default_factory=dict)
    license: str
    paper: str
    url: str | None = None
    supplied_by_user: bool = Field(False, description="True when no public loader exists and the user supplies the network.")


class ProfileEntry(_Strict):
    name: str = Field(description="Recipe name.")
    role: Literal["held-in", "held-out"]
    column: str | None = Field(None, description="The set's column name in the reported table, when it differs.")


class Profile(_Strict):
    """A benchmark version: which sets, their roles, and the paper's reported table."""

    name: str
    description: str
    sets: list[ProfileEntry]
    reported: str | None = Field(None, description="CSV (beside the profile) with the paper's reported accuracies.")
    paper_averages: dict[str, dict[str, float]] = Field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.sets]

    def role(self, name: str) -> str:
        for e in self.sets:
            if e.name == name:
                return e.role
        raise did_you_mean(name, self.names, f"dataset of profile {self.name}")

    def held_out(self) -> list[str]:
        return [e.name for e in self.sets if e.role == "held-out"]

    def reported_rows(self) -> dict[str, dict[str, float]]:
        """method -> {set name: accuracy in %} from the paper's table (set names as in the catalog)."""
        if not self.reported:
            return {}
        column_to_name = {(e.column or e.name): e.name for e in self.sets}
        path = catalog_root() / "recipes" / "profiles" / self.reported
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        methods = [c for c in rows[0] if c not in ("dataset", "role")]
        out: dict[str, dict[str, float]] = {m: {} for m in methods}
        for row in rows:
            name = column_to_name[row["dataset"]]
            for m in methods:
                out[m][name] = float(row[m])
        return out


# -- locating and loading -------------------------------------------------------------
def catalog_root() -> Path:
    """The folder holding ``recipes/`` and ``generators/``.

    In an installed wheel they are ``afpbench/_catalog``; in a source checkout
    (editable install) the repository root. ``AFPBENCH_CATALOG`` overrides both.
    """
    env = os.environ.get("AFPBENCH_CATALOG")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    packaged = here / "_catalog"
    if (packaged / "recipes").is_dir():
        return packaged
    return here.parent


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise AfpbenchError(f"{path} is not valid YAML ({exc}); fix the file.") from exc
    if not isinstance(data, dict):
        raise AfpbenchError(f"{path} must hold a YAML mapping; fix the file.")
    return data


def _validate(model: type[BaseModel], path: Path) -> Any:
    data = _load_yaml(path)
    try:
        obj = model.model_validate(data)
    except ValidationError as exc:
        where, msg, n = first_error(exc)
        raise AfpbenchError(f"{path}: {where}: {msg} ({n} error(s)); fix the file.") from exc
    if getattr(obj, "name", path.stem) != path.stem:
        raise AfpbenchError(f"{path}: name '{obj.name}' differs from the file name; rename one of them.")
    return obj


@functools.cache
def generators() -> dict[str, GeneratorCard]:
    folder = catalog_root() / "generators"
    return {p.stem: _validate(GeneratorCard, p) for p in sorted(folder.glob("*.yaml"))}


@functools.cache
def profiles() -> dict[str, Profile]:
    folder = catalog_root() / "recipes" / "profiles"
    return {p.stem: _validate(Profile, p) for p in sorted(folder.glob("*.yaml"))}


@functools.cache
def recipes() -> dict[str, Recipe]:
    """All recipes by name, cross-checked against generators and profiles."""
    folder = catalog_root() / "recipes"
    out: dict[str, Recipe] = {}
    gens = generators()
    for path in sorted(folder.glob("*.yaml")):
        r = _validate(Recipe, path)
        if r.generator and r.generator not in gens:
            raise did_you_mean(r.generator, list(gens), "generator", f"Fix 'generator' in {path}.")
        out[r.name] = r
    member: dict[str, list[str]] = {}
    for prof in profiles().values():
        for e in prof.sets:
            if e.name not in out:
                raise did_you_mean(e.name, list(out), "dataset", f"Fix profile '{prof.name}'.")
            member.setdefault(e.name, []).append(prof.name)
    return {n: r.model_copy(update={"profiles": member.get(n, [])}) for n, r in out.items()}


def get_recipe(name: str) -> Recipe:
    all_ = recipes()
    if name not in all_:
        raise did_you_mean(name, list(all_), "dataset")
    return all_[name]


def get_generator(name: str) -> GeneratorCard:
    all_ = generators()
    if name not in all_:
        raise did_you_mean(name, list(all_), "generator")
    return all_[name]


def get_profile(name: str) -> Profile:
    all_ = profiles()
    if name not in all_:
        raise did_you_mean(name, list(all_), "profile")
    return all_[name]


def resolve_alias(folder_name: str) -> str | None:
    """Map a folder name of the authors' archives (any case) to a recipe name."""
    key = folder_name.strip().lower()
    for r in recipes().values():
        if key == r.name.lower() or key in (a.lower() for a in r.aliases):
            return r.name
    return None
