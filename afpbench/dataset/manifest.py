"""``manifest.json``: the typed contract of a set folder, its loader and its JSON Schema.

:class:`Manifest` describes every field the writer writes. The fields every set has
(counts, shards, fingerprint, versions, rejects) are required; what depends on how the
set was made (a build's recipe, generator and build facts, an import's key, a backend's
summary such as an attack's success rate) is optional and typed where afpbench writes it.
Models allow extra keys: a backend or source plugin may add its own provenance and a
reader keeps it; ``schema_version`` is what changes when a field's meaning does.

Manifests written by afpbench 0.1.0 validate as they are; ``tests/testdata/dataset-0.1.0``
holds real ones. ``manifest.schema.json`` is shipped in ``afpbench/schemas`` and
``docs/schemas`` (regenerate with :func:`export_schema`; a test fails when it is stale).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from afpbench import LABEL_NAMES
from afpbench._util.schema import first_error, newer_version
from afpbench.errors import DatasetError

MANIFEST_SCHEMA_VERSION = 1
PREVIEW_FILE = "preview.jpg"
_HEX64 = r"^[0-9a-f]{64}$"
_CONFIG = ConfigDict(extra="allow", strict=True, populate_by_name=True)


def _inside_the_set(value: str, suffix: str) -> str:
    # A listed path is opened relative to the set folder: it must not lead out of it.
    parts = value.split("/")
    if not value or value.startswith("/") or "\\" in value or ":" in parts[0] or any(x in ("", ".", "..") for x in parts) or not value.endswith(suffix):
        raise ValueError(f"must be a relative path to a {suffix} file inside the set folder (no '..', not absolute)")
    return value


class ManifestShard(BaseModel):
    """One shard as ``manifest.json`` lists it."""

    model_config = _CONFIG

    path: str = Field(description="Path of the parquet file, relative to the set folder.")
    sha256: str = Field(pattern=_HEX64, description="sha256 of the file's bytes.")
    num_rows: int = Field(ge=0, description="Rows in the file.")
    bytes: int = Field(ge=0, description="Size of the file.")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _inside_the_set(value, ".parquet")


class Choice(BaseModel):
    """A value afpbench chose where the paper is silent (or the user overrode)."""

    model_config = _CONFIG

    value: Any = Field(description="The value used.")
    note: str = Field("", description="Why this value; 'overridden with --param' when the user set it.")
    choice: bool | None = Field(None, description="True: not documented by the paper (imports copy the catalog's flag).")


class RecipeInfo(BaseModel):
    """The recipe a set was made from (a set imported outside the catalog names itself)."""

    model_config = _CONFIG

    name: str = Field(description="Recipe name (the catalog's YAML file name).")
    version: int = Field(description="Recipe version: bumped whenever the recipe's output changes.")
    params: dict[str, Any] | None = Field(None, description="Resolved generation parameters (recipe defaults with --param overrides).")
    choices: dict[str, Choice] | None = Field(None, description="Parameters the paper does not document, with afpbench's value and note.")
    description: str | None = Field(None, description="The recipe's own description of the set.")
    source: dict[str, Any] | None = Field(None, description="The input the recipe declares (kind, mix of collections, split).")


class StandIn(BaseModel):
    """Marks a build made with a tiny random-weight stand-in of the recipe's generator."""

    model_config = _CONFIG

    kind: str = Field(description="Stand-in pipeline kind (sd, sdxl, sd3...).")
    builder: str = Field(description="The function that built the stand-in.")
    folder: str | None = Field(None, description="Where the stand-in model was loaded from.")
    note: str | None = Field(None, description="What the stand-in is and is not.")


