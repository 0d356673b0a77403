"""Regression: ``evaluate`` writes what the files kept in ``tests/testdata/evaluate-v2/`` say.

The folder holds small input sets (``data/``: made once with ``afpbench.testing.write_images``
from the bundled photos, and kept so that a change in an image encoder cannot move the
inputs) and the predictions and results files that ``evaluate`` wrote for the runs in
``RUNS`` (``results/<run>/<detector>/``). The test evaluates the same runs again and
requires the same output, except for the fields below that differ on every run by design.

Predictions files are compared by their columns (values and types) and their afpbench
metadata; results files field by field, in order. Per-run fields, the only ones ignored:
- predictions metadata: ``evaluation_id`` (a fresh id per evaluate call);
- results.json: ``created``, ``afpbench_version``, ``git``, ``environment`` (when, by which
  install), ``run.evaluation_id``, the timings and memory (``run.wall_seconds``,
  ``images_per_second``, ``score_seconds``, ``verify_seconds``, ``peak_rss_bytes``,
  ``peak_gpu_memory_bytes``, ``torch_threads``) and each predictions file's ``sha256``,
  which covers its evaluation id: it is checked against the new file's bytes instead.

The old files must also keep reading: ``score`` recomputes their metrics and the
leaderboard accepts them. Regenerate (only for an intended format change, as a new
``evaluate-vN``) with ``python tests/test_evaluate_regression.py --regenerate``; the input
sets are carried over from the previous version.

History: v1 was written by the harness before the evaluate package existed, and the
package reproduced it. v2 keeps v1's inputs and native outputs (identical) and changes
only what perturbations and views mean now: a perturbation acts on the stored file, so a
row-level detector (``format``) sees the perturbed file's format and size, and its cache
key says so; it adds runs with views and the chain suite.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from afpbench.evaluate import EvalConfig, evaluate
from afpbench.results import PREDICTIONS_META_KEY, load_results
from afpbench.scoring import score_predictions

FIXTURE = Path(__file__).resolve().parent / "testdata" / "evaluate-v2"
SETS = ("coco", "flickr", "sd2", "sdxl", "calib")

#: The evaluations kept: deterministic detectors (row-level, content-hashed, constant),
#: a perturbation, a calibration set, an explicit real pool, a limit and a roles mapping.
RUNS: dict[str, dict] = {
    "main": dict(
        detectors=["format", "size", "random", "constant.fake"], perturb=[None, "jpeg:75"], datasets=["coco", "flickr", "sd2", "sdxl"],
        profile="v3", real_pool=["flickr", "coco"], calibrate_on=["calib"], bootstrap=50, seed=7, batch_size=4, num_workers=1,
    ),
    "limited": dict(
        detectors=["random.3"], datasets=["flickr", "sd2"], roles={"flickr": "held-in"}, limit=4, bootstrap=30, seed=1, batch_size=3, num_workers=0,
    ),
    # Views of the stored bytes (matched to the real pool flickr, JPEG 40x30; a 30 px centre
    # crop) and the chained-degradation suite.
    "views": dict(
        detectors=["format", "size"], views=["native", "codec-matched", "size-matched", "crop:30"], perturb=[None, "chain"],
        datasets=["coco", "flickr", "sd2", "sdxl"], real_pool=["flickr"], bootstrap=30, seed=3, view_seed=2, perturb_seed=4, batch_size=4, num_workers=1,
    ),
}

PER_RUN_META = ("evaluation_id",)
PER_RUN_RESULTS = ("created", "afpbench_version", "git", "environment")
PER_RUN_RUN = ("evaluation_id", "wall_seconds", "images_per_second", "score_seconds", "verify_seconds", "peak_rss_bytes", "peak_gpu_memory_bytes", "torch_threads")


def _run(name: str, data: Path, out: Path) -> list:
    return evaluate(EvalConfig(data=[data], out=out, progress=False, **RUNS[name]))


def _with_per_run_of(results: dict, other: dict) -> dict:
    """``results`` with the per-run fields of ``other`` (in place, so the key order stays)."""
    r = copy.deepcopy(results)
    for key in PER_RUN_RESULTS:
        r[key] = other[key]
    for key in PER_RUN_RUN:
        r["run"][key] = other["run"][key]
    for d, o in zip([*r["datasets"], *r["calibration"]], [*other["datasets"], *other["calibration"]]):
        d["predictions"]["sha256"] = o["predictions"]["sha256"]
    return r


def _meta(path: Path) -> dict:
    return json.loads(pq.read_schema(path).metadata[PREDICTIONS_META_KEY])


def _folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/*/results.json"))


@pytest.fixture(scope="module")
def rerun(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rerun")
    for name in RUNS:
        _run(name, FIXTURE / "data", out / name)
    return out


def test_fixture_is_complete():
    kept = [f.relative_to(FIXTURE / "results").as_posix() for f in _folders(FIXTURE / "results")]
    views = ("", "@codec-matched-seed2", "@size-matched-seed2", "@crop-30-seed2")
    assert kept == sorted(
        [f"main/{d}{s}" for d in ("constant.fake", "format", "random", "size") for s in ("", "@jpeg-75")] + ["limited/random.3"]
        + [f"views/{d}{v}{p}" for d in ("format", "size") for v in views for p in ("", "@chain-seed4")]
    )


def test_predictions_are_the_kept_ones(rerun):
    for old_folder in _folders(FIXTURE / "results"):
        new_folder = rerun / old_folder.relative_to(FIXTURE / "results")
        old_files = sorted(p.name for p in (old_folder / "predictions").glob("*.parquet"))
        assert old_files == sorted(p.name for p in (new_folder / "predictions").glob("*.parquet")), new_folder
        evaluation_id = json.loads((new_folder / "results.json").read_text())["run"]["evaluation_id"]
        for name in old_files:
            old, new = pq.read_table(old_folder / "predictions" / name), pq.read_table(new_folder / "predictions" / name)
            assert new.schema.remove_metadata() == old.schema.remove_metadata(), name
            for col in old.column_names:  # exact values, dtypes included
                a, b = old.column(col).to_numpy(), new.column(col).to_numpy()
                assert a.dtype == b.dtype and np.array_equal(a, b), (new_folder, name, col)
            old_meta, new_meta = _meta(old_folder / "predictions" / name), _meta(new_folder / "predictions" / name)
            assert new_meta["evaluation_id"] == evaluation_id and old_meta["evaluation_id"] != evaluation_id
            for key in PER_RUN_META:
                old_meta.pop(key), new_meta.pop(key)
            assert new_meta == old_meta, (new_folder, name)


def test_results_are_the_kept_ones(rerun):
    for old_folder in _folders(FIXTURE / "results"):
        new_folder = rerun / old_folder.relative_to(FIXTURE / "results")
        old, new = json.loads((old_folder / "results.json").read_text()), json.loads((new_folder / "results.json").read_text())
        # Compared as text: the same fields, in the same order, with the same values.
        assert json.dumps(_with_per_run_of(new, old), indent=2) == json.dumps(old, indent=2), new_folder
        for d in [*new["datasets"], *new["calibration"]]:  # the hashes are of the new files
            assert d["predictions"]["sha256"] == hashlib.sha256((new_folder / d["predictions"]["path"]).read_bytes()).hexdigest()


def test_kept_files_still_score_and_publish(tmp_path):
    """Files written before the refactor are read by today's score and leaderboard."""
    from afpbench.leaderboard import build_leaderboard, load_checked

    for folder in _folders(FIXTURE / "results"):
        kept = load_results(folder / "results.json")
        metrics, preds = score_predictions([folder])
        assert metrics == kept.metrics and [p.name for p in preds] == [d.name for d in [*kept.datasets, *kept.calibration]]
    main = [f / "results.json" for f in _folders(FIXTURE / "results") if f.parent.name == "main"]
    board = build_leaderboard(load_checked(main, profile="v3"), profile="v3", reported=False)
    rows = {(e.detector, e.perturbation): e for e in board.entries}
    assert len(rows) == len(main) == 8
    for f in main:
        kept = load_results(f)
        row = rows[(kept.detector.full_name, kept.perturbation.name if kept.perturbation else None)]
        assert row.source == "measured" and row.average_all == kept.metrics.averages.all
        assert row.per_set == {n: m.accuracy for n, m in kept.metrics.per_set.items()}


