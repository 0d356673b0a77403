"""Checking a set against its manifest: :func:`check_contents` (what evaluate needs) and
:func:`verify` (everything, for ``afpbench verify`` and ``push``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from afpbench import LABEL_NAMES
from afpbench._util.hashing import sha256_file
from afpbench.dataset._arrow import release_memory
from afpbench.dataset.fingerprint import ContentFingerprint, RecipeFingerprint
from afpbench.dataset.manifest import load_manifest, manifest_claims
from afpbench.dataset.names import one_line
from afpbench.dataset.schema import COLUMN_NAMES
from afpbench.errors import DatasetError


@dataclass
class ContentReport:
    """What :func:`check_contents` found for one set."""

    problems: list[str] = field(default_factory=list)
    #: Rows in the shards that were read.
    num_rows: int = 0
    #: Recomputed content fingerprint ("" unless every shard was read in full).
    fingerprint: str = ""
    #: Recomputed recipe fingerprint ("" unless every shard was read in full).
    recipe_fingerprint: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)


@dataclass
class _ShardResult:
    problems: list[str] = field(default_factory=list)
    rows: int = 0
    feed: bytes = b""
    recipe_feed: bytes = b""
    labels: dict[int, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)


def _check_shard(folder: Path, entry: dict[str, Any], sha: bool, content: bool) -> _ShardResult:
    """Size, footer and (``sha``) sha256 of one shard; with ``content`` also its rows
    (fingerprint feeds, label and format counts)."""
    rel = entry["path"]
    p = folder / rel
    out = _ShardResult()
    if not p.is_file():
        out.problems.append(f"{rel}: missing")
        return out
    size = p.stat().st_size
    if size != entry["bytes"]:
        out.problems.append(f"{rel}: {size} bytes, manifest says {entry['bytes']}")
        return out
    if sha:
        digest = sha256_file(p)
        if digest != entry["sha256"]:
            out.problems.append(f"{rel}: sha256 {digest[:12]}... differs from the manifest's {entry['sha256'][:12]}...")
            return out
    try:
        pf = pq.ParquetFile(p)
        missing = [c for c in COLUMN_NAMES if c not in pf.schema_arrow.names]
        if missing:
            out.problems.append(f"{rel}: lacks column(s) {', '.join(missing)}")
            return out
        out.rows = pf.metadata.num_rows
        if out.rows != entry["num_rows"]:
            out.problems.append(f"{rel}: {out.rows} rows, manifest says {entry['num_rows']}")
        if content:
            feeds, recipe_feeds = [], []
            for g in range(pf.num_row_groups):
                t = pf.read_row_group(g, columns=list(COLUMN_NAMES))
                feeds.append(ContentFingerprint.feed(t))
                recipe_feeds.append(RecipeFingerprint.feed(t))
                for lab in t.column("label").to_pylist():
                    out.labels[lab] = out.labels.get(lab, 0) + 1
                for f in t.column("format").to_pylist():
                    out.formats[f] = out.formats.get(f, 0) + 1
                del t
            out.feed, out.recipe_feed = b"".join(feeds), b"".join(recipe_feeds)
            # Once per shard, not per row group: handing pages back to the OS after every
            # row group made each read fault its buffers in again (3-4x slower reads),
            # while row groups of one shard reuse the same few pages.
            release_memory()
    except Exception as exc:  # a shard that hashes right but does not parse is still bad
        out.problems.append(f"{rel}: unreadable ({type(exc).__name__}: {one_line(exc)})")
    return out


def _run_tasks(tasks: list[tuple[Path, dict[str, Any], bool, bool]], workers: int | None) -> list[_ShardResult]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = max(1, min(workers if workers is not None else min(4, cpus), len(tasks)))
    if n == 1:
        return [_check_shard(*t) for t in tasks]
    from concurrent.futures import ThreadPoolExecutor

    # hashlib and pyarrow release the GIL: the threads hash and read shards in parallel.
    with ThreadPoolExecutor(n, thread_name_prefix="afpbench-check") as pool:
        return list(pool.map(lambda t: _check_shard(*t), tasks))


def _shards_holding(manifest: dict[str, Any], rows: int | None) -> list[dict[str, Any]]:
    out, pos = [], 0
    for s in manifest["shards"]:
        if rows is not None and pos >= rows:
            break
        out.append(s)
        pos += s["num_rows"]
    return out


def _compare(manifest: dict[str, Any], results: list[_ShardResult]) -> ContentReport:
    """A whole set's shard results against its manifest's claims."""
    rep = ContentReport(problems=manifest_claims(manifest))
    for r in results:
        rep.problems += r.problems
        rep.num_rows += r.rows
    if any(r.problems for r in results):
        return rep
    fp, rfp = ContentFingerprint(), RecipeFingerprint(manifest)
    for r in results:
        fp.update_bytes(r.feed)
        rfp.update_bytes(r.recipe_feed)
        for lab, c in r.labels.items():
            name = LABEL_NAMES[lab] if lab in (0, 1) else repr(lab)
            rep.counts[name] = rep.counts.get(name, 0) + c
        for f, c in r.formats.items():
            rep.formats[f] = rep.formats.get(f, 0) + c
    rep.fingerprint, rep.recipe_fingerprint = fp.hexdigest(), rfp.hexdigest()
    bad_labels = sorted(set(rep.counts) - set(LABEL_NAMES))
    if bad_labels:
        rep.problems.append(f"the shards hold label value(s) {', '.join(bad_labels)}; only 0 (real) and 1 (fake) exist")
    if rep.num_rows != manifest["num_rows"]:
        rep.problems.append(f"{rep.num_rows} rows in the shards, manifest says {manifest['num_rows']}")
    have = {n: rep.counts.get(n, 0) for n in LABEL_NAMES}
    claimed = {n: manifest["counts"].get(n, 0) for n in LABEL_NAMES}
    if have != claimed:
        rep.problems.append(f"label counts in the shards are {have}, manifest says {claimed}")
    if manifest.get("formats") is not None and dict(sorted(rep.formats.items())) != dict(sorted(manifest["formats"].items())):
        rep.problems.append(f"format counts in the shards are {dict(sorted(rep.formats.items()))}, manifest says {manifest['formats']}")
    if rep.fingerprint != manifest["fingerprint"]:
        rep.problems.append(f"content fingerprint {rep.fingerprint[:12]}... differs from the manifest's {manifest['fingerprint'][:12]}...")
    # Sets written before the recipe fingerprint existed have none to compare: computed, not required.
    stored = manifest.get("recipe_fingerprint")
    if stored and rep.recipe_fingerprint != stored:
        rep.problems.append(
            f"recipe fingerprint {rep.recipe_fingerprint[:12]}... differs from the manifest's {stored[:12]}... "
            "(the rows' ids, prompts, sources or seeds, or the manifest's recipe, generator or seed, were changed)"
        )
    return rep


def check_contents(items: Sequence[tuple[Path, dict[str, Any], int | None]], *, sha256: bool = True, workers: int | None = None) -> list[ContentReport]:
    """Check sets against their manifests: ``items`` are (folder, manifest, rows); the
    manifests must have passed :func:`load_manifest`.

    ``rows=None`` checks a whole set: every shard's size and row count, the rows read
    back to recompute the content and recipe fingerprints, the row total and the label
    and format counts, and (``sha256``) every shard's sha256. Without ``sha256`` the
    content alone is compared (what evaluate needs: the rows it scores are the rows the
    manifest describes) and shards are hashed only when it differs, to name the one that
    changed. ``rows=N`` checks size, sha256 and row count of the shards holding the first
    N rows (what an ``evaluate --limit N`` reads: a fingerprint needs every row).

    Shards of all sets are checked in a pool of up to ``workers`` threads (default: up to
    4, one per available core).
    """
    tasks, owner = [], []
    for k, (folder, manifest, rows) in enumerate(items):
        for entry in _shards_holding(manifest, rows):
            tasks.append((Path(folder), entry, sha256 or rows is not None, rows is None))
            owner.append(k)
    results = _run_tasks(tasks, workers)
    reports = []
    for k, (folder, manifest, rows) in enumerate(items):
        mine = [r for o, r in zip(owner, results) if o == k]
        if rows is not None:
            rep = ContentReport()
            for r in mine:
                rep.problems += r.problems
                rep.num_rows += r.rows
        else:
            rep = _compare(manifest, mine)
            if rep.problems and not sha256:
                # Name the shard that changed, if its bytes did (else the manifest's claims were edited).
                hashed = _run_tasks([(Path(folder), e, True, False) for e in manifest["shards"]], workers)
                rep.problems = [p for r in hashed for p in r.problems if "sha256" in p] + rep.problems
        reports.append(rep)
    return reports


def check_content(folder: str | Path, manifest: dict[str, Any] | None = None, rows: int | None = None) -> ContentReport:
    """:func:`check_contents` for one set (its manifest is loaded when not given)."""
    folder = Path(folder)
    return check_contents([(folder, manifest if manifest is not None else load_manifest(folder), rows)])[0]


def _check_preview(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """The preview grid a manifest lists (sets written before it existed list none)."""
    entry = manifest.get("preview")
    if not entry:
        return []
    p = folder / entry["path"]
    if not p.is_file():
        return [f"{entry['path']}: missing"]
    if p.stat().st_size != entry["bytes"]:
        return [f"{entry['path']}: {p.stat().st_size} bytes, manifest says {entry['bytes']}"]
    digest = sha256_file(p)
    if digest != entry["sha256"]:
        return [f"{entry['path']}: sha256 {digest[:12]}... differs from the manifest's {entry['sha256'][:12]}..."]
    return []


@dataclass
class VerifyReport:
    path: Path
    ok: bool
    problems: list[str] = field(default_factory=list)
    num_rows: int = 0
    fingerprint: str = ""
    recipe_fingerprint: str = ""


def verify(path: str | Path) -> VerifyReport:
    """Check a set against its manifest: the manifest's own form and totals, every
    shard's size, sha256 and row count, unlisted shards, the row total, label and format
    counts, the recomputed content and recipe fingerprints and the preview grid's bytes.
    A malformed manifest is one problem."""
    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise DatasetError(f"{path} has no manifest.json; point 'afpbench verify' at a dataset folder (one with manifest.json).")
    try:
        manifest = load_manifest(path)
    except DatasetError as exc:
        return VerifyReport(path, False, [str(exc)])
    listed = {s["path"] for s in manifest["shards"]}
    problems = [f"{extra.relative_to(path).as_posix()}: not listed in the manifest" for extra in sorted((path / "data").glob("*.parquet")) if extra.relative_to(path).as_posix() not in listed]
    rep = check_content(path, manifest)
    problems += rep.problems + _check_preview(path, manifest)
    return VerifyReport(path, not problems, problems, rep.num_rows, rep.fingerprint, rep.recipe_fingerprint)


__all__ = ["ContentReport", "check_contents", "check_content", "VerifyReport", "verify"]
