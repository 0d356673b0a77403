"""The dataset format: features, real-client loading, manifest, verify, atomic writes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from afpbench.dataset import DatasetWriter, WriterOptions, encode_png, make_row, open_dataset, verify
from afpbench.testing import write_images
from afpbench.errors import DatasetError


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