class GeneratorInfo(BaseModel):
    """The generator card and what was actually loaded; each backend adds its own facts."""

    model_config = _CONFIG

    name: str | None = Field(None, description="Generator card name.")
    license: str | None = Field(None, description="The generator's licence.")
    paper: str | None = Field(None, description="The generator's paper.")
    url: str | None = Field(None, description="Where the generator is published.")
    model_id: str | None = Field(None, description="Hub id or local folder of the loaded pipeline.")
    model: str | None = Field(None, description="Hub id, local path or 'module:function' of a loaded network.")
    model_kind: str | None = Field(None, description="How the model was given (hub, folder, file, callable).")
    revision: str | None = Field(None, description="Hub commit, or 'sha256:<hex>' of local files; null when nothing was loaded.")
    pipeline: str | None = Field(None, description="Pipeline or process class ('copy' for a sample of real images).")
    scheduler: str | None = Field(None, description="Scheduler class of a diffusion pipeline.")
    task: str | None = Field(None, description="What the generator did (text2image, inpaint, attack...).")
    device: str | None = Field(None, description="Device it ran on.")
    dtype: str | None = Field(None, description="Precision it ran in.")
    standin: StandIn | None = Field(None, description="Set when a stand-in was loaded instead of the named generator.")


class Override(BaseModel):
    """A recipe value the user replaced (--model, --source)."""

    model_config = _CONFIG

    recipe: Any = Field(description="The recipe's value.")
    used: Any = Field(description="The value used.")


class BuildInfo(BaseModel):
    """How ``afpbench build`` ran (facts of this run; not part of the set's identity)."""

    model_config = _CONFIG

    key: dict[str, Any] = Field(description="Resume key: the build's identity (recipe, version, count, seed, params, model, source, dtype).")
    processes: int = Field(ge=1, description="Processes that generated rows.")
    rows_by_rank: dict[str, int] = Field(description="Rows written by each process rank.")
    batch_size: int = Field(ge=1, description="Rows per generation batch.")
    device: str | None = Field(description="Requested device.")
    dtype: str | None = Field(description="Precision.")
    load_seconds: float = Field(description="Time to load the generator.")
    generate_seconds: float = Field(description="Time generating and writing rows.")
    images_per_second: float | None = Field(description="Rows written per second of generation.")
    torch_threads: int | None = Field(None, description="torch intra-op threads (CPU bytes depend on it).")


class ImportInfo(BaseModel):
    """How ``afpbench import`` ran."""

    model_config = _CONFIG

    key: dict[str, Any] = Field(description="The import's identity (name, source, count, seed, label, max_pixels).")


class SampleSummary(BaseModel):
    """Rows of a sample of real images: stored as they were, or cropped."""

    model_config = _CONFIG

    copied: int = Field(ge=0, description="Rows whose original bytes were kept.")
    cropped: int = Field(ge=0, description="Rows cropped and re-encoded.")


class RejectEntry(BaseModel):
    """An input that was not added, and why."""

    model_config = _CONFIG

    input: str = Field(description="The input (file, archive member, row) as shown to the user.")
    reason: str = Field(description="One line: why it was rejected.")


class PreviewInfo(BaseModel):
    """The preview grid beside the dataset card (sets written before it existed have none)."""

    model_config = _CONFIG

    path: str = Field(description="The JPEG file, relative to the set folder.")
    sha256: str = Field(pattern=_HEX64, description="sha256 of the file's bytes.")
    bytes: int = Field(ge=0, description="Size of the file.")
    rows: list[str] = Field(description="Ids of the rows shown, in grid order (a seeded sample, as the gallery draws it).")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _inside_the_set(value, ".jpg")


