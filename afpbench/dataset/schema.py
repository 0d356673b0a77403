"""The columns of every afpbench set: one table, from which every declaration derives.

``COLUMNS`` is the only place a column is declared. The ``datasets`` features
(:func:`hf_features`), the parquet schema (:func:`arrow_schema`), the dataset card's
``dataset_info.features`` (:func:`features_yaml`), the dictionary-encoded columns and the
typed row (:class:`Row`, :func:`make_row`) are all read from it, so adding or retyping a
column is one edit here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import pyarrow as pa

from afpbench import LABEL_NAMES

Kind = Literal["string", "int32", "int64", "image", "class_label"]


@dataclass(frozen=True)
class Column:
    """One column: its name, its kind (which fixes the Arrow type, the ``datasets``
    feature and the card dtype) and whether parquet dictionary-encodes it."""

    name: str
    kind: Kind
    description: str
    #: Short values repeated on every row (set name, generator...): dictionary encoding
    #: makes them nearly free. Never for image bytes (it would hash them all first).
    dictionary: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("id", "string", "Row id, unique in the set: '<recipe>/<key>' for builds, '<set>/<path>' for imports."),
    Column("image", "image", "The image file's bytes (PNG for generated images, the original bytes for imports); never a path."),
    Column("label", "class_label", "0 = real, 1 = fake."),
    Column("dataset", "string", "Set name.", dictionary=True),
    Column("family", "string", "Recipe family (text-to-image, GAN, real photo...).", dictionary=True),
    Column("generator", "string", "Generator the image came from ('' for real images).", dictionary=True),
    Column("prompt", "string", "Text prompt of a generated image ('' when none)."),
    Column("source", "string", "Where the row's input came from (caption id, source image, imported path)."),
    Column("seed", "int64", "Per-row seed (-1 when none)."),
    Column("width", "int32", "Image width in pixels."),
    Column("height", "int32", "Image height in pixels."),
    Column("format", "string", "Stored image format (png, jpeg, webp...), lower case.", dictionary=True),
    # A JSON object string for recipe-specific fields (crop box, attack predictions,
    # original mode of a converted import...): new facts need no schema change.
    Column("meta", "string", "JSON object of recipe-specific fields."),
)

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
DICTIONARY_COLUMNS: list[str] = [c.name for c in COLUMNS if c.dictionary]


def _feature(column: Column):
    from datasets import ClassLabel, Image, Value

    if column.kind == "image":
        return Image()
    if column.kind == "class_label":
        return ClassLabel(names=list(LABEL_NAMES))
    return Value(column.kind)


def hf_features():
    """The declared ``datasets.Features`` of every afpbench set."""
    from datasets import Features

    return Features({c.name: _feature(c) for c in COLUMNS})


_SCHEMA: pa.Schema | None = None


def arrow_schema() -> pa.Schema:
    """The parquet schema, carrying the ``huggingface`` metadata so clients get the features."""
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = hf_features().arrow_schema
    return _SCHEMA


def part_schema() -> pa.Schema:
    """The schema of a writer's parts: the set's columns plus the sort index, dropped at finalize."""
    return arrow_schema().append(pa.field("_index", pa.int64()))


def card_dtype(column: Column) -> Any:
    """The column's dtype as the Hub's dataset-card metadata (``dataset_info.features``) writes it."""
    if column.kind == "class_label":
        return {"class_label": {"names": {str(i): n for i, n in enumerate(LABEL_NAMES)}}}
    return column.kind


def features_yaml() -> list[dict[str, Any]]:
    """``dataset_info.features`` of the dataset card."""
    return [{"name": c.name, "dtype": card_dtype(c)} for c in COLUMNS]


# -- rows -----------------------------------------------------------------------------
class ImageCell(TypedDict):
    bytes: bytes
    path: None


class Row(TypedDict):
    """One row as the writer takes it (keys in ``COLUMNS`` order)."""

    id: str
    image: ImageCell
    label: int
    dataset: str
    family: str
    generator: str
    prompt: str
    source: str
    seed: int
    width: int
    height: int
    format: str
    meta: str


def make_row(
    *,
    id: str,
    image: bytes,
    label: int,
    dataset: str,
    family: str = "",
    generator: str = "",
    prompt: str = "",
    source: str = "",
    seed: int = -1,
    width: int,
    height: int,
    format: str,
    meta: dict[str, Any] | str | None = None,
) -> Row:
    """A row in the project's column layout (validates the fixed contracts)."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 (real) or 1 (fake), got {label!r}")
    if not isinstance(image, (bytes, bytearray)):
        raise TypeError("image must be encoded bytes (PNG for generated images, the original bytes for imports)")
    return Row(
        id=id,
        image=ImageCell(bytes=bytes(image), path=None),
        label=int(label),
        dataset=dataset,
        family=family or "",
        generator=generator or "",
        prompt=prompt or "",
        source=source or "",
        seed=int(seed),
        width=int(width),
        height=int(height),
        format=format.lower(),
        meta=meta if isinstance(meta, str) else json.dumps(meta or {}, sort_keys=True),
    )


__all__ = [
    "Column", "COLUMNS", "COLUMN_NAMES", "DICTIONARY_COLUMNS", "hf_features", "arrow_schema", "part_schema",
    "card_dtype", "features_yaml", "Row", "ImageCell", "make_row",
]
