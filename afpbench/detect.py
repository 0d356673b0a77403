"""Is this image fake? Score anyone's own images with any detector, through the evaluation pass.

``afpbench detect PATH... --detector NAME`` and :func:`detect` take image files, folders
(recursively), archives (the importer's formats: .tar, .tar.gz, .zip, saved HF datasets)
and lists of paths. Each file is read and checked exactly as ``afpbench import`` reads it
(size guards, full decode check; CMYK, 16-bit, palette and alpha images converted
losslessly to RGB PNG, everything else kept as its original bytes), and then scored by
the very pass ``evaluate`` runs (:mod:`afpbench.evaluate.pipeline`): every image decoded
once, preprocessed per detector, batched. So a file gets the same score from ``detect``
as from ``evaluate`` on a set imported from it. A file that cannot be read is listed
with its reason; it does not stop the run.

The decision is the detector's own rule, ``P(fake) > threshold`` (a tie is real).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from afpbench.errors import AfpbenchError

if TYPE_CHECKING:  # pragma: no cover
    from afpbench.detectors.base import Scorer
    from afpbench.evaluate.config import DetectorSpec

logger = logging.getLogger(__name__)

#: The in-memory set the pass reads: its name appears in no file.
SET_NAME = "inputs"


@dataclass
class DetectConfig:
    """What ``detect`` scores, and with what."""

    paths: list[str | Path]
    detectors: list[str | DetectorSpec | Scorer]
    batch_size: int = 16
    device: str = "auto"
    dtype: str | None = None
    #: DataLoader workers (None: one per spare core, max 4); 0 decodes in this process.
    num_workers: int | None = 0
    progress: bool = True
    #: Reject images declaring more pixels than this (decompression-bomb guard).
    max_megapixels: int = 64
    #: Write a heat map per (image, detector) here, for detectors that can say where they look.
    explain: Path | None = None


@dataclass
class Verdict:
    """One detector's answer about one image."""

    detector: str
    p_fake: float
    fake: bool
    threshold: float
    policy: str


@dataclass
class ImageResult:
    """One scored image: where it came from, what it is, and every detector's verdict."""

    path: str
    width: int
    height: int
    format: str
    verdicts: list[Verdict] = field(default_factory=list)
    explanations: dict[str, str] = field(default_factory=dict)

    @property
    def any_fake(self) -> bool:
        return any(v.fake for v in self.verdicts)


@dataclass
class Unreadable:
    path: str
    reason: str


