"""The GPU check: real-size models with random weights, built from the shipped configs, on one GPU.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--tiny] [--budget 450] [--sections ...]

No hub and no weights: every model is built on the meta device from the configuration files
under ``tests/testdata/configs/`` (through afpbench's own loading code), then materialised on
the GPU with ``to_empty`` and a cheap seeded init (normal(0, 0.02) weights, zero biases, unit
norm scales); registered buffers (rotary ``inv_freq``, ``position_ids``, SD3's positional
table) keep the values the model computed at construction. Random weights measure speed and
memory, never accuracy.

Sections, each with its own time budget (a batch that does not fit in memory is recorded as
"OOM at batch N" and the larger ones are skipped; a section whose budget runs out records
what it measured so far):

1. ``afp_throughput``: AntifakePrompt (InstructBLIP-Vicuna-7B, 7.9B parameters) scoring
   throughput (images/s through ``Detector.score``: host batch in, P(fake) out) and peak GPU
   memory at batch 1/8/32/64, in the authors' precision (LAVIS's fp16 autocast arrangement)
   and in uniform bf16.
2. ``one_forward_vs_two_candidates``: the one-forward scorer (``forward_scores``: yes/no
   logits at the answer position) against the authors' two-candidate rule
   (``candidate_losses``: one LLM pass per candidate with full logits), same batch, same
   precision; the ratio of their times (the real-size bound is about 1.5x, BENCHMARK.md),
   whether their decisions agree and how far ``loss(yes) - loss(no)`` is from
   ``logit(no) - logit(yes)``.
3. ``sd3_build``: SD3-medium (2B MMDiT + CLIP-L/G + T5-XXL) at 1024x1024, 4 steps, through
   afpbench's diffusion backend (``DiffusionBackend.run``: per-row CPU generators, prompts
   from the recipe's planned rows) against a bare diffusers loop calling the same pipeline
   object with the same arguments.
4. ``evaluate``: ``afpbench.evaluate.evaluate`` end to end (read, decode, preprocess in
   workers, score, write) on a small PNG set built on the fly, against the bare score loop
   over the same images decoded beforehand.

It prints one table (markdown, for BENCHMARK.md) and writes the figures as JSON (``--out``).
Without a visible GPU, or with ``--tiny``, the same code runs at tiny size (the tiny
InstructBLIP and SD3 of ``afpbench.testing`` / ``afpbench.generate.tiny``, built from
their configs the same way) in well under a minute: tests/test_gpu_check.py runs that mode.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SCHEMA_VERSION = 1
SECTIONS = ("afp_throughput", "one_forward_vs_two_candidates", "sd3_build", "evaluate")
GIB = 1024**3
CONFIGS = Path(__file__).resolve().parent.parent / "tests" / "testdata" / "configs"
SD3_ID = "stabilityai/stable-diffusion-3-medium-diffusers"


@dataclass
class Settings:
    """Sizes and budgets of one run (the GPU's, or the tiny CPU stand-in's)."""

    tiny: bool
    batches: tuple[int, ...] = (1, 8, 32, 64)
    ratio_batches: tuple[int, ...] = (8, 32)
    min_seconds: float = 2.0  # each throughput figure times at least this long (and >= 3 calls)
    max_calls: int = 200
    ratio_repeats: int = 5
    sd3_size: int = 1024
    sd3_steps: int = 4
    sd3_batch: int = 2
    sd3_images: int = 4  # per timed round (each round: bare loop, then the backend)
    sd3_rounds: int = 3
    eval_images: int = 512
    eval_image_size: int = 256
    eval_batch: int = 32
    eval_repeats: int = 2
    # Seconds per section (model builds included); the whole run also stops at --budget.
    budgets: dict[str, float] = field(default_factory=lambda: {"afp_throughput": 170.0, "one_forward_vs_two_candidates": 35.0, "evaluate": 75.0, "sd3_build": 140.0})

    @classmethod
    def for_mode(cls, tiny: bool) -> Settings:
        if not tiny:
            return cls(tiny=False)
        return cls(
            tiny=True, min_seconds=0.15, max_calls=50, ratio_repeats=7, sd3_size=32, sd3_images=4, sd3_rounds=2,
            eval_images=32, eval_image_size=64, eval_batch=8, eval_repeats=1,
            budgets={"afp_throughput": 40.0, "one_forward_vs_two_candidates": 15.0, "evaluate": 25.0, "sd3_build": 25.0},
        )


# -- the device ------------------------------------------------------------------------------
class Device:
    """The few device calls the check needs, each a no-op (or None) on the CPU."""

    def __init__(self, name: str):
        import torch

        self.name = name
        self.cuda = name.startswith("cuda")
        self.torch = torch

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / GIB if self.cuda else None

    def allocated_gib(self) -> float | None:
        return self.torch.cuda.memory_allocated() / GIB if self.cuda else None

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        torch = self.torch
        out: dict[str, Any] = {"device": self.name, "torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count()}
        if self.cuda:
            props = torch.cuda.get_device_properties(0)
            out.update(gpu=props.name, gpu_total_gib=round(props.total_memory / GIB, 1), cuda=torch.version.cuda, capability=f"{props.major}.{props.minor}")
        else:
            out.update(gpu=None, cpu=platform.processor() or platform.machine(), torch_threads=torch.get_num_threads())
        return out


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):  # torch.cuda.OutOfMemoryError is the same class
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text)


class OOM(Exception):
    """Raised in place of an out-of-memory error once the failed call's frames are gone."""


