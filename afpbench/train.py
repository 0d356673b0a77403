"""Training loops for the trainable detectors (soft prompt, LoRA, linear probe, CNN, fits).

``train(TrainConfig(...))`` reads afpbench datasets (labels from the data), trains the
detector's trainable parameters, writes one checkpoint per epoch and keeps the epoch
with the lowest validation loss in ``<out>/best`` (a folder ``load_detector(name,
weights=...)`` loads). Defaults are the AntifakePrompt paper's recipe: AdamW lr 1e-5,
betas (0.9, 0.999), weight decay 0.05, cosine decay to 0 without warmup, 10 epochs,
batch 6, seed 42, train-time resize + random crop + horizontal flip, mixed precision on
GPU. A detector may override the defaults (its ``train_recipe``); the user overrides
anything.

Resumable and deterministic: the order of the rows and every augmentation are drawn from
``(seed, epoch, row id)``, and the torch RNG (dropout) is re-seeded at each epoch, so a
run stopped after any epoch (killed, or ``stop_after_epochs``) and resumed ends with the
same weights as an uninterrupted one.

``Trainable`` detectors go through the gradient loop; ``ClosedFormFit`` ones (spectral,
format, size, the probes) are fitted in closed form by their own ``fit`` (scikit-learn).

``train_result.json`` is a typed ``TrainResult`` (``schema_version`` first; its JSON Schema
ships as ``afpbench/schemas/train_result.schema.json``); ``load_train_result`` reads it
back, including the unversioned files afpbench 0.1.0 wrote. Progress goes to a tqdm bar,
messages to ``logging``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from afpbench._util.io import atomic_write_text
from afpbench._util.schema import first_error, newer_version
from afpbench.errors import AfpbenchError, DatasetError
from afpbench.seeding import row_random

logger = logging.getLogger(__name__)

#: Version of ``train_result.json``; readers refuse newer files. 0.1.0 wrote it unversioned (read as 1).
TRAIN_SCHEMA_VERSION = 1

# The AntifakePrompt paper's recipe: the defaults of every field left as None.
PAPER_RECIPE: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 6,
    "lr": 1e-5,
    "weight_decay": 0.05,
    "betas": (0.9, 0.999),
    "scheduler": "cosine",
    "warmup_steps": 0,
}
CHECKPOINTS = "checkpoints"
BEST = "best"
# The columns a detector may look at while training (format needs the file facts).
_COLUMNS = ["id", "image", "label", "format", "width", "height"]


@dataclass
class TrainConfig:
    """Everything ``afpbench train`` takes. ``None`` = the detector's recipe (else the paper's)."""

    # How train_result.json types and describes it (field descriptions from the docstrings).
    __pydantic_config__ = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    detector: str
    """Registry name, e.g. ``antifakeprompt`` (a ``name.tag`` keeps the tag's options)."""
    train: list[str]
    """Training dataset folders (afpbench format); labels come from the data."""
    out: str
    """Output folder: ``checkpoints/epoch-NNN/``, ``best/``, ``train_config.json``, ``train_result.json``."""
    val: list[str] = field(default_factory=list)
    """Validation dataset folders; without any, the last epoch is kept."""
    base: str | None = None
    """Backbone folder or hub id (InstructBLIP family, univfd, cnnspot)."""
    weights: str | None = None
    """Start from these weights instead of the base's fresh trainable parameters."""
    device: str = "cpu"
    """Device to train on (cpu, cuda, cuda:N)."""
    dtype: str | None = None
    """Model dtype; None: the detector's default (fp16 InstructBLIP on GPU, fp32 on CPU)."""
    image_size: int | None = None
    """Input size override (tiny models, fast CPU runs); recorded in the saved card."""
    epochs: int | None = None
    """Epochs (default: the recipe's)."""
    batch_size: int | None = None
    """Rows per optimizer step (default: the recipe's)."""
    lr: float | None = None
    """Peak AdamW learning rate (default: the recipe's)."""
    weight_decay: float | None = None
    """AdamW weight decay (default: the recipe's)."""
    betas: tuple[float | None, float | None] | None = None
    """AdamW (beta1, beta2); None, or a None inside, takes the recipe's value."""
    scheduler: str | None = None
    """``cosine`` (to 0) or ``constant``."""
    warmup_steps: int | None = None
    """Linear warm-up steps before the schedule (default: the recipe's)."""
    mixed_precision: str = "auto"
    """``auto`` (fp16 autocast on CUDA, bf16 when the model is bf16; none on CPU), ``no``, ``fp16``, ``bf16``."""
    seed: int = 42
    """Seed of the row order, the augmentations and the torch RNG."""
    limit: int | None = None
    """Use at most this many rows of each dataset (quick runs)."""
    num_workers: int = 0
    """Threads decoding and preprocessing images (0: in the main thread)."""
    threads: int | None = None
    """torch intra-op threads during the run (None: torch's default). Tiny models on a
    shared small CPU train up to 100x faster with 1 (no OpenMP contention)."""
    resume: bool = True
    """Continue from the last complete epoch checkpoint in ``out``."""
    stop_after_epochs: int | None = None
    """Stop after this many epochs in this call (resume later); None: run to the end."""
    quiet: bool = False
    """No progress bar and no per-epoch log lines."""
    block_rows: int = 256
    """Shuffling reads blocks of this many consecutive rows..."""
    buffer_blocks: int = 16
    """...and shuffles rows within a buffer of this many blocks (a full shuffle for small sets)."""

    def __post_init__(self) -> None:
        # Paths are given as Path as often as str; the typed train result records strings.
        self.out = str(self.out)
        self.train = [str(p) for p in self.train]
        self.val = [str(p) for p in self.val]

    def resolved(self, recipe: dict[str, Any] | None = None) -> "TrainConfig":
        """A copy with every ``None`` hyper-parameter filled from the recipe (the detector's
        ``train_recipe`` over the paper's); a beta given alone keeps the recipe's other one."""
        merged = {**PAPER_RECIPE, **(recipe or {})}
        out = TrainConfig(**{f.name: getattr(self, f.name) for f in fields(self)})
        for k, v in merged.items():
            if getattr(out, k) is None:
                setattr(out, k, v)
        given, default = tuple(out.betas), tuple(merged["betas"])
        if len(given) != 2:
            raise AfpbenchError(f"betas must be two numbers (beta1, beta2), not {given}.")
        out.betas = tuple(d if b is None else b for b, d in zip(given, default))  # type: ignore[assignment]
        return out


class EpochLog(BaseModel):
    """One epoch of a run."""

    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(ge=1, description="Epoch number, from 1.")
    train_loss: float = Field(description="Mean training loss of the epoch.")
    val_loss: float | None = Field(description="Mean validation loss after the epoch (null without validation sets).")
    lr: float = Field(description="Learning rate after the epoch's last step (0 for a closed-form fit).")
    seconds: float = Field(ge=0.0, description="Wall time of the epoch.")


class TrainResult(BaseModel):
    """What ``train`` returns and writes to ``<out>/train_result.json``."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = Field(TRAIN_SCHEMA_VERSION, description="Version of this schema; readers refuse newer versions.")
    kind: Literal["afpbench.train_result"] = Field("afpbench.train_result", description="File type marker.")
    out: Path = Field(description="Output folder of the run.")
    best_checkpoint: Path = Field(description="Folder of the kept epoch: pass it as weights= to load_detector (--weights).")
    best_epoch: int = Field(ge=0, description="The kept epoch (lowest validation loss; the last one without validation sets).")
    epochs: list[EpochLog] = Field(description="Every epoch run so far, resumed ones included.")
    completed: bool = Field(description="False when stopped early by stop_after_epochs (resume to finish).")
    resumed_from: int | None = Field(description="First epoch run by this call when it resumed a run (null otherwise).")
    config: TrainConfig = Field(description="The run's settings, with the recipe's defaults filled in.")

    @property
    def train_losses(self) -> list[float]:
        return [e.train_loss for e in self.epochs]

    @property
    def val_losses(self) -> list[float | None]:
        return [e.val_loss for e in self.epochs]


# -- data --------------------------------------------------------------------------------
@dataclass
class _Data:
    readers: list[Any]
    sizes: list[int]

    @property
    def num_rows(self) -> int:
        return sum(self.sizes)

    def fingerprints(self) -> list[str]:
        return [f"{r.fingerprint}:{n}" for r, n in zip(self.readers, self.sizes)]


def _open(paths: list[str], limit: int | None, what: str) -> _Data:
    from afpbench.dataset import open_dataset

    readers = [open_dataset(p) for p in paths]
    sizes = [min(r.num_rows, limit) if limit else r.num_rows for r in readers]
    for r, n in zip(readers, sizes):
        if n == 0:
            raise DatasetError(f"{what} set {r.path} has no rows; build or import it again.")
    return _Data(readers, sizes)


def _iter_rows(data: _Data, cfg: TrainConfig, epoch: int, shuffle: bool) -> Iterator[dict[str, Any]]:
    """Rows of all sets; shuffled per (seed, epoch) by blocks and within a buffer of blocks."""
    blocks = [(i, s, min(s + cfg.block_rows, n)) for i, n in enumerate(data.sizes) for s in range(0, n, cfg.block_rows)]
    rng = random.Random(f"{cfg.seed}:{epoch}")
    if shuffle:
        rng.shuffle(blocks)
    for g in range(0, len(blocks), cfg.buffer_blocks):
        rows: list[dict[str, Any]] = []
        for i, s, e in blocks[g : g + cfg.buffer_blocks]:
            for batch in data.readers[i].iter_batches(batch_size=cfg.block_rows, columns=_COLUMNS, start=s, stop=e):
                rows.extend(batch)
        if shuffle:
            rng.shuffle(rows)
        yield from rows


def _prepare(detector: Any, row: dict[str, Any], train: bool, seed: int, epoch: int) -> tuple[Any, int]:
    from afpbench.dataset import decode_image

    label = row["label"]
    if label not in (0, 1):
        raise DatasetError(f"Row {row['id']} has label {label!r}; afpbench labels are 0 (real) or 1 (fake): rebuild the set.")
    image = decode_image(row["image"])
    info = {"format": row.get("format"), "width": row.get("width"), "height": row.get("height"), "bytes": len(row["image"]["bytes"] or b"")}
    if train:
        x = detector.train_preprocess(image, info, row_random(seed, epoch, row["id"]))
    else:
        x = detector.preprocess(image, info)
    return x, int(label)


def _batches(detector: Any, data: _Data, cfg: TrainConfig, epoch: int, train: bool, pool: ThreadPoolExecutor | None) -> Iterator[tuple[Any, Any]]:
    import torch

    pending: list[dict[str, Any]] = []

    def make(rows: list[dict[str, Any]]) -> tuple[Any, Any]:
        fn = lambda r: _prepare(detector, r, train, cfg.seed, epoch)  # noqa: E731
        items = list(pool.map(fn, rows)) if pool else [fn(r) for r in rows]
        return detector.collate([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.long)

    for row in _iter_rows(data, cfg, epoch, shuffle=train):
        pending.append(row)
        if len(pending) == cfg.batch_size:
            yield make(pending)
            pending = []
    if pending:
        yield make(pending)


def _check_labels(data: _Data) -> None:
    seen: set[int] = set()
    for r, n in zip(data.readers, data.sizes):
        seen |= set(r.column("label")[:n])
    if seen != {0, 1}:
        only = "real" if seen == {0} else "fake"
        raise DatasetError(f"The training sets hold only {only} images; add sets of the other class with --train.")


# -- schedule ------------------------------------------------------------------------------
def _lr_lambda(cfg: TrainConfig, total_steps: int):
    warm = int(cfg.warmup_steps or 0)

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if cfg.scheduler == "constant":
            return 1.0
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def _autocast(cfg: TrainConfig, detector: Any):
    """Mixed precision context: fp16 autocast on CUDA by default, nothing on CPU."""
    import contextlib

    import torch

    mode = cfg.mixed_precision
    on_cuda = str(detector.device).startswith("cuda")
    if mode == "auto":
        mode = ("bf16" if detector.dtype == torch.bfloat16 else "fp16") if on_cuda else "no"
    if mode == "no":
        return contextlib.nullcontext(), None
    if mode not in ("fp16", "bf16"):
        raise AfpbenchError(f"Unknown --mixed-precision '{cfg.mixed_precision}'; use auto, no, fp16 or bf16.")
    dt = torch.float16 if mode == "fp16" else torch.bfloat16
    if dt == torch.float16 and not on_cuda:
        raise AfpbenchError("fp16 mixed precision needs a CUDA device; use --mixed-precision bf16 or no on CPU.")
    scaler = torch.amp.GradScaler("cuda") if dt == torch.float16 else None
    return torch.autocast("cuda" if on_cuda else "cpu", dtype=dt), scaler


# -- checkpoints ---------------------------------------------------------------------------
def _epoch_dir(out: Path, epoch: int) -> Path:
    return out / CHECKPOINTS / f"epoch-{epoch:03d}"


def _last_checkpoint(out: Path) -> Path | None:
    root = out / CHECKPOINTS
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("epoch-[0-9][0-9][0-9]") if (p / "state.pt").exists())
    return done[-1] if done else None


def _identity(cfg: TrainConfig, train: _Data, val: _Data | None) -> dict[str, Any]:
    """What must match for a resume to continue the same run."""
    keys = ("detector", "base", "weights", "image_size", "epochs", "batch_size", "lr", "weight_decay", "betas", "scheduler", "warmup_steps", "seed", "limit", "mixed_precision")
    ident = {k: getattr(cfg, k) for k in keys}
    ident["betas"] = list(ident["betas"])
    ident["train"] = train.fingerprints()
    ident["val"] = val.fingerprints() if val else []
    return ident


def _write_result(result: TrainResult) -> None:
    atomic_write_text(result.out / "train_result.json", result.model_dump_json(indent=2) + "\n")


# -- the loop ------------------------------------------------------------------------------
def train(cfg: TrainConfig) -> TrainResult:
    """Train ``cfg.detector`` on ``cfg.train``; return where the kept epoch is and the losses."""
    import torch
    from tqdm.auto import tqdm

    from afpbench.detectors import detector_class, load_detector, trainable_names
    from afpbench.detectors.base import training_kind
    from afpbench.registry import split_tag

    name, _ = split_tag(cfg.detector)
    cls = detector_class(cfg.detector)
    kind = training_kind(cls) if isinstance(cls, type) else None
    if kind is None:
        raise AfpbenchError(f"Detector '{name}' is not trainable; trainable ones: {', '.join(trainable_names())}.")
    if not cfg.train:
        raise AfpbenchError("No training data: pass at least one dataset folder with --train.")
    cfg = cfg.resolved(cls.train_recipe)
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise AfpbenchError("--epochs and --batch-size must be at least 1.")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    train_data = _open(cfg.train, cfg.limit, "Training")
    val_data = _open(cfg.val, cfg.limit, "Validation") if cfg.val else None
    _check_labels(train_data)
    ident = _identity(cfg, train_data, val_data)

    torch.manual_seed(cfg.seed)
    detector = load_detector(cfg.detector, weights=cfg.weights, device=cfg.device, dtype=cfg.dtype, base=cfg.base, image_size=cfg.image_size, train_init=cfg.weights is None)
    trained_on = " + ".join(f"{r.name} ({n} rows)" for r, n in zip(train_data.readers, train_data.sizes))
    atomic_write_text(out / "train_config.json", json.dumps({**asdict(cfg), "identity": ident}, indent=2, sort_keys=True, default=str) + "\n")
    pool = ThreadPoolExecutor(cfg.num_workers) if cfg.num_workers > 0 else None
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        if kind == "closed-form":
            return _fit(detector, cfg, out, train_data, val_data, pool, trained_on)
        return _sgd(detector, cfg, out, train_data, val_data, pool, ident, tqdm, trained_on)
    finally:
        torch.set_num_threads(threads_before)
        if pool:
            pool.shutdown()


def _fit(detector: Any, cfg: TrainConfig, out: Path, train_data: _Data, val_data: _Data | None, pool: Any, trained_on: str) -> TrainResult:
    t0 = time.perf_counter()
    tr, va = detector.fit(_batches(detector, train_data, cfg, 0, False, pool), _batches(detector, val_data, cfg, 0, False, pool) if val_data else iter(()))
    best = detector.save(out / BEST, training_data=trained_on)
    log = EpochLog(epoch=1, train_loss=float(tr), val_loss=(float(va) if val_data else None), lr=0.0, seconds=time.perf_counter() - t0)
    result = TrainResult(out=out, best_checkpoint=best, best_epoch=1, epochs=[log], completed=True, resumed_from=None, config=cfg)
    _write_result(result)
    return result


def _sgd(
    detector: Any, cfg: TrainConfig, out: Path, train_data: _Data, val_data: _Data | None, pool: Any, ident: dict[str, Any], tqdm: Any, trained_on: str
) -> TrainResult:
    import torch

    from afpbench.detectors._weights import read_saved

    params = detector.trainable_parameters()
    if not params:
        raise AfpbenchError(f"{detector.name} reports no trainable parameters.")
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(train_data.num_rows / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps_per_epoch * cfg.epochs))
    autocast, scaler = _autocast(cfg, detector)

    history: list[EpochLog] = []
    best_epoch, best_val = 0, math.inf
    start, resumed_from = 1, None
    last = _last_checkpoint(out) if cfg.resume else None
    if last is not None:
        state = torch.load(last / "state.pt", map_location="cpu", weights_only=True)
        if state["identity"] != ident:
            raise AfpbenchError(f"{out} holds a run with other settings or data; pass a new --out, or --no-resume to start over.")
        _, tensors = read_saved(last / "detector", detector.name)
        detector.load_trainable_state(tensors, last / "detector")
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history = [EpochLog(**e) for e in state["history"]]
        best_epoch, best_val = state["best_epoch"], state["best_val"]
        start = resumed_from = state["epoch"] + 1
    elif not cfg.resume and (out / CHECKPOINTS).exists():
        shutil.rmtree(out / CHECKPOINTS)

    ran = 0
    for epoch in range(start, cfg.epochs + 1):
        if cfg.stop_after_epochs is not None and ran >= cfg.stop_after_epochs:
            break
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout draws depend on the epoch only
        detector.set_training(True)
        total, count = 0.0, 0
        bar = tqdm(_batches(detector, train_data, cfg, epoch, True, pool), total=steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}", disable=cfg.quiet, leave=False)
        for x, y in bar:
            x = detector.to_device(x)
            with autocast:
                loss = detector.training_loss(x, y)
            if not torch.isfinite(loss):
                raise AfpbenchError(f"The training loss became {loss.item()} at epoch {epoch}; lower --lr or use --mixed-precision no.")
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            sched.step()
            total += loss.item() * len(y)
            count += len(y)
            bar.set_postfix(loss=f"{total / count:.4f}")
        bar.close()
        detector.set_training(False)
        val_loss = _evaluate(detector, cfg, val_data, epoch, autocast, pool) if val_data else None
        history.append(EpochLog(epoch=epoch, train_loss=total / max(count, 1), val_loss=val_loss, lr=sched.get_last_lr()[0], seconds=time.perf_counter() - t0))
        # Without validation data the last epoch is kept.
        key = val_loss if val_loss is not None else -epoch
        if key < best_val:
            best_epoch, best_val = epoch, key
        _save_epoch(detector, out, epoch, opt, sched, scaler, history, best_epoch, best_val, ident, trained_on)
        if best_epoch == epoch:
            tmp = out / (BEST + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(_epoch_dir(out, epoch) / "detector", tmp)
            shutil.rmtree(out / BEST, ignore_errors=True)
            os.replace(tmp, out / BEST)
        if not cfg.quiet:
            vl = f"{val_loss:.4f}" if val_loss is not None else "-"
            logger.info("epoch %d/%d: train loss %.4f, val loss %s%s", epoch, cfg.epochs, history[-1].train_loss, vl, " (best)" if best_epoch == epoch else "")
        ran += 1
    completed = bool(history) and history[-1].epoch == cfg.epochs
    result = TrainResult(out=out, best_checkpoint=out / BEST, best_epoch=best_epoch, epochs=history, completed=completed, resumed_from=resumed_from, config=cfg)
    _write_result(result)
    return result


def _evaluate(detector: Any, cfg: TrainConfig, data: _Data, epoch: int, autocast: Any, pool: Any) -> float:
    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for x, y in _batches(detector, data, cfg, epoch, False, pool):
            with autocast:
                loss = detector.training_loss(detector.to_device(x), y)
            total += float(loss) * len(y)
            count += len(y)
    return total / max(count, 1)


def _save_epoch(
    detector: Any, out: Path, epoch: int, opt: Any, sched: Any, scaler: Any, history: list[EpochLog], best_epoch: int, best_val: float, ident: dict[str, Any], trained_on: str
) -> None:
    import torch

    final = _epoch_dir(out, epoch)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    detector.save(tmp / "detector", training_data=trained_on)
    state = {
        "epoch": epoch,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "history": [e.model_dump() for e in history],
        "best_epoch": best_epoch,
        "best_val": best_val,
        "identity": ident,
    }
    torch.save(state, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)  # the rename marks the epoch complete


def train_result_schema() -> dict[str, Any]:
    """The JSON Schema of ``train_result.json`` (shipped in ``afpbench/schemas/`` and ``docs/schemas/``)."""
    schema = TrainResult.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"https://afpbench/schemas/train_result-v{TRAIN_SCHEMA_VERSION}.schema.json", **schema}


def load_train_result(path: str | Path) -> TrainResult:
    """Read ``train_result.json`` (or the run folder holding it), refusing newer or malformed files.

    afpbench 0.1.0 wrote the same fields without ``schema_version`` and ``kind``: such a file
    reads as version 1.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "train_result.json"
    if not path.is_file():
        raise AfpbenchError(f"No training result at {path}; pass the --out folder of 'afpbench train' (or its train_result.json).")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AfpbenchError(f"{path} is not valid JSON ({exc}); run afpbench train again (it resumes from its checkpoints).") from None
    if not isinstance(data, dict):
        raise AfpbenchError(f"{path} is not a training result (expected a JSON object); pass the train_result.json afpbench wrote.")
    if version := newer_version(data, TRAIN_SCHEMA_VERSION):
        raise AfpbenchError(f"{path} uses training-result schema version {version}, newer than this afpbench reads ({TRAIN_SCHEMA_VERSION}); upgrade afpbench.")
    try:
        return TrainResult.model_validate(data)
    except ValidationError as exc:
        where, msg, n = first_error(exc)
        raise AfpbenchError(f"{path} fails training-result schema validation at {where}: {msg} ({n} error(s)); run afpbench train again.") from None


__all__ = ["TrainConfig", "TrainResult", "EpochLog", "train", "load_train_result", "train_result_schema", "PAPER_RECIPE", "TRAIN_SCHEMA_VERSION"]


# ``afpbench.train(...)`` calls train even after this module was imported (see afpbench._util.callable_module).
from afpbench._util.callable_module import make_callable  # noqa: E402

make_callable(__name__, train)
