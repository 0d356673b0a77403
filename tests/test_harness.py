"""Evaluation end to end on real photos: one pass, resume, score, distributed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from afpbench import dataset as ds
from afpbench.cli import cli
from afpbench.dataset import open_dataset
from afpbench.errors import AfpbenchError, DatasetError
from afpbench.evaluate import EvalConfig, evaluate
from afpbench.metrics import calibrate_threshold
from afpbench.results import load_results, read_predictions
from afpbench.testing import write_images

# A detector written the way a plugin author would (the Scorer protocol, no base
# class): P(fake) rises with high-frequency energy, which the "fake" sets have more of.
TOY_SOURCE = '''
import time
import numpy as np
import torch

from afpbench.results import DetectorInfo


class Toy:
    name = "toy"
    calls = 0
    rows = 0

    def __init__(self, tag=None, weights=None, device="cpu", dtype=None, gain=40.0, fail_after=None, sleep=0.0, nan=False, **kw):
        self.tag = tag
        self.gain = gain
        self.fail_after = fail_after
        self.sleep = sleep
        self.nan = nan
        self.weights_sha256 = None
        self.threshold = 0.5
        self.threshold_policy = "fixed: 0.5"

    @property
    def full_name(self):
        return f"{self.name}.{self.tag}" if self.tag else self.name

    def arguments(self):
        return {"gain": self.gain}

    def describe(self):
        return DetectorInfo(name=self.name, tag=self.tag, full_name=self.full_name, arguments=self.arguments(), weights_sha256=self.weights_sha256)

    def preprocess(self, image, row=None):
        arr = np.asarray(image.convert("L").resize((48, 48)), dtype=np.float32) / 255.0
        return torch.from_numpy(arr)[None]

    def collate(self, items):
        return torch.stack(items)

    def score(self, batch):
        type(self).calls += 1
        type(self).rows += len(batch)
        if self.fail_after is not None and type(self).calls > self.fail_after:
            raise RuntimeError("simulated crash")
        if self.sleep:
            time.sleep(self.sleep)
        hf = (batch[..., 1:, :] - batch[..., :-1, :]).abs().mean(dim=(1, 2, 3))
        p = torch.sigmoid((hf - 0.06) * self.gain)
        if self.nan:
            p[0] = float("nan")
        return p
'''


@pytest.fixture(scope="module")
def toy_module(tmp_path_factory):
    """The toy detector as an importable module and an installed entry-point plugin."""
    site = tmp_path_factory.mktemp("site")
    (site / "afpbench_toy.py").write_text(TOY_SOURCE)
    dist = site / "afpbench_toy-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: afpbench-toy\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[afpbench.detectors]\ntoy = afpbench_toy:Toy\n")
    sys.path.insert(0, str(site))
    import afpbench_toy

    yield site, afpbench_toy
    sys.path.remove(str(site))


def _reset(cls):
    cls.calls = 0
    cls.rows = 0


def _crops(photos, n: int, offset: int, noise: float = 0.0, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        _, img = photos[(offset + i) % len(photos)]
        w, h = img.size
        s = min(w, h) // 2
        left, top = (i * 37) % (w - s), (i * 53) % (h - s)
        crop = img.crop((left, top, left + s, top + s)).resize((64, 64), Image.BICUBIC)
        if noise:
            arr = np.asarray(crop, dtype=np.float32) + rng.normal(0, noise, (64, 64, 3))
            crop = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        out.append(crop)
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("data")
    write_images(root, "coco", _crops(photos, 10, 0), 0, family="real photo")
    write_images(root, "flickr", _crops(photos, 12, 5), 0, family="real photo")
    write_images(root, "sd2", _crops(photos, 12, 2, noise=25, seed=1), 1, family="text-to-image")
    write_images(root, "sdxl", _crops(photos, 10, 7, noise=12, seed=2), 1, family="text-to-image")
    write_images(root, "calib", _crops(photos, 8, 3) + _crops(photos, 8, 9, noise=20, seed=3), [0] * 8 + [1] * 8)
    return root


SETS = ["coco", "flickr", "sd2", "sdxl"]
N_ROWS = 10 + 12 + 12 + 10


def _cfg(data_dir, out, dets, **kw) -> EvalConfig:
    base = dict(detectors=dets, data=[data_dir], datasets=list(SETS), profile="v3", out=out, batch_size=5, bootstrap=100, num_workers=0, progress=False)
    base.update(kw)
    return EvalConfig(**base)


def _scores(folder: Path) -> dict[str, dict[str, float]]:
    return {p.stem: dict(zip(read_predictions(p).ids, read_predictions(p).scores.tolist())) for p in sorted((folder / "predictions").glob("*.parquet"))}


def test_one_pass_decodes_once_for_every_detector_and_suite(toy_module, data_dir, tmp_path, monkeypatch):
    _, mod = toy_module
    stored = {row["image"]["bytes"] for name in ("coco", "flickr", "sd2", "sdxl") for row in open_dataset(data_dir / name).rows(columns=["image"])}
    calls = {"stored": 0, "perturbed": 0}
    real_decode = ds.decode_image

    def counting_decode(value):
        data = value.get("bytes") if isinstance(value, dict) else value
        calls["stored" if data in stored else "perturbed"] += 1
        return real_decode(value)

    monkeypatch.setattr(ds, "decode_image", counting_decode)
    a, b = mod.Toy(), mod.Toy(tag="sharp", gain=80.0)
    evaluations = evaluate(_cfg(data_dir, tmp_path, [a, b], perturb=[None, "jpeg:30"]))
    paths = [e.path for e in evaluations]
    # 2 detectors x 2 suites, yet every stored image is decoded once, and the JPEG file the
    # perturbation writes (which the detectors see) once too, whatever the number of detectors.
    assert calls == {"stored": N_ROWS, "perturbed": N_ROWS}
    assert [e.results for e in evaluations] == [load_results(p) for p in paths]  # what was returned is what was written
    assert sorted(p.parent.name for p in paths) == ["toy", "toy.sharp", "toy.sharp@jpeg-30", "toy@jpeg-30"]

    res = load_results(tmp_path / "toy@jpeg-30")
    assert res.perturbation.spec == "jpeg:30" and res.perturbation.extension
    assert res.profile == "v3" and res.detector.full_name == "toy" and res.run.detectors_in_pass == 2
    assert res.run.rows_scored == N_ROWS and res.run.images_per_second > 0 and res.run.peak_rss_bytes > 0 and res.run.device == "cpu"
    assert res.environment.packages["torch"] and res.environment.python
    assert res.git.commit is None or len(res.git.commit) == 40
    assert res.threshold.kind == "fixed" and res.threshold.value == 0.5 and res.threshold.source == "fixed: 0.5"
    assert res.metrics.pairing.real_pool == ["flickr"] and [p.fake for p in res.metrics.pairs] == ["sd2", "sdxl"]
    for info in res.datasets:
        reader = open_dataset(data_dir / info.name)
        assert info.fingerprint == reader.fingerprint and info.rows_total == info.rows_evaluated == reader.num_rows
        assert info.recipe_version == 1 and info.role == ("held-in" if info.name == "coco" else "held-out")
        pred_path = tmp_path / "toy@jpeg-30" / info.predictions.path
        p = read_predictions(pred_path)
        assert p.ids == reader.ids() and p.labels.tolist() == reader.labels()
        assert np.array_equal(p.preds, (p.scores > 0.5).astype(np.int8))
        acc = float((p.labels == p.preds).mean())
        assert res.metrics.per_set[info.name].accuracy.value == pytest.approx(acc)
    # The perturbation changes what the detector sees; the other detector scores differently.
    clean, jpeg, sharp = _scores(tmp_path / "toy"), _scores(tmp_path / "toy@jpeg-30"), _scores(tmp_path / "toy.sharp")
    assert clean["sd2"] != jpeg["sd2"] and clean["sd2"] != sharp["sd2"]
    assert not (tmp_path / "toy" / "cache").exists()  # finished sets leave no partial cache


def test_workers_and_batch_size_do_not_change_predictions(toy_module, data_dir, tmp_path):
    _, mod = toy_module
    evaluate(_cfg(data_dir, tmp_path / "a", [mod.Toy()], perturb=["crop:40+noise:6"], num_workers=0, batch_size=5))
    evaluate(_cfg(data_dir, tmp_path / "b", [mod.Toy()], perturb=["crop:40+noise:6"], num_workers=2, batch_size=3))
    assert _scores(tmp_path / "a" / "toy@crop-40+noise-6") == _scores(tmp_path / "b" / "toy@crop-40+noise-6")


def test_score_recomputes_the_same_metrics(toy_module, data_dir, tmp_path):
    _, mod = toy_module
    [path] = [e.path for e in evaluate(_cfg(data_dir, tmp_path, [mod.Toy()], real_pool=["flickr", "coco"]))]
    res = load_results(path)
    runner = CliRunner()
    out = runner.invoke(cli, ["score", str(path.parent), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == json.loads(res.metrics.model_dump_json())
    # ... and they are the predictions' own numbers, computed here independently
    # (scikit-learn): per-set accuracy, and the AUC of sd2 against the coco+flickr pool.
    from sklearn.metrics import accuracy_score, roc_auc_score

    scored = json.loads(out.output)
    preds = {p.stem: read_predictions(p) for p in (path.parent / "predictions").glob("*.parquet")}
    for name, p in preds.items():
        assert scored["per_set"][name]["accuracy"]["value"] == pytest.approx(accuracy_score(p.labels, p.preds), abs=1e-12)
    pool = [preds["coco"], preds["flickr"], preds["sd2"]]
    auc = roc_auc_score(np.concatenate([p.labels for p in pool]), np.concatenate([p.scores for p in pool]))
    assert next(x for x in scored["pairs"] if x["fake"] == "sd2")["auc"]["value"] == pytest.approx(auc, abs=1e-12)
    # Files one by one, in another order: same numbers.
    files = sorted((path.parent / "predictions").glob("*.parquet"), reverse=True)
    out2 = runner.invoke(cli, ["score", *map(str, files), "--json"])
    assert json.loads(out2.output) == json.loads(res.metrics.model_dump_json())
    table = runner.invoke(cli, ["score", str(path.parent)])
    assert "held-out" in table.output and "sd2 vs coco+flickr" in table.output
    # Predictions of another detector cannot be mixed in.
    [other] = [e.path for e in evaluate(_cfg(data_dir, tmp_path / "other", [mod.Toy(tag="b")], datasets=["sd2"]))]
    mixed = runner.invoke(cli, ["score", str(path.parent / "predictions" / "flickr.parquet"), str(other.parent / "predictions" / "sd2.parquet")])
    assert isinstance(mixed.exception, AfpbenchError) and "one detector" in str(mixed.exception)


def test_score_refuses_predictions_of_a_changed_dataset(toy_module, data_dir, tmp_path, photos):
    _, mod = toy_module
    [path] = [e.path for e in evaluate(_cfg(data_dir, tmp_path / "res", [mod.Toy()], datasets=["flickr", "sd2"]))]
    changed = tmp_path / "changed"
    write_images(changed, "flickr", _crops(photos, 12, 6), 0)
    write_images(changed, "sd2", _crops(photos, 12, 2, noise=25, seed=1), 1)
    runner = CliRunner()
    ok = runner.invoke(cli, ["score", str(path.parent), "--data", str(data_dir)])
    assert ok.exit_code == 0, ok.output
    with pytest.raises(DatasetError, match="different version of set 'flickr'.*evaluate again"):
        runner.invoke(cli, ["score", str(path.parent), "--data", str(changed)], catch_exceptions=False)


def test_crash_then_rerun_scores_only_what_is_missing(toy_module, data_dir, tmp_path):
    _, mod = toy_module
    ref = tmp_path / "ref"
    evaluate(_cfg(data_dir, ref, [mod.Toy()]))
    out = tmp_path / "run"
    _reset(mod.Toy)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(_cfg(data_dir, out, [mod.Toy(fail_after=3)], flush_every=5))
    parts = list((out / "toy" / "cache").glob("*/part-*.parquet"))
    assert parts and not (out / "toy" / "results.json").exists()
    _reset(mod.Toy)
    [path] = [e.path for e in evaluate(_cfg(data_dir, out, [mod.Toy()]))]
    assert mod.Toy.rows == N_ROWS - 15  # 3 batches of 5 were kept
    res = load_results(path)
    assert res.run.rows_cached == 15 and res.run.rows_scored == N_ROWS - 15
    assert _scores(out / "toy") == _scores(ref / "toy")
    # Everything cached now: a third run scores nothing and writes the same predictions.
    _reset(mod.Toy)
    evaluate(_cfg(data_dir, out, [mod.Toy()]))
    assert mod.Toy.rows == 0 and _scores(out / "toy") == _scores(ref / "toy")
    # Other arguments mean other scores: the cache is not reused.
    _reset(mod.Toy)
    evaluate(_cfg(data_dir, out, [mod.Toy(gain=10.0)]))
    assert mod.Toy.rows == N_ROWS


def test_killed_process_resumes(toy_module, data_dir, tmp_path):
    site, mod = toy_module
    out = tmp_path / "res"
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(site)!r})
        from afpbench_toy import Toy
        from afpbench.evaluate import EvalConfig, evaluate
        evaluate(EvalConfig(detectors=[Toy(sleep=0.4)], data=[{str(data_dir)!r}], datasets={SETS!r}, profile="v3",
                            out={str(out)!r}, batch_size=4, flush_every=4, num_workers=0, progress=False, bootstrap=50))
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("toy/cache/*/part-*.parquet"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # no finally, no flush: only written parts survive
    proc.wait()
    import pyarrow.parquet as pq

    kept = sum(pq.read_metadata(p).num_rows for p in out.glob("toy/cache/*/part-*.parquet"))
    assert 8 <= kept < N_ROWS and not (out / "toy" / "results.json").exists()
    _reset(mod.Toy)
    # sleep is not an argument of the scores (arguments() omits it): the cache applies.
    evaluate(_cfg(data_dir, out, [mod.Toy()], batch_size=11))
    assert mod.Toy.rows == N_ROWS - kept
    ref = tmp_path / "ref"
    evaluate(_cfg(data_dir, ref, [mod.Toy()]))
    assert _scores(out / "toy") == _scores(ref / "toy")


def test_calibrated_threshold_and_custom_sets(toy_module, data_dir, tmp_path):
    _, mod = toy_module
    cfg = _cfg(data_dir, tmp_path, [mod.Toy()], datasets=["flickr", "sd2", "sdxl"], profile=None, calibrate_on=["calib"], roles={"flickr": "held-in"})
    [path] = [e.path for e in evaluate(cfg)]
    res = load_results(path)
    cal = read_predictions(path.parent / "predictions" / "calib.parquet")
    assert cal.meta.role == "calibration" and res.calibration[0].name == "calib"
    assert res.threshold.kind == "calibrated" and res.threshold.calibration_sets == ["calib"]
    assert res.threshold.value == calibrate_threshold(cal.labels, cal.scores)
    sd2 = read_predictions(path.parent / "predictions" / "sd2.parquet")
    assert np.array_equal(sd2.preds, (sd2.scores > res.threshold.value).astype(np.int8))
    assert "calib" not in res.metrics.per_set and res.profile is None
    # flickr is held-in here (roles mapping), so it is no longer the default real pool.
    assert res.metrics.averages.n_held_out == 2 and res.metrics.pairing.real_pool == ["flickr"]
    assert res.metrics.pairing.rule.startswith("default: every real set")
    out = CliRunner().invoke(cli, ["score", str(path.parent), "--json"])
    assert json.loads(out.output) == json.loads(res.metrics.model_dump_json())
    # A set outside the catalog defaults to held-out.
    [p2] = [e.path for e in evaluate(_cfg(data_dir, tmp_path / "c", [mod.Toy()], datasets=["calib"], profile=None))]
    r2 = load_results(p2)
    assert r2.datasets[0].role == "held-out" and r2.datasets[0].label == "mixed" and r2.metrics.pairs[0].fake == "calib"


def test_limit_and_input_errors(toy_module, data_dir, tmp_path):
    _, mod = toy_module
    [path] = [e.path for e in evaluate(_cfg(data_dir, tmp_path, [mod.Toy()], limit=3))]
    res = load_results(path)
    assert res.run.limit == 3 and all(d.rows_evaluated == 3 and d.rows_total > 3 for d in res.datasets)
    with pytest.raises(DatasetError, match="No folder for set 'sd3'.*afpbench build sd3"):
        evaluate(_cfg(data_dir, tmp_path, [mod.Toy()], datasets=["sd3"]))
    with pytest.raises(AfpbenchError, match="also test sets.*never the test set"):
        evaluate(_cfg(data_dir, tmp_path, [mod.Toy()], calibrate_on=["sd2"]))
    with pytest.raises(AfpbenchError, match="not evaluated"):
        evaluate(_cfg(data_dir, tmp_path, [mod.Toy()], real_pool=["ffhq"]))
    with pytest.raises(AfpbenchError, match="not in profile v3"):
        evaluate(_cfg(data_dir, tmp_path, [mod.Toy()], datasets=["calib"]))
    with pytest.raises(AfpbenchError, match="NaN or infinite"):
        evaluate(_cfg(data_dir, tmp_path / "nan", [mod.Toy(nan=True)]))
    with pytest.raises(AfpbenchError, match="same results folder"):
        evaluate(_cfg(data_dir, tmp_path, [mod.Toy(), mod.Toy(gain=3.0)]))
    with pytest.raises(AfpbenchError, match=r"object is not a detector evaluate can run \(no name, full_name, .*describe\); implement afpbench.detectors.base.Scorer"):
        evaluate(_cfg(data_dir, tmp_path / "none", [object()]))
    runner = CliRunner()
    bad = runner.invoke(cli, ["evaluate", "--detector", "toy", "--weights", "a", "--weights", "b", "--data", str(data_dir)])
    assert isinstance(bad.exception, AfpbenchError) and "at most one --weights per detector" in str(bad.exception)


def test_torchrun_two_processes_shard_without_duplicates(toy_module, data_dir, tmp_path):
    site, mod = toy_module
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "afpbench", "evaluate", "--detector", "toy", "--data", str(data_dir), "--datasets", ",".join(SETS),
        "--profile", "v3", "--out", str(tmp_path / "dist"), "--batch-size", "4", "--bootstrap", "100", "--num-workers", "0", "--no-progress",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = load_results(tmp_path / "dist" / "toy")
    assert res.run.num_processes == 2
    assert sum(res.run.rows_per_process) == N_ROWS and min(res.run.rows_per_process) >= N_ROWS // 2 - 4
    for info in res.datasets:
        ids = read_predictions(tmp_path / "dist" / "toy" / info.predictions.path).ids
        assert len(ids) == len(set(ids)) == info.rows_total
    evaluate(_cfg(data_dir, tmp_path / "single", [mod.Toy()], batch_size=4))
    assert _scores(tmp_path / "dist" / "toy") == _scores(tmp_path / "single" / "toy")
    assert res.metrics == load_results(tmp_path / "single" / "toy").metrics


def test_cli_evaluate_progress_and_weights_pairing(toy_module, data_dir, tmp_path, monkeypatch):
    import afpbench.detectors  # noqa: F401  (registers the bundled names before the snapshot)
    from afpbench.registry import DETECTORS

    # Register the toy for this test only: the registry is restored afterwards, so later
    # tests in this process (listing detectors, say) never see it.
    monkeypatch.setattr(DETECTORS, "_lazy", dict(DETECTORS._lazy))
    monkeypatch.setattr(DETECTORS, "_objects", dict(DETECTORS._objects))
    monkeypatch.setattr(DETECTORS, "_plugins_loaded", DETECTORS._plugins_loaded)
    DETECTORS.register_lazy("toy", "afpbench_toy:Toy")
    out = CliRunner().invoke(
        cli,
        ["evaluate", "--detector", "toy", "--detector", "toy.b", "--weights", "none", "--data", str(data_dir), "--datasets", "flickr,sd2",
         "--out", str(tmp_path), "--bootstrap", "50", "--num-workers", "0", "--batch-size", "8"],
    )
    assert out.exit_code == 0, out.output
    assert "img/s" in out.output  # the progress bar's rate (and the summary line)
    assert "toy/results.json: average" in out.output and "toy.b/results.json" in out.output
    res = load_results(tmp_path / "toy.b")
    assert res.detector.tag == "b" and res.run.detectors_in_pass == 2 and res.command[0] == "afpbench"


def test_bundled_spectral_detector_with_trained_weights(data_dir, tmp_path):
    """The real path: a bundled detector, fitted, saved, loaded by name with --weights."""
    import hashlib

    import torch

    from afpbench.detectors import load_detector

    det = load_detector("spectral", train_init=True, image_size=32)
    rows = [r for b in open_dataset(data_dir / "calib").iter_batches(64) for r in b]
    x = torch.stack([det.preprocess(ds.decode_image(r["image"]), r) for r in rows])
    det.fit([(x, [r["label"] for r in rows])], [])
    weights = det.save(tmp_path / "spectral-fit")
    out = CliRunner().invoke(
        cli, ["evaluate", "--detector", "spectral", "--weights", str(weights), "--data", str(data_dir), "--profile", "v3",
              "--datasets", ",".join(SETS), "--out", str(tmp_path / "res"), "--bootstrap", "50", "--num-workers", "1", "--no-progress"],
    )
    assert out.exit_code == 0, out.output
    res = load_results(tmp_path / "res" / "spectral")
    assert res.detector.weights_sha256 == hashlib.sha256((weights / "model.safetensors").read_bytes()).hexdigest() and res.detector.weights == str(weights)
    assert res.detector.card.name == "spectral" and res.detector.arguments["image_size"] == 32
    assert res.threshold.source == det.threshold_policy and res.run.num_workers == 1
    scores = _scores(tmp_path / "res" / "spectral")
    assert len({round(v, 6) for v in scores["sd2"].values()}) > 3  # real, image-dependent scores


def test_sanity_detectors_give_their_known_numbers(data_dir, tmp_path):
    """constant.fake / constant.real / random through the CLI: metrics whose values are known."""
    out = CliRunner().invoke(
        cli, ["evaluate", "--detector", "constant.fake", "--detector", "constant.real", "--detector", "random", "--data", str(data_dir),
              "--profile", "v3", "--datasets", ",".join(SETS), "--out", str(tmp_path), "--bootstrap", "50", "--num-workers", "0", "--no-progress"],
    )
    assert out.exit_code == 0, out.output
    fake, real, rnd = (load_results(tmp_path / n) for n in ("constant.fake", "constant.real", "random"))
    for res, called in ((fake, 1), (real, 0)):
        for name, m in res.metrics.per_set.items():
            assert m.accuracy.value == float((m.label == "fake") == bool(called)), (res.detector.full_name, name)
        for pair in res.metrics.pairs:  # every score tied: chance ranking
            assert pair.auc.value == 0.5 and pair.eer.value == 0.5 and pair.balanced_accuracy.value == 0.5
    assert fake.metrics.averages.all.value == 0.5 and fake.metrics.averages.held_out.value == pytest.approx(2 / 3)
    assert real.metrics.averages.held_out.value == pytest.approx(1 / 3)
    assert fake.run.detectors_in_pass == 3 and fake.threshold.value == 0.5
    assert all(0.0 <= p.auc.value <= 1.0 for p in rnd.metrics.pairs) and rnd.detector.arguments["seed"] == 0
    # random is content-addressed: scores do not move between runs or batch sizes.
    again = CliRunner().invoke(cli, ["evaluate", "--detector", "random", "--data", str(data_dir), "--profile", "v3", "--datasets", ",".join(SETS),
                                     "--out", str(tmp_path / "again"), "--bootstrap", "50", "--num-workers", "0", "--batch-size", "7", "--no-progress"])
    assert again.exit_code == 0 and _scores(tmp_path / "again" / "random") == _scores(tmp_path / "random")


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_work_units_ramp_up_then_cover_every_row_once(workers):
    from afpbench.evaluate.pipeline import plan_work_units

    rows = np.array([r for r in range(300) if r % 7])  # a resumed run: holes in the rows
    units = plan_work_units({"a": rows[:200], "b": rows[200:]}, 32, small_first=workers)
    sizes = [len(u) for _, u in units]
    # the scorer starts after a quarter batch per worker, then half batches, then full ones
    if workers:
        assert sizes[: 2 * workers] == [8] * workers + [16] * workers
    assert max(sizes) == 32 and all(s <= 32 for s in sizes)
    got = np.concatenate([u for _, u in units])
    assert got.tolist() == rows.tolist()
    assert [n for n, _ in units] == sorted(n for n, _ in units)