@contextlib.contextmanager
def oom_guard(dev: Device):
    """Turn an out-of-memory error into ``OOM``, freeing the cached blocks first (the
    traceback of the original error would otherwise keep the failed batch's tensors alive)."""
    failed = False
    try:
        yield
    except Exception as exc:  # re-raised unless it is an OOM
        if not is_oom(exc):
            raise
        failed = True
    if failed:
        dev.free()
        raise OOM()


# -- time budgets ------------------------------------------------------------------------------
class Clock:
    """Per-section budgets inside one global deadline; a section may run in several phases."""

    def __init__(self, budgets: dict[str, float], total: float):
        self.t0 = time.perf_counter()
        self.end = self.t0 + total
        self.budgets = dict(budgets)
        self.spent = {k: 0.0 for k in budgets}

    def left(self, section: str) -> float:
        return min(self.budgets[section] - self.spent[section], self.end - time.perf_counter())

    @contextlib.contextmanager
    def phase(self, section: str):
        t = time.perf_counter()
        try:
            yield time.perf_counter() + max(0.0, self.left(section))  # the phase's deadline
        finally:
            self.spent[section] += time.perf_counter() - t

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


# -- random weights on the device ------------------------------------------------------------------
def materialise(module: Any, device: str, *, seed: int = 0, std: float = 0.02) -> Any:
    """Move a meta-built ``module`` to ``device`` with seeded random weights.

    ``to_empty`` allocates every parameter and buffer uninitialised; parameters then get
    normal(0, std) (biases 0, norm scales 1: activations stay in range in fp16), and buffers
    get back the values computed at construction (they were kept real by
    ``init_empty_weights``: the rotary frequencies, position ids, positional tables).
    """
    import torch

    saved = {}
    for name, buf in module.named_buffers():
        if buf.is_meta:
            raise RuntimeError(f"buffer {name} has no value (built on meta): build with accelerate.init_empty_weights(), which keeps buffers")
        saved[name] = buf.detach().clone()
    module.to_empty(device=device)
    if hasattr(module, "tie_weights"):
        module.tie_weights()  # shared tables (T5's embed_tokens = shared) are one tensor again, as from_pretrained leaves them
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, std, generator=gen)
        for m in module.modules():
            w = getattr(m, "weight", None)
            if "Norm" in type(m).__name__ and isinstance(w, torch.nn.Parameter) and w.ndim == 1:
                w.fill_(1.0)
        live = dict(module.named_buffers())
        for name, value in saved.items():
            live[name].copy_(value)
    return module