def _make_sets(root: Path) -> None:
    """The input sets: crops of the bundled photos; flickr is JPEG (for ``format``), sizes
    differ per set (for ``size``), the fake sets carry noise, calib mixes both classes."""
    from PIL import Image

    from afpbench.sources.photos import photo_images
    from afpbench.testing import write_images

    photos = [img for _, img in photo_images()]
    rng = np.random.default_rng(5)

    def crops(n: int, offset: int, size: tuple[int, int], noise: float = 0.0) -> list[Image.Image]:
        out = []
        for i in range(n):
            img = photos[(offset + i) % len(photos)]
            s = min(img.size) // 2
            left, top = (i * 37) % (img.width - s), (i * 53) % (img.height - s)
            crop = img.crop((left, top, left + s, top + s)).resize(size, Image.BICUBIC)
            if noise:
                arr = np.asarray(crop, dtype=np.float32) + rng.normal(0, noise, (size[1], size[0], 3))
                crop = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
            out.append(crop)
        return out

    write_images(root, "coco", crops(6, 0, (32, 32)), 0, family="real photo")
    write_images(root, "flickr", crops(6, 5, (40, 30)), 0, family="real photo", image_format="jpeg")
    write_images(root, "sd2", crops(5, 2, (40, 40), noise=25), 1, family="text-to-image")
    write_images(root, "sdxl", crops(4, 7, (64, 64), noise=12), 1, family="text-to-image")
    write_images(root, "calib", crops(4, 3, (32, 32)) + crops(4, 9, (40, 40), noise=20), [0] * 4 + [1] * 4)


def _regenerate() -> None:
    previous = sorted(FIXTURE.parent.glob("evaluate-v*"), key=lambda p: int(p.name.rsplit("v", 1)[1]))
    previous = [p for p in previous if p != FIXTURE]
    shutil.rmtree(FIXTURE, ignore_errors=True)
    if previous:  # the same inputs as before: only the outputs may move
        shutil.copytree(previous[-1] / "data", FIXTURE / "data")
    else:
        _make_sets(FIXTURE / "data")
    for name in RUNS:
        _run(name, FIXTURE / "data", FIXTURE / "results" / name)
    for lock in FIXTURE.rglob(".*.afpbench.lock"):
        lock.unlink()


if __name__ == "__main__" and "--regenerate" in sys.argv:
    _regenerate()
