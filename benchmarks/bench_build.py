"""Benchmark: ``afpbench build`` throughput against the bare diffusers pipeline, and memory.

One tiny random SD pipeline (afpbench.generate.tiny, saved and loaded with
save/from_pretrained), measured side by side in one run:

* raw: the pipeline called in a loop at the same batch size, prompts and per-row
  generators as the build, nothing encoded or written;
* build: ``afpbench.build.build`` end to end (planning, the same generation, PNG
  encoding and part writing in the background thread, finalize: sort, shards, card,
  manifest), excluding only the model load that raw does outside its timer too.

Target: build >= 0.9 x raw. Then peak RSS of separate build processes making N and 10 N
images (target: flat, i.e. memory does not grow with the number of images).

    python benchmarks/bench_build.py [--count 64] [--size 64] [--steps 4] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _params(size: int, steps: int) -> dict:
    return {"height": size, "width": size, "num_inference_steps": steps}


def _captions() -> str:
    from importlib import resources

    return str(resources.files("afpbench") / "data" / "demo_captions.txt")


def _build(model: Path, out: Path, count: int, size: int, steps: int, batch: int) -> tuple[float, dict]:
    from afpbench.build import build
    from afpbench.plan import BuildConfig

    t = time.perf_counter()
    path = build("sd2", BuildConfig(out=out, count=count, batch_size=batch, model=str(model), source=_captions(), params=_params(size, steps), quiet=True))
    wall = time.perf_counter() - t
    return wall, json.loads((path / "manifest.json").read_text())


def _raw(model: Path, count: int, size: int, steps: int, batch: int) -> float:
    """Seconds for the pipeline alone to make ``count`` images (same prompts, same seeds)."""
    import torch
    from diffusers import StableDiffusionPipeline

    from afpbench.catalog import get_recipe
    from afpbench.plan import BuildConfig
    from afpbench.sources import plan

    items = plan(get_recipe("sd2"), BuildConfig(count=count, source=_captions(), params=_params(size, steps))).items
    pipe = StableDiffusionPipeline.from_pretrained(str(model), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    t = time.perf_counter()
    for i in range(0, count, batch):
        chunk = items[i : i + batch]
        pipe(
            prompt=[it.prompt for it in chunk], height=size, width=size, num_inference_steps=steps, guidance_scale=7.5,
            generator=[torch.Generator("cpu").manual_seed(it.seed) for it in chunk],
        ).images
    return time.perf_counter() - t


def _child(args) -> None:
    """One build in this process; print its peak RSS (the parent compares N and 10 N)."""
    wall, manifest = _build(Path(args.model), Path(args.out), args.count, args.size, args.steps, args.batch_size)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"count": args.count, "peak_rss_mb": round(peak_mb, 1), "seconds": round(wall, 2), "rows": manifest["num_rows"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=64, help="N: images per timed run (RSS: N and 10 N)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="timed raw/build pairs, interleaved (best of each)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's); 1 is steadier on a busy machine")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return _child(args)

    from afpbench.generate.tiny import build_tiny_pipeline

    work = Path(tempfile.mkdtemp(prefix="afpbench-bench-build-"))
    model = build_tiny_pipeline("sd", work / "tiny-sd")
    n, b = args.count, args.batch_size
    print(f"tiny SD pipeline, {args.size}x{args.size} px, {args.steps} steps, batch {b}, {n} images, torch threads {torch.get_num_threads()}")
    _raw(model, b, args.size, args.steps, b)  # warm-up: first-call costs out of both timings
    raws, builds = [], []
    for r in range(args.repeats):
        raws.append(n / _raw(model, n, args.size, args.steps, b))
        wall, manifest = _build(model, work / f"out-{r}", n, args.size, args.steps, b)
        builds.append(n / (wall - manifest["build"]["load_seconds"]))
    raw, built = max(raws), max(builds)
    print(f"raw pipeline   : {raw:8.2f} images/s  (runs: {', '.join(f'{x:.2f}' for x in raws)})")
    print(f"afpbench build : {built:8.2f} images/s  (runs: {', '.join(f'{x:.2f}' for x in builds)}; incl. planning, PNG, parts, finalize)")
    print(f"ratio build/raw: {built / raw:8.3f}  (target >= 0.9)")

    rss = []
    for count in (n, 10 * n):
        cmd = [sys.executable, __file__, "--child", "--threads", str(torch.get_num_threads()), "--model", str(model), "--out", str(work / f"rss-{count}"), "--count", str(count),
               "--size", str(args.size), "--steps", str(args.steps), "--batch-size", str(b)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rss.append(json.loads(res.stdout.strip().splitlines()[-1]))
    for r in rss:
        print(f"peak RSS, {r['count']:5d} images: {r['peak_rss_mb']:8.1f} MiB  ({r['seconds']} s)")
    print(f"RSS growth 10N vs N: {rss[1]['peak_rss_mb'] - rss[0]['peak_rss_mb']:+.1f} MiB (target: flat)")


if __name__ == "__main__":
    main()