def random_detector(name: str, base: str, device: str, *, dtype: str | None = None, options: dict[str, str] | None = None, seed: int = 0) -> Any:
    """Detector ``name`` of the InstructBLIP family with a random-weight base on ``device``.

    The detector's own setup runs unchanged (precision mode, the authors' fp32 embedding
    table, the pseudo-word, the prompt encoding); only its ``load_base`` hook is replaced, so
    that the base is built from its configs on meta and materialised instead of read.
    """
    from afpbench.detectors import detector_class
    from afpbench.detectors.instructblip import load_instructblip

    cls = detector_class(name)

    class RandomWeights(cls):  # type: ignore[misc, valid-type]
        def load_base(self, base: str, *, dtype: Any, llm_dtype: Any) -> tuple[Any, Any, Any, str]:
            model, q_tok, llm_tok, spec = load_instructblip(base, dtype=dtype, device="meta", llm_dtype=llm_dtype)
            materialise(model, self.device, seed=seed)
            return model, q_tok, llm_tok, spec

    RandomWeights.__name__ = RandomWeights.__qualname__ = cls.__name__
    return RandomWeights(None, device=device, dtype=dtype, base=base, train_init=True, options=options or {})


def _empty_component(lib: str, cls_name: str, folder: Path, dtype: Any) -> Any:
    """A diffusers/transformers model built from ``folder``'s config: parameters on meta, buffers real."""
    import importlib

    from accelerate import init_empty_weights

    cls = getattr(importlib.import_module(lib), cls_name)
    with init_empty_weights():
        if lib == "diffusers":
            model = cls.from_config(cls.load_config(str(folder)))
        else:
            from transformers import AutoConfig

            model = cls._from_config(AutoConfig.from_pretrained(str(folder)), dtype=dtype)
    if lib == "diffusers" and dtype is not None and dtype != next(model.parameters()).dtype:
        model = model.to(dtype)  # as from_pretrained(dtype=...) leaves a diffusers model
    elif dtype is not None:
        from afpbench.detectors._hf import keep_fp32_modules

        keep_fp32_modules(model, dtype)  # as from_pretrained(dtype=...) leaves it: T5's wo stays fp32 under fp16
    return model.eval()


def _tokenizer(cls_name: str) -> Any:
    """Real tokenizers built offline (afpbench.generate.tiny): CLIP's BPE, a small T5 Unigram."""
    from afpbench.generate.tiny import clip_tokenizer, t5_tokenizer

    if cls_name.startswith("CLIPTokenizer"):
        return clip_tokenizer()
    if cls_name.startswith("T5Tokenizer"):
        return t5_tokenizer()
    raise RuntimeError(f"no offline stand-in for tokenizer class {cls_name}")


def random_pipeline(cls: Any, folder: Path, dtype: Any, overrides: dict[str, Any]) -> Any:
    """``cls`` (a text-to-image pipeline) with its model_index.json components built from
    the configs in ``folder`` on meta; tokenizers and scheduler real."""
    import diffusers

    index = json.loads((folder / "model_index.json").read_text())
    expected, _ = cls._get_signature_keys(cls)
    kwargs: dict[str, Any] = {}
    for key in expected:
        if key in overrides:
            kwargs[key] = overrides[key]
            continue
        spec = index.get(key)
        if not isinstance(spec, list):
            if spec is not None:
                kwargs[key] = spec
            continue
        lib, name = spec
        if lib is None:
            kwargs[key] = None
        elif "tokenizer" in key:
            kwargs[key] = _tokenizer(name)
        elif "scheduler" in key:
            kwargs[key] = getattr(diffusers, name).from_pretrained(str(folder), subfolder=key)
        else:
            kwargs[key] = _empty_component(lib, name, folder / key, dtype)
    return cls(**kwargs)


