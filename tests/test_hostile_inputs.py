"""Hostile inputs: every file afpbench reads is edited on disk the way a user, a broken
copy or a tamperer would, and the tool must refuse it in one line instead of trusting it.

Datasets (evaluate, verify), results files (leaderboard) and predictions files (score)
are made for real by the library, then patched in place.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from afpbench.cli import cli as cli_group
from afpbench.dataset import DatasetWriter, WriterOptions, decode_image, make_row, open_dataset, verify
from afpbench.errors import AfpbenchError, DatasetError
from afpbench.evaluate import EvalConfig, evaluate
from afpbench.leaderboard import build_site
from afpbench.results import PREDICTIONS_META_KEY, DetectorInfo, load_leaderboard, load_results, read_predictions
from afpbench.scoring import score_predictions


class Toy:
    """A plugin-style detector: P(fake) from high-frequency energy (noisy crops = fake)."""

    name = "toy"

    def __init__(self, tag=None, gain=40.0):
        self.tag, self.gain = tag, gain
        self.weights_sha256, self.threshold, self.threshold_policy = None, 0.5, "fixed: 0.5"

    @property
    def full_name(self):
        return f"{self.name}.{self.tag}" if self.tag else self.name

    def arguments(self):
        return {"gain": self.gain}

    def describe(self):
        return DetectorInfo(name=self.name, tag=self.tag, full_name=self.full_name, arguments=self.arguments(), weights_sha256=self.weights_sha256)

    def preprocess(self, image, row=None):
        return torch.from_numpy(np.asarray(image.convert("L").resize((32, 32)), dtype=np.float32) / 255.0)[None]

    def collate(self, items):
        return torch.stack(items)

    def score(self, batch):
        hf = (batch[..., 1:, :] - batch[..., :-1, :]).abs().mean(dim=(1, 2, 3))
        return torch.sigmoid((hf - 0.06) * self.gain)


def _crops(photos, n, offset, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = photos[(offset + i) % len(photos)][1]
        s = min(img.size) // 2
        box = (i * 13 % (img.width - s), i * 7 % (img.height - s))
        crop = img.crop((*box, box[0] + s, box[1] + s)).resize((32, 32))
        if noise:
            crop = Image.fromarray(np.clip(np.asarray(crop, np.float32) + rng.normal(0, noise, (32, 32, 3)), 0, 255).astype(np.uint8))
        out.append(crop)
    return out


def _bmp_set(root: Path, name: str, images, label: int, shard_bytes: int | None = None) -> Path:
    """A set of BMP images: uncompressed pixels, so a byte flipped inside an image still
    decodes (to another image) and only the hashes can tell."""
    opts = WriterOptions(shard_bytes=shard_bytes) if shard_bytes else None
    with DatasetWriter(root, name, info={"recipe": {"name": name, "version": 1}}, options=opts) as w:
        for i, img in enumerate(images):
            buf = io.BytesIO()
            img.save(buf, format="BMP")
            w.add(make_row(id=f"{name}/{i:05d}", image=buf.getvalue(), label=label, dataset=name, prompt=f"p{i}", width=32, height=32, format="bmp"), index=i)
    w.finalize()
    return root / name


@pytest.fixture(scope="module")
def data(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("hostile-data")
    _bmp_set(root, "flickr", _crops(photos, 8, 0), 0)
    _bmp_set(root, "sd2", _crops(photos, 8, 3, 25, 1), 1)
    # Several shards (about 4 images each), so --limit reads only some of them.
    _bmp_set(root, "sdxl", _crops(photos, 12, 5, 12, 2), 1, shard_bytes=4 * 3200)
    assert len(open_dataset(root / "sdxl").shards) >= 3
    return root


def _copy(data: Path, dst: Path, names=("flickr", "sd2", "sdxl")) -> Path:
    for n in names:
        shutil.copytree(data / n, dst / n)
    return dst


def _cfg(data: Path, out: Path, **kw) -> EvalConfig:
    base = dict(detectors=[Toy()], data=[data], datasets=["flickr", "sd2", "sdxl"], profile="v3", out=out, batch_size=4, bootstrap=50, num_workers=0, progress=False)
    base.update(kw)
    return EvalConfig(**base)


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _write_manifest(folder: Path, m: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(m, indent=2))


def _patch_image_in_place(shard: Path, row: int = 1) -> None:
    """Flip one pixel byte of a row's image inside the shard file: same size, still a
    valid parquet file whose image still decodes, only to other pixels."""
    before = pq.read_table(shard).column("image")[row].as_py()["bytes"]
    window = before[len(before) // 2 : len(before) // 2 + 48]
    data = bytearray(shard.read_bytes())
    at = data.find(window)
    assert at > 0 and data.find(window, at + 1) == -1
    size = len(data)
    data[at + 10] ^= 0x5A
    shard.write_bytes(bytes(data))
    assert shard.stat().st_size == size
    after = pq.read_table(shard).column("image")[row].as_py()["bytes"]  # still parses
    assert after != before and decode_image(after).size == (32, 32)  # and still decodes


def _nothing_written(out: Path) -> bool:
    return not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- evaluate -----------------------------------------------------------------------------
def test_evaluate_refuses_a_shard_patched_in_place(data, tmp_path):
    d = _copy(data, tmp_path / "data")
    shard = open_dataset(d / "sd2").shards[0]
    _patch_image_in_place(shard)
    # The reader's cheap checks (file present, listed size) cannot see it.
    open_dataset(d / "sd2")
    with pytest.raises(DatasetError) as exc:
        evaluate(_cfg(d, tmp_path / "out"))
    msg = str(exc.value)
    assert "Set 'sd2'" in msg and shard.name in msg and "sha256" in msg and "afpbench verify" in msg and "rebuild" in msg
    assert "\n" not in msg
    assert _nothing_written(tmp_path / "out")


def test_evaluate_refuses_a_patched_shard_whose_hash_was_updated(data, tmp_path):
    """The shard is patched and the manifest's sha256 rewritten to match: only the
    recomputed content fingerprint shows the scored rows are not the set's."""
    d = _copy(data, tmp_path / "data")
    shard = open_dataset(d / "flickr").shards[0]
    _patch_image_in_place(shard, row=5)
    m = _manifest(d / "flickr")
    m["shards"][0]["sha256"] = _sha(shard)
    _write_manifest(d / "flickr", m)
    with pytest.raises(DatasetError, match=r"Set 'flickr'.*content fingerprint .* differs from the manifest's.*afpbench verify"):
        evaluate(_cfg(d, tmp_path / "out"))
    assert _nothing_written(tmp_path / "out")


