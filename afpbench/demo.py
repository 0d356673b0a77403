"""``afpbench demo``: the whole pipeline, offline, on a laptop, in minutes.

It builds a mini benchmark from material that installs from PyPI, trains the detectors
that can learn here, evaluates every detector that can run here, and publishes the
leaderboard site. Every step goes through the same library calls as the CLI:
``build`` with the same recipes (only the source, the bundled photos, and the models,
small stand-ins, differ), ``import``, ``verify``, ``train``, ``evaluate`` and
``leaderboard``.

``run_demo`` reports each step as it goes, to the ``progress`` callback it is given (the
CLI prints the steps) or else to this module's logger, and returns a ``DemoReport``
whose summary ``afpbench demo`` prints.

Models, and what their numbers mean:

* the attacks use the real ImageNet EfficientNet-Lite0 (PyPI), so adversarial, backdoor
  and poisoned images are real attacks on a real classifier;
* editing and text-to-image use small diffusers pipelines built from configs with
  random weights. They are stand-ins for SD2 inpainting, the x4 upscaler and SD2, and
  their images are not the paper's images;
* AntifakePrompt runs on a small InstructBLIP built from configs. Its soft prompt is
  trained here exactly as ``afpbench train`` would train it, but on a small random
  backbone. Its numbers show that the pipeline works; they are not the paper's 91.81.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STANDIN_NOTE = (
    "Stand-ins: sd2/sd2ip/sd2sr come from small random diffusers pipelines built from configs, and AntifakePrompt / "
    "InstructBLIP run on a small InstructBLIP built from configs. Their numbers measure this pipeline, not the paper's "
    "models. The attacks are real (ImageNet EfficientNet-Lite0) and the photos are real."
)


@dataclass
class DemoSize:
    rows: int          # rows per evaluation set
    train_rows: int    # rows per fake training set (the real training set matches their total)
    image_size: int    # every demo set has this size, so size alone does not give fakes away
    steps: int         # denoising steps of the stand-in pipelines
    poison_steps: int  # feature-collision steps (the recipe's 100 are for real runs)
    epochs_cnn: int
    epochs_afp: int
    bootstrap: int
    perturb: str       # the robustness suite scored beside the clean images
    batch_size: int    # of the builds: attacks and stand-ins run whole batches at once


# The full size takes about 5 minutes on 2 idle CPU cores, 6 with one core busy (BENCHMARK.md has the step times):
# 80 rows per set, 128 px images, 2 denoising steps for the random stand-ins, 12
# feature-collision steps.
SIZES = {
    "full": DemoSize(rows=80, train_rows=40, image_size=128, steps=2, poison_steps=12, epochs_cnn=3, epochs_afp=3, bootstrap=1000, perturb="chain", batch_size=16),
    "check": DemoSize(rows=24, train_rows=24, image_size=128, steps=2, poison_steps=20, epochs_cnn=3, epochs_afp=3, bootstrap=200, perturb="chain", batch_size=8),
}
#: The views scored in the one evaluation pass: the stored bytes, and the fakes re-encoded
#: with codecs drawn from the real pool's (so the file format gives nothing away).
VIEWS = ("native", "codec-matched")
#: Torch threads of every step: one. Float sums depend on how many threads share them, so
#: a fixed count gives the same sets, models and table on any machine of one kind, whatever
#: OMP_NUM_THREADS says. One, because a process of one thread never spin-waits for a
#: sibling thread that other work has pushed off its core: with 2 threads on a shared
#: machine the attacks ran 4-6x slower than idle.
THREADS = 1
#: The builds and the training run in this many worker processes side by side (one thread
#: each): the cores are used without threads, and which process runs a job changes nothing
#: in what the job writes.
PROCESSES = 2
# Fake sets with a training split; the real training set has as many rows as they have
# together, so the learners see balanced classes.
TRAIN_FAKES = ("sd2", "sd2ip", "adversarial", "backdoor", "data_poisoning")

# The demo's sets: (output name, recipe, role). Held-in sets have a training split built
# from other photo crops (other seed); held-out ones are never seen in training, as in
# the paper where sd2sr, flickr and most sets are held out.
EVAL_SETS = [
    ("photos", "photos", "held-in"),
    ("flickr", "flickr", "held-out"),
    ("sd2", "sd2", "held-in"),
    ("sd2ip", "sd2ip", "held-in"),
    ("sd2sr", "sd2sr", "held-out"),
    ("adversarial", "adversarial", "held-in"),
    ("backdoor", "backdoor", "held-in"),
    ("data_poisoning", "data_poisoning", "held-in"),
]
ATTACK_SETS = ("adversarial", "backdoor", "data_poisoning")


@dataclass
class DemoConfig:
    out: Path = Path("demo-out")
    check: bool = False
    seed: int = 0
    quiet: bool = False
    keep: bool = False          # reuse what an earlier run built (default: start clean)


@dataclass
class DemoReport:
    out: Path
    site: Path
    leaderboard: Path
    results: list[Path]
    table: str                  # the leaderboard's clean-image table, as text
    seconds: float              # the whole run
    views_table: str = ""       # mean AUC native vs codec-matched, per detector
    lead_line: str = ""         # who led natively, who leads once the codec is matched
    detect_table: str = ""      # afpbench detect on three of the demo's own images
    audit: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step
    note: str = STANDIN_NOTE    # what the stand-ins' numbers mean


class _Steps:
    def __init__(self, total: int, echo: Callable[[str], None]):
        self.total, self.n, self.echo = total, 0, echo
        self.timings: dict[str, float] = {}

    def run(self, title: str, fn: Callable[[], Any]) -> Any:
        self.n += 1
        self.echo(f"[{self.n}/{self.total}] {title}")
        t = time.perf_counter()
        out = fn()
        self.timings[title] = time.perf_counter() - t
        self.echo(f"      done in {self.timings[title]:.1f}s")
        return out


def run_demo(cfg: DemoConfig, progress: Callable[[str], None] | None = None) -> DemoReport:
    """Run every step; each step's lines go to ``progress`` (default: this module's logger, at info)."""
    echo = progress or logger.info
    # Library notices (e.g. "CLIPImageProcessor requires torchvision", which we never
    # install) would bury the demo's own report; errors still show.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    size = SIZES["check" if cfg.check else "full"]
    out = cfg.out.resolve()
    if out.exists() and not cfg.keep:
        shutil.rmtree(out)
    data, train_dir, models, results_dir, site = out / "data", out / "train", out / "models", out / "results", out / "site"
    for d in (data, train_dir, models):
        d.mkdir(parents=True, exist_ok=True)
    steps = _Steps(11, echo)
    import multiprocessing

    import torch

    threads_before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    # spawn, not fork: a forked child would inherit this process's torch thread pools.
    pool = multiprocessing.get_context("spawn").Pool(PROCESSES, initializer=_worker_init)
    try:
        report = _run_steps(cfg, size, out, data, train_dir, models, results_dir, site, steps, echo, pool)
        pool.close()
        return report
    finally:
        # On Ctrl-C, SIGTERM or an error, stop the workers now rather than after their jobs
        # (the demo starts over next time). The resource tracker then reports and removes the
        # semaphores the killed workers held.
        pool.terminate()
        pool.join()
        torch.set_num_threads(threads_before)


def _worker_init() -> None:
    """A build/train worker: THREADS torch threads, set before torch starts its pools."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(THREADS)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch

    torch.set_num_threads(THREADS)


