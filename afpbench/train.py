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

Detectors with ``fit_mode == "fit"`` (spectral, format) are fitted in closed form by
their own ``fit`` (scikit-learn) instead of the gradient loop.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from afpbench.errors import AfpbenchError, DatasetError
from afpbench.seeding import row_random

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
    dtype: str | None = None
    """Model dtype; None: the detector's default (fp16 InstructBLIP on GPU, fp32 on CPU)."""
    image_size: int | None = None
    """Input size override (tiny models, fast CPU runs); recorded in the saved card."""
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    betas: tuple[float, float] | None = None
    scheduler: str | None = None
    """``cosine`` (to 0) or ``constant``."""
    warmup_steps: int | None = None
    mixed_precision: str = "auto"
    """``auto`` (fp16 autocast on CUDA, bf16 when the model is bf16; none on CPU), ``no``, ``fp16``, ``bf16``."""
    seed: int = 42
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
    block_rows: int = 256
    """Shuffling reads blocks of this many consecutive rows..."""
    buffer_blocks: int = 16
    """...and shuffles rows within a buffer of this many blocks (a full shuffle for small sets)."""

    def resolved(self, recipe: dict[str, Any] | None = None) -> "TrainConfig":
        """A copy with every ``None`` hyper-parameter filled from the recipe."""
        merged = {**PAPER_RECIPE, **(recipe or {})}
        out = TrainConfig(**{f.name: getattr(self, f.name) for f in fields(self)})
        for k, v in merged.items():
            if getattr(out, k) is None:
                setattr(out, k, v)
        out.betas = tuple(out.betas)  # type: ignore[assignment]
        return out


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    val_loss: float | None
    lr: float
    seconds: float


@dataclass
class TrainResult:
    out: Path
    best_checkpoint: Path
    """Folder of the kept epoch: pass it as ``weights=`` to ``load_detector``."""
    best_epoch: int
    epochs: list[EpochLog]
    completed: bool
    """False when stopped early by ``stop_after_epochs`` (resume to finish)."""
    resumed_from: int | None
    config: dict[str, Any]

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


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


# -- the loop ------------------------------------------------------------------------------
def train(cfg: TrainConfig) -> TrainResult:
    """Train ``cfg.detector`` on ``cfg.train``; return where the kept epoch is and the losses."""
    import torch
    from tqdm.auto import tqdm

    from afpbench.detectors import TRAINABLE, detector_class, load_detector
    from afpbench.registry import split_tag

    name, _ = split_tag(cfg.detector)
    cls = detector_class(cfg.detector)
    if not getattr(cls, "trainable", False):
        raise AfpbenchError(f"Detector '{name}' is not trainable; trainable ones: {', '.join(TRAINABLE)}.")
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
    detector.trained_on = " + ".join(f"{r.name} ({n} rows)" for r, n in zip(train_data.readers, train_data.sizes))
    _write_json(out / "train_config.json", {**asdict(cfg), "identity": ident})
    pool = ThreadPoolExecutor(cfg.num_workers) if cfg.num_workers > 0 else None
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        if cls.fit_mode == "fit":
            return _fit(detector, cfg, out, train_data, val_data, pool)
        return _sgd(detector, cfg, out, train_data, val_data, pool, ident, tqdm)
    finally:
        torch.set_num_threads(threads_before)
        if pool:
            pool.shutdown()


def _fit(detector: Any, cfg: TrainConfig, out: Path, train_data: _Data, val_data: _Data | None, pool: Any) -> TrainResult:
    t0 = time.perf_counter()
    tr, va = detector.fit(_batches(detector, train_data, cfg, 0, False, pool), _batches(detector, val_data, cfg, 0, False, pool) if val_data else iter(()))
    best = detector.save(out / BEST)
    log = EpochLog(1, float(tr), (float(va) if val_data else None), 0.0, time.perf_counter() - t0)
    result = TrainResult(out, best, 1, [log], True, None, asdict(cfg))
    _write_json(out / "train_result.json", _result_json(result))
    return result


def _sgd(detector: Any, cfg: TrainConfig, out: Path, train_data: _Data, val_data: _Data | None, pool: Any, ident: dict[str, Any], tqdm: Any) -> TrainResult:
    import torch

    from afpbench.detectors.base import read_saved

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
        history.append(EpochLog(epoch, total / max(count, 1), val_loss, sched.get_last_lr()[0], time.perf_counter() - t0))
        # Without validation data the last epoch is kept.
        key = val_loss if val_loss is not None else -epoch
        if key < best_val:
            best_epoch, best_val = epoch, key
        _save_epoch(detector, out, epoch, opt, sched, scaler, history, best_epoch, best_val, ident)
        if best_epoch == epoch:
            tmp = out / (BEST + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(_epoch_dir(out, epoch) / "detector", tmp)
            shutil.rmtree(out / BEST, ignore_errors=True)
            os.replace(tmp, out / BEST)
        if not cfg.quiet:
            vl = f"{val_loss:.4f}" if val_loss is not None else "-"
            tqdm.write(f"epoch {epoch}/{cfg.epochs}: train loss {history[-1].train_loss:.4f}, val loss {vl}{' (best)' if best_epoch == epoch else ''}")
        ran += 1
    completed = bool(history) and history[-1].epoch == cfg.epochs
    result = TrainResult(out, out / BEST, best_epoch, history, completed, resumed_from, asdict(cfg))
    _write_json(out / "train_result.json", _result_json(result))
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


def _save_epoch(detector: Any, out: Path, epoch: int, opt: Any, sched: Any, scaler: Any, history: list[EpochLog], best_epoch: int, best_val: float, ident: dict[str, Any]) -> None:
    import torch

    final = _epoch_dir(out, epoch)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    detector.save(tmp / "detector")
    state = {
        "epoch": epoch,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "history": [asdict(e) for e in history],
        "best_epoch": best_epoch,
        "best_val": best_val,
        "identity": ident,
    }
    torch.save(state, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)  # the rename marks the epoch complete


def _result_json(r: TrainResult) -> dict[str, Any]:
    return {
        "out": str(r.out),
        "best_checkpoint": str(r.best_checkpoint),
        "best_epoch": r.best_epoch,
        "completed": r.completed,
        "resumed_from": r.resumed_from,
        "epochs": [asdict(e) for e in r.epochs],
        "config": r.config,
    }


__all__ = ["TrainConfig", "TrainResult", "EpochLog", "train", "PAPER_RECIPE"]
