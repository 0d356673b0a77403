"""The evaluation harness: datasets x detectors (x perturbations) -> predictions -> results.

One pass over the images serves every detector and perturbation: each row is read and
decoded once (in DataLoader workers), perturbed once per suite, preprocessed once per
detector, and the main process scores the batches. Per-image scores are appended to a
resume cache as they come; the final predictions are written as
``<out>/<detector[.tag]>[@<perturbation>]/predictions/<set>.parquet`` and the metrics
(:func:`afpbench.results.compute_metrics`) into ``results.json`` beside them.

Resuming: scores are cached per (detector + arguments, weights sha256, dataset
fingerprint, perturbation). A killed run leaves flushed cache parts; running the same
command again scores only the rows that are missing.

Distributed: under ``torchrun``/``accelerate launch`` (WORLD_SIZE > 1) the rows still to
score are split across processes with ``PartialState.split_between_processes``; each
process writes its own cache parts, and the main process gathers every score
(``gather_object``) and writes one predictions file per set, checking for duplicates and
gaps. On a machine without a GPU the state is ``PartialState(cpu=True)`` (MULTI_CPU over
gloo): a plain ``PartialState()`` there would not shard and every process would score all
rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from afpbench import __version__
from afpbench._util.locking import lock_scope
from afpbench.errors import AfpbenchError, DatasetError
from afpbench.metrics import BootstrapConfig, calibrate_threshold
from afpbench.perturb import Perturbation, parse_perturbation

ROLES = ("held-in", "held-out")
log = logging.getLogger(__name__)

FLUSH_SECONDS_ENV = "AFPBENCH_FLUSH_SECONDS"  # shared with build
DEFAULT_FLUSH_SECONDS = 30.0


def _env_seconds(default: float) -> float:
    raw = os.environ.get(FLUSH_SECONDS_ENV)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise AfpbenchError(f"{FLUSH_SECONDS_ENV}={raw!r} is not a number of seconds; set it to e.g. 30 or unset it.") from None


# -- configuration ------------------------------------------------------------------------
@dataclass
class DetectorSpec:
    """A detector to load: ``name[.tag]``, optional weights and backbone (``base``), and the detector's own options."""

    name: str
    weights: str | None = None
    base: str | None = None
    options: dict[str, str] = field(default_factory=dict)


def detector_options(names: list[str], pairs: list[str]) -> list[dict[str, str]]:
    """``KEY=VALUE`` pairs -> the options of each detector in ``names``: a pair goes to
    every detector that has option KEY; one that none of them has is refused."""
    if not pairs:
        return [{} for _ in names]
    from afpbench.detectors import detector_class

    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise AfpbenchError(f"Detector option '{pair}' is not KEY=VALUE; write e.g. tokenization=transformers-4.35.")
        parsed.append((key.strip(), value.strip()))
    known = [getattr(detector_class(n), "option_values", {}) for n in names]
    for key, _ in parsed:
        if not any(key in k for k in known):
            have = sorted({o for k in known for o in k})
            raise AfpbenchError(f"No detector of this run has an option '{key}' (options here: {', '.join(have) or 'none'}); drop --detector-option {key}=... .")
    return [{key: value for key, value in parsed if key in k} for k in known]


@dataclass
class EvalConfig:
    """Everything ``evaluate`` needs; the CLI fills it from its options.

    ``detectors`` takes names (``"spectral"``, ``"antifakeprompt.lama"``),
    :class:`DetectorSpec` or already-built detector objects. Sets come from ``datasets``,
    else from ``profile`` (v3, v1), else every dataset folder found in ``data``.
    """

    detectors: list[Any]
    data: list[Path]
    datasets: list[str] | None = None
    profile: str | None = None
    #: Perturbation specs ("jpeg:75", "social", ...); None or "none" = clean images.
    perturb: list[str | None] = field(default_factory=lambda: [None])
    perturb_seed: int = 0
    out: Path = Path("results")
    batch_size: int = 32
    device: str = "auto"
    dtype: str | None = None
    #: Evaluate only the first N rows of each set (never publishable).
    limit: int | None = None
    #: Role per set, overriding the profile/catalog ("held-in" / "held-out").
    roles: dict[str, str] = field(default_factory=dict)
    #: Real sets paired with every fake set for AUC/AP/EER (default: held-out real sets).
    real_pool: list[str] | None = None
    #: Calibrate the threshold on these sets (never test sets); empty = fixed threshold.
    calibrate_on: list[str] = field(default_factory=list)
    bootstrap: int = 1000
    seed: int = 0
    confidence: float = 0.95
    #: DataLoader workers decoding and preprocessing; None = one per spare core (max 4).
    num_workers: int | None = None
    #: Rows buffered per (detector, set) before a cache part is written.
    flush_every: int = 256
    #: ... and seconds at most between cache writes, so a killed run on a small or slow
    #: set keeps its work too (AFPBENCH_FLUSH_SECONDS overrides the default).
    flush_seconds: float = field(default_factory=lambda: _env_seconds(DEFAULT_FLUSH_SECONDS))
    resume: bool = True
    progress: bool = True
    command: list[str] | None = None


# -- process state ------------------------------------------------------------------------
class _LocalState:
    """The single-process stand-in for accelerate's PartialState."""

    num_processes = 1
    process_index = 0
    is_main_process = True
    distributed = False

    def wait_for_everyone(self) -> None:
        pass