@pytest.mark.parametrize("edit", ["num_rows", "num_rows_and_shard_rows", "counts", "fingerprint"])
def test_evaluate_refuses_a_manifest_whose_claims_were_edited(data, tmp_path, edit):
    d = _copy(data, tmp_path / "data")
    m = _manifest(d / "sd2")
    if edit == "num_rows":  # 8 -> 6: the last rows would silently not be scored
        m["num_rows"] = 6
        expect = r"contradicts itself \(its shards hold 8 rows in total, its num_rows says 6\)"
    elif edit == "num_rows_and_shard_rows":  # consistent lies: the parquet footer tells
        m["num_rows"], m["shards"][0]["num_rows"], m["counts"]["fake"], m["formats"]["bmp"] = 6, 6, 6, 6
        expect = r"does not match its manifest: data/test-00000-of-00001.parquet: 8 rows, manifest says 6"
    elif edit == "counts":  # the set claims to be real images
        m["counts"] = {"real": 8, "fake": 0}
        expect = r"label counts in the shards are \{'real': 0, 'fake': 8\}, manifest says \{'real': 8, 'fake': 0\}"
    else:  # a fingerprint borrowed from another build would be published as this one's
        m["fingerprint"] = _manifest(d / "flickr")["fingerprint"]
        expect = r"content fingerprint .* differs from the manifest's"
    _write_manifest(d / "sd2", m)
    with pytest.raises(DatasetError, match=expect) as exc:
        evaluate(_cfg(d, tmp_path / "out"))
    assert "sd2" in str(exc.value) and "afpbench verify" in str(exc.value) and "\n" not in str(exc.value)
    assert _nothing_written(tmp_path / "out")


