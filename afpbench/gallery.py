"""A gallery of every set: what the images look like, with their provenance.

``afpbench gallery DATA... --out SITE`` writes ``SITE/sets.html`` and ``SITE/sets/``: per
set a seeded sample of thumbnails (12 by default), each captioned with its row id,
prompt or source, generator, seed, size and format; every fake set is shown beside the
real pool it is scored against (the pairing rule of the threshold-free metrics). Section
anchors are ``sets.html#set-<name>``, which the leaderboard's column headers link to.

The sample is drawn from (seed, set name) alone (``afpbench.dataset.sample_rows``), so the
same set always shows the same images, the ones its dataset card's preview grid shows. Thumbnails are JPEG (quality 85, longest side 256 px): small enough to publish
beside a leaderboard, labelled as thumbnails so no one audits codecs from them. The site
folder is written beside the old one and swapped in, so a failed run leaves the old page.
"""

from __future__ import annotations

import html
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from afpbench.errors import AfpbenchError

logger = logging.getLogger(__name__)

PAGE = "sets.html"
FOLDER = "sets"


@dataclass
class GalleryConfig:
    """What ``gallery`` shows."""

    data: list[Path]
    out: Path = Path("site")
    datasets: list[str] | None = None
    profile: str | None = None
    #: Thumbnails per set (and for the real pool beside each fake set).
    per_set: int = 12
    seed: int = 0
    #: Longest side of a thumbnail, pixels.
    thumb: int = 256
    #: Real sets shown beside every fake set (default: the held-out real sets).
    real_pool: list[str] | None = None


@dataclass
class Thumb:
    """One sampled image: where its thumbnail is and what the row says about it."""

    set: str
    id: str
    file: str  # relative to the site folder
    label: str
    prompt: str
    source: str
    generator: str
    seed: int
    width: int
    height: int
    format: str


@dataclass
class SetGallery:
    name: str
    role: str
    label: str
    num_rows: int
    fingerprint: str
    generator: str
    thumbs: list[Thumb] = field(default_factory=list)


@dataclass
class Gallery:
    """What was written: the page, and per set its thumbnails."""

    page: Path
    sets: dict[str, SetGallery]
    real_pool: list[str]


def _read_rows(reader: Any, indices: list[int]) -> list[dict[str, Any]]:
    rows = []
    for i in indices:
        for batch in reader.iter_batches(batch_size=1, start=i, stop=i + 1):
            rows.extend(batch)
    return rows


def build_gallery(cfg: GalleryConfig) -> Gallery:
    """Sample, thumbnail and render every set; swap the new page in atomically."""
    from afpbench._util.io import atomic_write_text
    from afpbench.dataset import open_dataset, sample_rows, thumbnail
    from afpbench.evaluate.sets import locate_sets
    from afpbench.scoring import default_real_pool

    if cfg.per_set < 1:
        raise AfpbenchError(f"--per-set must be at least 1 (got {cfg.per_set}).")
    names, roles, _, folders = locate_sets(cfg.data, cfg.datasets, cfg.profile)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise AfpbenchError(f"--out {out} is a file; pass a folder for the site.")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{FOLDER}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    sets: dict[str, SetGallery] = {}
    try:
        for name in names:
            reader = open_dataset(folders[name])
            rows = _read_rows(reader, sample_rows(reader.num_rows, cfg.per_set, cfg.seed, name))
            labels = {int(r["label"]) for r in rows} or {0}
            label = "mixed" if len(labels) > 1 else ("fake" if labels == {1} else "real")
            gens = sorted({r.get("generator") or "" for r in rows} - {""})
            sg = SetGallery(name, roles[name], label, reader.num_rows, reader.fingerprint, ", ".join(gens))
            (tmp / name).mkdir()
            for k, row in enumerate(rows):
                cell = row.get("image") or {}
                data = cell.get("bytes") if isinstance(cell, dict) else None
                if data is None:
                    raise AfpbenchError(f"Row {row['id']} of {folders[name]} holds no image bytes; re-import the set so bytes are embedded.")
                (tmp / name / f"{k:03d}.jpg").write_bytes(thumbnail(data, cfg.thumb))
                sg.thumbs.append(Thumb(
                    set=name, id=row["id"], file=f"{FOLDER}/{name}/{k:03d}.jpg", label="fake" if int(row["label"]) else "real",
                    prompt=row.get("prompt") or "", source=row.get("source") or "", generator=row.get("generator") or "",
                    seed=int(row.get("seed") if row.get("seed") is not None else -1), width=int(row.get("width") or 0),
                    height=int(row.get("height") or 0), format=str(row.get("format") or ""),
                ))
            sets[name] = sg
            logger.info("gallery: %s (%d thumbnails)", name, len(sg.thumbs))
        if cfg.real_pool is not None:
            pool = [n for n in cfg.real_pool if n in sets]
        else:
            pool, _ = default_real_pool({n: s.label for n, s in sets.items()}, roles)
        pool = sorted(pool)
        final = out / FOLDER
        old = out / f".{FOLDER}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    page = out / PAGE
    atomic_write_text(page, render_gallery(sets, pool, cfg.per_set))
    return Gallery(page=page, sets=sets, real_pool=pool)


