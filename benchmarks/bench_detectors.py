"""Detector throughput at tiny size on CPU, measured side by side in one run.

For every registered detector: images/s of ``Detector.score`` (the API evaluate calls:
device transfer, inference mode, P(fake), copy back to CPU) against images/s of the bare
model forward on tensors already prepared on the device. Target: score >= 0.9x bare
(only meaningful for detectors with a network; constant/random/format have no model and
their "forward" is a few microseconds of arithmetic).

For AntifakePrompt: the one-forward scorer (read the yes/no logits once) against the
authors' rule (LAVIS ``_predict_class``: image features once, then the LLM over the
batch repeated per candidate with the candidate appended, LM loss each) and against the
naive rule (one full model pass per candidate). Target: one-forward >= 1.8x the
two-candidate rule.

Timings alternate the two contenders call by call and report medians, so machine load
affects both alike. Run:

    HF_HUB_OFFLINE=1 python benchmarks/bench_detectors.py [--batch 16] [--repeats 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Sanity rows without a network (their "forward" is microseconds of arithmetic on row
# features), and the test suite's toy detector (a few tensor ops standing in for a model).
NO_MODEL = {"constant", "random", "format", "size", "test_toy"}


def side_by_side(fns: list[Callable[[], Any]], repeats: int, warmup: int = 2) -> list[list[float]]:
    """Seconds per call of each function, calls interleaved round-robin (one list per function)."""
    for _ in range(warmup):
        for f in fns:
            f()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            times[i].append(time.perf_counter() - t0)
    return times


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median of per-round ratios: load that drifts during the run cancels within a round."""
    return statistics.median(n / d for n, d in zip(num, den))


def run(batch: int, repeats: int, names: list[str] | None = None) -> dict[str, Any]:
    import torch

    import afpbench.detectors  # noqa: F401  (registers the bundled detectors)
    from afpbench.registry import DETECTORS
    from afpbench.sources.photos import photo_images
    from afpbench.testing import build_tiny_detector

    photos = [im for _, im in photo_images()]
    images = [photos[i % len(photos)] for i in range(batch)]
    rows = [{"format": "png", "width": im.width, "height": im.height, "bytes": im.width * im.height} for im in images]
    out: dict[str, Any] = {"batch": batch, "repeats": repeats, "threads": torch.get_num_threads(), "detectors": {}, "antifakeprompt_rule": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or DETECTORS.names():
            det = _zoo_timm(name, Path(tmp)) or _zoo_hf(name, Path(tmp)) or build_tiny_detector(name, Path(tmp))
            x = det.collate([det.preprocess(im, row) for im, row in zip(images, rows)])
            xd = det.to_device(x)

            def bare() -> Any:
                with torch.inference_mode():
                    return det.bare_forward(xd)

            t_score, t_bare = side_by_side([lambda: det.score(x), bare], repeats)
            out["detectors"][name] = {
                "score_images_per_s": batch / statistics.median(t_score),
                "bare_images_per_s": batch / statistics.median(t_bare),
                "ratio": paired_ratio(t_bare, t_score),
                "has_model": name not in NO_MODEL,
                "input": list(x.shape[1:]) if hasattr(x, "shape") else ["full-res"],
            }
            if name == "antifakeprompt":

                def two_candidates() -> Any:
                    with torch.inference_mode():
                        return det.candidate_losses(xd)

                def two_full_passes() -> Any:
                    with torch.inference_mode():
                        return [det.candidate_losses(xd, (c,)) for c in det.answers]

                def image_part() -> Any:
                    with torch.inference_mode():
                        return det.image_prefix(xd)

                t_one, t_two, t_naive, t_img = side_by_side([lambda: det.score(x), two_candidates, two_full_passes, image_part], repeats)
                share = min(0.999, paired_ratio(t_img, t_one))
                out["antifakeprompt_rule"] = {
                    "one_forward_images_per_s": batch / statistics.median(t_one),
                    "two_candidate_images_per_s": batch / statistics.median(t_two),
                    "two_full_passes_images_per_s": batch / statistics.median(t_naive),
                    "speedup_vs_two_candidate": paired_ratio(t_two, t_one),
                    "speedup_vs_two_full_passes": paired_ratio(t_naive, t_one),
                    # The rule shares the image pass, so its cost is V + 2L against V + L.
                    "image_part_share": share,
                    "bound_vs_two_candidate": (share + 2 * (1 - share)) / 1.0,
                }
    return out


def _zoo_timm(name: str, root: Path) -> Any:
    """The timm/torchvision zoo's tiny detectors, loaded from tiny files in each upstream's
    release format (tests/_zoo_timm.py writes them); None for every other detector."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import _zoo_timm

    if name.split(".")[0] not in _zoo_timm.NAMES:
        return None

    class _Dirs:  # the one pytest TempPathFactory method the builders use
        def mktemp(self, base: str) -> Path:
            (root / base).mkdir(parents=True, exist_ok=True)
            return root / base

    return _zoo_timm.make_zoo_timm(name, _Dirs())


def table(res: dict[str, Any]) -> str:
    lines = [f"batch {res['batch']}, {res['repeats']} interleaved rounds (ratios: median of per-round ratios), {res['threads']} torch threads, tiny models on CPU", ""]
    lines.append(f"{'detector':<20}{'input':>14}{'score img/s':>14}{'bare img/s':>14}{'score/bare':>12}  target >= 0.9")
    for name, r in res["detectors"].items():
        verdict = ("ok" if r["ratio"] >= 0.9 else "BELOW") if r["has_model"] else "n/a (no model)"
        lines.append(f"{name:<20}{'x'.join(map(str, r['input'])):>14}{r['score_images_per_s']:>14.1f}{r['bare_images_per_s']:>14.1f}{r['ratio']:>12.3f}  {verdict}")
    a = res.get("antifakeprompt_rule")
    if a:
        lines += [
            "",
            "AntifakePrompt decision rule (images/s):",
            f"  one forward (yes/no logits)          {a['one_forward_images_per_s']:10.1f}",
            f"  authors' two-candidate loss (LAVIS)  {a['two_candidate_images_per_s']:10.1f}   one-forward speedup {a['speedup_vs_two_candidate']:.2f}x (target >= 1.8x)",
            f"  one full pass per candidate          {a['two_full_passes_images_per_s']:10.1f}   one-forward speedup {a['speedup_vs_two_full_passes']:.2f}x",
            f"  vision + Q-Former share of one forward: {a['image_part_share']:.2f} -> best possible speedup over the two-candidate rule (V + 2L) / (V + L) = {a['bound_vs_two_candidate']:.2f}x",
        ]
    return "\n".join(lines)


def _zoo_hf(name: str, root: Path) -> Any:
    """The transformers zoo's tiny detectors (dda, rine, c2p_clip, cospy, probe, qwen_vl): tiny
    configs of the same architectures, weights in each upstream's release layout
    (tests/_zoo_hf.py builds them); None for every other detector."""
    tests = str(Path(__file__).resolve().parent.parent / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import _zoo_hf

    if name.split(".")[0] not in _zoo_hf.ZOO_HF:
        return None
    return _zoo_hf.make_zoo_hf(name, root)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--detectors", default="", help="comma-separated subset (default: all registered)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    res = run(args.batch, args.repeats, [n for n in args.detectors.split(",") if n] or None)
    print(table(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