def random_backend(recipe_name: str, model_dir: Path, device: str, params: dict[str, Any], seed: int = 0) -> Any:
    """afpbench's diffusion backend for ``recipe_name`` whose two loading hooks build the
    pipeline from ``model_dir``'s configs and materialise it with random weights on ``device``;
    everything else (class checks, T5 drop, generation) is the backend's own code."""
    import torch

    from afpbench.catalog import get_generator, get_recipe
    from afpbench.generate.diffusion import DiffusionBackend
    from afpbench.plan import BuildConfig

    class RandomWeightsBackend(DiffusionBackend):
        def _from_pretrained(self, cls: Any, source: str, **kwargs: Any) -> Any:
            dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
            for k in ("revision", "variant"):
                kwargs.pop(k, None)
            return random_pipeline(cls, Path(source), dtype, kwargs)

        def _to_device(self, pipe: Any) -> None:
            for i, (_, comp) in enumerate(sorted(pipe.components.items())):
                if isinstance(comp, torch.nn.Module):
                    materialise(comp, self.device, seed=seed + i)

    recipe = get_recipe(recipe_name)
    card = get_generator(recipe.generator)
    backend = RandomWeightsBackend(recipe, card, BuildConfig(model=str(model_dir), device=device, params=dict(params), quiet=True))
    backend.load()
    return backend


# -- the models of each mode ------------------------------------------------------------------------
def afp_base(tiny: bool, work: Path) -> str:
    """The AntifakePrompt base: the real composed one (InstructBLIP + Vicuna v1.3 configs) or the tiny InstructBLIP."""
    if tiny:
        from afpbench.testing import build_tiny_instructblip

        return str(build_tiny_instructblip(work / "tiny-instructblip", seed=0))
    from afpbench.estimate import _detector_base

    os.environ.setdefault("AFPBENCH_CONFIGS", str(CONFIGS))
    base = _detector_base("antifakeprompt")
    if base is None:
        raise RuntimeError(f"the InstructBLIP / Vicuna configs are not under {CONFIGS}")
    return base


def sd3_folder(tiny: bool, work: Path) -> Path:
    if tiny:
        from afpbench.generate.tiny import build_tiny_pipeline

        return build_tiny_pipeline("sd3", work / "tiny-sd3")
    return CONFIGS / SD3_ID.replace("/", "--")


def pixels(det: Any, batch: int, seed: int = 0) -> Any:
    """A preprocessed-looking host batch (normalised pixels) at the detector's input size."""
    import torch

    size = det.image_size or 224
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- 1. AntifakePrompt throughput -----------------------------------------------------------------
def time_score(det: Any, batch: int, dev: Device, s: Settings, deadline: float) -> dict[str, Any]:
    x = pixels(det, batch)
    dev.reset_peak()
    det.score(x)  # first call at this shape: kernel selection, allocator growth
    dev.sync()
    calls, t0 = 0, time.perf_counter()
    while True:
        det.score(x)  # returns a host tensor: the device has finished the batch
        calls += 1
        el = time.perf_counter() - t0
        if (el >= s.min_seconds and calls >= 3) or calls >= s.max_calls or time.perf_counter() >= deadline:
            break
    dev.sync()
    el = time.perf_counter() - t0
    return {"batch": batch, "images_per_s": batch * calls / el, "calls": calls, "seconds": el, "peak_gib": dev.peak_gib()}


def afp_throughput(det: Any, label: str, dev: Device, s: Settings, clock: Clock, out: dict[str, Any]) -> None:
    rows = out.setdefault("rows", [])
    weights = dev.allocated_gib()
    with clock.phase("afp_throughput") as deadline:
        failed_at = None
        for b in s.batches:
            row: dict[str, Any] = {"precision": label, "batch": b, "weights_gib": weights}
            if failed_at is not None:
                row["skipped"] = f"OOM at batch {failed_at}"
            elif time.perf_counter() + 1.0 > deadline:
                row["skipped"] = "time budget"
            else:
                try:
                    with oom_guard(dev):
                        row.update(time_score(det, b, dev, s, deadline))
                except OOM:
                    failed_at = b
                    row["oom"] = f"OOM at batch {b}"
            rows.append(row)


# -- 2. one forward vs the two-candidate rule ----------------------------------------------------------
def _timed(fn: Any, dev: Device) -> tuple[float, Any]:
    dev.sync()
    t = time.perf_counter()
    out = fn()
    dev.sync()
    return time.perf_counter() - t, out