@dataclass
class DetectReport:
    """What ``detect`` found: scored images (in input order) and the files it could not read."""

    detectors: list[str]
    images: list[ImageResult]
    unreadable: list[Unreadable]
    #: Detector -> why it gives no heat map (when --explain was asked and it cannot).
    no_explanation: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 when every readable image was scored, 1 when no image could be."""
        return 0 if self.images else 1

    def as_json(self) -> str:
        return json.dumps({"detectors": self.detectors, "images": [asdict(i) for i in self.images],
                           "unreadable": [asdict(u) for u in self.unreadable], "no_explanation": self.no_explanation}, indent=2)

    def as_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["path", "width", "height", "format", "detector", "p_fake", "fake", "threshold", "policy", "error"])
        for im in self.images:
            for v in im.verdicts:
                w.writerow([im.path, im.width, im.height, im.format, v.detector, f"{v.p_fake:.6f}", int(v.fake), v.threshold, v.policy, ""])
        for u in self.unreadable:
            w.writerow([u.path, "", "", "", "", "", "", "", "", u.reason])
        return buf.getvalue()

    def as_table(self) -> str:
        """For people: fakes first (by the highest P(fake)), then reals, then unreadable files."""
        dets = self.detectors
        rows = sorted(self.images, key=lambda im: (not im.any_fake, -max((v.p_fake for v in im.verdicts), default=0.0), im.path))
        header = ["path", "size", "format", *[f"{d} P(fake)" for d in dets]]
        body = []
        for im in rows:
            cells = [im.path, f"{im.width}x{im.height}", im.format]
            cells += [f"{v.p_fake:.3f} {'FAKE' if v.fake else 'real'}" for v in im.verdicts]
            body.append(cells)
        widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, ["-" * w for w in widths], *body]]
        policies = {v.detector: f"{v.policy} (threshold {v.threshold:g})" for im in self.images for v in im.verdicts}
        lines += [f"{d}: fake when P(fake) > threshold; {p}" for d, p in policies.items()]
        lines += [f"unreadable: {u.path}: {u.reason}" for u in self.unreadable]
        lines += [f"no heat map from {d}: {why}" for d, why in self.no_explanation.items()]
        return "\n".join(lines)


# -- inputs -------------------------------------------------------------------------------------------
@dataclass
class _Input:
    path: str
    row: dict[str, Any] | None
    reason: str = ""


def _entries(path: Path) -> Iterator[tuple[str, Any]]:
    """(shown path, importer entry) for a file, a folder or an archive."""
    from afpbench.importer import InputFile, iter_inputs

    if path.is_file() and not _is_container(path):
        size = path.stat().st_size

        def read(n: int, p: Path = path) -> bytes:
            with open(p, "rb") as fh:
                return fh.read(n)

        yield str(path), InputFile(relpath=path.name, read=read, size=size)
        return
    with tempfile.TemporaryDirectory(prefix="afpbench-detect-") as scratch:
        for f in iter_inputs(path, Path(scratch)):
            yield f"{path}/{f.relpath}" if path.is_dir() else f"{path}:{f.relpath}", f


def _is_container(path: Path) -> bool:
    import tarfile
    import zipfile

    return path.suffix.lower() in (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz") or tarfile.is_tarfile(path) or zipfile.is_zipfile(path)


def collect_inputs(paths: Sequence[str | Path], max_megapixels: int = 64) -> list[_Input]:
    """Every file under ``paths``, read and checked as the importer does (a row, or a reason)."""
    from afpbench.dataset import make_row
    from afpbench.importer import max_file_bytes, read_checked

    max_pixels = int(max_megapixels) * 1_000_000
    cap = max_file_bytes(max_pixels)
    out: list[_Input] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            out.append(_Input(str(raw), None, "no such file or folder"))
            continue
        for shown, f in _entries(path):
            if f.error:
                out.append(_Input(shown, None, str(f.error)))
                continue
            chk = read_checked(f, max_pixels, cap)
            if not chk.ok:
                out.append(_Input(shown, None, chk.reason))
                continue
            # The label is unknown and never read: the pass reads it only for matched views.
            row = make_row(id=f"{SET_NAME}/{len(out):06d}", image=chk.data, label=0, dataset=SET_NAME, source=shown,
                           width=chk.width, height=chk.height, format=chk.format, meta=chk.meta)
            out.append(_Input(shown, row))
    return out


class _Rows:
    """The rows of the images to score, read by the pass as it reads a dataset's shards."""

    fingerprint = "detect"

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows
        self.num_rows = len(rows)

    def iter_batches(self, batch_size: int = 64, columns: Iterable[str] | None = None, start: int = 0, stop: int | None = None) -> Iterator[list[dict[str, Any]]]:
        stop = self.num_rows if stop is None else min(stop, self.num_rows)
        for i in range(start, stop, batch_size):
            yield self.rows[i:min(i + batch_size, stop)]


# -- the entry point ------------------------------------------------------------------------------------
def score_rows(detectors: Sequence[Scorer], rows: list[dict[str, Any]], device: str, *, batch_size: int = 16,
               num_workers: int | None = 0, progress: bool = False) -> list[np.ndarray]:
    """P(fake) of every row for every detector, through evaluate's own pass (one decode per row)."""
    from afpbench._util.runtime import ProcessGroup
    from afpbench.evaluate import pipeline
    from afpbench.evaluate.cache import CacheWriter
    from afpbench.evaluate.config import Job
    from afpbench.evaluate.sets import EvalSet

    s = EvalSet(SET_NAME, "held-out", _Rows(rows), len(rows), [r["id"] for r in rows], np.zeros(len(rows), dtype=np.int8), None)
    sets = {SET_NAME: s}
    pg = ProcessGroup()
    with tempfile.TemporaryDirectory(prefix="afpbench-detect-") as tmp:
        jobs = [Job(d, 0, det, None, None, Path(tmp) / f"job-{d}", keys={SET_NAME: "detect"}) for d, det in enumerate(detectors)]
        plan = pipeline.plan_rows(jobs, sets, False, pg)
        # Scores stay in memory (the writer flushes parts only at the end, into the scratch folder).
        writer = CacheWriter(0, flush_every=1 << 30, flush_seconds=float("inf"))
        pipeline.score_pass(pipeline.PassOptions(batch_size, num_workers, progress, label="detect"), pg, device, sets, jobs, [None], plan, writer)
        scores = writer.new_scores()
    out = []
    for j in range(len(jobs)):
        idx, sc = scores[(j, SET_NAME)]
        full = np.full(len(rows), np.nan)
        full[idx] = sc
        out.append(full)
    return out