def test_limit_reads_only_verified_shards(data, tmp_path):
    d = _copy(data, tmp_path / "data")
    shards = open_dataset(d / "sdxl").shards
    # A patch in the last shard: a --limit run that reads only the first shard is fine
    # (the shards it reads are hashed), a full run is refused.
    _patch_image_in_place(shards[-1], row=0)
    [path] = [e.path for e in evaluate(_cfg(d, tmp_path / "limited", limit=3))]
    res = load_results(path)
    assert res.run.limit == 3 and res.run.verify_seconds is not None
    assert {x.name: x.rows_evaluated for x in res.datasets}["sdxl"] == 3
    with pytest.raises(DatasetError, match=rf"Set 'sdxl'.*{shards[-1].name}: sha256"):
        evaluate(_cfg(d, tmp_path / "full"))
    # A patch in a shard the limit reads is refused too: --limit never scores unchecked bytes.
    _patch_image_in_place(shards[0], row=1)
    with pytest.raises(DatasetError, match=rf"Set 'sdxl'.*{shards[0].name}: sha256"):
        evaluate(_cfg(d, tmp_path / "limited2", limit=3))
    assert _nothing_written(tmp_path / "limited2")


def test_evaluate_cli_refuses_in_one_line(data, tmp_path, cli):
    d = _copy(data, tmp_path / "data", names=("sd2",))
    _patch_image_in_place(open_dataset(d / "sd2").shards[0])
    proc = cli("evaluate", "--detector", "constant.fake", "--data", str(d), "--datasets", "sd2", "--out", str(tmp_path / "out"),
               "--num-workers", "0", "--bootstrap", "10", "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: Set 'sd2'") and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "afpbench verify" in proc.stderr
    assert _nothing_written(tmp_path / "out")


# -- verify -------------------------------------------------------------------------------
MALFORMED = {
    "invalid JSON": (lambda m: "{\"schema_version\": 1, ", r"is not valid JSON"),
    "not an object": (lambda m: [m], r"is not a JSON object"),
    "no shards": (lambda m: {k: v for k, v in m.items() if k != "shards"}, r"malformed at shards: Field required"),
    "shards not a list": (lambda m: {**m, "shards": {"a": 1}}, r"malformed at shards: Input should be a valid list"),
    "num_rows a string": (lambda m: {**m, "num_rows": "8"}, r"malformed at num_rows: Input should be a valid integer"),
    "shard without sha256": (lambda m: {**m, "shards": [{k: v for k, v in m["shards"][0].items() if k != "sha256"}]}, r"malformed at shards\.0\.sha256: Field required"),
    "shard path escaping": (lambda m: {**m, "shards": [{**m["shards"][0], "path": "../flickr/data/test-00000-of-00001.parquet"}]}, r"malformed at shards\.0\.path: .*inside the set folder"),
    "unknown label": (lambda m: {**m, "counts": {"real": 0, "fake": 4, "maybe": 4}}, r"malformed at counts: .*label\(s\) maybe"),
    "schema_version missing": (lambda m: {k: v for k, v in m.items() if k != "schema_version"}, r"malformed at schema_version: Field required"),
    "schema_version newer": (lambda m: {**m, "schema_version": 99}, r"newer than this afpbench understands.*upgrade afpbench"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_verify_reports_a_malformed_manifest_in_one_line(data, tmp_path, case):
    d = _copy(data, tmp_path / "data", names=("sd2",)) / "sd2"
    edit, expect = MALFORMED[case]
    new = edit(_manifest(d))
    (d / "manifest.json").write_text(new if isinstance(new, str) else json.dumps(new))
    rep = verify(d)
    assert not rep.ok and len(rep.problems) == 1
    assert "manifest.json" in rep.problems[0] and "\n" not in rep.problems[0]
    assert re.search(expect, rep.problems[0]), rep.problems[0]
    # Opening the set for evaluation refuses it the same way.
    with pytest.raises(DatasetError, match=expect):
        open_dataset(d)
    out = CliRunner().invoke(cli_group, ["verify", str(d)])
    assert out.exit_code == 1
    assert out.output.count("\n") == 1 and out.output.startswith(f"BAD {d}: ")


@pytest.mark.parametrize(
    "edit, expect",
    [
        (lambda m, d: m.update(num_rows=7), ["its shards hold 8 rows in total, its num_rows says 7", "8 rows in the shards, manifest says 7"]),
        (lambda m, d: m.update(counts={"real": 3, "fake": 5}), ["label counts in the shards are {'real': 0, 'fake': 8}, manifest says {'real': 3, 'fake': 5}"]),
        (lambda m, d: m.update(formats={"png": 8}), ["format counts in the shards are {'bmp': 8}, manifest says {'png': 8}"]),
        (lambda m, d: m["shards"][0].update(num_rows=9), ["its shards hold 9 rows in total", "data/test-00000-of-00001.parquet: 8 rows, manifest says 9"]),
        (lambda m, d: m.update(fingerprint="0" * 64), ["content fingerprint"]),
        (lambda m, d: m.update(schema_version=0), ["malformed at schema_version: Input should be greater than or equal to 1"]),
        (lambda m, d: shutil.copy(d / m["shards"][0]["path"], d / "data" / "test-00001-of-00001.parquet"), ["data/test-00001-of-00001.parquet: not listed in the manifest"]),
        (lambda m, d: (d / m["shards"][0]["path"]).unlink(), ["data/test-00000-of-00001.parquet: missing"]),
    ],
    ids=["row count", "label counts", "format counts", "shard row count", "fingerprint", "schema version", "unlisted shard", "missing shard"],
)
def test_verify_checks_the_manifest_claims_against_the_content(data, tmp_path, edit, expect):
    d = _copy(data, tmp_path / "data", names=("sd2",)) / "sd2"
    assert verify(d).ok
    m = _manifest(d)
    edit(m, d)
    _write_manifest(d, m)
    rep = verify(d)
    assert not rep.ok
    for e in expect:
        assert any(e in p for p in rep.problems), (e, rep.problems)
    assert all("\n" not in p for p in rep.problems)


def test_verify_cli_on_a_manifest_without_shards(data, tmp_path, cli):
    d = _copy(data, tmp_path / "data", names=("sd2",)) / "sd2"
    m = _manifest(d)
    del m["shards"]
    _write_manifest(d, m)
    proc = cli("verify", str(d))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "malformed at shards: Field required" in proc.stderr


# -- leaderboard ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def results(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-results")
    [path] = [e.path for e in evaluate(_cfg(data, root / "main"))]
    [other] = [e.path for e in evaluate(_cfg(data, root / "again"))]  # the same command, a second evaluation
    return {"root": root, "main": path, "again": other}


def _results_copy(results, tmp_path: Path, key: str = "main") -> Path:
    n = 0
    while (tmp_path / f"copy-{key}-{n}").exists():
        n += 1
    dst = tmp_path / f"copy-{key}-{n}"
    shutil.copytree(results[key].parent, dst)
    return dst / "results.json"


def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))  # NaN/inf are written as JSON's NaN/Infinity literals