def process_state() -> Any:
    """accelerate's PartialState when launched with several processes, else a local state."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _LocalState()
    import torch
    from accelerate import PartialState

    # Without a visible GPU only cpu=True gives MULTI_CPU (gloo) sharding.
    state = PartialState(cpu=not torch.cuda.is_available())
    state.distributed = state.num_processes > 1
    return state


def _broadcast(state: Any, obj: Any) -> Any:
    if not state.distributed:
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj], from_process=0)[0]


def _gather(state: Any, obj: Any) -> list[Any]:
    if not state.distributed:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


# -- provenance ---------------------------------------------------------------------------
def environment() -> dict[str, Any]:
    """Versions and hardware for the results file (torch only if already imported)."""
    from afpbench.envinfo import version

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{lib: version(lib) for lib in ("numpy", "torch", "transformers", "diffusers", "datasets", "accelerate")},
        "cuda": None,
        "gpu_name": None,
    }
    if "torch" in sys.modules:
        import torch

        env["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            env["gpu_name"] = torch.cuda.get_device_name(torch.cuda.current_device())
    return env


def git_info() -> dict[str, Any]:
    """Commit and dirty flag of the afpbench checkout (nulls for an installed wheel)."""
    from afpbench.envinfo import git_state

    commit, dirty = git_state()
    return {"commit": commit, "dirty": dirty}


def peak_rss_bytes() -> int:
    """Peak resident memory of this process.

    Linux: VmHWM of /proc/self/status. ``ru_maxrss`` is not used there because it keeps
    the high-water mark of the parent's memory across fork + exec, so a small child of a
    big process would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource  # POSIX only; Windows has neither this nor /proc

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


# -- sets ---------------------------------------------------------------------------------
@dataclass
class _Set:
    """A set opened for evaluation."""

    name: str
    role: str  # held-in, held-out, calibration
    reader: Any
    n_eff: int
    ids: list[str]
    labels: np.ndarray
    family: str | None

    @property
    def fingerprint(self) -> str:
        return self.reader.fingerprint


def _find_set(name: str, data: Sequence[Path]) -> Path:
    for d in data:
        if (Path(d) / name / "manifest.json").is_file():
            return Path(d) / name
    where = ", ".join(str(d) for d in data) or "(no --data given)"
    raise DatasetError(f"No folder for set '{name}' in {where}; build it (afpbench build {name}) or import it, or leave it out of --datasets.")