class Manifest(BaseModel):
    """``manifest.json`` of a set folder."""

    model_config = _CONFIG

    schema_version: int = Field(ge=1, description="Manifest schema version; readers refuse newer ones.")
    name: str = Field(description="Set name.")
    recipe: RecipeInfo | None = Field(None, description="The recipe the set was made from.")
    label: Literal["real", "fake"] | None = Field(None, description="real or fake: the label of every row of a recipe set.")
    family: str | None = Field(None, description="Recipe family (text-to-image, GAN, real photo, imported...).")
    paper_name: str | None = Field(None, description="The set's name in the AntifakePrompt paper.")
    description: str | None = Field(None, description="What was done, stand-ins and overrides included.")
    license: str | None = Field(None, description="Licence of the images when no generator names one.")
    seed: int | None = Field(None, description="Base seed of the build or the import's sample.")
    source: dict[str, Any] | None = Field(None, description="The input actually used (spec, collections, rows; an import's path and entries).")
    generator: GeneratorInfo | None = Field(None, description="Generator card and loaded model.")
    overrides: dict[str, Override] | None = Field(None, description="Recipe values replaced by the user, by what (model, source).")
    standin: StandIn | None = Field(None, description="Set when the whole set is a stand-in build.")
    acquisition: str | None = Field(None, description="'import' for imported sets (absent for builds).")
    import_: ImportInfo | None = Field(None, alias="import", description="How the set was imported.")
    build: BuildInfo | None = Field(None, description="How the set was built.")
    # Backend summaries (computed from every row's meta at finalize).
    sample: SampleSummary | None = Field(None, description="Sample backend: rows copied vs cropped.")
    safety_checker_flagged: int | None = Field(None, description="Diffusion backend: rows the pipeline's safety checker flagged.")
    attack_rows: int | None = Field(None, description="Attack backend: rows attacked.")
    attack_success_rate: float | None = Field(None, description="Attack backend: fraction of rows where the attack succeeded (see success_definition).")
    success_definition: str | None = Field(None, description="Attack backend: what counts as a success.")
    clean_vs_attacked_changed_rate: float | None = Field(None, description="Attack backend: fraction of rows whose predicted class changed.")
    mean_linf_255: float | None = Field(None, description="Attack backend: mean L-inf perturbation, in 1/255 units.")
    clean_accuracy: float | None = Field(None, description="Attack backend: classifier accuracy on clean inputs (labelled rows).")
    attacked_accuracy: float | None = Field(None, description="Attack backend: classifier accuracy on attacked rows (labelled rows).")
    mean_feature_distance_ratio: float | None = Field(None, description="Poisoning: mean ratio of feature distances to the target after/before.")
    rows_per_trigger: dict[str, int] | None = Field(None, description="Backdoor: rows per trigger pattern.")
    mask_ratio_mean: float | None = Field(None, description="Network backend: mean masked fraction of the inpainted images.")
    mask_ratio_min: float | None = Field(None, description="Network backend: smallest masked fraction.")
    mask_ratio_max: float | None = Field(None, description="Network backend: largest masked fraction.")
    distinct_classes: int | None = Field(None, description="Network backend: distinct class indices of a class-conditional generator.")
    # Facts of the writing.
    afpbench_version: str = Field(description="afpbench version that wrote the set.")
    libraries: dict[str, str | None] = Field(description="Versions of the packages the writer saw (null: not installed).")
    created: str = Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", description="When the set was finalized, UTC (YYYY-MM-DDTHH:MM:SSZ).")
    num_rows: int = Field(ge=0, description="Rows in the set.")
    counts: dict[str, int] = Field(description="Rows per label name (real, fake).")
    formats: dict[str, int] | None = Field(None, description="Rows per stored image format.")
    shards: list[ManifestShard] = Field(description="The parquet shards, in row order.")
    fingerprint: str = Field(pattern=_HEX64, description="Content fingerprint: sha256 over ids, labels, image bytes and row fields in row order.")
    recipe_fingerprint: str | None = Field(
        None, pattern=_HEX64,
        description="Recipe fingerprint: sha256 over the recipe identity and every row's id, prompt, source and seed; equal for faithful rebuilds (absent in sets written before it existed).",
    )
    preview: PreviewInfo | None = Field(None, description="The preview grid shown by the dataset card.")
    rejects: list[RejectEntry] = Field(description="Inputs not added, with the reason.")

    @field_validator("counts")
    @classmethod
    def _label_counts(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(LABEL_NAMES))
        if unknown:
            raise ValueError(f"has label(s) {', '.join(unknown)}; only {', '.join(LABEL_NAMES)} exist")
        if any(v < 0 for v in value.values()):
            raise ValueError("has a negative count")
        return value


