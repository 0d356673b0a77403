"""Evaluation throughput: end to end vs. the bare score loop, one pass vs. separate runs, memory vs. N.

    python benchmarks/bench_evaluate.py [--n 1024] [--size 256] [--workers auto] [--repeats 5]

Measured side by side in one run, on CPU, with real photos (bundled crops, PNG):

1. ``bare``: the tiny detector's ``score`` over pre-decoded, pre-processed tensors
   (the ceiling: no I/O, no decoding, no preprocessing).
   ``end to end``: ``afpbench.evaluate.evaluate`` on the same images stored as a
   dataset (read parquet, decode, preprocess in DataLoader workers, score, write the
   cache and predictions). Target: end to end >= 0.85 x bare, for a detector whose
   scoring dominates (a small CNN costing ~3x the decoding). A lighter CNN, as costly
   as decoding, is measured too: with W workers end to end cannot beat W / decode
   cost, which the script prints as the cap of that ratio.
2. Three cheap detectors on large images (decoding dominates): one ``evaluate`` pass
   with all three vs. three separate ``evaluate`` runs. Target: >= 2x faster.
3. Peak RSS of an evaluation of N and of 10N rows, each in a fresh process
   (target: flat, i.e. not growing with N).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_k, "1")

# The detectors are defined in source form so the memory probe (a fresh process) can
# build the very same classes.
DETECTORS_SRC = r'''
import torch

from afpbench.cards import Preprocessing
from afpbench.detectors._transforms import IMAGENET_MEAN, IMAGENET_STD
from afpbench.detectors.base import Detector


class TinyCNN(Detector):
    """A small CNN on 224 px crops: the "tiny detector" whose scoring is the real work."""

    name = "tinycnn"
    # Scoring costs ~3x decoding a 256 px PNG here: the detector's work dominates.
    width = 48

    def setup(self):
        torch.manual_seed(0)
        w = self.width
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, w, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(4 * w, 4 * w, 3, stride=1, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4 * w, 1),
        ).eval().to(self.device)

    def preprocessing(self):
        return Preprocessing(resize=224, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)

    def forward_scores(self, batch):
        return torch.sigmoid(self.net(batch)).reshape(-1)


class TinyCNNLight(TinyCNN):
    width = 24


class TinyCNN8(TinyCNN):
    width = 8


class Cheap(Detector):
    """Negligible own work: a linear probe of a 32 px centre crop at native resolution
    (pixel-trace detectors avoid resizing), so decoding dominates."""

    name = "cheap"
    variants = {t: Detector.variants[None] for t in ("a", "b", "c")}

    def setup(self):
        g = torch.Generator().manual_seed(ord(self.tag))
        self.w = torch.randn(3 * 32 * 32, generator=g) / 100

    def preprocessing(self):
        return Preprocessing(resize=None, resize_policy="none", crop=32)

    def forward_scores(self, batch):
        return torch.sigmoid(batch.reshape(len(batch), -1) @ self.w)
'''


def _detectors_module(folder: Path):
    (folder / "bench_detectors.py").write_text(DETECTORS_SRC)
    sys.path.insert(0, str(folder))
    import bench_detectors

    return bench_detectors


def make_set(root: Path, name: str, n: int, size: int, label: int) -> Path:
    from afpbench.sources.photos import photo_crops
    from afpbench.testing import write_images

    images = [c.image for c in photo_crops(n, seed=label + 1, size=size, prefix=name)]
    return write_images(root, name, images, label)


def prepare_batches(det, folder: Path, batch_size: int) -> list:
    """Every image of the set decoded, preprocessed and collated beforehand (untimed)."""
    from afpbench.dataset import decode_image, open_dataset

    rows = [r for b in open_dataset(folder).iter_batches(256) for r in b]
    xs = [det.preprocess(decode_image(r["image"]), r) for r in rows]
    return [det.collate(xs[i : i + batch_size]) for i in range(0, len(xs), batch_size)]


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) plus its finished children (DataLoader workers)."""
    import resource

    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def cpu_per_image(fn, n: int) -> float:
    t = _cpu_seconds()
    fn()
    return (_cpu_seconds() - t) / n


def bare_loop(det, batches: list, threads: int) -> float:
    """images/s of det.score over prepared batches, with ``threads`` torch threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        det.score(batches[0])  # warm-up (allocator, kernels)
        t = time.perf_counter()
        for b in batches:
            det.score(b)
        return sum(len(b) for b in batches) / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(before)


def run_evaluate(dets, data: Path, sets: list[str], out: Path, batch_size: int, workers: int | None) -> tuple[float, float, int]:
    """(pass images/s from the results file, whole-call images/s, torch threads used)."""
    from afpbench.evaluate import EvalConfig, evaluate

    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    evaluations = evaluate(EvalConfig(detectors=dets, data=[data], datasets=sets, out=out, batch_size=batch_size, bootstrap=10, num_workers=workers, progress=False, resume=False))
    wall = time.perf_counter() - t
    r = evaluations[0].results
    n = sum(d.rows_evaluated for d in r.datasets)
    return r.run.images_per_second, n / wall, r.run.torch_threads or 0


def child_peak_rss(folder: Path, data: Path, name: str, out: Path, workers: int | None) -> int:
    code = f"""