def one_vs_two(det: Any, dev: Device, s: Settings, clock: Clock, out: dict[str, Any]) -> None:
    import torch

    rows = out.setdefault("rows", [])
    out["precision"] = det.precision
    with clock.phase("one_forward_vs_two_candidates") as deadline:
        for b in s.ratio_batches:
            if time.perf_counter() + 1.0 > deadline:
                rows.append({"batch": b, "skipped": "time budget"})
                continue
            try:
                with oom_guard(dev), torch.inference_mode():
                    x = det.to_device(pixels(det, b, seed=1))
                    logits = det.answer_logits(x)  # warm-up of both paths at this shape
                    losses = det.candidate_losses(x)
                    one, two = [], []
                    for _ in range(s.ratio_repeats):  # interleaved: a drifting machine affects both alike
                        one.append(_timed(lambda x=x: det.forward_scores(x), dev)[0])
                        two.append(_timed(lambda x=x: det.candidate_losses(x), dev)[0])
                        if time.perf_counter() > deadline:
                            break
                    p_fake = logits.softmax(-1)[:, 1]
                    # The authors' decision: the lower loss wins, "yes" (real) on a tie.
                    fake_two = losses[:, 1] < losses[:, 0]
                    gap = ((losses[:, 0] - losses[:, 1]) - (logits[:, 1] - logits[:, 0])).abs().max()
                    rows.append({
                        "batch": b, "one_forward_s": min(one), "two_candidate_s": min(two), "ratio": min(two) / min(one),
                        "one_forward_img_s": b / min(one), "two_candidate_img_s": b / min(two), "repeats": len(one),
                        "agreement": float(((p_fake > 0.5) == fake_two).float().mean()), "max_rule_gap": float(gap),
                    })
            except OOM:
                rows.append({"batch": b, "oom": f"OOM at batch {b}"})
                break


# -- 3. SD3 build: the backend against a bare diffusers loop ------------------------------------------
def sd3_build(dev: Device, s: Settings, clock: Clock, work: Path, out: dict[str, Any]) -> None:
    import torch

    from afpbench.catalog import get_recipe
    from afpbench.plan import BuildConfig
    from afpbench.sources import plan

    params = {"height": s.sd3_size, "width": s.sd3_size, "num_inference_steps": s.sd3_steps}
    out.update(size=s.sd3_size, steps=s.sd3_steps, batch=s.sd3_batch, guidance_scale=7.0)
    with clock.phase("sd3_build") as deadline:
        t = time.perf_counter()
        backend = random_backend("sd3", sd3_folder(s.tiny, work), dev.name, params)
        pipe = backend.pipe
        out["build_seconds"] = time.perf_counter() - t
        out["dtype"] = backend.dtype
        out["weights_gib"] = dev.allocated_gib()
        out["parameters"] = sum(p.numel() for m in pipe.components.values() if isinstance(m, torch.nn.Module) for p in m.parameters())
        captions = str(Path(__import__("afpbench").__file__).parent / "data" / "demo_captions.txt")
        n = s.sd3_images * s.sd3_rounds + s.sd3_batch
        items = plan(get_recipe("sd3"), BuildConfig(count=n, source=captions, params=params)).items
        guidance = float(backend.param("guidance_scale", 7.0))
        out["guidance_scale"] = guidance

        def bare(chunk):
            # What a user would write around the same pipeline object: same prompts, sizes, steps and per-row generators.
            return pipe(
                prompt=[it.prompt for it in chunk], negative_prompt=None, height=s.sd3_size, width=s.sd3_size, num_inference_steps=s.sd3_steps,
                guidance_scale=guidance, generator=[torch.Generator("cpu").manual_seed(int(it.seed)) for it in chunk],
            ).images

        def ours(chunk):
            return backend.run(chunk, [None] * len(chunk))

        try:
            with oom_guard(dev):
                dev.reset_peak()
                ours(items[: s.sd3_batch])  # warm-up
                bare(items[: s.sd3_batch])
                rounds: dict[str, list[float]] = {"bare": [], "backend": []}
                rest = items[s.sd3_batch :]
                for r in range(s.sd3_rounds):
                    todo = rest[r * s.sd3_images : (r + 1) * s.sd3_images]
                    for key, fn in (("bare", bare), ("backend", ours)):
                        t = time.perf_counter()
                        for i in range(0, len(todo), s.sd3_batch):
                            fn(todo[i : i + s.sd3_batch])
                        dev.sync()
                        rounds[key].append(len(todo) / (time.perf_counter() - t))
                    if time.perf_counter() > deadline:
                        break
                out["peak_gib"] = dev.peak_gib()
        except OOM:
            out["oom"] = f"OOM at batch {s.sd3_batch}"
            rounds = {}
        if rounds:
            out.update(
                bare_img_s=max(rounds["bare"]), backend_img_s=max(rounds["backend"]), ratio=max(rounds["backend"]) / max(rounds["bare"]),
                rounds=len(rounds["bare"]), images_per_round=s.sd3_images,
            )


