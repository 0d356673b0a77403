"""Cost of checking the sets against their manifests before scoring, side by side with scoring.

    python benchmarks/bench_data_check.py [--n 512] [--size 256] [--big 768] [--repeats 3]

``evaluate`` refuses a set whose content differs from its manifest: before anything is
scored it reads every row back to recompute the content fingerprint, row total and label
counts (``--limit`` runs hash the shards they read instead). Measured in one run, on
CPU, with real photos stored as PNG (what builds and imports write):

1. the check alone, per image: sha256 of the shards (``--limit``), the content check
   (full evaluate runs) and both (``afpbench verify``), with 1 thread and with the
   default thread pool;
2. ``evaluate`` end to end with the check vs. the same call with the check switched off
   (interleaved repeats, best of each), for a detector whose scoring dominates (the bench
   tiny CNN on 256 px images) and for cheap detectors on 768 px images, where decoding
   dominates and the check weighs the most. Target: overhead below 5% of end to end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_evaluate as B  # noqa: E402  (the same detectors and sets as the evaluate benchmark)

MODES = {"sha256": "sha256 of the shards (--limit)", "content": "content (evaluate)", "both": "sha256 + content (verify)"}


def time_check(folder: Path, mode: str, workers: int | None, repeats: int) -> float:
    """Best wall seconds of check_contents on one set."""
    from afpbench.dataset import check_contents, load_manifest

    manifest = load_manifest(folder)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        rows = manifest["num_rows"] if mode == "sha256" else None
        [rep] = check_contents([(folder, manifest, rows)], sha256=mode != "content", workers=workers)
        best = min(best, time.perf_counter() - t)
        assert not rep.problems, rep.problems
    return best


def time_evaluate(dets, data: Path, name: str, out: Path, batch_size: int, check: bool) -> tuple[float, float | None]:
    """(wall seconds of the whole evaluate call, seconds it spent checking the data)."""
    from afpbench.evaluate import EvalConfig, evaluate, sets

    real = sets.verify_sets
    if not check:
        sets.verify_sets = lambda *a, **k: 0.0
    try:
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        evaluations = evaluate(EvalConfig(detectors=dets, data=[data], datasets=[name], out=out, batch_size=batch_size, bootstrap=10, progress=False, resume=False))
        wall = time.perf_counter() - t
    finally:
        sets.verify_sets = real
    return wall, evaluations[0].results.run.verify_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512, help="images of the 256 px set")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--big", type=int, default=768, help="side of the decode-dominated set's images (n/4 of them)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best of each is kept (shared machines are noisy)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="afpbench-bench-check-"))
    figures: dict[str, float | int] = {}
    try:
        mod = B._detectors_module(tmp)
        data = tmp / "data"
        small = B.make_set(data, "small", args.n, args.size, 1)
        n_big = max(48, args.n // 4)
        big = B.make_set(data, "big", n_big, args.big, 1)

        print("[1] the check alone (best of repeats)")
        for key, folder, n in (("small", small, args.n), ("big", big, n_big)):
            mb = sum(p.stat().st_size for p in (folder / "data").glob("*.parquet")) / 2**20
            for mode, what in MODES.items():
                for workers in (1, None):
                    s = time_check(folder, mode, workers, args.repeats)
                    tag = f"{key}_{mode}_{'1t' if workers == 1 else 'pool'}"
                    figures[f"{tag}_us_per_image"] = 1e6 * s / n
                    print(f"    {key} set ({n} x {args.size if key == 'small' else args.big}px PNG, {mb:.0f} MiB): {what:30s} {'1 thread' if workers == 1 else 'pool    '}: "
                          f"{1e3 * s:7.1f} ms = {1e6 * s / n:6.0f} us/image ({mb / s:5.0f} MiB/s)")

        print("[2] evaluate end to end, with the check vs. with it switched off (best of repeats, interleaved)")
        cases = (
            ("tinycnn_small", [mod.TinyCNN(device="cpu")], "small", args.n, "tiny CNN on 256px (scoring dominates)"),
            ("cheap_big", [mod.Cheap(t, device="cpu") for t in ("a", "b", "c")], "big", n_big, "3 cheap detectors on 768px (decoding dominates)"),
        )
        for key, dets, name, n, what in cases:
            time_evaluate(dets, data, name, tmp / "warm", args.batch_size, True)  # warm-up: page cache, code paths
            on, off, inside = [], [], []
            for _ in range(args.repeats):
                w, v = time_evaluate(dets, data, name, tmp / "on", args.batch_size, True)
                on.append(w)
                inside.append(v or 0.0)
                off.append(time_evaluate(dets, data, name, tmp / "off", args.batch_size, False)[0])
            best_on, best_off, check_s = min(on), min(off), min(inside)
            figures.update({f"{key}_with_check_s": best_on, f"{key}_without_check_s": best_off, f"{key}_check_s": check_s,
                            f"{key}_overhead_ab": best_on / best_off - 1.0, f"{key}_check_share": check_s / best_on})
            print(f"    {what}, {n} images: with check {best_on:6.2f} s, without {best_off:6.2f} s -> overhead {100 * (best_on / best_off - 1):+5.1f}% (A/B); "
                  f"check inside the call {check_s:5.2f} s = {100 * check_s / best_on:4.1f}% of it (target < 5%)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
