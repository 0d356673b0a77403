"""Shortcut audit: how each set is encoded, and how well the encoding alone separates fakes from reals.

Many fake-image benchmarks pair JPEG photos with PNG generations of other sizes, and a
detector can score well by reading the file instead of the image (Grommelt et al., "Fake
or JPEG?", arXiv 2403.17608; Dual Data Alignment, NeurIPS 2025). ``afpbench audit``
measures that risk before any detector runs:

* per image, from its stored bytes only (headers are parsed, pixels never decoded):
  container format, the JPEG quality estimated from the quantisation tables (the IJG
  scaling libjpeg applies to the Annex K tables), a hash of those tables, chroma
  subsampling, progressive flag, EXIF and ICC presence, width, height, aspect ratio,
  file bytes and bits per pixel;
* per fake set against the profile's real pool (the pairing rule of the threshold-free
  metrics, :func:`afpbench.scoring.default_real_pool`): the distributions side by side and
  the cross-fitted AUC, with a bootstrap interval, of a one-feature classifier for each
  shortcut (format, JPEG quality, pixel count, aspect ratio, bits per pixel) and of one
  classifier on all of them. A pair whose shortcut AUC has its whole interval above
  :data:`FLAG_AUC` is flagged, with one sentence saying what differs.

Classifiers are scikit-learn decision trees scored out of fold (stratified 5-fold,
seeded), so a shortcut that does not exist lands near 0.5 instead of being fitted to
noise, and a non-monotone one (reals mid-sized, fakes both smaller and larger) is still
found. Outputs: ``audit.json`` (:class:`AuditReport`), ``images.parquet`` (one row per
image), ``audit.md`` and plots.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from afpbench._util.clock import utc_timestamp
from afpbench._util.schema import first_error, newer_version
from afpbench.errors import AfpbenchError, DatasetError

logger = logging.getLogger(__name__)

AUDIT_SCHEMA_VERSION = 1
#: A pair is flagged when the lower end of a shortcut AUC's interval lies above this.
FLAG_AUC = 0.6
#: The shortcuts scored one at a time, then together ("all").
SHORTCUTS = ("format", "jpeg_quality", "pixel_count", "aspect_ratio", "bits_per_pixel")
ALL = "all"

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance), natural (row-major) order:
# the base tables libjpeg scales by the quality setting.
_ANNEX_K_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_ANNEX_K_CHROMA = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip
_SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


def ijg_tables(quality: int) -> np.ndarray:
    """The [2, 64] luma/chroma tables libjpeg writes at ``quality`` (jpeg_quality_scaling + baseline clamp)."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    base = np.array([_ANNEX_K_LUMA, _ANNEX_K_CHROMA], dtype=np.int64)
    return np.clip((base * scale + 50) // 100, 1, 255)


_IJG = np.stack([ijg_tables(q) for q in range(1, 101)])  # [100, 2, 64]


def estimate_jpeg_quality(tables: dict[int, Sequence[int]]) -> tuple[int | None, bool]:
    """(quality, exact) of the IJG quality whose tables are nearest to ``tables``.

    ``exact`` is True when the file's tables are exactly libjpeg's at that quality (so the
    estimate is the quality it was saved with); otherwise the nearest by mean absolute
    difference over the tables present (a camera's or a custom encoder's tables).
    """
    if not tables or 0 not in tables:
        return None, False
    luma = np.asarray(tables[0], dtype=np.int64)
    if luma.size != 64:
        return None, False
    if 1 in tables and len(tables[1]) == 64:
        got = np.stack([luma, np.asarray(tables[1], dtype=np.int64)])
        err = np.abs(_IJG - got).mean(axis=(1, 2))
    else:  # greyscale JPEG: one table
        err = np.abs(_IJG[:, 0] - luma).mean(axis=1)
    best = int(np.argmin(err))
    return best + 1, bool(err[best] == 0)


# -- per image -------------------------------------------------------------------------------
@dataclass
class ImageFeatures:
    """What the stored bytes of one image say about its encoding (no pixels decoded)."""

    format: str
    width: int
    height: int
    bytes: int
    jpeg_quality: int | None = None
    jpeg_quality_exact: bool = False
    qtable_hash: str | None = None
    subsampling: str | None = None
    progressive: bool = False
    exif: bool = False
    icc: bool = False
    error: str | None = None

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def aspect_ratio(self) -> float:
        return self.width / self.height if self.height else float("nan")

    @property
    def bits_per_pixel(self) -> float:
        return self.bytes * 8.0 / self.pixels if self.pixels else float("nan")


def image_features(data: bytes) -> ImageFeatures:
    """Parse an encoded image's header; never raises (an unreadable file gets ``error``)."""
    from PIL import Image, JpegImagePlugin, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return ImageFeatures(format="unreadable", width=0, height=0, bytes=len(data), error=f"{type(exc).__name__}: {exc}")
    fmt = (im.format or "unknown").lower()
    feats = ImageFeatures(
        format="jpeg" if fmt == "mpo" else fmt, width=int(im.width), height=int(im.height), bytes=len(data),
        exif=bool(im.info.get("exif")), icc=bool(im.info.get("icc_profile")),
    )
    if fmt in ("jpeg", "mpo"):
        tables = getattr(im, "quantization", None) or {}
        feats.jpeg_quality, feats.jpeg_quality_exact = estimate_jpeg_quality(tables)
        if tables:
            blob = b"".join(bytes(int(v) & 0xFF for v in tables[k]) + int(k).to_bytes(1, "little") for k in sorted(tables))
            feats.qtable_hash = hashlib.sha256(blob).hexdigest()[:12]
        sampling = JpegImagePlugin.get_sampling(im)
        feats.subsampling = _SUBSAMPLING.get(sampling, "other" if sampling != -1 else None)
        feats.progressive = bool(im.info.get("progressive") or im.info.get("progression"))
    elif fmt == "png":
        feats.progressive = bool(im.info.get("interlace"))
    return feats


def _feature_columns(feats: list[ImageFeatures]) -> dict[str, np.ndarray]:
    return {
        "format": np.array([f.format for f in feats], dtype=object),
        "jpeg_quality": np.array([f.jpeg_quality if f.jpeg_quality is not None else -1 for f in feats], dtype=np.float64),
        "pixel_count": np.array([f.pixels for f in feats], dtype=np.float64),
        "aspect_ratio": np.array([f.aspect_ratio for f in feats], dtype=np.float64),
        "bits_per_pixel": np.array([f.bits_per_pixel for f in feats], dtype=np.float64),
        "width": np.array([f.width for f in feats], dtype=np.int64),
        "height": np.array([f.height for f in feats], dtype=np.int64),
        "bytes": np.array([f.bytes for f in feats], dtype=np.int64),
    }


# -- the report model ----------------------------------------------------------------------------
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Quantiles(_Model):
    """5th, 50th and 95th percentiles of a numeric feature (None when no image has it)."""

    p05: float | None = None
    p50: float | None = None
    p95: float | None = None


class SetProfile(_Model):
    """The encoding of one set (or of a real pool), summarised."""

    names: list[str] = Field(description="The set, or the real pool's sets.")
    n: int = Field(description="Images read.")
    unreadable: int = Field(0, description="Images whose header could not be parsed (their bytes are still counted).")
    formats: dict[str, int] = Field(description="Container format -> count.")
    jpeg_quality: Quantiles = Field(description="Estimated JPEG quality of the JPEG images (IJG scale, 1-100).")
    jpeg_quality_exact: int = Field(0, description="JPEG images whose tables are exactly libjpeg's at the estimated quality.")
    jpeg_quality_hist: dict[str, int] = Field(default_factory=dict, description="Estimated quality -> count (JPEG images only).")
    qtable_hashes: dict[str, int] = Field(default_factory=dict, description="The 10 most common quantisation-table hashes -> count.")
    subsampling: dict[str, int] = Field(default_factory=dict, description="JPEG chroma subsampling -> count.")
    progressive: int = Field(0, description="Progressive JPEGs or interlaced PNGs.")
    exif: int = Field(0, description="Images carrying EXIF.")
    icc: int = Field(0, description="Images carrying an ICC profile.")
    sizes: dict[str, int] = Field(description="The 10 most common WIDTHxHEIGHT -> count.")
    width: Quantiles
    height: Quantiles
    pixel_count: Quantiles
    aspect_ratio: Quantiles
    bytes: Quantiles
    bits_per_pixel: Quantiles


class ShortcutAUC(_Model):
    """Out-of-fold AUC of a classifier that sees only this shortcut (or all of them)."""

    value: float
    ci_low: float
    ci_high: float
    flagged: bool = Field(description="The whole interval lies above the flag level (see AuditReport.flag_auc).")


class PairAudit(_Model):
    """One fake set against the real pool, as the threshold-free metrics pair them."""

    fake: str
    real: list[str]
    n_fake: int
    n_real: int
    shortcuts: dict[str, ShortcutAUC] = Field(description="format, jpeg_quality, pixel_count, aspect_ratio, bits_per_pixel, and all.")
    flagged: bool = Field(description="Any shortcut flagged.")
    summary: str = Field(description="One sentence on what differs between the fakes and the reals (empty when nothing is flagged).")
    plots: list[str] = Field(default_factory=list, description="Plot files, relative to the audit folder.")


class AuditReport(_Model):
    """``audit.json``: the encoding audit of a benchmark's sets."""

    schema_version: int = Field(AUDIT_SCHEMA_VERSION, description="Version of this file's layout; readers refuse newer versions.")
    created: str = Field(description="UTC time the audit ran (ISO 8601).")
    afpbench_version: str
    profile: str | None = Field(None, description="The profile whose roles and pairing rule were used, if any.")
    pairing_rule: str = Field(description="How the real pool was chosen.")
    real_pool: list[str]
    flag_auc: float = Field(FLAG_AUC, description="A shortcut is flagged when its AUC interval lies entirely above this.")
    bootstrap: dict[str, float] = Field(description="n_resamples, seed and confidence of the AUC intervals.")
    folds: int = Field(description="Folds of the out-of-fold classifiers.")
    sets: dict[str, SetProfile] = Field(description="Per set (and fingerprint-checked shards) encoding profile.")
    fingerprints: dict[str, str] = Field(description="Set name -> dataset fingerprint read.")
    roles: dict[str, str] = Field(description="Set name -> held-in / held-out.")
    pool: SetProfile | None = Field(None, description="The real pool's profile (None without a real set).")
    pairs: list[PairAudit]
    images: str = Field("images.parquet", description="Per-image features, relative to the audit folder.")
    images_per_second: float = Field(description="Header parsing throughput of this run (bytes read from the shards included).")


def audit_schema() -> dict[str, Any]:
    schema = AuditReport.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"https://afpbench/schemas/audit-v{AUDIT_SCHEMA_VERSION}.schema.json", **schema}