def detect(cfg: DetectConfig) -> DetectReport:
    """Score every readable image under ``cfg.paths`` with every detector (one pass)."""
    from afpbench._util.devices import resolve_device
    from afpbench.evaluate import pipeline

    if not cfg.paths:
        raise AfpbenchError("No image given; pass image files, folders or archives (or - to read paths from standard input).")
    if not cfg.detectors:
        raise AfpbenchError("No detector given; pass --detector NAME (see afpbench list detectors).")
    if cfg.batch_size < 1:
        raise AfpbenchError(f"--batch-size must be at least 1 (got {cfg.batch_size}).")
    device = resolve_device(cfg.device)
    detectors = [det for det, _ in pipeline.load_detectors(cfg.detectors, device, cfg.dtype)]
    inputs = collect_inputs(cfg.paths, cfg.max_megapixels)
    readable = [i for i in inputs if i.row is not None]
    report = DetectReport([det.full_name for det in detectors], [], [Unreadable(i.path, i.reason) for i in inputs if i.row is None])
    if not readable:
        return report
    per_det = score_rows(detectors, [i.row for i in readable], device, batch_size=cfg.batch_size, num_workers=cfg.num_workers, progress=cfg.progress)
    for k, inp in enumerate(readable):
        r = inp.row
        res = ImageResult(inp.path, r["width"], r["height"], r["format"])
        for det, scores in zip(detectors, per_det):
            res.verdicts.append(_verdict(det, float(scores[k])))
        report.images.append(res)
    if cfg.explain is not None:
        _explain(cfg.explain, readable, report, detectors)
    return report


def _verdict(det: Any, p: float) -> Verdict:
    thr = 0.5 if det.threshold is None else float(det.threshold)
    return Verdict(det.full_name, p, bool(p > thr), thr, str(det.threshold_policy))


@dataclass
class Prediction:
    """``Detector.predict``'s answer for one image."""

    p_fake: float
    fake: bool
    threshold: float


def predict(det: Scorer, images: Sequence[Any], *, batch_size: int = 16, max_megapixels: int = 64) -> list[Prediction]:
    """P(fake) and the decision for paths, PIL images or numpy arrays (HxW or HxWx3/4, uint8).

    A path is read as ``detect`` reads it: its own bytes, so a detector that reads the file
    sees its real format. A PIL image or an array is scored as a lossless PNG of its pixels.
    A path that cannot be read raises one line naming it.
    """
    from PIL import Image

    from afpbench.dataset import encode_png, make_row, to_rgb

    if isinstance(images, (str, Path, Image.Image, np.ndarray)):
        images = [images]
    rows = []
    for k, item in enumerate(images):
        if isinstance(item, (str, Path)):
            inp = collect_inputs([item], max_megapixels)
            if len(inp) != 1 or inp[0].row is None:
                why = inp[0].reason if inp else "no image there"
                raise AfpbenchError(f"{item} cannot be scored ({why}); pass an image file (folders and archives: use afpbench.detect).")
            row = inp[0].row
        else:
            img = Image.fromarray(np.asarray(item)) if isinstance(item, np.ndarray) else item
            if not isinstance(img, Image.Image):
                raise AfpbenchError(f"Item {k} is a {type(item).__name__}; pass paths, PIL images or numpy arrays.")
            img = to_rgb(img)
            row = make_row(id=f"{SET_NAME}/{k:06d}", image=encode_png(img), label=0, dataset=SET_NAME, width=img.width, height=img.height, format="png")
        rows.append({**row, "id": f"{SET_NAME}/{k:06d}"})
    if not rows:
        return []
    device = str(getattr(det, "device", "cpu"))
    scores = score_rows([det], rows, device, batch_size=batch_size, num_workers=0)[0]
    return [Prediction(float(p), v.fake, v.threshold) for p, v in ((p, _verdict(det, float(p))) for p in scores)]


def _explain(folder: Path, readable: list[_Input], report: DetectReport, detectors: list[Any]) -> None:
    """Heat maps beside the result for detectors that can say where they look."""
    from afpbench.dataset import decode_image
    from afpbench.detectors.explain import can_explain, explain_image, overlay

    folder.mkdir(parents=True, exist_ok=True)
    able = [det for det in detectors if can_explain(det)]
    for det in detectors:
        if det not in able:
            report.no_explanation[det.full_name] = "no spatial explanation (it scores the whole image at once, or reads the file rather than the pixels)"
    for k, (inp, res) in enumerate(zip(readable, report.images)):
        image = decode_image(inp.row["image"])
        for det in able:
            view, heat = explain_image(det, image, inp.row)
            out = folder / f"{k:04d}-{Path(inp.path).stem[:60]}.{det.full_name}.png"
            overlay(view, heat).save(out)
            res.explanations[det.full_name] = str(out)


__all__ = ["DetectConfig", "DetectReport", "ImageResult", "Prediction", "Unreadable", "Verdict", "collect_inputs", "detect", "predict", "score_rows"]


# ``afpbench.detect(...)`` calls detect even after this module was imported (see afpbench._util.callable_module).
from afpbench._util.callable_module import make_callable  # noqa: E402

make_callable(__name__, detect)