def _run_jobs(pool: Any, jobs: list[tuple[Callable[..., tuple[str, Any]], tuple[Any, ...]]], echo: Callable[[str], None]) -> list[Any]:
    """Run ``(fn, args)`` jobs in the worker processes, handed out in list order (put the
    longest first); each job returns ``(line, value)`` and its line is printed as it
    finishes. Returns the values in job order; a job's exception is raised here."""
    values: list[Any] = [None] * len(jobs)
    for i, (line, value) in pool.imap_unordered(_call_job, list(enumerate(jobs)), chunksize=1):
        values[i] = value
        echo(line)
    return values


def _call_job(item: tuple[int, tuple[Callable[..., tuple[str, Any]], tuple[Any, ...]]]) -> tuple[int, tuple[str, Any]]:
    i, (fn, args) = item
    return i, fn(*args)


def _run_steps(cfg: DemoConfig, size: DemoSize, out: Path, data: Path, train_dir: Path, models: Path, results_dir: Path, site: Path,
               steps: _Steps, echo: Callable[[str], None], pool: Any) -> DemoReport:
    t0 = time.perf_counter()
    echo(f"afpbench demo ({'check' if cfg.check else 'full'} size: {size.rows} rows per set, seed {cfg.seed}) -> {out}")
    echo("  " + STANDIN_NOTE)

    steps.run("catalog", lambda: _show_catalog(echo))
    steps.run("real photos: build photos (bundled scikit-image / scikit-learn / matplotlib photos)",
              lambda: _build_real(data, train_dir, size, cfg, echo))
    steps.run("import a folder of JPEG photos as 'flickr' (with a truncated file and a duplicate)",
              lambda: _import_folder(out, data, size, cfg, echo))
    steps.run("attacks on the photos with the real ImageNet EfficientNet-Lite0 (adversarial, backdoor, data_poisoning)",
              lambda: _build_attacks(data, train_dir, size, cfg, echo, pool))
    steps.run("editing and text-to-image with small stand-in diffusers pipelines (sd2ip, sd2sr, sd2)",
              lambda: _build_diffusion(data, train_dir, models, size, cfg, echo, pool))
    steps.run("verify every set", lambda: _verify_all([data, train_dir], echo))
    audit_dir = steps.run("audit every set's encoding for shortcuts (format, JPEG quality, size, bits per pixel)",
                          lambda: _audit(data, out / "audit", size, cfg, echo))
    trained = steps.run("train spectral, efficientnet, format and AntifakePrompt's soft prompt on the held-in training split",
                        lambda: _train(train_dir, models, size, cfg, echo, pool))
    results = steps.run(f"evaluate every detector on the test sets: views {' and '.join(VIEWS)}, clean and the '{size.perturb}' suite, bootstrap CIs",
                        lambda: _evaluate(data, results_dir, trained, size, cfg, echo))
    board = steps.run("publish the leaderboard (JSON, Markdown, HTML with plots, the audit and the sets gallery)",
                      lambda: _publish(results, site, audit_dir, data))
    detect_table = steps.run("afpbench detect on three of the demo's own images", lambda: _detect_three(data, trained, out, echo))
    views_table, lead = _views_summary(board)
    return DemoReport(out=out, site=site, leaderboard=board, results=results, table=_summary_table(board),
                      seconds=time.perf_counter() - t0, timings=steps.timings, views_table=views_table, lead_line=lead,
                      detect_table=detect_table, audit=audit_dir)


