"""Rebuilds of one recipe: the recipe fingerprint is shared where content fingerprints differ."""

from __future__ import annotations

import json
import math

import pytest
from helpers import run_cli

from afpbench.compare import compare, recipe_fingerprint_of
from afpbench.dataset import open_dataset, recipe_fingerprint


@pytest.fixture(scope="module")
def captions(tmp_path_factory):
    p = tmp_path_factory.mktemp("caps") / "captions.txt"
    p.write_text("a red bus on a street\na cat asleep on a mat\ntwo dogs in the snow\na bowl of fruit\n")
    return p


def _build(out, sd, captions, threads: int = 1, **kw):
    import torch

    from afpbench.build import build
    from afpbench.plan import BuildConfig

    cfg = BuildConfig(out=out, count=4, model=str(sd), source=str(captions), quiet=True, device="cpu", batch_size=4,
                      params={"height": 64, "width": 64, "num_inference_steps": 3, **kw.pop("params", {})}, **kw)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # a build's bytes depend on the thread count (reduction order)
    try:
        return build("sd2", cfg)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def builds(tmp_path_factory, sd, captions):
    root = tmp_path_factory.mktemp("rebuilds")
    return {
        "t1": _build(root / "t1", sd, captions, threads=1),
        "t2": _build(root / "t2", sd, captions, threads=2),
        "bf16": _build(root / "bf16", sd, captions, dtype="bf16"),
        "seed1": _build(root / "seed1", sd, captions, seed=1),
    }


def test_faithful_rebuilds_share_the_recipe_fingerprint(builds):
    t1, t2, bf16 = (recipe_fingerprint_of(builds[k]) for k in ("t1", "t2", "bf16"))
    assert t1 == t2 == bf16
    # bf16 arithmetic certainly moves pixels: a different content fingerprint, the same recipe.
    assert open_dataset(builds["bf16"]).fingerprint != open_dataset(builds["t1"]).fingerprint
    # Another seed is another recipe instance; so is another parameter value or model revision.
    assert recipe_fingerprint_of(builds["seed1"]) != t1
    reader = open_dataset(builds["t1"])
    rows = [(r["id"], r["prompt"], r["source"], r["seed"]) for r in reader.rows(columns=["id", "prompt", "source", "seed"])]
    assert recipe_fingerprint(reader.manifest, rows) == t1
    steps = json.loads(json.dumps(reader.manifest))
    steps["recipe"]["params"]["num_inference_steps"] = 2
    other_model = json.loads(json.dumps(reader.manifest))
    other_model["generator"]["revision"] = "sha256:" + "0" * 64
    assert recipe_fingerprint(steps, rows) != t1 and recipe_fingerprint(other_model, rows) != t1
    # What a faithful rebuild may change does not enter it: device, dtype, timings, versions.
    moved = json.loads(json.dumps(reader.manifest))
    moved["build"]["device"], moved["libraries"]["torch"], moved["created"] = "cuda:3", "9.9", "2030-01-01T00:00:00Z"
    assert recipe_fingerprint(moved, rows) == t1


def test_compare_reports_pixel_distance(builds):
    r = compare(builds["t1"], builds["bf16"])
    s = r.summary()
    assert r.same_recipe and not r.same_content and s["compared"] == 4 and not r.only_a and not r.only_b
    assert math.isfinite(s["psnr_min"]) and 10 < s["psnr_min"] <= s["psnr_median"] < 100
    assert 0 < s["ssim_min"] <= s["ssim_mean"] <= 1
    assert [w.psnr for w in r.worst(4)] == sorted(w.psnr for w in r.rows)
    # 1 vs 2 threads: the same recipe; pixels equal or close (thread-dependent reductions).
    r12 = compare(builds["t1"], builds["t2"])
    assert r12.same_recipe and (r12.same_content or r12.summary()["psnr_min"] > 40)
    same = compare(builds["t1"], builds["t1"])
    assert same.same_content and same.summary()["identical_bytes"] == 4


def test_cli_compare(builds):
    res = run_cli("compare", str(builds["t1"]), str(builds["bf16"]), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["same_recipe"] and not out["same_content"] and len(out["worst"]) == 4
    res = run_cli("compare", str(builds["t1"]), str(builds["seed1"]))
    assert res.returncode == 1 and "DIFFERENT" in res.stdout


def test_builds_store_the_recipe_fingerprint_and_verify_checks_it(builds, tmp_path):
    import hashlib
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from afpbench.dataset import verify

    stored = {k: json.loads((path / "manifest.json").read_text())["recipe_fingerprint"] for k, path in builds.items()}
    # Written at finalize: equal for 1 and 2 threads and for bf16, another for another seed.
    assert stored["t1"] == stored["t2"] == stored["bf16"] != stored["seed1"]
    reader = open_dataset(builds["bf16"])
    rows = [(r["id"], r["prompt"], r["source"], r["seed"]) for r in reader.rows(columns=["id", "prompt", "source", "seed"])]
    assert recipe_fingerprint(reader.manifest, rows) == stored["bf16"]
    # A prompt edited in the shard, with the shard's hash, size and content fingerprint fixed up:
    # verify still names the change through the recipe fingerprint.
    d = shutil.copytree(builds["t1"], tmp_path / "edited")
    m = json.loads((d / "manifest.json").read_text())
    shard = d / m["shards"][0]["path"]
    pf = pq.ParquetFile(shard)
    table = pf.read()
    prompts = table.column("prompt").to_pylist()
    prompts[1] = prompts[1] + " at night"
    table = table.set_column(table.schema.get_field_index("prompt"), "prompt", pa.array(prompts, pa.string()))
    pq.write_table(table.cast(pf.schema_arrow), shard, compression="none")
    m["shards"][0].update(sha256=hashlib.sha256(shard.read_bytes()).hexdigest(), bytes=shard.stat().st_size)
    (d / "manifest.json").write_text(json.dumps(m))
    m["fingerprint"] = verify(d).fingerprint
    (d / "manifest.json").write_text(json.dumps(m))
    rep = verify(d)
    assert not rep.ok and len(rep.problems) == 1 and rep.problems[0].startswith("recipe fingerprint")
    assert verify(builds["t1"]).ok
