"""Audit throughput: header features of stored images per second, against reading the bytes alone.

    python benchmarks/bench_audit.py [--n 2000] [--size 384]

Measured side by side in one run on the same sets (half JPEG reals, half PNG fakes):
  * read: the shards' image bytes streamed out of parquet (the floor any audit pays);
  * features: the same stream plus the per-image header parse (format, JPEG quality from the
    quantisation tables, subsampling, EXIF/ICC, size, bits per pixel);
  * audit: the whole `afpbench audit` (features, shortcut classifiers with 1000-resample
    bootstrap intervals, report; plots off).
Target: thousands of images per second for the features on one CPU core.

And the cost of a second view in `evaluate`: the same detector on the same sets, once with
``views=[native]`` and once with ``views=[native, codec-matched]`` in one pass (repeats
interleaved, best of each). The extra view re-encodes every fake with a codec drawn from the
real pool, decodes it and scores it again, so its cost is (both - native) / native.
Target: at most 1.3x a native pass. Measured for a detector whose scoring dominates
(EfficientNet-Lite0 at 224 px, the ImageNet body from PyPI) and for the cheapest one
(`format`, which reads only the file, so re-encoding is all there is to pay).
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_sets(root: Path, n: int, size: int) -> None:
    from afpbench.dataset import DatasetWriter, make_row
    from afpbench.sources.photos import photo_crops

    crops = [c.image for c in photo_crops(n, seed=3, size=size, prefix="bench")]
    for name, label, fmt in (("bench_real", 0, "JPEG"), ("bench_fake", 1, "PNG")):
        with DatasetWriter(root, name, info={"recipe": {"name": name, "version": 1}}) as w:
            for i, im in enumerate(crops[label::2]):
                buf = io.BytesIO()
                im.save(buf, format=fmt, **({"quality": 85} if fmt == "JPEG" else {"compress_level": 1}))
                w.add(make_row(id=f"{name}/{i}", image=buf.getvalue(), label=label, dataset=name, width=im.width, height=im.height, format=fmt.lower()), index=i)
        w.finalize()


def stream(root: Path, parse: bool) -> tuple[int, float]:
    from afpbench.audit import image_features
    from afpbench.dataset import open_dataset

    n = 0
    t = time.perf_counter()
    for name in ("bench_real", "bench_fake"):
        for batch in open_dataset(root / name).iter_batches(batch_size=256, columns=["id", "label", "image"]):
            for row in batch:
                if parse:
                    image_features(row["image"]["bytes"])
                n += 1
    return n, time.perf_counter() - t


def evaluate_seconds(root: Path, out: Path, detector: Any, views: list[str | None]) -> float:
    from afpbench.evaluate import EvalConfig, evaluate

    t = time.perf_counter()
    evaluate(EvalConfig(detectors=[detector], data=[root], datasets=["bench_real", "bench_fake"], out=out, roles={"bench_real": "held-in", "bench_fake": "held-in"},
                        real_pool=["bench_real"], views=views, batch_size=32, bootstrap=10, num_workers=0, progress=False, resume=False))
    return time.perf_counter() - t


def view_cost(root: Path, tmp: Path, repeats: int) -> list[tuple[str, float, float]]:
    """(detector, native seconds, native + codec-matched seconds), best of ``repeats`` interleaved runs."""
    import torch

    from afpbench.detectors import load_detector

    torch.set_num_threads(2)
    rows = []
    # train_init: the ImageNet body with the fresh head training starts from (speed does not depend on the head).
    for name, kw in (("efficientnet", {"image_size": 224, "train_init": True}), ("format", {})):
        det = load_detector(name, device="cpu", **kw)
        native, both = [], []
        for r in range(repeats):
            native.append(evaluate_seconds(root, tmp / f"n-{name}-{r}", det, [None]))
            both.append(evaluate_seconds(root, tmp / f"b-{name}-{r}", det, [None, "codec-matched"]))
        rows.append((name, min(native), min(both)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--eval-n", type=int, default=400, help="images per evaluate run for the view cost (half real, half fake)")
    args = ap.parse_args()
    from afpbench.audit import AuditConfig, audit

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        make_sets(root, args.n, args.size)
        read = min(stream(root, False)[1] for _ in range(args.repeats))
        feats = min(stream(root, True)[1] for _ in range(args.repeats))
        t = time.perf_counter()
        report = audit(AuditConfig(data=[root], out=Path(tmp) / "audit", plots=False))
        whole = time.perf_counter() - t
        small = Path(tmp) / "small"
        make_sets(small, args.eval_n, 256)
        costs = view_cost(small, Path(tmp), args.repeats)
    n = args.n
    print(f"images: {n} ({args.size}px crops; half JPEG q85, half PNG)")
    print(f"read bytes only     : {n / read:10,.0f} images/s")
    print(f"read + features     : {n / feats:10,.0f} images/s   (parse cost {1e6 * (feats - read) / n:.0f} us/image)")
    print(f"whole audit (1 pair): {n / whole:10,.0f} images/s   ({whole:.2f} s, format AUC {report.pairs[0].shortcuts['format'].value:.3f})")
    print(f"evaluate, {args.eval_n} images of 256 px: native pass vs native + codec-matched in one pass (target: second view <= 1.3x native)")
    for name, native, both in costs:
        print(f"  {name:<12}: native {native:6.2f} s, both {both:6.2f} s, second view {(both - native) / native:4.2f}x native")


if __name__ == "__main__":
    main()