# -- steps ----------------------------------------------------------------------------
def _show_catalog(echo) -> None:
    from afpbench import catalog

    v3 = catalog.get_profile("v3")
    echo(f"      {len(v3.sets)} v3 sets ({len(v3.held_out())} held-out), {len(catalog.get_profile('v1').sets)} v1 sets, "
         f"{len(catalog.recipes())} recipes, {len(catalog.generators())} generator cards")
    echo("      v3: " + ", ".join(v3.names))


def _build(recipe: str, out: Path, name: str, count: int, seed: int, cfg: DemoConfig, **kw: Any) -> Path:
    from afpbench.build import build
    from afpbench.plan import BuildConfig

    # The demo owns its output folder: a --keep run at another size replaces what it built before.
    return build(recipe, BuildConfig(out=out, name=name, count=count, seed=seed, quiet=True, **kw), overwrite=True)


def _build_job(label: str, recipe: str, out: Path, count: int, seed: int, cfg: DemoConfig, kw: dict[str, Any]) -> tuple[str, None]:
    t = time.perf_counter()
    _build(recipe, out, recipe, count, seed, cfg, **kw)
    return f"      {label} in {time.perf_counter() - t:.0f}s", None


def _rows(path: Path) -> int:
    from afpbench.dataset import load_manifest

    return load_manifest(path)["num_rows"]


