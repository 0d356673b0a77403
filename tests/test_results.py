"""Results/leaderboard/predictions models, shipped JSON Schemas, predictions I/O and compute_metrics."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import jsonschema
import numpy as np
import pytest
from helpers import REPO

from afpbench import results as R
from afpbench.errors import AfpbenchError
from afpbench.metrics import BootstrapConfig
from afpbench.scoring import compute_metrics

BOOT = BootstrapConfig(n_resamples=200, seed=0)


def _preds(name: str, label: int, n: int, rng: np.random.Generator, role: str = "held-out", shift: float = 0.3) -> R.Predictions:
    scores = np.clip(rng.normal(0.35 + shift * label, 0.2, n), 0, 1)
    return R.Predictions([f"{name}/{i}" for i in range(n)], np.full(n, label, np.int8), scores, (scores >= 0.5).astype(np.int8))


def _sets(rng=None) -> dict[str, R.Predictions]:
    rng = rng or np.random.default_rng(0)
    return {
        "coco": _preds("coco", 0, 60, rng, "held-in"),
        "flickr": _preds("flickr", 0, 50, rng),
        "sd2": _preds("sd2", 1, 40, rng),
        "sdxl": _preds("sdxl", 1, 45, rng),
    }


def _results_file(metrics: R.MetricsBlock, **over) -> R.ResultsFile:
    info = [
        R.DatasetInfo(
            name=n, role="held-in" if n == "coco" else "held-out", label=m.label, fingerprint="f" * 64, rows_total=m.n,
            rows_evaluated=m.n, predictions=R.PredictionsFileInfo(path=f"predictions/{n}.parquet", sha256="0" * 64, rows=m.n),
        )
        for n, m in metrics.per_set.items()
    ]
    base = dict(
        created="2026-01-01T00:00:00Z", afpbench_version="0.1.0", git=R.GitInfo(commit="abc", dirty=False),
        environment=R.Environment(python="3.11", platform="linux"), detector=R.DetectorInfo(name="toy", full_name="toy"),
        profile="v3", threshold=R.ThresholdPolicy(kind="fixed", value=0.5, source="default"),
        bootstrap=R.BootstrapInfo(n_resamples=200, seed=0, confidence=0.95),
        run=R.RunInfo(device="cpu", batch_size=8, num_processes=1, num_workers=0, detectors_in_pass=1, rows_scored=195, rows_cached=0, wall_seconds=1.0, score_seconds=0.5),
        datasets=info, metrics=metrics,
    )
    base.update(over)
    return R.ResultsFile(**base)


def test_shipped_schemas_are_current():
    # A model change without re-exporting the schemas fails here.
    generated = R.schemas()
    for folder in (REPO / "afpbench" / "schemas", REPO / "docs" / "schemas"):
        for name, schema in generated.items():
            shipped = json.loads((folder / f"{name}.schema.json").read_text())
            assert shipped == json.loads(json.dumps(schema)), f"{folder}/{name}.schema.json is stale: run afpbench.results.export_schemas"


def test_schema_version_first_and_every_field_described():
    for name, schema in R.schemas().items():
        assert list(schema["properties"])[0] == "schema_version", name
        holders = [schema, *schema.get("$defs", {}).values()]
        for h in holders:
            for field, spec in h.get("properties", {}).items():
                assert spec.get("description"), f"{name}: {h.get('title')}.{field} has no description"


def test_compute_metrics_default_pool_and_pairs():
    sets = _sets()
    roles = {"coco": "held-in", "flickr": "held-out", "sd2": "held-out", "sdxl": "held-out"}
    m = compute_metrics(sets, roles, None, BOOT)
    assert m.pairing.real_pool == ["flickr"] and m.pairing.rule.startswith("default")
    assert [p.fake for p in m.pairs] == ["sd2", "sdxl"]
    assert m.pairs[0].real == ["flickr"] and m.pairs[0].n_real == 50 and m.pairs[0].n_fake == 40
    for n, p in sets.items():
        assert m.per_set[n].accuracy.value == pytest.approx(float((p.labels == p.preds).mean()))
    assert m.averages.n_sets == 4 and m.averages.n_held_out == 3
    assert m.averages.held_out.value == pytest.approx(np.mean([m.per_set[n].accuracy.value for n in ("flickr", "sd2", "sdxl")]))
    # coco joins the pool only when asked; the pool order does not change the numbers.
    both = compute_metrics(sets, roles, ["flickr", "coco"], BOOT)
    assert both.pairs[0].n_real == 110 and both.pairing.rule == "explicit"
    swapped = compute_metrics(dict(reversed(list(sets.items()))), roles, ["coco", "flickr"], BOOT)
    assert {p.fake: p.auc for p in swapped.pairs} == {p.fake: p.auc for p in both.pairs}


def test_compute_metrics_errors():
    sets = _sets()
    roles = {n: "held-out" for n in sets}
    with pytest.raises(AfpbenchError, match="was not evaluated"):
        compute_metrics(sets, roles, ["ffhq"], BOOT)
    with pytest.raises(AfpbenchError, match="is fake, not real"):
        compute_metrics(sets, roles, ["sd2"], BOOT)
    bad = dict(sets)
    bad["sd2"] = R.Predictions(bad["sd2"].ids, bad["sd2"].labels, np.where(np.arange(40) == 3, np.nan, bad["sd2"].scores), bad["sd2"].preds)
    with pytest.raises(AfpbenchError, match="NaN or infinite"):
        compute_metrics(bad, roles, None, BOOT)
    empty = {"x": R.Predictions([], np.zeros(0, np.int8), np.zeros(0), np.zeros(0, np.int8))}
    with pytest.raises(AfpbenchError, match="no rows"):
        compute_metrics(empty, {"x": "held-out"}, None, BOOT)


def test_mixed_set_is_scored_on_its_own():
    rng = np.random.default_rng(1)
    a, b = _preds("m", 0, 30, rng), _preds("m", 1, 30, rng)
    mixed = R.Predictions(a.ids + [i + "f" for i in b.ids], np.r_[a.labels, b.labels], np.r_[a.scores, b.scores], np.r_[a.preds, b.preds])
    m = compute_metrics({"mine": mixed}, {"mine": "held-out"}, None, BOOT)
    assert m.per_set["mine"].label == "mixed"
    assert m.pairs[0].fake == "mine" and m.pairs[0].real == [] and m.pairs[0].n_real == 30


def test_results_roundtrip_jsonschema_and_refusals(tmp_path):
    metrics = compute_metrics(_sets(), {"coco": "held-in", "flickr": "held-out", "sd2": "held-out", "sdxl": "held-out"}, None, BOOT)
    path = R.dump_json(_results_file(metrics), tmp_path / "r" / "results.json")
    data = json.loads(path.read_text())
    assert list(data)[0] == "schema_version"
    jsonschema.validate(data, json.loads((REPO / "afpbench" / "schemas" / "results.schema.json").read_text()))
    loaded = R.load_results(path.parent)  # a folder means its results.json
    assert loaded == R.load_results(path)
    assert loaded.metrics.per_set["sd2"].accuracy == metrics.per_set["sd2"].accuracy

    newer = dict(data, schema_version=R.SCHEMA_VERSION + 1)
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    with pytest.raises(AfpbenchError, match="newer than this afpbench reads.*upgrade afpbench"):
        R.load_results(tmp_path / "newer.json")
    broken = dict(data)
    del broken["threshold"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(AfpbenchError, match="fails results schema validation at threshold") as exc:
        R.load_results(tmp_path / "broken.json")
    assert "\n" not in str(exc.value)
    extra = dict(data, surprise=1)
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    with pytest.raises(AfpbenchError, match="schema validation at surprise"):
        R.load_results(tmp_path / "extra.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(AfpbenchError, match="not valid JSON"):
        R.load_results(tmp_path / "junk.json")
    with pytest.raises(AfpbenchError, match="No results file"):
        R.load_results(tmp_path / "missing.json")


def _meta(**over) -> R.PredictionsMeta:
    base = dict(
        dataset="sd2", position=2, role="held-out", label="fake", family="text-to-image", fingerprint="abc", recipe={"name": "sd2", "version": 1},
        rows_total=2, rows_evaluated=2, limit=None, detector="toy", weights_sha256=None, perturbation=None,
        threshold=R.ThresholdPolicy(kind="fixed", value=0.5, source="default"), real_pool=None,
        bootstrap=R.BootstrapInfo(n_resamples=200, seed=0, confidence=0.95), profile="v3", cache_key="0123456789abcdef", evaluation_id="e1",
    )
    base.update(over)
    return R.PredictionsMeta(**base)


def test_predictions_io(tmp_path):
    meta = _meta()
    digest = R.write_predictions(tmp_path / "p" / "sd2.parquet", ["a", "b"], [1, 1], [0.2, 0.9], [0, 1], meta)
    assert digest == hashlib.sha256((tmp_path / "p" / "sd2.parquet").read_bytes()).hexdigest()
    p = R.read_predictions(tmp_path / "p" / "sd2.parquet")
    assert p.ids == ["a", "b"] and p.labels.tolist() == [1, 1] and p.scores.tolist() == [0.2, 0.9] and p.preds.tolist() == [0, 1]
    assert p.meta == meta and p.name == "sd2"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(AfpbenchError, match="not an afpbench predictions file"):
        R.read_predictions(tmp_path / "other.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"nope")
    with pytest.raises(AfpbenchError, match="not a readable parquet"):
        R.read_predictions(tmp_path / "bad.parquet")


def _rewrite_meta(path, fn) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    data = json.loads(table.schema.metadata[R.PREDICTIONS_META_KEY])
    fn(data)
    pq.write_table(table.replace_schema_metadata({R.PREDICTIONS_META_KEY: json.dumps(data).encode()}), path)


def test_predictions_metadata_is_validated_not_defaulted(tmp_path):
    """A required field that is missing is refused in one line naming the fix (no silent
    default role, position or bootstrap); a file written before evaluation ids were
    recorded still reads, with no id."""
    import pyarrow.parquet as pq

    path = tmp_path / "sd2.parquet"
    R.write_predictions(path, ["a", "b"], [1, 1], [0.2, 0.9], [0, 1], _meta())
    stored = json.loads(pq.read_schema(path).metadata[R.PREDICTIONS_META_KEY])
    assert list(stored) == sorted(stored) and stored["threshold"] == {"kind": "fixed", "value": 0.5, "source": "default", "calibration_sets": []}
    _rewrite_meta(path, lambda m: m.pop("evaluation_id"))
    assert R.read_predictions(path).meta.evaluation_id is None
    for field in ("role", "position", "bootstrap"):
        R.write_predictions(path, ["a", "b"], [1, 1], [0.2, 0.9], [0, 1], _meta())
        _rewrite_meta(path, lambda m, field=field: m.pop(field))
        with pytest.raises(AfpbenchError, match=rf"fails predictions schema validation at {field}: Field required .*evaluate again to rewrite it") as exc:
            R.read_predictions(path)
        assert "\n" not in str(exc.value)
    R.write_predictions(path, ["a", "b"], [1, 1], [0.2, 0.9], [0, 1], _meta())
    _rewrite_meta(path, lambda m: m.update(schema_version=R.SCHEMA_VERSION + 1))
    with pytest.raises(AfpbenchError, match="newer than this afpbench reads.*upgrade afpbench"):
        R.read_predictions(path)


def test_environment_of_older_results_files_reads_into_packages():
    env = R.Environment.model_validate({"python": "3.11", "platform": "linux", "numpy": "2.0", "torch": None, "cuda": None, "gpu_name": None})
    assert env.packages == {"numpy": "2.0", "torch": None} and env.python == "3.11"
    with pytest.raises(Exception, match="surprise"):
        R.Environment.model_validate({"python": "3.11", "platform": "linux", "surprise": 1})


def test_results_module_stays_light():
    # The results/metrics/leaderboard modules are used by `afpbench score` and
    # `afpbench leaderboard`, which must not pay for torch.
    code = ("import sys, afpbench.results, afpbench.metrics, afpbench.leaderboard, afpbench.perturb, afpbench.evaluate, afpbench.scoring, "
            "afpbench.cli.score, afpbench.cli.leaderboard, afpbench.cli.evaluate; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