# -- 4. evaluate end to end against the bare score loop -----------------------------------------------
def evaluate_vs_bare(det: Any, dev: Device, s: Settings, clock: Clock, work: Path, out: dict[str, Any]) -> None:
    from afpbench.dataset import decode_image, open_dataset
    from afpbench.evaluate import EvalConfig, evaluate
    from afpbench.sources.photos import photo_crops
    from afpbench.testing import write_images

    with clock.phase("evaluate") as deadline:
        data = work / "eval-data"
        name = "gpucheck"
        write_images(data, name, [c.image for c in photo_crops(s.eval_images, seed=1, size=s.eval_image_size, prefix=name)], 1)
        rows = [r for b in open_dataset(data / name).iter_batches(256) for r in b]
        xs = [det.preprocess(decode_image(r["image"]), r) for r in rows]
        batches = [det.collate(xs[i : i + s.eval_batch]) for i in range(0, len(xs), s.eval_batch)]
        out.update(images=len(rows), image_size=s.eval_image_size, batch=s.eval_batch, precision=det.precision)

        def bare() -> float:
            det.score(batches[0])  # warm-up
            dev.sync()
            t = time.perf_counter()
            for b in batches:
                det.score(b)
            return len(rows) / (time.perf_counter() - t)

        def end_to_end(i: int) -> tuple[float, float]:
            res = work / f"eval-results-{i}"
            shutil.rmtree(res, ignore_errors=True)
            t = time.perf_counter()
            evaluations = evaluate(EvalConfig(detectors=[det], data=[data], datasets=[name], out=res, batch_size=s.eval_batch, device=dev.name,
                                             bootstrap=10, progress=False, resume=False))
            wall = time.perf_counter() - t
            r = evaluations[0].results
            return float(r.run.images_per_second or 0.0), len(rows) / wall

        bares, passes, calls = [], [], []
        try:
            with oom_guard(dev):
                for i in range(s.eval_repeats):
                    bares.append(bare())
                    p, c = end_to_end(i)
                    passes.append(p)
                    calls.append(c)
                    if time.perf_counter() > deadline:
                        break
                bares.append(bare())
        except OOM:
            out["oom"] = f"OOM at batch {s.eval_batch}"
        if passes:
            out.update(bare_img_s=max(bares), e2e_img_s=max(passes), e2e_call_img_s=max(calls), ratio=max(passes) / max(bares), repeats=len(passes))


# -- the run ------------------------------------------------------------------------------------------
def _section(results: dict[str, Any], key: str, budget: float) -> dict[str, Any]:
    return results["sections"].setdefault(key, {"status": "not run", "budget_s": budget})


