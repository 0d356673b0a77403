"""The dataset format: features, real-client loading, manifest, verify, atomic writes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from afpbench.dataset import DatasetWriter, WriterOptions, encode_png, make_row, open_dataset, verify
from afpbench.errors import DatasetError
from afpbench.testing import write_images


@pytest.fixture(scope="module")
def small_set(tmp_path_factory, photos):
    out = tmp_path_factory.mktemp("ds")
    imgs = [img.resize((64, 48)) for _, img in photos[:6]]
    return write_images(out, "tiny", imgs, [0, 1, 0, 1, 0, 1], prompts=[f"p{i}" for i in range(6)])


def test_folder_layout_card_and_manifest(small_set):
    assert (small_set / "README.md").exists()
    shards = sorted((small_set / "data").glob("*.parquet"))
    assert [s.name for s in shards] == ["test-00000-of-00001.parquet"]
    m = json.loads((small_set / "manifest.json").read_text())
    for key in ("recipe", "libraries", "counts", "shards", "fingerprint", "rejects", "num_rows", "formats"):
        assert key in m
    assert m["counts"] == {"real": 3, "fake": 3}
    assert m["libraries"]["pyarrow"]
    card = (small_set / "README.md").read_text()
    assert card.startswith("---\n") and "configs:" in card and "class_label" in card


def test_image_bytes_are_embedded_never_paths(small_set):
    t = pq.read_table(small_set / "data" / "test-00000-of-00001.parquet")
    img = t.column("image").to_pylist()[0]
    assert img["path"] is None and img["bytes"][:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("how", ["folder", "parquet"])
def test_real_datasets_client_loads_declared_features(small_set, how):
    import datasets

    from afpbench.dataset import hf_features

    if how == "folder":
        ds = datasets.load_dataset(str(small_set), split="test")
    else:
        ds = datasets.load_dataset("parquet", data_dir=str(small_set / "data"), split="test")
    assert ds.features == hf_features()
    assert len(ds) == 6
    assert ds.features["label"].int2str(ds[1]["label"]) == "fake"
    assert ds[0]["image"].size == (64, 48)


def test_reader_batches_ranges_and_columns(small_set):
    r = open_dataset(small_set)
    assert r.num_rows == 6 and r.name == "tiny"
    rows = [row for b in r.iter_batches(batch_size=4) for row in b]
    assert [x["id"] for x in rows] == [f"tiny/{i:05d}" for i in range(6)]
    part = [row["id"] for b in r.iter_batches(batch_size=2, columns=["id"], start=2, stop=5) for row in b]
    assert part == ["tiny/00002", "tiny/00003", "tiny/00004"]
    assert r.labels() == [0, 1, 0, 1, 0, 1]


def test_verify_names_the_bad_shard(small_set, tmp_path):
    import shutil

    bad = tmp_path / "tiny"
    shutil.copytree(small_set, bad)
    assert verify(bad).ok
    shard = bad / "data" / "test-00000-of-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    rep = verify(bad)
    assert not rep.ok and "test-00000-of-00001.parquet" in rep.problems[0] and "sha256" in rep.problems[0]


def test_fingerprint_is_independent_of_parts_and_shards(tmp_path, photos):
    imgs = [img.resize((32, 32)) for _, img in photos[:10]]
    rows = [make_row(id=f"s/{i:03d}", image=encode_png(im), label=1, dataset="s", width=32, height=32, format="png") for i, im in enumerate(imgs)]
    # one writer, in order, one shard
    with DatasetWriter(tmp_path / "a", "s") as w:
        for i, r in enumerate(rows):
            w.add(r, index=i)
    ma = w.finalize()
    # two "processes", reversed order, tiny parts, several shards
    for rank in (1, 0):
        with DatasetWriter(tmp_path / "b", "s", options=WriterOptions(flush_rows=2, rank=rank, shard_bytes=3000)) as w2:
            for i in reversed(range(rank, 10, 2)):
                w2.add(rows[i], index=i)
    mb = w2.finalize()
    assert len(mb["shards"]) > 1 and len(ma["shards"]) == 1
    assert ma["fingerprint"] == mb["fingerprint"]
    assert open_dataset(tmp_path / "b" / "s").ids() == [f"s/{i:03d}" for i in range(10)]


def test_runs_cut_by_bytes_and_rows():
    from afpbench.dataset._arrow import runs as _runs

    assert list(_runs([4, 4, 4, 4], 8)) == [(0, 2), (2, 4)]
    assert list(_runs([4, 4, 4, 4], 100, max_rows=3)) == [(0, 3), (3, 4)]
    # an item above the limit gets a run of its own instead of an empty run or a stall
    assert list(_runs([2, 50, 2, 2], 8)) == [(0, 1), (1, 2), (2, 4)]
    assert list(_runs([], 8)) == []


def test_parts_and_row_groups_are_cut_by_bytes(tmp_path, photos, monkeypatch):
    """Memory stays at a few MB per step: a flushed part is several record batches and a
    row group holds a bounded number of bytes; neither changes the content or order."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    import afpbench.dataset.writer as ds

    imgs = [img.resize((40, 40)) for _, img in photos[:12]]
    rows = [make_row(id=f"s/{i:03d}", image=encode_png(im), label=i % 2, dataset="s", width=40, height=40, format="png") for i, im in enumerate(imgs)]
    sizes = [len(r["image"]["bytes"]) for r in rows]
    with DatasetWriter(tmp_path / "a", "s") as w:
        for i, r in enumerate(rows):
            w.add(r, index=i)
    ref = w.finalize()

    limit = 2 * max(sizes) + 1  # two or three images per batch and per row group
    monkeypatch.setattr(ds, "PART_BATCH_BYTES", limit)
    monkeypatch.setattr(ds, "ROW_GROUP_BYTES", limit)
    w2 = DatasetWriter(tmp_path / "b", "s")
    with w2:
        for i in reversed(range(12)):
            w2.add(rows[i], index=i)
    (part,) = sorted((w2.partial_dir / "parts").glob("part-*.arrow"))
    with pa.memory_map(str(part)) as src:
        reader = ipc.open_file(src)
        batches = [reader.get_batch(b) for b in range(reader.num_record_batches)]
    assert len(batches) >= 4
    assert all(sum(len(x) for x in b.column("image").field("bytes").to_pylist()) <= limit for b in batches)
    got = w2.finalize()
    assert got["fingerprint"] == ref["fingerprint"]
    meta = pq.ParquetFile(tmp_path / "b" / "s" / got["shards"][0]["path"]).metadata
    assert meta.num_row_groups >= 4 and sum(meta.row_group(g).num_rows for g in range(meta.num_row_groups)) == 12
    ds_b = open_dataset(tmp_path / "b" / "s")
    assert ds_b.ids() == [f"s/{i:03d}" for i in range(12)]
    assert [r["image"]["bytes"] for b in ds_b.iter_batches(5) for r in b] == [r["image"]["bytes"] for r in rows]