def test_measured_rows_are_recomputed_from_the_predictions(results, tmp_path):
    """A clean results file is accepted and its row equals an independent computation
    (scikit-learn) from its predictions files."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    board = load_leaderboard(build_site([results["main"]], tmp_path / "site"))
    [row] = [e for e in board.entries if e.source == "measured"]
    preds = {p.stem: read_predictions(p) for p in (results["main"].parent / "predictions").glob("*.parquet")}
    for name, p in preds.items():
        assert row.per_set[name].value == pytest.approx(accuracy_score(p.labels, p.preds), abs=1e-12)
    aucs = [roc_auc_score(np.r_[preds["flickr"].labels, preds[f].labels], np.r_[preds["flickr"].scores, preds[f].scores]) for f in ("sd2", "sdxl")]
    assert row.mean_auc == pytest.approx(np.mean(aucs), abs=1e-12)
    # The paper's reported rows are kept as they are.
    afp = next(e for e in board.entries if e.detector == "AntifakePrompt")
    assert afp.source == "reported" and afp.per_set["sd2"].value == pytest.approx(0.9833)


@pytest.mark.parametrize(
    "edit, expect",
    [
        (lambda r: r["metrics"]["averages"]["all"].update(value=0.99), r"metrics\.averages\.all\.value is 0\.99 in the file but .* recomputed from its predictions"),
        (lambda r: r["metrics"]["per_set"]["sd2"]["accuracy"].update(value=1.7), r"fails results schema validation at metrics\.per_set\.sd2\.accuracy\.value: Input should be less than or equal to 1"),
        (lambda r: r["metrics"]["per_set"]["sd2"]["accuracy"].update(value=math.nan), r"at metrics\.per_set\.sd2\.accuracy\.value: Input should be a finite number"),
        (lambda r: r["metrics"]["averages"]["held_out"].update(ci_high=math.inf), r"at metrics\.averages\.held_out\.ci_high: Input should be a finite number"),
        (lambda r: r["metrics"]["pairs"][0]["auc"].update(ci_low=r["metrics"]["pairs"][0]["auc"]["ci_low"] - 0.01), r"metrics\.pairs\.0\.auc\.ci_low is .* recomputed"),
        (lambda r: r["run"].update(images_per_second=-5.0), r"at run\.images_per_second: Input should be greater than or equal to 0"),
        (lambda r: r["datasets"][0]["predictions"].update(path="../../elsewhere.parquet"), r"at datasets\.0\.predictions\.path: .*inside the results folder"),
    ],
    ids=["edited average", "accuracy 170%", "NaN", "infinite interval", "edited interval", "negative throughput", "path outside"],
)
def test_leaderboard_refuses_edited_numbers(results, tmp_path, edit, expect):
    path = _results_copy(results, tmp_path)
    _edit_json(path, edit)
    with pytest.raises(AfpbenchError, match=expect) as exc:
        build_site([path], tmp_path / "site")
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "site" / "leaderboard.json").exists()


def test_leaderboard_refuses_missing_or_foreign_predictions(results, tmp_path):
    # Deleted.
    path = _results_copy(results, tmp_path)
    (path.parent / "predictions" / "sd2.parquet").unlink()
    with pytest.raises(AfpbenchError, match=r"lists predictions .*sd2\.parquet, which is missing"):
        build_site([path], tmp_path / "site")
    # Swapped for the same set's file from another evaluation, the hash updated to match.
    path = _results_copy(results, tmp_path, "again")
    foreign = results["main"].parent / "predictions" / "sd2.parquet"
    shutil.copy(foreign, path.parent / "predictions" / "sd2.parquet")
    _edit_json(path, lambda r: next(d for d in r["datasets"] if d["name"] == "sd2")["predictions"].update(sha256=_sha(foreign)))
    with pytest.raises(AfpbenchError, match=r"sd2\.parquet comes from another evaluation than the results file"):
        build_site([path], tmp_path / "site2")
    # Predictions flipped (and rehashed): they no longer follow the recorded threshold.
    path = _results_copy(results, tmp_path, "main")
    pfile = path.parent / "predictions" / "sd2.parquet"
    t = pq.read_table(pfile)
    t = t.set_column(t.schema.get_field_index("pred"), "pred", pa.array(1 - t.column("pred").to_numpy(), pa.int8()))
    pq.write_table(t, pfile)
    _edit_json(path, lambda r: next(d for d in r["datasets"] if d["name"] == "sd2")["predictions"].update(sha256=_sha(pfile)))
    with pytest.raises(AfpbenchError, match=r"sd2\.parquet holds predictions that do not follow the recorded threshold"):
        build_site([path], tmp_path / "site3")


def test_leaderboard_refuses_scores_edited_with_their_hash(results, tmp_path):
    """Scores and predictions edited consistently and rehashed: the recomputed metrics
    differ from the results file's."""
    path = _results_copy(results, tmp_path)
    pfile = path.parent / "predictions" / "flickr.parquet"
    t = pq.read_table(pfile)
    assert t.column("pred").to_numpy().sum() < t.num_rows  # some real images were called real
    # Every real image now "called fake" with a high score, consistently with the threshold.
    t = t.set_column(t.schema.get_field_index("score"), "score", pa.array(np.full(t.num_rows, 0.99)))
    t = t.set_column(t.schema.get_field_index("pred"), "pred", pa.array(np.ones(t.num_rows, np.int8), pa.int8()))
    pq.write_table(t, pfile)
    _edit_json(path, lambda r: next(d for d in r["datasets"] if d["name"] == "flickr")["predictions"].update(sha256=_sha(pfile)))
    with pytest.raises(AfpbenchError, match=r"metrics\.per_set\.flickr\.accuracy\.value is .* in the file but 0\.0 recomputed from its predictions"):
        build_site([path], tmp_path / "site")