def _guarded(results: dict[str, Any], key: str, clock: Clock, fn: Any, phase: str) -> None:
    """Run one phase of a section; an error is recorded (one line) and the other sections go on."""
    sec = results["sections"][key]
    if clock.left(key) <= 1.0:
        sec.setdefault("skipped_phases", []).append(f"{phase} (time budget)")
        if sec["status"] == "not run":
            sec["status"] = "skipped: time budget"
        return
    try:
        fn(sec)
        if not sec["status"].startswith("error"):
            sec["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - the check reports every section it can
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        sec["status"] = f"error: {type(exc).__name__}: {first}"
    sec["seconds"] = round(clock.spent[key], 2)


def _finish_status(sec: dict[str, Any]) -> None:
    """'partial' when a section measured something but ran out of memory or time somewhere."""
    if sec.get("status") != "ok":
        return
    rows = sec.get("rows", [])
    if sec.get("oom") or sec.get("skipped_phases") or any(("oom" in r or "skipped" in r) for r in rows):
        sec["status"] = "partial"


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from afpbench.detectors._hf import quiet_transformers

    quiet_transformers()
    import diffusers.utils.logging as dlog

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    cuda = torch.cuda.is_available() and not args.cpu
    tiny = args.tiny or not cuda
    s = Settings.for_mode(tiny)
    dev = Device("cuda" if cuda else "cpu")
    clock = Clock(s.budgets, args.budget or (150.0 if tiny else 450.0))
    wanted = [k for k in SECTIONS if k in (args.sections or SECTIONS)]
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "mode": "tiny" if tiny else "real-size", "random_weights": True,
        "machine": dev.describe(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "budget_s": clock.end - clock.t0,
        "settings": dataclasses.asdict(s), "sections": {},
    }
    for key in wanted:
        _section(results, key, s.budgets[key])
    work = Path(tempfile.mkdtemp(prefix="afpbench-gpu-check-"))
    try:
        need_afp = any(k in wanted for k in ("afp_throughput", "one_forward_vs_two_candidates", "evaluate"))
        base = afp_base(tiny, work) if need_afp else None
        if need_afp:
            # The authors' precision first: it serves the throughput rows, the rule comparison and evaluate.
            holder: dict[str, Any] = {}
            first = next(k for k in wanted if k in ("afp_throughput", "one_forward_vs_two_candidates", "evaluate"))

            def build_authors(sec: dict[str, Any]) -> None:
                t = time.perf_counter()
                with clock.phase(first):
                    holder["det"] = random_detector("antifakeprompt", base, dev.name, options={"precision": "authors"})
                sec.setdefault("build_seconds", {})["authors"] = round(time.perf_counter() - t, 2)

            _guarded(results, first, clock, build_authors, "build (authors' precision)")
            det = holder.get("det")
            if det is not None:
                if "afp_throughput" in wanted:
                    _guarded(results, "afp_throughput", clock, lambda sec: afp_throughput(det, "authors", dev, s, clock, sec), "authors")
                if "one_forward_vs_two_candidates" in wanted:
                    _guarded(results, "one_forward_vs_two_candidates", clock, lambda sec: one_vs_two(det, dev, s, clock, sec), "measure")
                if "evaluate" in wanted:
                    _guarded(results, "evaluate", clock, lambda sec: evaluate_vs_bare(det, dev, s, clock, work, sec), "measure")
            else:
                for k in ("one_forward_vs_two_candidates", "evaluate"):
                    if k in wanted and k != first:
                        results["sections"][k]["status"] = f"error: the model did not build (see {first})"
            del det
            holder.clear()
            dev.free()
            if "afp_throughput" in wanted:

                def bf16(sec: dict[str, Any]) -> None:
                    t = time.perf_counter()
                    with clock.phase("afp_throughput"):
                        d = random_detector("antifakeprompt", base, dev.name, dtype="bfloat16", options={"precision": "uniform"})
                    sec.setdefault("build_seconds", {})["bf16"] = round(time.perf_counter() - t, 2)
                    try:
                        afp_throughput(d, "bf16", dev, s, clock, sec)
                    finally:
                        del d
                        dev.free()

                _guarded(results, "afp_throughput", clock, bf16, "bf16")
        if "sd3_build" in wanted:
            _guarded(results, "sd3_build", clock, lambda sec: sd3_build(dev, s, clock, work, sec), "build and measure")
            dev.free()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for sec in results["sections"].values():
        _finish_status(sec)
    results["seconds_total"] = round(clock.elapsed(), 2)
    return results


# -- the table ----------------------------------------------------------------------------------------
def _f(x: Any, unit: str = "", digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}{unit}"


def table(res: dict[str, Any]) -> str:
    m = res["machine"]
    where = f"{m['gpu']} ({m['gpu_total_gib']} GiB), CUDA {m['cuda']}" if m.get("gpu") else f"CPU ({m.get('cpu')}, {m.get('torch_threads')} threads)"
    lines = [
        f"GPU check, {res['mode']} models with random weights: {where}, torch {m['torch']}; {res['seconds_total']:.0f} s in all",
        "",
        "| section | setting | figure | peak GPU memory |",
        "|---|---|---|---|",
    ]
    secs = res["sections"]
    a = secs.get("afp_throughput")
    if a:
        for r in a.get("rows", []):
            fig = r.get("oom") or (f"skipped ({r['skipped']})" if "skipped" in r else f"{r['images_per_s']:.1f} images/s")
            lines.append(f"| AntifakePrompt scoring | {r['precision']}, batch {r['batch']} | {fig} | {_f(r.get('peak_gib'), ' GiB')} (weights {_f(r.get('weights_gib'), ' GiB')}) |")
        if not a.get("rows"):
            lines.append(f"| AntifakePrompt scoring | - | {a['status']} | - |")
    o = secs.get("one_forward_vs_two_candidates")
    if o:
        for r in o.get("rows", []):
            if "ratio" in r:
                fig = (f"one forward {r['one_forward_img_s']:.1f} vs two candidates {r['two_candidate_img_s']:.1f} images/s: **{r['ratio']:.2f}x** "
                       f"(bound about 1.5x); decisions agree on {100 * r['agreement']:.0f}%, rule gap {r['max_rule_gap']:.2g}")
            else:
                fig = r.get("oom") or f"skipped ({r.get('skipped')})"
            lines.append(f"| one forward vs authors' two-candidate rule | {o.get('precision')}, batch {r['batch']} | {fig} | - |")
        if not o.get("rows"):
            lines.append(f"| one forward vs authors' two-candidate rule | - | {o['status']} | - |")
    d = secs.get("sd3_build")
    if d:
        setting = f"{d.get('size')}x{d.get('size')}, {d.get('steps')} steps, batch {d.get('batch')}, {d.get('dtype', '-')}"
        if "ratio" in d:
            fig = f"backend {d['backend_img_s']:.2f} vs bare diffusers {d['bare_img_s']:.2f} images/s: **{d['ratio']:.2f}**"
        else:
            fig = d.get("oom") or d["status"]
        lines.append(f"| SD3-medium build | {setting} | {fig} | {_f(d.get('peak_gib'), ' GiB')} |")
    e = secs.get("evaluate")
    if e:
        setting = f"{e.get('images', '-')} PNGs of {e.get('image_size', '-')} px, batch {e.get('batch', '-')}, {e.get('precision', '-')}"
        if "ratio" in e:
            fig = f"end to end {e['e2e_img_s']:.1f} vs bare score loop {e['bare_img_s']:.1f} images/s: **{e['ratio']:.2f}**"
        else:
            fig = e.get("oom") or e["status"]
        lines.append(f"| evaluate | {setting} | {fig} | - |")
    bad = [f"{k}: {v['status']}" for k, v in secs.items() if v["status"] not in ("ok",)]
    if bad:
        lines += ["", "Sections not complete: " + "; ".join(bad)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="where the JSON figures go")
    ap.add_argument("--tiny", action="store_true", help="tiny models (automatic when no GPU is visible)")
    ap.add_argument("--cpu", action="store_true", help="stay on the CPU even when a GPU is visible (implies --tiny)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 450 on a GPU, 150 tiny)")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=None, help="run only these sections")
    args = ap.parse_args(argv)
    res = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(table(res))
    print(f"\nfigures written to {args.out}")
    return 0 if all(v["status"] in ("ok", "partial") for v in res["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
