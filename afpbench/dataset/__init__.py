"""The on-disk dataset: columns, writer, reader, manifest, verify.

A set is one folder::

    <out>/<name>/README.md                         dataset card (YAML front matter: configs, features)
    <out>/<name>/preview.jpg                       a seeded grid of thumbnails the card shows
    <out>/<name>/manifest.json                     what is inside, with hashes (see ``Manifest``)
    <out>/<name>/data/test-00000-of-00003.parquet  image bytes embedded, never paths

Modules: ``schema`` (the one column table and the typed row), ``images`` (encode, decode,
thumbnails), ``names`` (set names, row ids), ``fingerprint`` (content and recipe
fingerprints), ``manifest`` (the typed ``Manifest`` and its loader), ``writer``
(``DatasetWriter``: resumable parts, atomic finalize), ``reader`` (``DatasetReader``) and
``verify``.

Only numpy, pyarrow, pydantic and PIL are imported here; ``datasets`` is imported lazily
when the Hugging Face feature metadata is needed.
"""

from afpbench.dataset.fingerprint import RECIPE_COLUMNS, ContentFingerprint, RecipeFingerprint, recipe_fingerprint, recipe_identity
from afpbench.dataset.images import decode_image, encode_png, preview_grid, thumbnail, thumbnail_image, to_rgb
from afpbench.dataset.manifest import (
    MANIFEST_SCHEMA_VERSION,
    Manifest,
    export_schema,
    load_manifest,
    manifest_claims,
    manifest_schema,
    read_manifest,
)
from afpbench.dataset.names import check_set_name, clean_id, has_control, unique_ids
from afpbench.dataset.reader import DatasetReader, open_dataset, sample_rows
from afpbench.dataset.schema import COLUMN_NAMES, COLUMNS, Row, arrow_schema, features_yaml, hf_features, make_row
from afpbench.dataset.verify import ContentReport, VerifyReport, check_content, check_contents, verify
from afpbench.dataset.writer import (
    DEFAULT_SHARD_BYTES,
    PARTIAL_DIR,
    DatasetWriter,
    WriterOptions,
    check_resume,
    existing_target,
    partial_path,
    recover_interrupted,
    resume_key_text,
)

__all__ = [
    # columns and rows
    "COLUMNS", "COLUMN_NAMES", "Row", "make_row", "hf_features", "arrow_schema", "features_yaml",
    # images
    "encode_png", "decode_image", "to_rgb", "thumbnail", "thumbnail_image", "preview_grid",
    # names and ids
    "check_set_name", "clean_id", "has_control", "unique_ids",
    # fingerprints
    "ContentFingerprint", "RecipeFingerprint", "RECIPE_COLUMNS", "recipe_fingerprint", "recipe_identity",
    # manifest
    "MANIFEST_SCHEMA_VERSION", "Manifest", "load_manifest", "read_manifest", "manifest_claims", "manifest_schema", "export_schema",
    # writing
    "PARTIAL_DIR", "DEFAULT_SHARD_BYTES", "DatasetWriter", "WriterOptions", "existing_target", "recover_interrupted",
    "resume_key_text", "check_resume", "partial_path",
    # reading and checking
    "DatasetReader", "open_dataset", "sample_rows", "ContentReport", "check_content", "check_contents", "VerifyReport", "verify",
]