def _discover(data: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for d in data:
        if not Path(d).is_dir():
            raise DatasetError(f"--data {d} is not a folder; pass the folder that holds one folder per set.")
        for sub in sorted(Path(d).iterdir()):
            if (sub / "manifest.json").is_file() and sub.name not in names:
                names.append(sub.name)
    if not names:
        raise DatasetError(f"No dataset folders (with manifest.json) in {', '.join(map(str, data))}; build or import sets there first.")
    return names


def resolve_sets(cfg: EvalConfig) -> tuple[list[str], dict[str, str], str | None]:
    """The test sets, their roles, and the profile name (None for a custom list)."""
    from afpbench import catalog

    profile = catalog.get_profile(cfg.profile) if cfg.profile else None
    if cfg.datasets:
        names = list(dict.fromkeys(cfg.datasets))
        if profile:
            outside = [n for n in names if n not in profile.names]
            if outside:
                raise AfpbenchError(f"{', '.join(outside)} not in profile {profile.name}; drop --profile or those sets.")
    elif profile:
        names = profile.names
    else:
        names = _discover(cfg.data)
    unknown_roles = [n for n in cfg.roles if n not in names]
    if unknown_roles:
        raise AfpbenchError(f"Roles given for {', '.join(unknown_roles)}, which are not evaluated; fix the roles mapping.")
    known = catalog.recipes()
    roles: dict[str, str] = {}
    for n in names:
        if n in cfg.roles:
            role = cfg.roles[n]
        elif profile:
            role = profile.role(n)
        elif n in known:
            role = known[n].role
        else:
            role = "held-out"  # a set outside the catalog is, by definition, not trained on
        if role not in ROLES:
            raise AfpbenchError(f"Role '{role}' of set '{n}' is not held-in or held-out; fix the roles mapping.")
        roles[n] = role
    return names, roles, (profile.name if profile else None)


def _open_sets(wanted: Sequence[tuple[str, str]], cfg: EvalConfig, state: Any) -> tuple[dict[str, _Set], float]:
    """Open the sets ``(name, role)``, check their content against their manifests (and
    return the seconds that took), then read the ids and labels to evaluate."""
    from afpbench.dataset import open_dataset

    readers = {}
    for name, _ in wanted:
        reader = open_dataset(_find_set(name, cfg.data))
        if reader.num_rows == 0:
            raise DatasetError(f"Set '{name}' has no rows; build or import it again, or leave it out.")
        readers[name] = reader
    seconds = _verify_sets(readers, cfg, state)
    return {name: _make_set(name, role, readers[name], cfg) for name, role in wanted}, seconds


def _verify_sets(readers: dict[str, Any], cfg: EvalConfig, state: Any) -> float:
    """Refuse, before anything is scored or cached, a set whose content differs from its
    manifest; return the seconds it took.

    Without ``--limit`` every row is read back to recompute the content fingerprint, row
    total and label counts, so the fingerprint a results file records is the one of the
    data that was scored (and a mismatch names the shard whose sha256 changed). With
    ``--limit N`` the shards holding the first N rows are hashed (sha256): a fingerprint
    needs every row. Done once, on the main process (the others wait for its verdict),
    before the workers start; ``benchmarks/bench_data_check.py`` measures the cost.
    """
    error, seconds = None, 0.0
    if state.is_main_process:
        from afpbench.dataset import check_contents

        t0 = time.perf_counter()
        items = [(r.path, r.manifest, None if cfg.limit is None else min(cfg.limit, r.num_rows)) for r in readers.values()]
        for (name, reader), report in zip(readers.items(), check_contents(items, sha256=False)):
            if report.problems:
                error = (
                    f"Set '{name}' ({reader.path}) does not match its manifest: {report.problems[0]}; nothing was scored. "
                    f"Run 'afpbench verify {reader.path}' and rebuild (or re-download) the set."
                )
                break
        seconds = time.perf_counter() - t0
    error = _broadcast(state, error)
    if error:
        raise DatasetError(error)
    return seconds


def _make_set(name: str, role: str, reader: Any, cfg: EvalConfig) -> _Set:
    from afpbench import catalog

    n_eff = reader.num_rows if cfg.limit is None else min(cfg.limit, reader.num_rows)
    ids = reader.ids(n_eff)
    labels = np.asarray(reader.labels(n_eff), dtype=np.int8)
    if len(set(ids)) != len(ids):
        raise DatasetError(f"Set '{name}' has duplicate row ids; rebuild it (ids must be unique).")
    family = reader.manifest.get("family") or None
    if not family and name in catalog.recipes():
        family = catalog.get_recipe(name).family
    return _Set(name, role, reader, n_eff, ids, labels, family)


# -- detectors and jobs ---------------------------------------------------------------------
def _device(requested: str, state: Any) -> str:
    import torch

    if state.distributed and requested in ("auto", "cuda"):
        return "cpu" if state.device.type == "cpu" else str(state.device)
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise AfpbenchError(f"--device {requested} asked for, but no CUDA device is visible; pass --device cpu.")
    return requested


def _load_detectors(cfg: EvalConfig, device: str) -> list[tuple[Any, str | None]]:
    out = []
    for spec in cfg.detectors:
        if isinstance(spec, str):
            spec = DetectorSpec(spec)
        if isinstance(spec, DetectorSpec):
            from afpbench.detectors import load_detector

            out.append((load_detector(spec.name, weights=spec.weights, base=spec.base, device=device, dtype=cfg.dtype, options=spec.options), spec.weights))
        else:
            out.append((spec, None))
    return out


def full_name(det: Any) -> str:
    name = getattr(det, "full_name", None)
    if name:
        return name
    tag = getattr(det, "tag", None)
    return f"{det.name}.{tag}" if tag else det.name


def _arguments(det: Any) -> dict[str, Any]:
    fn = getattr(det, "arguments", None)
    args = fn() if callable(fn) else {}
    return json.loads(json.dumps(args, default=str))


def _card(det: Any) -> dict[str, Any] | None:
    card = getattr(det, "card", None)
    if card is None:
        return None
    if hasattr(card, "model_dump"):
        return card.model_dump(mode="json")
    return json.loads(json.dumps(card, default=str)) if isinstance(card, dict) else {"text": str(card)}


@dataclass
class _Job:
    """One detector under one perturbation: one results folder."""

    det_pos: int
    pert_pos: int
    det: Any
    weights: str | None
    perturbation: Perturbation | None
    folder: Path
    #: set name -> cache key / done mask / cached scores (filled by _plan_cache)
    keys: dict[str, str] = field(default_factory=dict)
    cached: dict[str, dict[int, float]] = field(default_factory=dict)
    score_seconds: float = 0.0

    @property
    def name(self) -> str:
        return full_name(self.det) + (f"@{self.perturbation.slug}" if self.perturbation else "")


def cache_key(det: Any, fingerprint: str, perturbation: Perturbation | None) -> str:
    """Key of a (detector + arguments, weights, dataset, perturbation) score cache."""
    args = {k: v for k, v in _arguments(det).items() if k != "device"}  # a device move keeps the scores
    blob = json.dumps(
        {
            "detector": full_name(det),
            "arguments": args,
            "weights_sha256": getattr(det, "weights_sha256", None),
            "fingerprint": fingerprint,
            "perturbation": perturbation.record() if perturbation else None,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# -- the resume cache -----------------------------------------------------------------------
def _cache_dir(job: _Job, s: _Set) -> Path:
    return job.folder / "cache" / f"{s.name}-{job.keys[s.name]}"


def _read_cached(job: _Job, s: _Set) -> dict[int, float]:
    """Scores already computed for this job and set: cache parts + a matching final file."""
    import pyarrow.parquet as pq

    from afpbench.results import read_predictions

    index_of = {rid: i for i, rid in enumerate(s.ids)}
    done: dict[int, float] = {}
    final = job.folder / "predictions" / f"{s.name}.parquet"
    if final.is_file():
        try:
            p = read_predictions(final)
        except AfpbenchError:
            p = None
        if p is not None and p.meta.get("cache_key") == job.keys[s.name]:
            for rid, sc in zip(p.ids, p.scores):
                if rid in index_of:
                    done[index_of[rid]] = float(sc)
    folder = _cache_dir(job, s)
    if folder.is_dir():
        for part in sorted(folder.glob("part-*.parquet")):
            t = pq.read_table(part)
            for rid, sc in zip(t.column("id").to_pylist(), t.column("score").to_pylist()):
                if rid in index_of:
                    done[index_of[rid]] = float(sc)
    return done


class _CacheWriter:
    """Buffers (index, score) per (job, set) and writes parquet parts atomically.

    A part is written when a (job, set) buffer reaches ``flush_every`` rows, and every
    buffer is written when ``flush_seconds`` have passed since the last write: a run that
    is killed (SIGKILL, out of memory, power loss) loses at most that much work, however
    small or slow the set.
    """

    def __init__(self, rank: int, flush_every: int, flush_seconds: float = DEFAULT_FLUSH_SECONDS):
        self.rank = rank
        self.flush_every = max(1, flush_every)
        self.flush_seconds = flush_seconds
        self.last_flush = time.monotonic()
        self.token = uuid.uuid4().hex[:8]  # unique per run: a resumed run never overwrites a part
        self.seq = 0
        self.buffers: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray]]] = {}
        self.targets: dict[tuple[int, str], tuple[Path, list[str]]] = {}
        self.new: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray]]] = {}

    def add(self, job_pos: int, job: _Job, s: _Set, idx: np.ndarray, scores: np.ndarray) -> None:
        key = (job_pos, s.name)
        self.targets[key] = (_cache_dir(job, s), s.ids)
        self.buffers.setdefault(key, []).append((idx, scores))
        self.new.setdefault(key, []).append((idx, scores))
        if sum(len(i) for i, _ in self.buffers[key]) >= self.flush_every:
            self._flush(key)
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush_all()

    def _flush(self, key: tuple[int, str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from afpbench._util.io import replacing

        chunks = self.buffers.pop(key, [])
        if not chunks:
            return
        folder, ids = self.targets[key]
        idx = np.concatenate([c[0] for c in chunks])
        scores = np.concatenate([c[1] for c in chunks])
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-r{self.rank:03d}-{self.token}-{self.seq:06d}.parquet"
        self.seq += 1
        table = pa.table({"index": pa.array(idx, pa.int64()), "id": pa.array([ids[i] for i in idx], pa.string()), "score": pa.array(scores, pa.float64())})
        with replacing(folder / name) as tmp:
            pq.write_table(table, tmp)

    def flush_all(self) -> None:
        for key in list(self.buffers):
            self._flush(key)
        self.last_flush = time.monotonic()


# -- the data pipeline ----------------------------------------------------------------------
def _identity(x: Any) -> Any:
    # DataLoader's default conversion would turn numpy index arrays into tensors.
    return x


class _Units:
    """Work units: up to batch_size needed rows of one set, read as one contiguous span."""

    @staticmethod
    def build(needed: dict[str, np.ndarray], batch_size: int, small_first: int = 0) -> list[tuple[str, np.ndarray]]:
        """Units in set order; the first ``small_first`` units are a quarter batch, the next
        ``small_first`` half a batch (one of each per worker: workers take units in turn).

        Scoring cannot start before a worker has decoded a whole first unit. Ramping the
        unit size up lets the scorer start after a quarter batch and keeps the workers
        ahead of it from then on: the pipeline's start-up wait, paid by every run, shrinks
        from one full batch of decoding to a fraction of it.
        """
        units = []
        for name, rows in needed.items():
            start = 0
            while start < len(rows):
                ramp = len(units) // small_first if small_first else 2
                size = max(1, batch_size >> (2 - ramp)) if ramp < 2 else batch_size
                stop = start + 1
                # Grow while the batch has room and the span stays compact (resumed runs
                # leave holes; reading a few skipped rows beats many tiny reads).
                while stop < len(rows) and stop - start < size and rows[stop] - rows[start] < 4 * batch_size:
                    stop += 1
                units.append((name, rows[start:stop]))
                start = stop
        return units


class _PassDataset:
    """Yields one collated batch per work unit: each needed (detector, perturbation) input.

    Runs in DataLoader workers: a worker takes every k-th unit, reads its rows, decodes
    each image once, applies each perturbation once, and preprocesses per detector.
    Defined at module level (and made an IterableDataset lazily) so it pickles for
    spawn-based workers too.
    """

    def __init__(self, sets: dict[str, _Set], units: list[tuple[str, np.ndarray]], jobs: list[_Job], perts: list[Perturbation | None], missing: dict[tuple[int, str], np.ndarray]):
        self.sets, self.units, self.jobs, self.perts, self.missing = sets, units, jobs, perts, missing

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch

        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for name, rows in self.units[wid::nw]:
            yield self._load(name, rows)

    def _load(self, name: str, rows: np.ndarray) -> dict[str, Any]:
        from afpbench import dataset as ds

        s = self.sets[name]
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        want = set(rows.tolist())
        picked: list[tuple[int, dict[str, Any]]] = []
        pos = lo
        for batch in s.reader.iter_batches(batch_size=hi - lo, start=lo, stop=hi):
            for row in batch:
                if pos in want:
                    picked.append((pos, row))
                pos += 1
        per_job: dict[int, tuple[list[int], list[Any]]] = {j: ([], []) for j in range(len(self.jobs))}
        for k, (idx, row) in enumerate(picked):
            try:
                image = ds.decode_image(row["image"])
            except AfpbenchError as exc:
                return {"error": f"Row {row.get('id')} of set '{name}': {exc}"}
            except Exception as exc:  # PIL raises many types for a corrupt file
                return {"error": f"Row {row.get('id')} of set '{name}' cannot be decoded ({type(exc).__name__}: {exc}); run afpbench verify on the set and rebuild it."}
            meta_row = {c: v for c, v in row.items() if c != "image"}
            # Row-level detectors (format) see the encoded size, as they did in training.
            meta_row["bytes"] = len((row.get("image") or {}).get("bytes") or b"")
            for p_pos, pert in enumerate(self.perts):
                needing = [j for j, job in enumerate(self.jobs) if job.pert_pos == p_pos and self.missing[(j, name)][idx]]
                if not needing:
                    continue
                img = pert(image, row["id"]) if pert is not None else image
                for j in needing:
                    per_job[j][0].append(k)
                    per_job[j][1].append(self.jobs[j].det.preprocess(img, meta_row))
        inputs = {j: (np.asarray(ks, dtype=np.int64), _collate(self.jobs[j].det, xs)) for j, (ks, xs) in per_job.items() if ks}
        return {"set": name, "idx": np.asarray([i for i, _ in picked], dtype=np.int64), "inputs": inputs}


def _collate(det: Any, items: list[Any]) -> Any:
    """The detector's collate; the base class's stack goes straight into shared memory.

    A batch built in a worker is copied into shared memory when it is sent to the main
    process; torch's default_collate stacks into shared memory directly (one copy less),
    which is exactly the base Detector.collate (torch.stack) otherwise.
    """
    from afpbench.detectors.base import Detector

    if getattr(type(det), "collate", None) is Detector.collate:
        import torch

        first = items[0]
        if isinstance(first, torch.Tensor) and all(isinstance(x, torch.Tensor) and x.shape == first.shape for x in items):
            return torch.utils.data.default_collate(items)
    return det.collate(items)


def _make_dataset(*args: Any) -> Any:
    import torch

    class PassDataset(_PassDataset, torch.utils.data.IterableDataset):
        pass

    PassDataset.__qualname__ = PassDataset.__name__ = "_IterablePass"
    globals()["_IterablePass"] = PassDataset  # picklable by reference under spawn
    return PassDataset(*args)


def _worker_ignores_sigterm(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM to the main process.

    ``timeout`` and Slurm signal every process of the job, workers included; a worker that
    died of it would make the main process fail with "DataLoader worker killed" instead
    of flushing its scores and stopping cleanly. The main process shuts its workers down.
    """
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _default_workers() -> int:
    return max(0, min(4, _cpu_count() - 1))


def _to_numpy(scores: Any, n: int, job: _Job, set_name: str) -> np.ndarray:
    arr = scores.detach().float().cpu().numpy() if hasattr(scores, "detach") else np.asarray(scores)
    arr = np.asarray(arr, dtype=np.float64).reshape(-1)
    if arr.size != n:
        raise AfpbenchError(f"{job.name} returned {arr.size} scores for a batch of {n} images of '{set_name}'; fix the detector's score().")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise AfpbenchError(f"{job.name} returned NaN or infinite scores on '{set_name}' ({int(bad.sum())} of {n}); fix the detector or its weights.")
    if (arr < 0).any() or (arr > 1).any():
        raise AfpbenchError(f"{job.name} returned scores outside [0, 1] on '{set_name}'; a detector's score must be P(fake).")
    return arr


# -- evaluate -----------------------------------------------------------------------------
@lock_scope
def evaluate(cfg: EvalConfig) -> list[Path]:
    """Evaluate every detector (x perturbation) on every set; return the results files.

    Each results folder is locked for the whole run (see :mod:`afpbench._util.locking`):
    a second evaluation of the same detector into the same ``out`` is refused.
    """
    cfg = _checked(cfg)
    import torch

    bootstrap = BootstrapConfig(cfg.bootstrap, cfg.seed, cfg.confidence)
    state = process_state()
    names, roles, profile = resolve_sets(cfg)
    overlap = [n for n in cfg.calibrate_on if n in names]
    if overlap:
        raise AfpbenchError(f"Calibration set(s) {', '.join(overlap)} are also test sets; calibrate on a separate set (never the test set itself).")
    if cfg.real_pool is not None:
        outside = [n for n in cfg.real_pool if n not in names]
        if outside:
            raise AfpbenchError(f"Real pool set(s) {', '.join(outside)} are not evaluated; add them to --datasets or change --real-pool.")
    sets, verify_seconds = _open_sets([(n, roles[n]) for n in names] + [(n, "calibration") for n in cfg.calibrate_on], cfg, state)
    perts = [parse_perturbation(p, cfg.perturb_seed) for p in (cfg.perturb or [None])]
    if len({p.spec if p else None for p in perts}) != len(perts):
        raise AfpbenchError("The same perturbation is listed twice; give each --perturb once.")

    device = _device(cfg.device, state)
    detectors = _load_detectors(cfg, device)
    jobs: list[_Job] = []
    for d_pos, (det, weights) in enumerate(detectors):
        for p_pos, pert in enumerate(perts):
            job = _Job(d_pos, p_pos, det, weights, pert, cfg.out)
            job.folder = cfg.out / job.name
            jobs.append(job)
    if len({j.name for j in jobs}) != len(jobs):
        raise AfpbenchError("Two detectors would write to the same results folder; evaluate them separately or give them different tags.")
    for job in jobs:
        for s in sets.values():
            job.keys[s.name] = cache_key(job.det, s.fingerprint, job.perturbation)

    _lock_jobs(cfg, state, jobs)

    plan, missing, needed = _plan(cfg, state, jobs, sets)
    rows_cached = {j: sum(int((~missing[(j, s.name)]).sum()) for s in sets.values()) for j in range(len(jobs))}
    writer = _CacheWriter(getattr(state, "process_index", 0), cfg.flush_every, cfg.flush_seconds)
    scored, wall, workers, torch_threads = _score_pass(cfg, state, device, sets, jobs, perts, missing, needed, writer)

    # Gather this process's new scores, timings and memory on the main process.
    payload = {
        "scores": {k: (np.concatenate([c[0] for c in v]), np.concatenate([c[1] for c in v])) for k, v in writer.new.items()},
        "scored": scored,
        "wall": wall,
        "threads": torch_threads,
        "score_seconds": [job.score_seconds for job in jobs],
        "rss": peak_rss_bytes(),
        "gpu": int(torch.cuda.max_memory_allocated()) if device.startswith("cuda") else None,
    }
    gathered = _gather(state, payload)
    paths = [job.folder / "results.json" for job in jobs]
    if state.is_main_process:
        ctx = _RunContext(cfg, profile, roles, bootstrap, device, state, len(detectors), workers, rows_cached, uuid.uuid4().hex, verify_seconds)
        for j, job in enumerate(jobs):
            _finalize_job(j, job, sets, plan, gathered, ctx)
    state.wait_for_everyone()
    return paths


def _lock_jobs(cfg: EvalConfig, state: Any, jobs: list[_Job]) -> None:
    """Lock every results folder of this run (main process), then clear what killed runs left.

    One lock per folder, not per ``out``: evaluations of different detectors into one
    ``out`` (one per GPU, say) run side by side.
    """
    from afpbench._util.locking import ensure_output_dir, hold, lock_path

    if state.is_main_process:
        ensure_output_dir(cfg.out)
    share = (lambda obj: _broadcast(state, obj)) if state.distributed else None
    for job in sorted(jobs, key=lambda j: j.name):  # a fixed order: overlapping runs are refused alike
        hold(lock_path(cfg.out, job.name), job.folder, main=state.is_main_process, share=share)
    if state.is_main_process:
        for job in jobs:
            _remove_stale_temporaries(job.folder)


def _remove_stale_temporaries(folder: Path) -> None:
    """Temporary files a killed run left half-written (the lock says no one is writing them)."""
    from afpbench._util.io import remove

    for pattern in ("cache/*/.part-*.tmp*", "predictions/.*.tmp-*", "predictions/.*.new-*", "predictions/*.parquet.tmp", ".results.json.*-*", "results.json.tmp"):
        for path in folder.glob(pattern):
            remove(path)


def _checked(cfg: EvalConfig) -> EvalConfig:
    """Validate the config; return a copy with paths normalised (the caller's is untouched)."""
    from dataclasses import replace

    if cfg.batch_size < 1:
        raise AfpbenchError(f"--batch-size must be at least 1 (got {cfg.batch_size}).")
    if cfg.limit is not None and cfg.limit < 1:
        raise AfpbenchError(f"--limit must be at least 1 (got {cfg.limit}); leave it out to evaluate every row.")
    if not cfg.detectors:
        raise AfpbenchError("No detector given; pass --detector NAME (see afpbench list detectors).")
    if not cfg.data:
        raise AfpbenchError("No --data folder given; pass the folder that holds one folder per set.")
    if cfg.num_workers is not None and cfg.num_workers < 0:
        raise AfpbenchError(f"--num-workers must be 0 or more (got {cfg.num_workers}).")
    if not cfg.flush_seconds >= 0:
        raise AfpbenchError(f"The cache flush interval must be 0 seconds or more (got {cfg.flush_seconds}); fix {FLUSH_SECONDS_ENV}.")
    from afpbench._util.locking import check_output_dir

    check_output_dir(cfg.out)  # a file or an unwritable folder is refused before any work
    return replace(cfg, data=[Path(d) for d in cfg.data], out=Path(cfg.out))


def _plan(cfg: EvalConfig, state: Any, jobs: list[_Job], sets: dict[str, _Set]) -> tuple[dict, dict[tuple[int, str], np.ndarray], dict[str, np.ndarray]]:
    """Cached scores per (job, set), the rows each job still misses, and this process's share.

    The cache is read once, on the main process, and broadcast, so every process splits
    the very same list of rows (no gaps, no duplicates even on a non-shared filesystem).
    """
    plan = None
    if state.is_main_process:
        plan = {(j, s.name): (_read_cached(job, s) if cfg.resume else {}) for j, job in enumerate(jobs) for s in sets.values()}
    plan = _broadcast(state, plan)
    missing: dict[tuple[int, str], np.ndarray] = {}
    needed: dict[str, np.ndarray] = {}
    for s in sets.values():
        any_missing = np.zeros(s.n_eff, dtype=bool)
        for j in range(len(jobs)):
            m = np.ones(s.n_eff, dtype=bool)
            done = np.fromiter(plan[(j, s.name)].keys(), dtype=np.int64)
            m[done[done < s.n_eff]] = False
            missing[(j, s.name)] = m
            any_missing |= m
        rows = np.flatnonzero(any_missing)
        if len(rows):
            with _split(state, rows) as mine:
                needed[s.name] = np.asarray(mine, dtype=np.int64)
    return plan, missing, needed


def _score_pass(cfg: EvalConfig, state: Any, device: str, sets: dict[str, _Set], jobs: list[_Job], perts: list[Perturbation | None],
                missing: dict[tuple[int, str], np.ndarray], needed: dict[str, np.ndarray], writer: _CacheWriter) -> tuple[int, float, int, int]:
    """The one pass over this process's rows -> (rows scored, wall seconds, workers, torch threads)."""
    import torch

    needed = {k: v for k, v in needed.items() if len(v)}
    total = sum(len(v) for v in needed.values())
    workers = min(_default_workers() if cfg.num_workers is None else cfg.num_workers, max(1, -(-total // cfg.batch_size)))
    units = _Units.build(needed, cfg.batch_size, small_first=workers)
    threads_before = torch.get_num_threads()
    if device == "cpu" and workers:
        # Workers decode on their own cores; scoring threads that compete with them for
        # the same cores (oversubscription) stall OpenMP barriers, so leave them room.
        torch.set_num_threads(min(threads_before, max(1, _cpu_count() - workers)))
    torch_threads = torch.get_num_threads()
    scored = 0
    t0 = time.perf_counter()
    if not units:
        return 0, 0.0, 0, torch_threads
    from tqdm.auto import tqdm

    loader = torch.utils.data.DataLoader(
        _make_dataset(sets, units, jobs, perts, missing), batch_size=None, num_workers=workers, collate_fn=_identity,
        pin_memory=device.startswith("cuda"), prefetch_factor=4 if workers else None,
        # fork: workers inherit the opened readers and detectors without pickling them.
        multiprocessing_context=("fork" if workers and sys.platform.startswith("linux") else None),
        worker_init_fn=_worker_ignores_sigterm,
    )
    bar = tqdm(total=total, unit="img", desc=f"evaluate {len(jobs)} job(s)", disable=not (cfg.progress and state.is_main_process), dynamic_ncols=True)
    try:
        for item in loader:
            if "error" in item:
                raise DatasetError(item["error"])
            s = sets[item["set"]]
            for j, (pos, batch) in item["inputs"].items():
                job = jobs[j]
                t = time.perf_counter()
                with torch.inference_mode():
                    out = job.det.score(batch)
                arr = _to_numpy(out, len(pos), job, s.name)
                job.score_seconds += time.perf_counter() - t
                writer.add(j, job, s, item["idx"][pos], arr)
            scored += len(item["idx"])
            bar.update(len(item["idx"]))
    finally:
        # Keep every finished batch, even when interrupted or failing: the next run resumes.
        writer.flush_all()
        bar.close()
        torch.set_num_threads(threads_before)
    return scored, time.perf_counter() - t0, workers, torch_threads


class _split:
    """``split_between_processes`` as a context manager that also works without accelerate."""

    def __init__(self, state: Any, rows: np.ndarray):
        self.state, self.rows = state, rows

    def __enter__(self) -> Any:
        if not self.state.distributed:
            return self.rows
        self._cm = self.state.split_between_processes(self.rows.tolist())
        return self._cm.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self.state.distributed:
            self._cm.__exit__(*exc)


@dataclass
class _RunContext:
    cfg: EvalConfig
    profile: str | None
    roles: dict[str, str]
    bootstrap: BootstrapConfig
    device: str
    state: Any
    n_detectors: int
    workers: int
    rows_cached: dict[int, int]
    #: One id per evaluate call, recorded in its results file and every predictions file
    #: it writes, so that `score` and `leaderboard` never combine files of different runs.
    evaluation_id: str = ""
    verify_seconds: float | None = None


class _Staging:
    """Files written under temporary names, then renamed into place together.

    A results folder is a set of predictions files and a results file that checksums
    them: replacing them one by one, a full disk halfway would leave a results file that
    no longer matches its predictions. Every file is first written in full; only then are
    they renamed (renames need no space), and on any failure the temporaries are removed.
    """

    def __init__(self) -> None:
        self.pairs: list[tuple[Path, Path]] = []

    def path(self, final: Path) -> Path:
        from afpbench._util.io import tmp_name as temp_name

        tmp = temp_name(final, "new")
        self.pairs.append((tmp, final))
        return tmp

    def commit(self) -> None:
        for tmp, final in self.pairs:
            os.replace(tmp, final)
        self.pairs = []

    def discard(self) -> None:
        from afpbench._util.io import remove

        for tmp, _ in self.pairs:
            remove(tmp)
        self.pairs = []


def _finalize_job(j: int, job: _Job, sets: dict[str, _Set], plan: dict, gathered: list[dict], ctx: _RunContext) -> Path:
    """Merge cached + gathered scores, apply the threshold, write predictions and results.

    The previous predictions and results of the folder stay as they were until every new
    file is complete (see ``_Staging``); the score cache is removed only after that.
    """
    staging = _Staging()
    try:
        path = _write_job_files(j, job, sets, plan, gathered, ctx, staging)
        staging.commit()
    except BaseException:
        staging.discard()
        raise
    for s in sets.values():
        # The final files now hold every score: the partial cache is obsolete.
        _remove_cache(job, s)
    return path


def _write_job_files(j: int, job: _Job, sets: dict[str, _Set], plan: dict, gathered: list[dict], ctx: _RunContext, staging: _Staging) -> Path:
    from afpbench import results as R

    cfg = ctx.cfg
    scores: dict[str, np.ndarray] = {}
    for s in sets.values():
        full = np.full(s.n_eff, np.nan)
        seen = np.zeros(s.n_eff, dtype=np.int64)
        for i, v in plan[(j, s.name)].items():
            if i < s.n_eff:
                full[i] = v
        for g in gathered:
            if (j, s.name) in g["scores"]:
                idx, sc = g["scores"][(j, s.name)]
                np.add.at(seen, idx, 1)
                full[idx] = sc
        if (seen > 1).any():
            raise AfpbenchError(f"{int((seen > 1).sum())} rows of '{s.name}' were scored by more than one process; this is a bug, please report it.")
        if np.isnan(full).any():
            raise AfpbenchError(f"{int(np.isnan(full).sum())} rows of '{s.name}' were never scored for {job.name}; run the same command again to finish them.")
        scores[s.name] = full

    # Threshold policy.
    cal = [s for s in sets.values() if s.role == "calibration"]
    if cal:
        y = np.concatenate([s.labels for s in cal])
        sc = np.concatenate([scores[s.name] for s in cal])
        thr = calibrate_threshold(y, sc)
        policy = R.ThresholdPolicy(kind="calibrated", value=thr, source="maximum balanced accuracy (Youden's J) on the calibration sets", calibration_sets=[s.name for s in cal])
    else:
        raw = getattr(job.det, "threshold", None)
        thr = 0.5 if raw is None else float(raw)
        source = getattr(job.det, "threshold_policy", None) or ("the detector's threshold" if raw is not None else "default 0.5 (the detector declares none)")
        policy = R.ThresholdPolicy(kind="fixed", value=thr, source=str(source))

    pert_record = job.perturbation.record() if job.perturbation else None
    preds_by_set: dict[str, R.Predictions] = {}
    infos: list[R.DatasetInfo] = []
    cal_infos: list[R.DatasetInfo] = []
    for position, s in enumerate(sets.values()):
        pred = R.predict(scores[s.name], thr)
        meta = {
            "schema_version": R.SCHEMA_VERSION,
            "dataset": s.name,
            "position": position,  # evaluation order, so `score` lists sets the same way
            "role": s.role,
            "label": R.label_name(s.labels),
            "family": s.family,
            "fingerprint": s.fingerprint,
            "recipe": (s.reader.manifest.get("recipe") or {}),
            "rows_total": s.reader.num_rows,
            "rows_evaluated": s.n_eff,
            "limit": cfg.limit,
            "detector": full_name(job.det),
            "weights_sha256": getattr(job.det, "weights_sha256", None),
            "perturbation": pert_record,
            "threshold": policy.model_dump(),
            "real_pool": cfg.real_pool,
            "bootstrap": {"n_resamples": ctx.bootstrap.n_resamples, "seed": ctx.bootstrap.seed, "confidence": ctx.bootstrap.confidence},
            "profile": ctx.profile,
            "cache_key": job.keys[s.name],
            "evaluation_id": ctx.evaluation_id,
        }
        path = job.folder / "predictions" / f"{s.name}.parquet"
        digest = R.write_predictions(staging.path(path), s.ids, s.labels, scores[s.name], pred, meta)
        recipe = s.reader.manifest.get("recipe") or {}
        info = R.DatasetInfo(
            name=s.name, role=s.role, label=meta["label"], family=s.family,
            recipe_name=recipe.get("name") if isinstance(recipe, dict) else None,
            recipe_version=recipe.get("version") if isinstance(recipe, dict) else None,
            fingerprint=s.fingerprint, rows_total=s.reader.num_rows, rows_evaluated=s.n_eff,
            predictions=R.PredictionsFileInfo(path=f"predictions/{s.name}.parquet", sha256=digest, rows=s.n_eff),
        )
        if s.role == "calibration":
            cal_infos.append(info)
        else:
            infos.append(info)
            preds_by_set[s.name] = R.Predictions(s.ids, s.labels, scores[s.name], pred, meta)

    metrics = R.compute_metrics(preds_by_set, ctx.roles, cfg.real_pool, ctx.bootstrap)
    scored = sum(g["scored"] for g in gathered)
    wall = max(g["wall"] for g in gathered)
    gpu = [g["gpu"] for g in gathered if g["gpu"] is not None]
    run = R.RunInfo(
        device=ctx.device, dtype=cfg.dtype, batch_size=cfg.batch_size, num_processes=getattr(ctx.state, "num_processes", 1),
        num_workers=ctx.workers, torch_threads=gathered[0]["threads"], detectors_in_pass=ctx.n_detectors, limit=cfg.limit, rows_scored=scored,
        rows_cached=ctx.rows_cached[j], rows_per_process=[g["scored"] for g in gathered], wall_seconds=wall, images_per_second=(scored / wall if scored and wall > 0 else None),
        score_seconds=sum(g["score_seconds"][j] for g in gathered), peak_rss_bytes=max(g["rss"] for g in gathered),
        peak_gpu_memory_bytes=max(gpu) if gpu else None, evaluation_id=ctx.evaluation_id or None, verify_seconds=ctx.verify_seconds,
    )
    det = job.det
    result = R.ResultsFile(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        afpbench_version=__version__,
        git=R.GitInfo(**git_info()),
        command=cfg.command,
        environment=R.Environment(**environment()),
        detector=R.DetectorInfo(
            name=det.name, tag=getattr(det, "tag", None), full_name=full_name(det), arguments=_arguments(det),
            weights=str(job.weights) if job.weights else None, weights_sha256=getattr(det, "weights_sha256", None), card=_card(det),
        ),
        profile=ctx.profile,
        perturbation=R.PerturbationInfo(**pert_record) if pert_record else None,
        threshold=policy,
        bootstrap=R.BootstrapInfo(n_resamples=ctx.bootstrap.n_resamples, seed=ctx.bootstrap.seed, confidence=ctx.bootstrap.confidence),
        run=run,
        datasets=infos,
        calibration=cal_infos,
        metrics=metrics,
    )
    R.dump_json(result, staging.path(job.folder / "results.json"))
    return job.folder / "results.json"


def _predictions_in(folder: Path) -> list[Path]:
    """The predictions files of a results folder: those its results.json lists (so a stale
    file of an earlier run left in predictions/ is never mixed in), else all of them."""
    from afpbench import results as R

    if (folder / "results.json").is_file():
        try:
            res = R.load_results(folder / "results.json")
        except AfpbenchError as exc:  # the predictions alone are what score needs
            log.warning("%s; scoring every file in %s/predictions instead", exc, folder)
        else:
            return [folder / d.predictions.path for d in [*res.datasets, *res.calibration]]
    sub = folder / "predictions" if (folder / "predictions").is_dir() else folder
    found = sorted(sub.glob("*.parquet"))
    if not found:
        raise AfpbenchError(f"No predictions files in {folder}; pass <results>/<detector>/predictions/*.parquet files or their folder.")
    return found


def _remove_cache(job: _Job, s: _Set) -> None:
    import shutil

    root = job.folder / "cache"
    for d in root.glob(f"{s.name}-*"):
        if d.is_dir() and d.name.rsplit("-", 1)[0] == s.name:
            shutil.rmtree(d, ignore_errors=True)
    try:
        root.rmdir()
    except OSError:
        pass


def score_predictions(paths: Sequence[str | Path], *, data: Sequence[Path] = (), real_pool: list[str] | None = None, bootstrap: int | None = None, seed: int | None = None) -> tuple[Any, list[Any]]:
    """Recompute every metric from predictions files alone (``afpbench score``).

    ``paths`` are predictions parquet files or result folders (the predictions files
    their ``results.json`` lists, else every file in their ``predictions/``). Roles, real
    pool and bootstrap settings default to what evaluate recorded, so the numbers equal
    the results file's. The files must come from one evaluation (evaluate records its id
    in each); files written without an id are accepted only with ``data``, which checks
    each file's dataset fingerprint against the set's current manifest.
    """
    from afpbench import results as R

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(_predictions_in(p))
        else:
            files.append(p)
    preds = [R.read_predictions(f) for f in files]
    owners = {(p.meta.get("detector"), json.dumps(p.meta.get("perturbation"), sort_keys=True)) for p in preds}
    if len(owners) > 1:
        raise AfpbenchError("The predictions come from different detectors or perturbations; score one detector (one results folder) at a time.")
    runs = {p.meta.get("evaluation_id") for p in preds} - {None}
    if len(runs) > 1:
        raise AfpbenchError(
            f"The predictions come from {len(runs)} different evaluations (a set re-evaluated on its own, or files of different runs); "
            "pass the files of one evaluation (its results folder), or evaluate all the sets again in one run."
        )
    legacy = [f for f, p in zip(files, preds) if p.meta.get("evaluation_id") is None]
    if legacy and not data:
        raise DatasetError(
            f"{legacy[0]} records no evaluation id (written by an older afpbench), so it cannot be shown to come from the same run and data build as the other files; "
            "pass --data DIR to check every file against the sets' current fingerprints, or evaluate again."
        )
    by_set: dict[str, Any] = {}
    for f, p in zip(files, preds):
        if p.name in by_set:
            raise AfpbenchError(f"Two predictions files for set '{p.name}' ({f}); pass each set once.")
        if data:
            from afpbench.dataset import open_dataset

            current = open_dataset(_find_set(p.name, [Path(d) for d in data])).fingerprint
            if current != p.meta.get("fingerprint"):
                raise DatasetError(
                    f"Predictions {f} were made on a different version of set '{p.name}' (fingerprint {str(p.meta.get('fingerprint'))[:12]}..., now {current[:12]}...); evaluate again."
                )
        by_set[p.name] = p
    ordered = sorted(by_set.items(), key=lambda kv: (kv[1].meta.get("position", 1 << 30), kv[0]))
    test = {n: p for n, p in ordered if p.meta.get("role") != "calibration"}
    roles = {n: p.meta.get("role", "held-out") for n, p in test.items()}
    first = preds[0].meta
    boot = first.get("bootstrap") or {}
    cfg = BootstrapConfig(
        n_resamples=bootstrap if bootstrap is not None else boot.get("n_resamples", 1000),
        seed=seed if seed is not None else boot.get("seed", 0),
        confidence=boot.get("confidence", 0.95),
    )
    pool = real_pool if real_pool is not None else first.get("real_pool")
    metrics = R.compute_metrics(test, roles, pool, cfg)
    return metrics, preds


__all__ = ["DetectorSpec", "EvalConfig", "evaluate", "score_predictions", "cache_key", "environment", "git_info", "process_state"]