def load_audit(path: str | Path) -> AuditReport:
    """Read ``audit.json`` (or the folder holding it), refusing newer layouts."""
    import json

    from pydantic import ValidationError

    path = Path(path)
    if path.is_dir():
        path = path / "audit.json"
    if not path.is_file():
        raise AfpbenchError(f"No audit at {path}; run 'afpbench audit DATA --out AUDIT' and pass AUDIT or AUDIT/audit.json.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AfpbenchError(f"{path} is not valid JSON ({exc}); run afpbench audit again.") from None
    if version := newer_version(data, AUDIT_SCHEMA_VERSION):
        raise AfpbenchError(f"{path} uses audit schema {version}, newer than this afpbench reads ({AUDIT_SCHEMA_VERSION}); upgrade afpbench.")
    try:
        return AuditReport.model_validate(data)
    except ValidationError as exc:
        where, msg, _ = first_error(exc)
        raise AfpbenchError(f"{path} is not an afpbench audit ({where}: {msg}); run afpbench audit again.") from None


# -- summaries --------------------------------------------------------------------------------------
def _quantiles(values: np.ndarray) -> Quantiles:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return Quantiles()
    p = np.percentile(v, [5, 50, 95])
    return Quantiles(p05=float(p[0]), p50=float(p[1]), p95=float(p[2]))


def _counts(values: Iterable[Any], top: int | None = None) -> dict[str, int]:
    from collections import Counter

    c = Counter(str(v) for v in values if v is not None)
    items = c.most_common(top) if top else sorted(c.items())
    return {k: int(n) for k, n in items}


def profile_of(names: list[str], feats: list[ImageFeatures]) -> SetProfile:
    cols = _feature_columns(feats)
    jpeg = [f for f in feats if f.format == "jpeg"]
    return SetProfile(
        names=names,
        n=len(feats),
        unreadable=sum(f.error is not None for f in feats),
        formats=_counts(f.format for f in feats),
        jpeg_quality=_quantiles(np.array([f.jpeg_quality for f in jpeg if f.jpeg_quality is not None], dtype=np.float64)),
        jpeg_quality_exact=sum(f.jpeg_quality_exact for f in jpeg),
        jpeg_quality_hist=_counts(f.jpeg_quality for f in jpeg),
        qtable_hashes=_counts((f.qtable_hash for f in jpeg), top=10),
        subsampling=_counts(f.subsampling for f in jpeg),
        progressive=sum(f.progressive for f in feats),
        exif=sum(f.exif for f in feats),
        icc=sum(f.icc for f in feats),
        sizes=_counts((f"{f.width}x{f.height}" for f in feats), top=10),
        width=_quantiles(cols["width"].astype(np.float64)),
        height=_quantiles(cols["height"].astype(np.float64)),
        pixel_count=_quantiles(cols["pixel_count"]),
        aspect_ratio=_quantiles(cols["aspect_ratio"]),
        bytes=_quantiles(cols["bytes"].astype(np.float64)),
        bits_per_pixel=_quantiles(cols["bits_per_pixel"]),
    )


# -- shortcut classifiers --------------------------------------------------------------------------
def _design(cols: dict[str, np.ndarray], shortcut: str, formats: list[str]) -> np.ndarray:
    def one(name: str) -> np.ndarray:
        if name == "format":
            code = {f: i for i, f in enumerate(formats)}
            return np.array([code[f] for f in cols["format"]], dtype=np.float64)
        v = cols[name].astype(np.float64)
        return np.where(np.isfinite(v), v, -1.0)

    names = SHORTCUTS if shortcut == ALL else (shortcut,)
    return np.stack([one(n) for n in names], axis=1)


def shortcut_scores(x: np.ndarray, y: np.ndarray, *, folds: int, seed: int, leaves: int) -> np.ndarray:
    """Out-of-fold P(fake) of a decision tree on ``x`` (stratified, seeded folds)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.tree import DecisionTreeClassifier

    min_leaf = max(2, len(y) // 200)
    clf = DecisionTreeClassifier(max_leaf_nodes=leaves, min_samples_leaf=min_leaf, random_state=seed)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(clf, x, y, cv=cv, method="predict_proba")[:, 1]


def _fmt_size(p: SetProfile) -> str:
    top, n = next(iter(p.sizes.items()), ("?", 0))
    w, _, h = top.partition("x")
    if p.n and n / p.n >= 0.5:
        return f"{w}²" if w == h else top.replace("x", "×")
    return f"≈{p.width.p50:.0f}×{p.height.p50:.0f}" if p.width.p50 is not None else "of unknown size"


def _fmt_codec(p: SetProfile) -> str:
    share = sorted(p.formats.items(), key=lambda kv: -kv[1])
    main = [f"{f.upper()}" + ("" if n == p.n else f" {100 * n / max(p.n, 1):.0f}%") for f, n in share[:2]]
    text = "/".join(main) if main else "empty"
    q = p.jpeg_quality
    if p.formats.get("jpeg") and q.p05 is not None:
        text += f" q≈{q.p05:.0f}" + ("" if q.p05 == q.p95 else f"–{q.p95:.0f}")
    return text


def describe_pair(fake: SetProfile, pool: SetProfile, flagged: set[str]) -> str:
    """One sentence on what differs, covering only the flagged shortcuts."""
    parts = []
    if flagged & {"format", "jpeg_quality"}:
        parts.append(f"fakes are {_fmt_codec(fake)}, reals {_fmt_codec(pool)}")
    if flagged & {"pixel_count", "aspect_ratio"}:
        parts.append(f"fakes {_fmt_size(fake)}, reals {_fmt_size(pool)}")
    if "bits_per_pixel" in flagged:
        parts.append(f"fakes use ≈{fake.bits_per_pixel.p50:.2f} bits/pixel, reals ≈{pool.bits_per_pixel.p50:.2f}")
    if not parts and ALL in flagged:
        parts.append("no single feature separates them, but together the encoding features do")
    return ("; ".join(parts) + ".") if parts else ""


# -- reading sets ------------------------------------------------------------------------------------
@dataclass
class SetFeatures:
    name: str
    role: str
    label: str
    fingerprint: str
    ids: list[str]
    features: list[ImageFeatures]


def read_set_features(path: Path, *, limit: int | None = None) -> tuple[list[str], list[int], list[ImageFeatures], str]:
    """(ids, labels, features, fingerprint) of a set folder, reading only the image bytes."""
    from afpbench.dataset import open_dataset

    reader = open_dataset(path)
    ids: list[str] = []
    labels: list[int] = []
    feats: list[ImageFeatures] = []
    stop = reader.num_rows if limit is None else min(limit, reader.num_rows)
    for batch in reader.iter_batches(batch_size=256, columns=["id", "label", "image"], stop=stop):
        for row in batch:
            cell = row["image"] or {}
            data = cell.get("bytes") if isinstance(cell, dict) else None
            if data is None:
                raise DatasetError(f"Row {row['id']} of {path} holds no image bytes; re-import the set so bytes are embedded.")
            ids.append(row["id"])
            labels.append(int(row["label"]))
            feats.append(image_features(data))
    return ids, labels, feats, reader.fingerprint


@dataclass
class AuditConfig:
    """What ``audit`` reads and how it scores the shortcuts."""

    data: list[Path]
    datasets: list[str] | None = None
    profile: str | None = None
    out: Path = Path("audit")
    #: Real sets paired with every fake set (default: the profile's held-out real sets).
    real_pool: list[str] | None = None
    bootstrap: int = 1000
    seed: int = 0
    confidence: float = 0.95
    folds: int = 5
    #: Leaves of each shortcut tree: enough for a categorical format or a few size modes.
    leaves: int = 16
    plots: bool = True
    #: Read only the first N rows of each set (quick looks; the report says so in n).
    limit: int | None = None


def audit(cfg: AuditConfig) -> AuditReport:
    """Audit every set's encoding and score the shortcuts of every fake set vs the real pool."""
    from afpbench import __version__
    from afpbench.evaluate.sets import locate_sets
    from afpbench.metrics import BootstrapConfig, pair_metrics
    from afpbench.scoring import default_real_pool

    if cfg.folds < 2:
        raise AfpbenchError(f"--folds must be at least 2 (got {cfg.folds}).")
    boot = BootstrapConfig(cfg.bootstrap, cfg.seed, cfg.confidence)
    names, roles, profile, folders = locate_sets(cfg.data, cfg.datasets, cfg.profile)
    t0 = time.perf_counter()
    sets: dict[str, SetFeatures] = {}
    for n in names:
        ids, labels, feats, fp = read_set_features(folders[n], limit=cfg.limit)
        u = set(labels)
        label = "mixed" if len(u) > 1 else ("fake" if u == {1} else "real")
        sets[n] = SetFeatures(n, roles[n], label, fp, ids, feats)
        logger.info("audit: read %s (%d images)", n, len(ids))
    n_images = sum(len(s.ids) for s in sets.values())
    rate = n_images / max(time.perf_counter() - t0, 1e-9)

    labels_by_set = {n: s.label for n, s in sets.items()}
    if cfg.real_pool is not None:
        pool_names, rule = list(cfg.real_pool), "explicit"
        for n in pool_names:
            if labels_by_set.get(n) != "real":
                raise AfpbenchError(f"Real pool set '{n}' is {'not audited' if n not in sets else labels_by_set[n]}; pass audited real sets to --real-pool.")
    else:
        pool_names, rule = default_real_pool(labels_by_set, roles)
    pool_names = sorted(pool_names)
    pool_feats = [f for n in pool_names for f in sets[n].features]
    pool_profile = profile_of(pool_names, pool_feats) if pool_feats else None

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs: list[PairAudit] = []
    for name, s in sets.items():
        if s.label != "fake" or not pool_feats:
            continue
        feats = s.features + pool_feats
        y = np.array([1] * len(s.features) + [0] * len(pool_feats), dtype=np.int8)
        if min(len(s.features), len(pool_feats)) < cfg.folds:
            raise AfpbenchError(f"Pair '{name}' vs {'+'.join(pool_names)} has fewer than {cfg.folds} images in a class; audit more images or pass a smaller --folds.")
        cols = _feature_columns(feats)
        formats = sorted(set(cols["format"].tolist()))
        results: dict[str, ShortcutAUC] = {}
        for sc in (*SHORTCUTS, ALL):
            x = _design(cols, sc, formats)
            p = shortcut_scores(x, y, folds=cfg.folds, seed=cfg.seed, leaves=cfg.leaves * (4 if sc == ALL else 1))
            est = pair_metrics(y, p, (p > 0.5).astype(np.int8), boot, key=f"audit|{sc}|{name}|{'+'.join(pool_names)}", what=f"Audit pair '{name}'")["auc"]
            results[sc] = ShortcutAUC(value=est.value, ci_low=est.ci_low, ci_high=est.ci_high, flagged=est.ci_low > FLAG_AUC)
        flagged = {k for k, v in results.items() if v.flagged}
        fake_profile = profile_of([name], s.features)
        pair = PairAudit(
            fake=name, real=pool_names, n_fake=len(s.features), n_real=len(pool_feats), shortcuts=results,
            flagged=bool(flagged), summary=describe_pair(fake_profile, pool_profile, flagged) if flagged else "",
        )
        if cfg.plots:
            pair.plots = _plots(out, name, s.features, pool_feats)
        pairs.append(pair)

    report = AuditReport(
        created=utc_timestamp(),
        afpbench_version=__version__,
        profile=profile,
        pairing_rule=rule,
        real_pool=pool_names,
        bootstrap={"n_resamples": boot.n_resamples, "seed": boot.seed, "confidence": boot.confidence},
        folds=cfg.folds,
        sets={n: profile_of([n], s.features) for n, s in sets.items()},
        fingerprints={n: s.fingerprint for n, s in sets.items()},
        roles={n: s.role for n, s in sets.items()},
        pool=pool_profile,
        pairs=pairs,
        images_per_second=rate,
    )
    _write_images(out / "images.parquet", sets)
    write_report(report, out)
    return report


def _write_images(path: Path, sets: dict[str, SetFeatures]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from afpbench._util.io import atomic_write_bytes

    rows: dict[str, list[Any]] = {k: [] for k in ("dataset", "id", "format", "width", "height", "aspect_ratio", "bytes", "bits_per_pixel", "jpeg_quality", "jpeg_quality_exact",
                                                  "qtable_hash", "subsampling", "progressive", "exif", "icc", "error")}
    for s in sets.values():
        for rid, f in zip(s.ids, s.features):
            rows["dataset"].append(s.name)
            rows["id"].append(rid)
            for k in ("format", "width", "height", "bytes", "jpeg_quality", "jpeg_quality_exact", "qtable_hash", "subsampling", "progressive", "exif", "icc", "error"):
                rows[k].append(getattr(f, k))
            rows["aspect_ratio"].append(f.aspect_ratio)
            rows["bits_per_pixel"].append(f.bits_per_pixel)
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table(rows), buf)
    atomic_write_bytes(path, buf.getvalue().to_pybytes())


# -- rendering -------------------------------------------------------------------------------------------
def _ci(a: ShortcutAUC) -> str:
    return f"{a.value:.3f} [{a.ci_low:.3f}, {a.ci_high:.3f}]" + (" ⚑" if a.flagged else "")


def render_markdown(report: AuditReport) -> str:
    """``audit.md``: flagged pairs first, then every pair's shortcut AUCs, then each set's encoding."""
    lines = ["# Shortcut audit", ""]
    lines.append(
        f"Real pool: {', '.join(report.real_pool) or '(none)'} ({report.pairing_rule}). AUC of an out-of-fold decision tree "
        f"({report.folds} folds) that sees only the named feature, {report.bootstrap['confidence']:.0%} bootstrap interval; "
        f"⚑ = the whole interval lies above {report.flag_auc}."
    )
    lines.append("")
    flagged = [p for p in report.pairs if p.flagged]
    if flagged:
        lines += ["## Flagged pairs", ""]
        lines += [f"- **{p.fake}** vs {'+'.join(p.real)}: {p.summary}" for p in flagged]
        lines.append("")
    if report.pairs:
        cols = [*SHORTCUTS, ALL]
        lines += ["## Shortcut AUCs", "", "| fake set | n fake | n real | " + " | ".join(cols) + " |", "|---|---:|---:|" + "---|" * len(cols)]
        for p in report.pairs:
            lines.append(f"| {p.fake} | {p.n_fake} | {p.n_real} | " + " | ".join(_ci(p.shortcuts[c]) for c in cols) + " |")
        lines.append("")
    lines += ["## Encoding per set", "",
              "| set | role | n | formats | JPEG quality (p5–p95) | subsampling | progressive | EXIF | ICC | top size | pixels (median) | bits/pixel (median) |",
              "|---|---|---:|---|---|---|---:|---:|---:|---|---:|---:|"]
    for name, sp in report.sets.items():
        q = sp.jpeg_quality
        qtxt = "–" if q.p05 is None else (f"{q.p05:.0f}" if q.p05 == q.p95 else f"{q.p05:.0f}–{q.p95:.0f}")
        fmts = ", ".join(f"{k} {v}" for k, v in sorted(sp.formats.items(), key=lambda kv: -kv[1]))
        sub = ", ".join(f"{k} {v}" for k, v in sp.subsampling.items()) or "–"
        top = next(iter(sp.sizes), "–")
        px = f"{sp.pixel_count.p50:.0f}" if sp.pixel_count.p50 is not None else "–"
        bpp = f"{sp.bits_per_pixel.p50:.2f}" if sp.bits_per_pixel.p50 is not None else "–"
        lines.append(f"| {name} | {report.roles.get(name, '')} | {sp.n} | {fmts} | {qtxt} | {sub} | {sp.progressive} | {sp.exif} | {sp.icc} | {top} | {px} | {bpp} |")
    lines.append("")
    return "\n".join(lines)


def write_report(report: AuditReport, out: Path) -> None:
    from afpbench._util.io import atomic_write_text

    atomic_write_text(out / "audit.json", report.model_dump_json(indent=2) + "\n")
    atomic_write_text(out / "audit.md", render_markdown(report))


def _plots(out: Path, name: str, fake: list[ImageFeatures], real: list[ImageFeatures]) -> list[str]:
    """Size scatter and JPEG-quality histogram of one pair (matplotlib, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from afpbench._util.io import atomic_write_bytes

    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    written = []

    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=100)
    for feats, label, colour, marker in ((real, "real pool", "#1f77b4", "o"), (fake, name, "#d62728", "x")):
        ax.scatter([f.width for f in feats], [f.height for f in feats], s=10, alpha=0.5, label=label, c=colour, marker=marker)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title(f"{name}: image sizes")
    ax.legend(loc="best", fontsize=8)
    written.append(_save(fig, folder / f"{name}-sizes.png", atomic_write_bytes))

    fig, ax = plt.subplots(figsize=(4.2, 3.2), dpi=100)
    bins = np.arange(0.5, 101.5, 1.0)
    for feats, label, colour in ((real, "real pool", "#1f77b4"), (fake, name, "#d62728")):
        q = [f.jpeg_quality for f in feats if f.jpeg_quality is not None]
        other = len(feats) - len(q)
        ax.hist(q, bins=bins, alpha=0.6, color=colour, label=f"{label} ({len(q)} JPEG, {other} other)")
    ax.set_xlabel("estimated JPEG quality")
    ax.set_ylabel("images")
    ax.set_title(f"{name}: JPEG quality")
    ax.legend(loc="best", fontsize=8)
    written.append(_save(fig, folder / f"{name}-jpeg-quality.png", atomic_write_bytes))
    return [p.relative_to(out).as_posix() for p in written]


def _save(fig: Any, path: Path, write: Any) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write(path, buf.getvalue())
    return path


__all__ = [
    "AuditConfig", "AuditReport", "PairAudit", "SetProfile", "ImageFeatures", "audit", "image_features", "estimate_jpeg_quality",
    "ijg_tables", "load_audit", "audit_schema", "render_markdown", "FLAG_AUC", "SHORTCUTS",
]


# ``afpbench.audit(...)`` calls audit even after this module was imported (see afpbench._util.callable_module).
from afpbench._util.callable_module import make_callable  # noqa: E402

make_callable(__name__, audit)
