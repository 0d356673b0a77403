"""The dataset card (README.md) of a set: Hub front matter + what the manifest proves.

The front matter follows the Hub's dataset-card metadata: ``configs`` points the
``datasets`` loader at the parquet shards (so ``load_dataset(DIR)`` and
``load_dataset(repo_id)`` read the same split), and ``dataset_info.features`` declares
the features so the viewer and the loader agree with the parquet schema.
"""

from __future__ import annotations

from typing import Any

import yaml

from afpbench import LABEL_NAMES

FEATURE_DTYPES = {
    "id": "string", "dataset": "string", "family": "string", "generator": "string", "prompt": "string",
    "source": "string", "seed": "int64", "width": "int32", "height": "int32", "format": "string", "meta": "string",
}
REQUIRED_KEYS = ("pretty_name", "license", "task_categories", "configs", "dataset_info")


def _features_yaml() -> list[dict[str, Any]]:
    feats: list[dict[str, Any]] = [{"name": "id", "dtype": "string"}, {"name": "image", "dtype": "image"}]
    feats.append({"name": "label", "dtype": {"class_label": {"names": {str(i): n for i, n in enumerate(LABEL_NAMES)}}}})
    feats += [{"name": k, "dtype": v} for k, v in FEATURE_DTYPES.items() if k != "id"]
    return feats


def _size_category(n: int) -> str:
    for limit, cat in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return cat
    return "1M<n<10M"


def front_matter(manifest: dict[str, Any]) -> dict[str, Any]:
    gen = manifest.get("generator") or {}
    license_ = (gen.get("license") if isinstance(gen, dict) else None) or manifest.get("license") or "other"
    return {
        "pretty_name": f"afpbench {manifest['name']}" + (f" ({manifest['paper_name']})" if manifest.get("paper_name") else ""),
        "license": "other" if " " in license_ or "(" in license_ else license_.lower(),
        "task_categories": ["image-classification"],
        "tags": ["fake-image-detection", "afpbench", "antifakeprompt", "synthetic-images"],
        "size_categories": [_size_category(manifest["num_rows"])],
        "configs": [{"config_name": "default", "data_files": [{"split": "test", "path": "data/test-*.parquet"}]}],
        "dataset_info": {
            "features": _features_yaml(),
            "splits": [{"name": "test", "num_bytes": sum(s["bytes"] for s in manifest["shards"]), "num_examples": manifest["num_rows"]}],
        },
    }


def render_card(manifest: dict[str, Any]) -> str:
    fm = yaml.safe_dump(front_matter(manifest), sort_keys=False, width=120)
    rec = manifest.get("recipe") or {}
    lines = [
        "---", fm.rstrip(), "---", "",
        f"# afpbench: {manifest['name']}", "",
        manifest.get("description") or "A test set of the afpbench fake-image detection benchmark.", "",
        f"- rows: {manifest['num_rows']} ({', '.join(f'{k} {v}' for k, v in manifest['counts'].items())})",
        f"- label: {manifest.get('label', 'mixed')} (0 = real, 1 = fake)",
        f"- family: {manifest.get('family') or 'n/a'}",
        f"- formats: {', '.join(f'{k} {v}' for k, v in manifest.get('formats', {}).items())}",
        f"- recipe: {rec.get('name', manifest['name'])} v{rec.get('version', '?')}, seed {manifest.get('seed', 'n/a')}",
        f"- fingerprint: `{manifest['fingerprint']}`",
        f"- rejected inputs: {len(manifest.get('rejects', []))} (listed in manifest.json)",
    ]
    gen = manifest.get("generator")
    if isinstance(gen, dict) and gen:
        lines.append(f"- generator: {gen.get('name', '')} `{gen.get('model_id', '')}` revision `{gen.get('revision', 'n/a')}`")
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
