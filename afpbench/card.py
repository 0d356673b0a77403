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

from afpbench.dataset.schema import features_yaml

REQUIRED_KEYS = ("pretty_name", "license", "task_categories", "configs", "dataset_info")


def _size_category(n: int) -> str:
    for limit, cat in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return cat
    return "1M<n<10M"


def front_matter(manifest: dict[str, Any]) -> dict[str, Any]:
    gen = manifest.get("generator") or {}
    license_ = (gen.get("license") if isinstance(gen, dict) else None) or manifest.get("license") or "other"
    standin = manifest.get("standin")
    paper = manifest.get("paper_name")
    if standin:
        suffix = f" (stand-in for {paper})" if paper else " (stand-in)"
    else:
        suffix = f" ({paper})" if paper else ""
    tags = ["fake-image-detection", "afpbench", "antifakeprompt", "synthetic-images"] + (["stand-in"] if standin else [])
    return {
        "pretty_name": f"afpbench {manifest['name']}{suffix}",
        "license": "other" if " " in license_ or "(" in license_ else license_.lower(),
        "task_categories": ["image-classification"],
        "tags": tags,
        "size_categories": [_size_category(manifest["num_rows"])],
        "configs": [{"config_name": "default", "data_files": [{"split": "test", "path": "data/test-*.parquet"}]}],
        "dataset_info": {
            "features": features_yaml(),
            "splits": [{"name": "test", "num_bytes": sum(s["bytes"] for s in manifest["shards"]), "num_examples": manifest["num_rows"]}],
        },
    }


def render_card(manifest: dict[str, Any]) -> str:
    fm = yaml.safe_dump(front_matter(manifest), sort_keys=False, width=120)
    rec = manifest.get("recipe") or {}
    standin = manifest.get("standin")
    title = f"# afpbench: {manifest['name']}" + (" (stand-in build)" if standin else "")
    lines = ["---", fm.rstrip(), "---", "", title, ""]
    if standin:
        lines += [f"> **Stand-in build.** Made with afpbench's tiny random-weight `{standin.get('kind')}` pipeline "
                  f"({standin.get('builder')}), not with the generator the recipe names. Its images show that the "
                  "pipeline runs; they are not the paper's images and results on them are not the paper's numbers.", ""]
    lines += [manifest.get("description") or "A test set of the afpbench fake-image detection benchmark.", ""]
    preview = manifest.get("preview")
    if preview:
        # A relative link: the Hub's card renders it from the repo, a local viewer from the folder.
        lines += [f"![A seeded sample of {len(preview['rows'])} rows of {manifest['name']} (JPEG thumbnails)]({preview['path']})", ""]
    lines += [
        f"- rows: {manifest['num_rows']} ({', '.join(f'{k} {v}' for k, v in manifest['counts'].items())})",
        f"- label: {manifest.get('label', 'mixed')} (0 = real, 1 = fake)",
        f"- family: {manifest.get('family') or 'n/a'}",
        f"- formats: {', '.join(f'{k} {v}' for k, v in manifest.get('formats', {}).items())}",
        f"- recipe: {rec.get('name', manifest['name'])} v{rec.get('version', '?')}, seed {manifest.get('seed', 'n/a')}",
        f"- source: {_source_text(manifest)}",
        f"- fingerprint: `{manifest['fingerprint']}`",
        *([f"- recipe fingerprint: `{manifest['recipe_fingerprint']}` (shared by faithful rebuilds, see `afpbench compare`)"]
          if manifest.get("recipe_fingerprint") else []),
        f"- rejected inputs: {len(manifest.get('rejects', []))} (listed in manifest.json)",
    ]
    gen = manifest.get("generator")
    if isinstance(gen, dict) and gen:
        used = gen.get("model_id") or gen.get("model") or ""
        role = f"stand-in for {gen.get('name', '')}" if standin else gen.get("name", "")
        lines.append(f"- generator: {role} `{used}` revision `{gen.get('revision', 'n/a')}`")
    overrides = manifest.get("overrides") or {}
    if overrides:
        lines += ["", "## What differs from the recipe", "", "| what | recipe | used |", "|---|---|---|"]
        for what, o in overrides.items():
            lines.append(f"| {what} | `{_short(o.get('recipe'))}` | `{_short(o.get('used'))}` |")
    choices = rec.get("choices") or {}
    if choices:
        lines += ["", "## afpbench choices (not documented by the paper)", "", "| parameter | value | note |", "|---|---|---|"]
        for k, c in choices.items():
            lines.append(f"| {k} | `{c.get('value')}` | {c.get('note', '')} |")
    lines += [
        "", "## Loading", "", "```python", "from datasets import load_dataset",
        f'ds = load_dataset("path/or/repo/{manifest["name"]}", split="test")', "```", "",
        "Check integrity with `afpbench verify <folder>`; every shard's sha256 is in manifest.json.", "",
    ]
    return "\n".join(lines)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text.replace("|", "\\|").replace("`", "'")


def _source_text(manifest: dict[str, Any]) -> str:
    src = manifest.get("source")
    if not isinstance(src, dict) or not src:
        return "n/a"
    if manifest.get("acquisition") == "import" or "files" in src:
        return f"imported from `{src.get('path')}` ({src.get('files')} entries seen)"
    spec = src.get("spec") or src.get("path") or src.get("kind")
    return f"`{spec}`" + (" (overridden, see below)" if "source" in (manifest.get("overrides") or {}) else "")


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