def test_resume_partial_with_other_parameters_is_refused(tmp_path):
    with DatasetWriter(tmp_path, "x", info={"resume_key": "a"}) as w:
        w.add(make_row(id="x/1", image=b"\x89PNG", label=0, dataset="x", width=1, height=1, format="png"))
    with pytest.raises(DatasetError, match="other parameters"):
        DatasetWriter(tmp_path, "x", info={"resume_key": "b"}).open()
    w2 = DatasetWriter(tmp_path, "x", info={"resume_key": "a"})
    assert w2.done_ids() == {"x/1"}


def test_open_missing_or_damaged_dataset_is_a_clear_error(tmp_path, small_set):
    with pytest.raises(DatasetError, match="build or import it first"):
        open_dataset(tmp_path / "nope")
    import shutil

    bad = tmp_path / "cut"
    shutil.copytree(small_set, bad)
    shard = bad / "data" / "test-00000-of-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="afpbench verify"):
        open_dataset(bad)


def test_killed_finalize_leaves_the_previous_dataset_intact(tmp_path, small_set):
    """A SIGKILL at any moment of a rewrite leaves the old set verifiable (atomic swap)."""
    import shutil

    target = tmp_path / "tiny"
    shutil.copytree(small_set, target)
    before = json.loads((target / "manifest.json").read_text())["fingerprint"]
    script = textwrap.dedent(f"""
        import os, signal, afpbench.dataset.writer as d
        from afpbench.testing import write_images
        from PIL import Image
        real_swap = d._swap_in
        def killed(*a):  # die right before the swap, with the new folder fully written
            os.kill(os.getpid(), signal.SIGKILL)
        d._swap_in = killed
        write_images({str(tmp_path)!r}, "tiny", [Image.new("RGB", (8, 8), (i, 0, 0)) for i in range(4)], 1)
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL
    rep = verify(target)
    assert rep.ok and rep.fingerprint == before


# -- the column table ---------------------------------------------------------------------
def test_every_declaration_comes_from_the_one_column_table():
    import datasets

    from afpbench.dataset import COLUMN_NAMES, Row, arrow_schema, features_yaml, hf_features, make_row

    assert list(hf_features()) == list(COLUMN_NAMES) == list(Row.__annotations__)
    assert arrow_schema().names == list(COLUMN_NAMES)
    # The card's YAML, read back by the `datasets` library's own parser, is the declared features.
    assert datasets.Features._from_yaml_list(features_yaml()) == hf_features()
    row = make_row(id="a/1", image=b"\x89PNG", label=1, dataset="a", width=1, height=1, format="PNG", meta={"k": 1})
    assert list(row) == list(COLUMN_NAMES) and row["format"] == "png" and row["meta"] == '{"k": 1}'


# -- the manifest -------------------------------------------------------------------------
OLD = Path(__file__).parent / "testdata" / "dataset-0.1.0"


def test_manifest_schema_is_shipped_current_and_described():
    from afpbench.dataset import manifest_schema

    schema = manifest_schema()
    root = Path(__file__).parent.parent
    for folder in (root / "afpbench" / "schemas", root / "docs" / "schemas"):
        shipped = json.loads((folder / "manifest.schema.json").read_text())
        assert shipped == json.loads(json.dumps(schema)), f"{folder}/manifest.schema.json is stale: run afpbench.dataset.export_schema"
    assert list(schema["properties"])[0] == "schema_version"
    for holder in [schema, *schema["$defs"].values()]:
        for name, spec in holder["properties"].items():
            assert spec.get("description"), f"{holder.get('title')}.{name} has no description"


@pytest.mark.parametrize("kind", ["photos", "sd2", "adversarial", "import", "import-catalog"])
def test_manifests_written_by_0_1_0_read_as_typed_manifests(kind):
    import jsonschema

    from afpbench.dataset import Manifest

    data = json.loads((OLD / "manifests" / f"{kind}.json").read_text())
    jsonschema.validate(data, json.loads((Path(__file__).parent.parent / "afpbench" / "schemas" / "manifest.schema.json").read_text()))
    m = Manifest.model_validate(data)
    assert m.model_extra == {}, "every top-level field a 0.1.0 writer wrote is declared"
    assert m.recipe_fingerprint is None and m.preview is None
    assert m.num_rows == sum(s.num_rows for s in m.shards) and m.libraries["pyarrow"]
    if kind == "sd2":
        assert m.standin.kind == "sd" and m.generator.standin.kind == "sd" and m.build.dtype == "fp32"
        assert m.overrides["model"].used == m.generator.model_id and m.recipe.choices["height"].value == 32
    if kind == "adversarial":
        assert m.attack_rows == 2 and 0.0 <= m.attack_success_rate <= 1.0 and m.generator.model == "_nets:make_classifier"
    if kind.startswith("import"):
        assert m.import_.key["source"] == m.source["path"] and m.acquisition == "import" and m.rejects[0].input == "bad.png"
    # Dumped by alias, the model gives back the file's JSON.
    assert m.model_dump(mode="json", by_alias=True, exclude_unset=True) == data
    # The card renders from it (the typed model and the JSON value alike) and is valid for the Hub.
    from afpbench.card import render_card, validate_card

    assert render_card(m) == render_card(data) and validate_card(render_card(m)) == []


def test_a_set_written_by_0_1_0_opens_and_verifies(tmp_path):
    import shutil

    from afpbench.dataset import recipe_fingerprint

    old = shutil.copytree(OLD / "tiny", tmp_path / "tiny")
    assert not (old / "preview.jpg").exists() and "recipe_fingerprint" not in json.loads((old / "manifest.json").read_text())
    rep = verify(old)
    assert rep.ok, rep.problems
    reader = open_dataset(old)
    assert reader.manifest_model.name == reader.name == "tiny" and reader.labels() == [0, 1, 0, 1]
    rows = [(r["id"], r["prompt"], r["source"], r["seed"]) for r in reader.rows(columns=["id", "prompt", "source", "seed"])]
    # Not stored: computed from the rows, the same way for the reader and verify.
    assert reader.recipe_fingerprint == rep.recipe_fingerprint == recipe_fingerprint(reader.manifest, rows)


def test_a_wrongly_typed_manifest_field_is_refused_before_anything_is_replaced(tmp_path, small_set):
    import shutil

    from PIL import Image
    from pydantic import ValidationError

    target = shutil.copytree(small_set, tmp_path / "tiny")
    before = (target / "manifest.json").read_bytes()
    w = DatasetWriter(tmp_path, "tiny", info={"seed": "zero"}, options=WriterOptions(overwrite=True))
    with w:
        w.add(make_row(id="tiny/1", image=encode_png(Image.new("RGB", (4, 4))), label=0, dataset="tiny", width=4, height=4, format="png"))
    with pytest.raises(ValidationError, match="seed"):
        w.finalize()
    assert (target / "manifest.json").read_bytes() == before and verify(target).ok
    assert w.done_ids() == {"tiny/1"}  # the parts are kept
    assert not list(tmp_path.glob(".tiny.tmp-*"))


# -- the preview grid -----------------------------------------------------------------------
def test_preview_grid_shows_the_gallery_sample_and_is_checked(tmp_path):
    import hashlib

    import numpy as np
    from PIL import Image

    from afpbench.card import parse_front_matter, validate_card
    from afpbench.dataset import sample_rows
    from afpbench.push import plan_push

    colours = [((37 * i) % 256, (91 * i + 40) % 256, (53 * i + 200) % 256) for i in range(20)]
    folder = write_images(tmp_path, "grid", [Image.new("RGB", (40 + i, 30), c) for i, c in enumerate(colours)], [i % 2 for i in range(20)])
    m = json.loads((folder / "manifest.json").read_text())
    picked = sample_rows(20, 12, 0, "grid")
    assert m["preview"]["rows"] == [f"grid/{i:05d}" for i in picked]
    data = (folder / "preview.jpg").read_bytes()
    assert m["preview"] == {"path": "preview.jpg", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "rows": m["preview"]["rows"]}
    grid = np.asarray(Image.open(folder / "preview.jpg").convert("RGB"), dtype=np.int16)
    assert grid.shape == (3 * 192 + 4 * 4, 4 * 192 + 5 * 4, 3)
    for k, i in enumerate(picked):  # each cell's centre shows its row's colour (JPEG: within a few levels)
        r, c = divmod(k, 4)
        centre = grid[4 + r * 196 + 96, 4 + c * 196 + 96]
        assert np.abs(centre - np.array(colours[i])).max() <= 8, (k, i, centre, colours[i])
    card = (folder / "README.md").read_text()
    assert "](preview.jpg)" in card and validate_card(card) == [] and parse_front_matter(card)["dataset_info"]
    assert "preview.jpg" in [rel for rel, _ in plan_push(folder, "org/grid").files]
    # verify checks the grid's bytes like a shard's; a set without the file listed is not asked for one.
    (folder / "preview.jpg").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert any(p.startswith("preview.jpg: sha256") for p in verify(folder).problems)
    (folder / "preview.jpg").unlink()
    assert verify(folder).problems == ["preview.jpg: missing"]


# -- the recipe fingerprint -------------------------------------------------------------------
def _rewrite_prompt(folder: Path, row: int, prompt: str) -> None:
    """Change one row's prompt in its shard and fix up the shard's sha256 and size in the
    manifest (what a careless edit or a forger would do)."""
    import hashlib

    import pyarrow as pa

    m = json.loads((folder / "manifest.json").read_text())
    shard = folder / m["shards"][0]["path"]
    pf = pq.ParquetFile(shard)
    table = pf.read()
    prompts = table.column("prompt").to_pylist()
    prompts[row] = prompt
    table = table.set_column(table.schema.get_field_index("prompt"), "prompt", pa.array(prompts, pa.string()))
    pq.write_table(table.cast(pf.schema_arrow), shard, compression="none")
    m["shards"][0].update(sha256=hashlib.sha256(shard.read_bytes()).hexdigest(), bytes=shard.stat().st_size)
    (folder / "manifest.json").write_text(json.dumps(m))


def test_verify_recomputes_the_stored_recipe_fingerprint(tmp_path, small_set):
    import shutil

    from afpbench.compare import recipe_fingerprint_of
    from afpbench.dataset import check_content, recipe_fingerprint

    d = shutil.copytree(small_set, tmp_path / "tiny")
    m = json.loads((d / "manifest.json").read_text())
    rows = [(r["id"], r["prompt"], r["source"], r["seed"]) for r in open_dataset(d).rows(columns=["id", "prompt", "source", "seed"])]
    assert m["recipe_fingerprint"] == recipe_fingerprint(m, rows) == verify(d).recipe_fingerprint
    _rewrite_prompt(d, 2, "an edited prompt")
    rep = verify(d)
    assert any(p.startswith("content fingerprint") for p in rep.problems)
    assert any(p.startswith("recipe fingerprint") for p in rep.problems)
    # Even with the content fingerprint fixed up too, the recipe fingerprint names the edit.
    m = json.loads((d / "manifest.json").read_text())
    m["fingerprint"] = rep.fingerprint
    (d / "manifest.json").write_text(json.dumps(m))
    rep = verify(d)
    assert len(rep.problems) == 1 and rep.problems[0].startswith("recipe fingerprint") and "prompts" in rep.problems[0]
    assert check_content(d).problems == rep.problems  # what evaluate checks before scoring
    # recipe_fingerprint_of trusts the stored value (verify is what checks it).
    assert recipe_fingerprint_of(d) == m["recipe_fingerprint"] != rep.recipe_fingerprint
    # Editing the manifest's recipe (its identity) is caught the same way.
    d2 = shutil.copytree(small_set, tmp_path / "tiny2")
    m2 = json.loads((d2 / "manifest.json").read_text())
    m2["recipe"]["version"] = 2
    (d2 / "manifest.json").write_text(json.dumps(m2))
    assert [p[:18] for p in verify(d2).problems] == ["recipe fingerprint"]


# -- the resume key ---------------------------------------------------------------------------
def test_resume_check_is_one_function_for_writer_and_build(tmp_path):
    from afpbench.dataset import PARTIAL_DIR, check_resume, resume_key_text

    key = {"recipe": "sd2", "params": {"b": 1, "a": [1, 2]}, "model": None}
    assert resume_key_text(key) == resume_key_text({"model": None, "params": {"a": [1, 2], "b": 1}, "recipe": "sd2"})
    check_resume(tmp_path, "x", key)  # nothing there: nothing to refuse
    with DatasetWriter(tmp_path, "x", info={"resume_key": key}) as w:
        w.add(make_row(id="x/1", image=b"\x89PNG", label=0, dataset="x", width=1, height=1, format="png"))
    check_resume(tmp_path, "x", json.loads(json.dumps(key)))  # the same key, read back from JSON
    with pytest.raises(DatasetError, match="other parameters"):
        check_resume(tmp_path, "x", {**key, "model": "other"})
    (tmp_path / PARTIAL_DIR / "x" / "info.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"info.json cannot be read; delete .* to start over") as exc:
        DatasetWriter(tmp_path, "x", info={"resume_key": key}).open()
    assert "\n" not in str(exc.value)