import sys
sys.path.insert(0, {str(folder)!r})
from bench_detectors import TinyCNN8
from afpbench.envinfo import peak_rss_bytes
from afpbench.evaluate import EvalConfig, evaluate
evaluate(EvalConfig(detectors=[TinyCNN8(device="cpu")], data=[{str(data)!r}], datasets=[{name!r}], out={str(out)!r}, \
batch_size=32, bootstrap=10, num_workers={workers!r}, progress=False, resume=False))
print(peak_rss_bytes())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"memory probe failed:\n{proc.stderr[-3000:]}")
    return int(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024, help="images for the throughput comparison (a third of a benchmark set: the pipeline start-up is paid once per set)")
    ap.add_argument("--size", type=int, default=256, help="side of the stored images (comparison 1)")
    ap.add_argument("--big", type=int, default=768, help="side of the stored images when decoding dominates (comparison 2)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", default="auto", help="DataLoader workers for evaluate ('auto' = evaluate's default)")
    ap.add_argument("--repeats", type=int, default=5, help="each measurement is repeated, interleaved; the best is kept (shared machines are noisy)")
    ap.add_argument("--mem-n", type=int, default=150, help="N for the memory probe (also run at 10N)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    workers = None if args.workers == "auto" else int(args.workers)

    import torch

    from afpbench.evaluate.pipeline import default_workers

    tmp = Path(tempfile.mkdtemp(prefix="afpbench-bench-eval-"))
    all_threads = torch.get_num_threads()
    figures: dict[str, float | int | str] = {"cpus": os.cpu_count() or 0, "workers": workers if workers is not None else default_workers(), "load_avg_1min": os.getloadavg()[0]}
    try:
        mod = _detectors_module(tmp)
        data = tmp / "data"
        make_set(data, "bench", args.n, args.size, 1)

        # 1. end to end vs bare loop, the same detector and images: first a detector
        # whose scoring dominates (the regime the target is about: the pipeline must hide
        # reading and decoding behind scoring), then a lighter one as costly as decoding.
        import torch as _t

        from afpbench.dataset import decode_image, open_dataset

        rows = [r for b in open_dataset(data / "bench").iter_batches(256) for r in b]
        for key, cls, repeats in (("", mod.TinyCNN, args.repeats), ("light_", mod.TinyCNNLight, max(1, args.repeats // 2))):
            det = cls(device="cpu")
            batches = prepare_batches(det, data / "bench", args.batch_size)
            e2e, call, paired, bare_matched, bare_all = [], [], [], [], []
            # A warm-up run (page cache, worker start-up code paths) that also tells which
            # torch thread count evaluate scores with.
            _, _, threads = run_evaluate([det], data, ["bench"], tmp / "r1", args.batch_size, workers)
            for _ in range(repeats):
                # bare, end to end, bare: each end-to-end run is compared with the bare loop
                # measured just before and just after it (a busy machine drifts over minutes).
                before = bare_loop(det, batches, threads)
                p, c, threads = run_evaluate([det], data, ["bench"], tmp / "r1", args.batch_size, workers)
                after = bare_loop(det, batches, threads)
                e2e.append(p)
                call.append(c)
                bare_matched += [before, after]
                paired.append(p / ((before + after) / 2))
                bare_all.append(bare_loop(det, batches, all_threads))
            e2e_b, call_b, bm, ba = max(e2e), max(call), max(bare_matched), max(bare_all)
            ratio = statistics.median(paired)
            # CPU seconds per image, which a busy machine distorts less than wall time.
            _t.set_num_threads(1)
            cpu_decode = cpu_per_image(lambda: [det.preprocess(decode_image(r["image"]), r) for r in rows], len(rows))
            cpu_bare = cpu_per_image(lambda: bare_loop(det, batches, threads), len(rows))
            _t.set_num_threads(all_threads)
            cpu_e2e = cpu_per_image(lambda: run_evaluate([det], data, ["bench"], tmp / "r1", args.batch_size, workers), len(rows))
            n_workers = int(figures["workers"])
            # With W workers each image is decoded on one of W cores: end to end can at
            # best run at W / decode cost, so against the bare loop it is capped at W * S / D.
            cap = min(1.0, n_workers * cpu_bare / cpu_decode) if n_workers else cpu_bare / (cpu_bare + cpu_decode)
            figures.update({
                f"{key}width": cls.width, f"{key}torch_threads_scoring": threads, f"{key}bare_matched_img_s": bm, f"{key}bare_all_cores_img_s": ba,
                f"{key}e2e_pass_img_s": e2e_b, f"{key}e2e_call_img_s": call_b, f"{key}e2e_ratio_matched_median": ratio,
                f"{key}e2e_ratio_matched_paired": sorted(paired), f"{key}e2e_ratio_all_cores_best": e2e_b / ba,
                f"{key}cpu_ms_decode_preprocess": 1e3 * cpu_decode, f"{key}cpu_ms_score": 1e3 * cpu_bare, f"{key}cpu_ms_e2e": 1e3 * cpu_e2e,
                f"{key}cpu_efficiency": (cpu_decode + cpu_bare) / cpu_e2e, f"{key}ratio_cap": cap,
            })
            figures.setdefault("torch_threads_all", all_threads)
            what = "scoring dominates" if not key else "light: scoring costs about as much as decoding"
            print(f"[1{'b' if key else ''}] tiny CNN width {cls.width} ({what}), {args.n} images of {args.size}px (PNG), batch {args.batch_size}, {n_workers} worker(s), {repeats} repeats")
            print(f"    CPU per image, one thread: decode+preprocess {1e3 * cpu_decode:.2f} ms, score {1e3 * cpu_bare:.2f} ms; evaluate end to end {1e3 * cpu_e2e:.2f} ms"
                  f" -> pipeline efficiency {(cpu_decode + cpu_bare) / cpu_e2e:.2f} (1.00 = no overhead)")
            print(f"    bare score loop, pre-decoded tensors, {threads} torch thread(s) (as evaluate scores), best: {bm:8.1f} img/s")
            print(f"    bare score loop, pre-decoded tensors, {all_threads} torch thread(s) (every core), best:       {ba:8.1f} img/s")
            print(f"    evaluate end to end (read, decode, preprocess, score, write), pass, best: {e2e_b:8.1f} img/s")
            print(f"    evaluate end to end, whole call (+ open sets, metrics, results), best:    {call_b:8.1f} img/s")
            target = "(target >= 0.85)" if not key else f"(no target; {n_workers} worker(s) decoding cap it at {cap:.2f})"
            print(f"    end to end / bare at the same scoring threads, back to back: {', '.join(f'{r:.2f}' for r in sorted(paired))}; median {ratio:.2f} {target}")
            print(f"    best end to end / best bare on every core: {e2e_b / ba:.2f}")

        # 2. one pass with 3 detectors vs three runs, decoding-dominated.
        n_big = max(48, args.n // 4)
        make_set(data, "big", n_big, args.big, 1)
        dets = [mod.Cheap(t, device="cpu") for t in ("a", "b", "c")]
        one, three = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            run_evaluate(dets, data, ["big"], tmp / "r2", args.batch_size, workers)
            one.append(time.perf_counter() - t)
            t = time.perf_counter()
            for i, d in enumerate(dets):
                run_evaluate([d], data, ["big"], tmp / f"r3-{i}", args.batch_size, workers)
            three.append(time.perf_counter() - t)
        one_pass, three_runs = min(one), min(three)
        figures.update(one_pass_s=one_pass, three_runs_s=three_runs, one_pass_speedup=three_runs / one_pass)
        print(f"[2] 3 cheap detectors (32 px native crop) on {n_big} images of {args.big}px (decoding dominates), best of {args.repeats}")
        print(f"    one pass: {one_pass:6.2f} s   three runs: {three_runs:6.2f} s   speed-up {three_runs / one_pass:.2f}x  (target >= 2x)")

        # 3. peak RSS at N and 10N rows, fresh processes.
        make_set(data, "memn", args.mem_n, 128, 1)
        make_set(data, "mem10n", 10 * args.mem_n, 128, 1)
        rss_n = child_peak_rss(tmp, data, "memn", tmp / "m1", workers)
        rss_10n = child_peak_rss(tmp, data, "mem10n", tmp / "m2", workers)
        figures.update(peak_rss_n_mb=rss_n / 2**20, peak_rss_10n_mb=rss_10n / 2**20, rss_ratio=rss_10n / rss_n)
        print(f"[3] peak RSS of the evaluating process (VmHWM): N={args.mem_n}: {rss_n / 2**20:.0f} MiB   "
              f"10N={10 * args.mem_n}: {rss_10n / 2**20:.0f} MiB   ratio {rss_10n / rss_n:.2f}  (target: flat)")
        figures["load_avg_1min_end"] = os.getloadavg()[0]
        print(f"    machine load average (1 min) at start/end: {figures['load_avg_1min']:.1f} / {figures['load_avg_1min_end']:.1f} on {figures['cpus']} cores")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