def _build_real(data: Path, train_dir: Path, size: DemoSize, cfg: DemoConfig, echo) -> None:
    px = {"size": size.image_size}
    test = _build("photos", data, "photos", size.rows, cfg.seed, cfg, params=px)
    train = _build("photos", train_dir, "photos", size.train_rows * len(TRAIN_FAKES), cfg.seed + 1, cfg, params=px)
    echo(f"      photos: {_rows(test)} test rows, {_rows(train)} training rows (seeded crops of {_photo_count()} photos)")


def _photo_count() -> int:
    from afpbench.sources.photos import photo_names

    return len(photo_names())


def _import_folder(out: Path, data: Path, size: DemoSize, cfg: DemoConfig, echo) -> None:
    from afpbench.importer import ImportConfig, import_set
    from afpbench.sources.photos import photo_crops

    folder = out / "incoming" / "flickr-like"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    n = max(16, size.rows // 2)
    for crop in photo_crops(n, seed=cfg.seed + 2, size=size.image_size, prefix="flickr"):
        crop.image.save(folder / f"{crop.id.split('/')[-1]}.JPG", quality=90)
    first = sorted(folder.iterdir())[0]
    (folder / "zz-duplicate.jpg").write_bytes(first.read_bytes())
    (folder / "zz-truncated.jpg").write_bytes(first.read_bytes()[:600])
    s = import_set(ImportConfig(name="flickr", source=folder, out=data, quiet=True, overwrite=True))
    echo("      " + s.line())


def _build_attacks(data: Path, train_dir: Path, size: DemoSize, cfg: DemoConfig, echo, pool: Any) -> None:
    from afpbench.dataset import load_manifest

    tests, trains = [], []
    # Feature collision and PGD first, and the (larger) test sets before the training sets:
    # the longest jobs start first, so the two workers finish close together.
    for recipe in ("data_poisoning", "adversarial", "backdoor"):
        params: dict[str, Any] = {"image_size": size.image_size}
        if recipe == "data_poisoning":
            params["steps"] = size.poison_steps
        kw = {"source": "photos", "model": "efficientnet-lite0", "params": params, "batch_size": size.batch_size}
        tests.append((_build_job, (f"{recipe}: {size.rows} test rows", recipe, data, size.rows, cfg.seed, cfg, kw)))
        trains.append((_build_job, (f"{recipe}: {size.train_rows} training rows", recipe, train_dir, size.train_rows, cfg.seed + 1, cfg, kw)))
    _run_jobs(pool, tests + trains, echo)
    for recipe in ATTACK_SETS:
        m = load_manifest(data / recipe)
        extra = {k: v for k, v in m.items() if "success" in k or k == "attack"}
        echo(f"      {recipe}: {json.dumps(extra, default=str)[:160]}")


def _build_diffusion(data: Path, train_dir: Path, models: Path, size: DemoSize, cfg: DemoConfig, echo, pool: Any) -> None:
    from importlib import resources

    from afpbench.generate.tiny import build_tiny_pipeline

    captions = Path(str(resources.files("afpbench") / "data" / "demo_captions.txt"))
    # The stand-ins run at the demo's size with a few steps (the recipes' 512-1024 px and 50-75 steps
    # are for the real models); the overrides are recorded in each manifest.
    small, px = {"num_inference_steps": size.steps}, size.image_size
    plans = [
        ("sd2ip", "inpaint", {"source": "photos", "params": {**small, "crop_size": px}}),
        ("sd2", "sd", {"source": str(captions), "params": {**small, "height": px, "width": px}}),
        ("sd2sr", "upscale", {"source": "photos", "params": {**small, "crop_size": px}}),
    ]
    tests, trains = [], []  # the (larger) test sets first, as for the attacks
    for recipe, kind, kw in plans:
        model = build_tiny_pipeline(kind, models / f"tiny-{kind}")
        kw = {**kw, "model": str(model), "batch_size": size.batch_size}
        tests.append((_build_job, (f"{recipe}: {size.rows} test rows from the stand-in '{kind}' pipeline", recipe, data, size.rows, cfg.seed, cfg, kw)))
        if recipe != "sd2sr":  # sd2sr stays unseen in training (held-out)
            trains.append((_build_job, (f"{recipe}: {size.train_rows} training rows", recipe, train_dir, size.train_rows, cfg.seed + 1, cfg, kw)))
    _run_jobs(pool, tests + trains, echo)


def _verify_all(folders: list[Path], echo) -> None:
    from afpbench.dataset import verify
    from afpbench.errors import DatasetError

    for folder in folders:
        for ds in sorted(p for p in folder.iterdir() if (p / "manifest.json").exists()):
            rep = verify(ds)
            if not rep.ok:
                raise DatasetError(f"{ds} does not verify: {rep.problems[0]}")
            echo(f"      ok {ds.parent.name}/{ds.name}: {rep.num_rows} rows, fingerprint {rep.fingerprint[:12]}")


def _train(train_dir: Path, models: Path, size: DemoSize, cfg: DemoConfig, echo, pool: Any) -> dict[str, dict[str, Any]]:
    from afpbench.testing import build_tiny_instructblip

    sets = sorted(str(p) for p in train_dir.iterdir() if (p / "manifest.json").exists())
    # No validation split here: the test sets must stay unseen, and a few hundred rows are
    # too few to split again; each learner keeps its last epoch (train()'s rule without val).
    base = build_tiny_instructblip(models / "tiny-instructblip", seed=cfg.seed)
    plans = {
        # EfficientNet-Lite0 first: it takes as long as the other three together.
        "efficientnet": dict(epochs=size.epochs_cnn, batch_size=16, lr=1e-3, image_size=size.image_size),
        "antifakeprompt": dict(epochs=size.epochs_afp, batch_size=8, lr=5e-2, base=str(base)),
        "spectral": dict(),
        "format": dict(),
    }
    jobs = [(_train_job, (name, sets, str(models / f"trained-{name}"), 42 + cfg.seed, over)) for name, over in plans.items()]
    weights = _run_jobs(pool, jobs, echo)
    trained = {name: {"weights": w, "base": over.get("base")} for (name, over), w in zip(plans.items(), weights)}
    trained["instructblip"] = {"weights": None, "base": str(base)}
    return trained


def _train_job(name: str, sets: list[str], out: str, seed: int, over: dict[str, Any]) -> tuple[str, str]:
    from afpbench.train import TrainConfig, train

    t = time.perf_counter()
    res = train(TrainConfig(detector=name, train=sets, out=out, seed=seed, quiet=True, threads=THREADS, **over))
    losses = ", ".join(f"{x:.3f}" for x in res.train_losses)
    return f"      {name}: epochs {len(res.epochs)}, train loss {losses}, kept epoch {res.best_epoch} ({time.perf_counter() - t:.0f}s)", str(res.best_checkpoint)


def _evaluate(data: Path, results_dir: Path, trained: dict[str, dict[str, Any]], size: DemoSize, cfg: DemoConfig, echo) -> list[Path]:
    from afpbench.detectors import load_detector
    from afpbench.evaluate import EvalConfig, evaluate

    dets = [load_detector("constant.real"), load_detector("constant.fake"), load_detector("random")]
    for name in ("format", "spectral", "efficientnet", "antifakeprompt", "instructblip"):
        spec = trained[name]
        dets.append(load_detector(name, weights=spec["weights"], base=spec["base"]))
    roles = {name: role for name, _, role in EVAL_SETS}
    ecfg = EvalConfig(
        detectors=dets, data=[data], datasets=[n for n, _, _ in EVAL_SETS], out=results_dir, roles=roles,
        real_pool=["photos", "flickr"], perturb=[None, size.perturb], views=list(VIEWS), bootstrap=size.bootstrap, seed=cfg.seed,
        # One worker decodes and re-encodes while this process scores (one thread each).
        batch_size=16, device="cpu", progress=not cfg.quiet, num_workers=1,
        command=["afpbench", "demo"] + (["--check"] if cfg.check else []),
    )
    files = [ev.path for ev in evaluate(ecfg)]
    echo(f"      {len(files)} results files under {results_dir}")
    return files


def _publish(results: list[Path], site: Path, audit: Path, data: Path) -> Path:
    from afpbench.leaderboard import build_site

    build_site(results, site, profile=None, reported=False, audit=audit, data=[data])
    return site / "leaderboard.json"


def _audit(data: Path, out: Path, size: DemoSize, cfg: DemoConfig, echo) -> Path:
    from afpbench.audit import AuditConfig, audit

    # The same real pool evaluate pairs every fake set with.
    report = audit(AuditConfig(data=[data], datasets=[n for n, _, _ in EVAL_SETS], out=out, real_pool=["photos", "flickr"],
                               bootstrap=min(size.bootstrap, 500), seed=cfg.seed))
    echo(f"      read {sum(p.n for p in report.sets.values())} images ({report.images_per_second:,.0f}/s); real pool photos + flickr")
    for p in report.pairs:
        echo(f"      {'FLAG' if p.flagged else 'ok  '} {p.fake}: {p.summary or 'no encoding shortcut'}")
    return out


def _detect_three(data: Path, trained: dict[str, dict[str, Any]], out: Path, echo) -> str:
    """Three of the demo's images as files on disk (a real JPEG, a stand-in PNG, an attacked PNG), through afpbench detect."""
    from afpbench.dataset import open_dataset
    from afpbench.detect import DetectConfig, detect
    from afpbench.detectors import load_detector

    folder = out / "incoming" / "check-these"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("flickr", "sd2", "adversarial"):
        row = next(open_dataset(data / name).rows(columns=["id", "image", "format"]))
        ext = "jpg" if row["format"] == "jpeg" else row["format"]
        (folder / f"{name}.{ext}").write_bytes(row["image"]["bytes"])
    dets = [load_detector(n, weights=trained[n]["weights"], base=trained[n]["base"]) for n in ("format", "efficientnet", "antifakeprompt")]
    report = detect(DetectConfig(paths=[folder], detectors=dets, progress=False))
    table = report.as_table()
    for line in table.splitlines():
        echo("      " + line)
    return table


def _views_summary(board_path: Path) -> tuple[str, str]:
    """Mean AUC native vs codec-matched per detector, and one line on who lost the lead."""
    from afpbench.results import load_leaderboard

    board = load_leaderboard(board_path)
    comp = next((c for c in board.views if c.view.name == "codec-matched"), None)
    if comp is None:
        return "", ""
    rows = [["detector", "native AUC", "codec-matched AUC", "drop"]]
    for d in comp.detectors:
        rows.append([d.detector, _num(d.native_auc), _num(d.view_auc), "-" if d.drop is None else f"{d.drop:+.3f}" + (" ▼" if d.flagged else "")])
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    scored = [d for d in comp.detectors if d.native_auc is not None and d.view_auc is not None]
    if not scored:
        return "\n".join(lines), ""
    native_lead = max(scored, key=lambda d: d.native_auc)
    view_lead = max(scored, key=lambda d: d.view_auc)
    fell = [d.detector for d in scored if d.flagged]
    if native_lead.detector != view_lead.detector:
        lead = (f"Once the codec is matched, {native_lead.detector} loses its lead (mean AUC {native_lead.native_auc:.3f} -> {native_lead.view_auc:.3f}); "
                f"{view_lead.detector} leads ({view_lead.view_auc:.3f}).")
    else:
        lead = f"{native_lead.detector} keeps its lead once the codec is matched (mean AUC {native_lead.native_auc:.3f} -> {native_lead.view_auc:.3f})."
    if fell:
        lead += f" Mean AUC drops by more than {comp.drop_flag} for: {', '.join(fell)}."
    return "\n".join(lines), lead


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _summary_table(board_path: Path) -> str:
    """The clean-image table of the leaderboard, as text (accuracy %, mean AUC)."""
    from afpbench.leaderboard import render_text_table

    return render_text_table(json.loads(board_path.read_text()))
