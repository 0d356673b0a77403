"""Import throughput vs. plain PNG encoding of the same images, and peak memory vs. N.

    python benchmarks/bench_import.py [--n 300] [--size 256]

Measured side by side in one run:
  * plain: PIL PNG encoding of N images into memory (the cheapest way to get them on disk);
  * import: `afpbench import` of the same N images from a folder (read, full decode check,
    hash, dedupe, parquet shards, manifest, card).
Target: import >= 0.8x plain encoding. Peak RSS of an import of N and of 10N images is
measured in fresh processes (target: flat, i.e. not growing ~10x).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_images(n: int, size: int):
    from afpbench.sources.photos import photo_crops

    return [c.image for c in photo_crops(n, seed=1, size=size, prefix="bench")]


def plain_encode(images) -> float:
    t = time.perf_counter()
    for img in images:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
    return len(images) / (time.perf_counter() - t)


def write_folder(images, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        img.save(folder / f"{i:06d}.png")


def timed_import(folder: Path, out: Path) -> float:
    from afpbench.importer import ImportConfig, import_set

    t = time.perf_counter()
    s = import_set(ImportConfig(name="dalle2", source=folder, out=out))
    rate = s.imported / (time.perf_counter() - t)
    return rate


def child_peak_rss(folder: Path, out: Path) -> float:
    code = (
        "import sys; from pathlib import Path; from afpbench.importer import ImportConfig, import_set;"
        f"import_set(ImportConfig(name='dalle2', source=Path({str(folder)!r}), out=Path({str(out)!r})));"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would
        # report at least the parent's peak.
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(res.stdout.strip().splitlines()[-1]) / 1024.0  # MiB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = make_images(args.n, args.size)
        write_folder(images, tmp / "in")
        # warm both paths once (imports, page cache) before timing
        plain_encode(images[:10])
        plain = plain_encode(images)
        imp = timed_import(tmp / "in", tmp / "out")
        print(f"images: {args.n} x {args.size}px  (cpu cores: {os.cpu_count()})")
        print(f"plain PNG encoding : {plain:8.1f} images/s")
        print(f"afpbench import    : {imp:8.1f} images/s")
        print(f"ratio import/plain : {imp / plain:8.2f}   (target >= 0.80)")
        # memory: N vs 10N rows, each in a fresh process
        small = tmp / "in_small"
        small.mkdir()
        big = tmp / "in_big"
        big.mkdir()
        files = sorted((tmp / "in").glob("*.png"))
        # N must be past the start-up transient: the writer's flush buffer filled and
        # written at least twice, so what differs at 10N is growth with N only.
        from afpbench.dataset import WriterOptions

        per_image = sum(f.stat().st_size for f in files) / len(files)
        n_small = max(10, args.n // 3, int(2.5 * WriterOptions().flush_bytes / per_image) + 1)
        # the 10x folder reuses the same pixels with new names, shifted so none is a
        # duplicate; the N folder is its first tenth, so both have the same bytes per image
        from PIL import Image

        for k in range(10):
            for i in range(n_small):
                f = files[i % len(files)]
                img = Image.open(f).convert("RGB")
                img.putpixel((0, 0), (k, i % 256, i // 256))
                name = f"{k:02d}-{i:06d}.png"
                img.save(big / name, compress_level=1)
                if k == 0:
                    os.link(big / name, small / name)
        rss_small = child_peak_rss(small, tmp / "out_small")
        rss_big = child_peak_rss(big, tmp / "out_big")
        print(f"peak RSS import of {n_small:5d} images: {rss_small:7.1f} MiB")
        print(f"peak RSS import of {10 * n_small:5d} images: {rss_big:7.1f} MiB   (ratio {rss_big / rss_small:.2f}, target: flat)")
        if args.json:
            args.json.write_text(json.dumps({"n": args.n, "plain_ips": plain, "import_ips": imp, "ratio": imp / plain,
                                             "rss_small_mib": rss_small, "rss_big_mib": rss_big, "n_small": n_small}, indent=1))


if __name__ == "__main__":
    main()
