"""Tables for ``afpbench list`` (kept free of torch so listing is instant)."""

from __future__ import annotations

import re
from pathlib import Path

from afpbench import catalog
from afpbench.errors import AfpbenchError

WHAT = ("datasets", "generators", "profiles", "detectors")


def listing_rows(what: str, profile: str = "v3") -> tuple[list[str], list[list[str]]]:
    """Headers and rows of ``afpbench list WHAT`` (``profile``: a profile name, or ``all`` for every recipe)."""
    if what == "datasets":
        recs = catalog.recipes()
        if profile == "all":
            entries = [(n, r.role) for n, r in recs.items()]
        else:
            entries = [(e.name, e.role) for e in catalog.get_profile(profile).sets]
        headers = ["name", "paper name", "class", "role", "family", "how", "count", "generator"]
        rows = []
        for name, role in entries:
            r = recs[name]
            rows.append([name, r.paper_name, r.label, role, r.family, r.acquisition, str(r.count.value), r.generator or "-"])
        return headers, rows
    if what == "generators":
        headers = ["name", "backend", "pipeline", "model id", "dtype", "license"]
        return headers, [[g.name, g.backend, g.pipeline or "-", g.model_id or "(supplied by user)", g.dtype, g.license] for g in catalog.generators().values()]
    if what == "profiles":
        headers = ["name", "sets", "held-out", "description"]
        return headers, [[p.name, str(len(p.sets)), str(len(p.held_out())), p.description] for p in catalog.profiles().values()]
    if what == "detectors":
        return detector_rows()
    raise AfpbenchError(f"Nothing to list as '{what}'; use one of {', '.join(WHAT)}.")


def detector_rows() -> tuple[list[str], list[list[str]]]:
    """One row per selectable ``name.tag``: kind, how it trains, whether it needs weights,
    its licence flag and its class, from the registry's declarations (no detector is imported)."""
    from afpbench.detectors import BUNDLED
    from afpbench.registry import DETECTORS

    headers = ["name", "kind", "trainable", "weights", "licence", "implemented by"]
    rows = []
    for name in DETECTORS.names():
        target = DETECTORS.target(name) or "(registered)"
        entry = BUNDLED.get(name)
        if entry is None or entry.target != target:  # a plugin: nothing is declared without importing it
            rows.append([name, "plugin", "?", "?", "?", target])
            continue
        for full in entry.variant_names(name):
            tag = full.partition(".")[2]
            rows.append([
                full, entry.kind, entry.training or "-", "needed" if entry.needs_weights else "-",
                "non-commercial" if entry.is_noncommercial(tag) else "-", target,
            ])
    return headers, rows


def list_detectors(kind: str | None = "detector") -> list[str]:
    """Every selectable ``name[.tag]`` (``kind``: "detector", "sanity", "test", or None for all;
    plugins, whose kind is unknown until imported, are always listed). No torch import."""
    _, rows = detector_rows()
    return [r[0] for r in rows if kind is None or r[1] in (kind, "plugin")]


def list_datasets(profile: str = "v3") -> list[str]:
    """The sets of a benchmark profile (``all``: every recipe), in the profile's order."""
    _, rows = listing_rows("datasets", profile)
    return [r[0] for r in rows]


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in lines) + f"\n({len(rows)} rows)"


def markdown_catalog_table(profile: str = "v3") -> str:
    """The sets of a profile as the Markdown table BENCHMARK.md carries (kept in sync by a test)."""
    prof = catalog.get_profile(profile)
    lines = [
        "| # | name | paper name | class | role | family | how | count | generator / source | afpbench choices |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, e in enumerate(prof.sets, 1):
        r = catalog.get_recipe(e.name)
        g = catalog.get_generator(r.generator) if r.generator else None
        if g is None:
            src = r.source.note or r.source.kind
        elif g.model_id:
            src = f"`{g.model_id}`"
        else:
            src = f"{g.name} (network supplied by the user)"
        choices = ", ".join(sorted(r.choices())) or "-"
        lines.append(f"| {i} | `{r.name}` | {r.paper_name} | {r.label} | {e.role} | {r.family} | {r.acquisition} | {r.count.value} | {src} | {choices} |")
    return "\n".join(lines)


def _sync_benchmark_md(path: str | Path = "BENCHMARK.md") -> None:
    """Rewrite the catalog tables of BENCHMARK.md from the recipes (``python -m afpbench.listing``)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    for prof in ("v3", "v1"):
        start, end = f"<!-- catalog-table:{prof}:start -->", f"<!-- catalog-table:{prof}:end -->"
        block = f"{start}\n{markdown_catalog_table(prof)}\n{end}"
        # A function as the replacement, so backslashes in the table are not read as escapes.
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _m, block=block: block, text, flags=re.S)
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    _sync_benchmark_md()