def _pool_thumbs(sets: dict[str, SetGallery], pool: Sequence[str], k: int) -> list[Thumb]:
    """Up to k thumbnails of the real pool, taken in turn from each pool set."""
    queues = [list(sets[n].thumbs) for n in pool if n in sets]
    out: list[Thumb] = []
    while len(out) < k and any(queues):
        for q in queues:
            if q and len(out) < k:
                out.append(q.pop(0))
    return out


def _figure(t: Thumb) -> str:
    e = html.escape
    text = t.prompt or t.source
    if len(text) > 140:
        text = text[:137] + "..."
    meta = " · ".join(x for x in (t.generator, f"seed {t.seed}" if t.seed >= 0 else "", f"{t.width}×{t.height}", t.format) if x)
    return (
        f'<figure data-label="{t.label}"><img src="{e(t.file)}" alt="{e(t.id)}" loading="eager">'
        f'<figcaption><div class="id">{e(t.id)}</div><div class="prompt">{e(text)}</div><div class="meta">{e(meta)}</div></figcaption></figure>'
    )


def _static(name: str) -> str:
    return resources.files("afpbench").joinpath("static", name).read_text(encoding="utf-8")


def render_gallery(sets: dict[str, SetGallery], pool: Sequence[str], per_set: int) -> str:
    """The page: a pure function of the sampled sets."""
    e = html.escape
    nav = " ".join(f'<a class="{s.label}" href="#set-{e(n)}">{e(n)}</a>' for n, s in sets.items())
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>afpbench: the sets</title>",
        f"<style>{_static('gallery.css')}</style></head><body>",
        "<header><h1>The sets</h1><p>A seeded sample of each set (thumbnails, JPEG; the stored files are untouched). "
        f"Fake sets are shown beside the real pool they are scored against: {e(', '.join(pool) or 'none')}.</p></header>",
        f"<nav>{nav}</nav>",
    ]
    pool_thumbs = _pool_thumbs(sets, pool, per_set)
    for name, s in sets.items():
        facts = f"{s.label} · {s.role} · {s.num_rows} rows" + (f" · generator {e(s.generator)}" if s.generator else "") + f" · fingerprint {s.fingerprint[:12]}"
        grid = '<div class="grid">' + "".join(_figure(t) for t in s.thumbs) + "</div>"
        parts.append(f'<section id="set-{e(name)}"><h2>{e(name)}</h2><div class="facts">{facts}</div>')
        if s.label == "fake" and pool_thumbs:
            pool_grid = '<div class="grid">' + "".join(_figure(t) for t in pool_thumbs) + "</div>"
            parts.append(f'<div class="pair"><div><h3>{e(name)}</h3>{grid}</div><div><h3>real pool ({e(", ".join(pool))})</h3>{pool_grid}</div></div>')
        else:
            parts.append(grid)
        parts.append("</section>")
    parts += [f"<script>{_static('gallery.js')}</script>", "</body></html>"]
    return "\n".join(parts)


__all__ = ["GalleryConfig", "Gallery", "SetGallery", "Thumb", "build_gallery", "render_gallery", "PAGE"]


# ``afpbench.gallery(...)`` calls build_gallery even after this module was imported (see afpbench._util.callable_module).
from afpbench._util.callable_module import make_callable  # noqa: E402

make_callable(__name__, build_gallery)