FIX = "restore the set's manifest.json or rebuild the set"


def parse_manifest(data: Any, where: str | Path) -> Manifest:
    """Validate a manifest's JSON value; every defect is a one-line DatasetError naming ``where``."""
    if not isinstance(data, dict):
        raise DatasetError(f"{where} is not a JSON object; {FIX}.")
    if version := newer_version(data, MANIFEST_SCHEMA_VERSION):
        raise DatasetError(f"{where} uses manifest schema {version}, newer than this afpbench understands ({MANIFEST_SCHEMA_VERSION}); upgrade afpbench.")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        loc, msg, n = first_error(exc)
        raise DatasetError(f"{where} is malformed at {loc}: {msg} ({n} error(s)); {FIX}.") from None


def read_manifest(folder: str | Path) -> tuple[dict[str, Any], Manifest]:
    """``<folder>/manifest.json`` as its JSON value and as the validated model."""
    mpath = Path(folder) / "manifest.json"
    try:
        data = json.loads(mpath.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise DatasetError(f"{mpath} is not UTF-8 text; {FIX}.") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{mpath} is not valid JSON ({exc.msg} at line {exc.lineno}); {FIX}.") from None
    except OSError as exc:
        raise DatasetError(f"{mpath} cannot be read ({exc.strerror or exc}); check its permissions or {FIX}.") from None
    return data, parse_manifest(data, mpath)


def load_manifest(folder: str | Path) -> dict[str, Any]:
    """Read and validate ``<folder>/manifest.json``; every defect is a one-line DatasetError."""
    return read_manifest(folder)[0]


def manifest_claims(manifest: dict[str, Any]) -> list[str]:
    """Where a (valid) manifest contradicts itself: row totals of shards, counts, formats."""
    problems = []
    n = manifest["num_rows"]
    listed = sum(s["num_rows"] for s in manifest["shards"])
    if listed != n:
        problems.append(f"manifest.json: its shards hold {listed} rows in total, its num_rows says {n}")
    if sum(manifest["counts"].values()) != n:
        problems.append(f"manifest.json: its label counts {manifest['counts']} add up to {sum(manifest['counts'].values())} rows, its num_rows says {n}")
    formats = manifest.get("formats")
    if formats is not None and sum(formats.values()) != n:
        problems.append(f"manifest.json: its format counts add up to {sum(formats.values())} rows, its num_rows says {n}")
    paths = [s["path"] for s in manifest["shards"]]
    if len(set(paths)) != len(paths):
        problems.append("manifest.json: a shard is listed twice")
    return problems


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of ``manifest.json``."""
    schema = Manifest.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"https://afpbench/schemas/manifest-v{MANIFEST_SCHEMA_VERSION}.schema.json", **schema}


def export_schema(*folders: str | Path) -> list[Path]:
    """Write ``manifest.schema.json`` into each folder (default: the package's ``schemas``)."""
    from afpbench._util.io import atomic_write_text

    written = []
    for folder in folders or (Path(__file__).resolve().parent.parent / "schemas",):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written.append(atomic_write_text(folder / "manifest.schema.json", json.dumps(manifest_schema(), indent=2) + "\n"))
    return written


__all__ = [
    "MANIFEST_SCHEMA_VERSION", "PREVIEW_FILE", "Manifest", "ManifestShard", "RecipeInfo", "Choice", "StandIn", "GeneratorInfo",
    "Override", "BuildInfo", "ImportInfo", "SampleSummary", "RejectEntry", "PreviewInfo", "parse_manifest", "read_manifest",
    "load_manifest", "manifest_claims", "manifest_schema", "export_schema",
]