def test_leaderboard_cli_refuses_in_one_line(results, tmp_path, cli):
    path = _results_copy(results, tmp_path)
    _edit_json(path, lambda r: r["metrics"]["averages"]["all"].update(value=math.nan))
    proc = cli("leaderboard", str(path), "--out", str(tmp_path / "site"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "finite number" in proc.stderr
    # A parquet file given where a results file is expected.
    proc = cli("leaderboard", str(results["main"].parent / "predictions" / "sd2.parquet"), "--out", str(tmp_path / "site"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a results file" in proc.stderr


# -- score ------------------------------------------------------------------------------------
def test_score_refuses_files_of_different_evaluations(results, data, tmp_path, photos):
    main, again = results["main"].parent / "predictions", results["again"].parent / "predictions"
    with pytest.raises(AfpbenchError, match=r"come from 2 different evaluations.*pass the files of one evaluation"):
        score_predictions([main / "flickr.parquet", again / "sd2.parquet", main / "sdxl.parquet"])
    # Another build of sd2, evaluated on its own: a different evaluation too (the very
    # case of files from two data builds, which --data used to be needed to catch).
    other = _copy(data, tmp_path / "other", names=("flickr", "sdxl"))
    _bmp_set(other, "sd2", _crops(photos, 8, 4, 25, 7), 1)
    [p] = [e.path for e in evaluate(_cfg(other, tmp_path / "otherres", datasets=["sd2"]))]
    assert read_predictions(p.parent / "predictions" / "sd2.parquet").meta.fingerprint != read_predictions(main / "sd2.parquet").meta.fingerprint
    out = CliRunner().invoke(cli_group, ["score", str(main / "flickr.parquet"), str(p.parent / "predictions" / "sd2.parquet")])
    assert out.exit_code != 0 and isinstance(out.exception, AfpbenchError) and "different evaluations" in str(out.exception)
    # The files of one evaluation score to the results file's numbers.
    metrics, _ = score_predictions([results["main"].parent])
    assert metrics == load_results(results["main"]).metrics


def test_score_takes_a_results_folders_listed_files_not_stale_ones(data, tmp_path):
    out = tmp_path / "res"
    evaluate(_cfg(data, out, datasets=["flickr", "sd2"]))
    # sd2 alone again into the same folder: flickr.parquet there is now from another run.
    [path] = [e.path for e in evaluate(_cfg(data, out, datasets=["sd2"]))]
    assert (out / "toy" / "predictions" / "flickr.parquet").is_file()
    metrics, preds = score_predictions([out / "toy"])
    assert [p.name for p in preds] == ["sd2"] and metrics == load_results(path).metrics
    with pytest.raises(AfpbenchError, match="different evaluations"):
        score_predictions(sorted((out / "toy" / "predictions").glob("*.parquet")))


def test_score_accepts_files_without_an_evaluation_id_only_with_data(results, data, tmp_path):
    """Files written before evaluation ids were recorded still score, once --data has
    checked them against the sets' fingerprints."""
    folder = tmp_path / "legacy"
    shutil.copytree(results["main"].parent / "predictions", folder)
    for f in folder.glob("*.parquet"):
        t = pq.read_table(f)
        meta = json.loads(t.schema.metadata[PREDICTIONS_META_KEY])
        del meta["evaluation_id"]
        pq.write_table(t.replace_schema_metadata({PREDICTIONS_META_KEY: json.dumps(meta).encode()}), f)
    with pytest.raises(DatasetError, match=r"records no evaluation id .*pass --data DIR"):
        score_predictions([folder])
    metrics, _ = score_predictions([folder], data=[data])
    assert metrics == load_results(results["main"]).metrics


def test_metric_bounds_refuse_values_but_not_rounding():
    from pydantic import ValidationError

    from afpbench.metrics import Estimate
    from afpbench.results import Metric

    above = math.nextafter(1.0, 2.0)  # a sum of float steps one ulp past 1
    m = Metric.of(Estimate(above, 0.9, above))
    assert m.value == 1.0 and m.ci_high == 1.0 and m.ci_low == 0.9
    for bad in (Estimate(1.7, 0.9, 1.0), Estimate(-0.1, 0.0, 0.2)):
        with pytest.raises(ValidationError):
            Metric.of(bad)
    with pytest.raises(ValidationError, match="ci_low .* is above ci_high"):
        Metric(value=0.5, ci_low=0.6, ci_high=0.4)
    assert Metric.of(Estimate(math.nan, math.nan, math.nan)).value is None  # undefined stays null
