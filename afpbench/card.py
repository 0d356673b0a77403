"""The dataset card (README.md) of a set: Hub front matter + what the manifest proves.

The front matter follows the Hub's dataset-card metadata: ``configs`` points the
``datasets`` loader at the parquet shards (so ``load_dataset(DIR)`` and
``load_dataset(repo_id)`` read the same split), and ``dataset_info.features`` declares
the features so the viewer and the loader agree with the parquet schema.

The body says what was done, from the manifest: a stand-in build is named as one in
the title and the first line, and every override of the recipe (``--model``,
``--source``) is listed beside the recipe's own value.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from afpbench.dataset.manifest import Manifest
from afpbench.dataset.schema import features_yaml

REQUIRED_KEYS = ("pretty_name", "license", "task_categories", "configs", "dataset_info")


def _size_category(n: int) -> str:
    for limit, cat in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return cat
    return "1M<n<10M"


def _typed(manifest: Manifest | dict[str, Any]) -> Manifest:
    return manifest if isinstance(manifest, Manifest) else Manifest.model_validate(manifest)


def front_matter(manifest: Manifest | dict[str, Any]) -> dict[str, Any]:
    m = _typed(manifest)
    license_ = (m.generator.license if m.generator else None) or m.license or "other"
    paper = m.paper_name
    if m.standin:
        suffix = f" (stand-in for {paper})" if paper else " (stand-in)"
    else:
        suffix = f" ({paper})" if paper else ""
    tags = ["fake-image-detection", "afpbench", "antifakeprompt", "synthetic-images"] + (["stand-in"] if m.standin else [])
    return {
        "pretty_name": f"afpbench {m.name}{suffix}",
        "license": "other" if " " in license_ or "(" in license_ else license_.lower(),
        "task_categories": ["image-classification"],
        "tags": tags,
        "size_categories": [_size_category(m.num_rows)],
        "configs": [{"config_name": "default", "data_files": [{"split": "test", "path": "data/test-*.parquet"}]}],
        "dataset_info": {
            "features": features_yaml(),
            "splits": [{"name": "test", "num_bytes": sum(s.bytes for s in m.shards), "num_examples": m.num_rows}],
        },
    }


def render_card(manifest: Manifest | dict[str, Any]) -> str:
    """The README.md of a set, from its manifest (the typed model or its JSON value)."""
    m = _typed(manifest)
    fm = yaml.safe_dump(front_matter(m), sort_keys=False, width=120)
    rec, standin, gen = m.recipe, m.standin, m.generator
    title = f"# afpbench: {m.name}" + (" (stand-in build)" if standin else "")
    lines = ["---", fm.rstrip(), "---", "", title, ""]
    if standin:
        lines += [f"> **Stand-in build.** Made with afpbench's tiny random-weight `{standin.kind}` pipeline "
                  f"({standin.builder}), not with the generator the recipe names. Its images show that the "
                  "pipeline runs; they are not the paper's images and results on them are not the paper's numbers.", ""]
    lines += [m.description or "A test set of the afpbench fake-image detection benchmark.", ""]
    if m.preview:
        # A relative link: the Hub's card renders it from the repo, a local viewer from the folder.
        lines += [f"![A seeded sample of {len(m.preview.rows)} rows of {m.name} (JPEG thumbnails)]({m.preview.path})", ""]
    lines += [
        f"- rows: {m.num_rows} ({', '.join(f'{k} {v}' for k, v in m.counts.items())})",
        f"- label: {m.label or 'mixed'} (0 = real, 1 = fake)",
        f"- family: {m.family or 'n/a'}",
        f"- formats: {', '.join(f'{k} {v}' for k, v in (m.formats or {}).items())}",
        f"- recipe: {rec.name if rec else m.name} v{rec.version if rec else '?'}, seed {m.seed if m.seed is not None else 'n/a'}",
        f"- source: {_source_text(m)}",
        f"- fingerprint: `{m.fingerprint}`",
        *([f"- recipe fingerprint: `{m.recipe_fingerprint}` (shared by faithful rebuilds, see `afpbench compare`)"] if m.recipe_fingerprint else []),
        f"- rejected inputs: {len(m.rejects)} (listed in manifest.json)",
    ]
    if gen is not None and gen.model_dump(exclude_unset=True):
        used = gen.model_id or gen.model or ""
        role = f"stand-in for {gen.name or ''}" if standin else gen.name or ""
        lines.append(f"- generator: {role} `{used}` revision `{gen.revision or 'n/a'}`")
    if m.overrides:
        lines += ["", "## What differs from the recipe", "", "| what | recipe | used |", "|---|---|---|"]
        for what, o in m.overrides.items():
            lines.append(f"| {what} | `{_short(o.recipe)}` | `{_short(o.used)}` |")
    if rec and rec.choices:
        lines += ["", "## afpbench choices (not documented by the paper)", "", "| parameter | value | note |", "|---|---|---|"]
        for k, c in rec.choices.items():
            lines.append(f"| {k} | `{c.value}` | {c.note} |")
    lines += [
        "", "## Loading", "", "```python", "from datasets import load_dataset",
        f'ds = load_dataset("path/or/repo/{m.name}", split="test")', "```", "",
        "Check integrity with `afpbench verify <folder>`; every shard's sha256 is in manifest.json.", "",
    ]
    return "\n".join(lines)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text.replace("|", "\\|").replace("`", "'")


def _source_text(m: Manifest) -> str:
    src = m.source
    if not src:
        return "n/a"
    if m.acquisition == "import" or "files" in src:
        return f"imported from `{src.get('path')}` ({src.get('files')} entries seen)"
    spec = src.get("spec") or src.get("path") or src.get("kind")
    return f"`{spec}`" + (" (overridden, see below)" if "source" in (m.overrides or {}) else "")


def parse_front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a card (raises ValueError when absent or malformed)."""
    if not text.startswith("---\n"):
        raise ValueError("the card does not start with a '---' YAML front matter block")
    end = text.find("\n---", 4)
    if end < 0:
        raise ValueError("the card's front matter is not closed by '---'")
    data = yaml.safe_load(text[4:end])
    if not isinstance(data, dict):
        raise ValueError("the card's front matter is not a YAML mapping")
    return data


def validate_card(text: str) -> list[str]:
    """Problems with a card (empty list = valid for the Hub and for afpbench)."""
    try:
        fm = parse_front_matter(text)
    except (ValueError, yaml.YAMLError) as exc:
        return [str(exc)]
    problems = [f"front matter lacks '{k}'" for k in REQUIRED_KEYS if k not in fm]
    try:
        from huggingface_hub import DatasetCardData

        DatasetCardData(**fm)
    except Exception as exc:  # the Hub's own model of the metadata
        problems.append(f"huggingface_hub rejects the metadata: {exc}")
    return problems
