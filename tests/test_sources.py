"""Sources: caption readers, image folders, ImageNet folders, HF datasets, bundled photos.

Everything here is real data on disk in the layouts the sources read (COCO
``train2014/`` + ``annotations/captions_train2014.json``, Flickr30k ``results.csv``...),
made from the bundled real photos.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import _regression
import pytest
from PIL import Image

from afpbench.catalog import get_recipe
from afpbench.errors import AfpbenchError
from afpbench.plan import BuildConfig
from afpbench.seeding import row_seed
from afpbench.sources import captions as cap
from afpbench.sources import load_input, load_original, parse_source, plan, scale_mix


def _photo_images(n: int, size: tuple[int, int]) -> list[Image.Image]:
    from afpbench.sources.photos import photo_crops

    return [c.image.resize(size) for c in photo_crops(n, seed=7, size=128)]


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    """A miniature COCO 2014: train2014/*.jpg and annotations/captions_train2014.json."""
    root = tmp_path_factory.mktemp("coco")
    (root / "train2014").mkdir()
    (root / "annotations").mkdir()
    images, annotations = [], []
    for i, img in enumerate(_photo_images(8, (96, 72))):
        image_id = 1000 + i
        name = f"COCO_train2014_{image_id:012d}.jpg"
        img.save(root / "train2014" / name, quality=90)
        images.append({"id": image_id, "file_name": name, "width": 96, "height": 72})
        # Annotation ids out of order: readers must sort them.
        annotations.append({"id": 50 + i, "image_id": image_id, "caption": f"second caption of image {i}"})
        annotations.append({"id": 10 + i, "image_id": image_id, "caption": f"first  caption of\nimage {i}"})
    (root / "annotations" / "captions_train2014.json").write_text(json.dumps({"info": {}, "images": images, "annotations": annotations}))
    return root


@pytest.fixture(scope="module")
def flickr(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flickr")
    (root / "flickr30k-images").mkdir()
    lines = ["image_name| comment_number| comment"]
    token = []
    for i, img in enumerate(_photo_images(5, (80, 80))):
        name = f"{100000 + i}.jpg"
        img.save(root / "flickr30k-images" / name, quality=90)
        for k in range(2):
            lines.append(f"{name}| {k}| Flickr caption {k} of photo {i}.")
            token.append(f"{name}#{k}\tFlickr caption {k} of photo {i}.")
    lines.append("broken line without separators")
    (root / "results.csv").write_text("\n".join(lines) + "\n")
    (root / "results_20130124.token").write_text("\n".join(token) + "\n")
    karpathy = {"images": [{"filename": f"{100000 + i}.jpg", "sentids": [0], "sentences": [{"raw": f"Karpathy caption of photo {i}.", "tokens": []}], "split": "train"} for i in range(5)]}
    (root / "dataset_flickr30k.json").write_text(json.dumps(karpathy))
    return root


@pytest.fixture
def captions_txt(tmp_path) -> Path:
    p = tmp_path / "captions.txt"
    p.write_text("A red bus on a street.\n\nTwo dogs in a park.\nA bowl of fruit.\nA cat on a sofa.\nA boat on a lake.\n")
    return p


# -- parsing --------------------------------------------------------------------------
def test_parse_source_forms():
    assert parse_source(None) == {}
    assert parse_source("photos") == {"": "photos"}
    assert parse_source("/data/a,b.txt") == {"": "/data/a,b.txt"}  # a comma inside a plain path
    assert parse_source("coco=/a.json,flickr=/b.csv") == {"coco": "/a.json", "flickr": "/b.csv"}
    with pytest.raises(AfpbenchError, match="twice"):
        parse_source("coco=/a,coco=/b")


@pytest.mark.parametrize("count", [1, 2, 7, 10, 3000, 2999])
def test_scale_mix_keeps_total_and_proportion(count):
    out = scale_mix({"coco": 1500, "flickr": 1500}, count)
    assert sum(out.values()) == count
    assert abs(out["coco"] - out["flickr"]) <= 1
    assert list(out) == ["coco", "flickr"]


# -- caption readers ------------------------------------------------------------------
def test_coco_reader_sorts_and_cleans(coco):
    fmt, pool = cap.read_captions(str(coco / "annotations" / "captions_train2014.json"))
    assert fmt == "coco"
    assert len(pool) == 16
    first = pool[0]
    assert first.id == "1000-0" and first.text == "first caption of image 0"  # annotation id order, whitespace collapsed
    assert pool[1].id == "1000-1" and pool[1].text.startswith("second")


@pytest.mark.parametrize("name", ["results.csv", "results_20130124.token", "dataset_flickr30k.json"])
def test_flickr_readers(flickr, name):
    fmt, pool = cap.read_captions(str(flickr / name))
    assert fmt in ("flickr_csv", "flickr_token", "karpathy")
    expected = 5 if name.endswith(".json") else 10
    assert len(pool) == expected  # the malformed csv line is skipped
    assert pool[0].image == "100000"
    assert pool[0].id == "100000-0"


def test_text_reader_skips_blank_lines(captions_txt):
    fmt, pool = cap.read_captions(str(captions_txt))
    assert fmt == "text"
    assert [c.id for c in pool] == ["0", "1", "2", "3", "4"]
    assert pool[1].text == "Two dogs in a park."


def test_missing_caption_file_is_a_one_line_error(tmp_path):
    with pytest.raises(AfpbenchError, match="does not exist") as exc:
        cap.read_captions(str(tmp_path / "nope" / "captions.json"))
    assert "\n" not in str(exc.value)


# -- caption plans --------------------------------------------------------------------
def test_caption_plan_mix_ids_seeds_and_prefix_property(coco, flickr):
    recipe = get_recipe("sd3")
    src = f"coco={coco}/annotations/captions_train2014.json,flickr={flickr}/results.csv"
    small = plan(recipe, BuildConfig(count=4, source=src)).items
    large = plan(recipe, BuildConfig(count=8, source=src))
    assert large.info["mix"] == {"coco": 4, "flickr": 4}
    assert [it.index for it in large.items] == list(range(8))
    assert all(it.seed == row_seed(recipe.seed, it.id) for it in large.items)
    assert all(it.id.startswith("sd3/coco-") for it in large.items[:4]) and all(it.id.startswith("sd3/flickr-") for it in large.items[4:])
    # The first rows of each collection do not depend on the count: subsets are reproducible.
    assert [(i.id, i.prompt, i.seed) for i in small[:2]] == [(i.id, i.prompt, i.seed) for i in large.items[:2]]
    assert [(i.id, i.prompt) for i in small[2:]] == [(i.id, i.prompt) for i in large.items[4:6]]
    assert len({it.id for it in large.items}) == 8
    assert all(it.meta["caption_id"] and it.prompt for it in large.items)
    # Another seed draws another sample.
    other = plan(recipe, BuildConfig(count=8, source=src, seed=1)).items
    assert [i.id for i in other] != [i.id for i in large.items]


def test_caption_plan_single_file_repeats_with_unique_ids(captions_txt):
    items = plan(get_recipe("sd2"), BuildConfig(count=12, source=str(captions_txt))).items
    assert len({i.id for i in items}) == 12
    assert sum(1 for i in items if "~" in i.id) == 7  # 5 captions, then repetitions
    assert {i.prompt for i in items} == set(Path(captions_txt).read_text().split("\n")) - {""}


@pytest.mark.parametrize(
    "source, match",
    [(None, "prompts with captions"), ("coco=/x.json", "lacks flickr"), ("photos", "not images"), ("coco=/x.json,flickr=/y.csv,lsun=/z", "unknown lsun")],
)
def test_caption_source_errors_name_the_fix(source, match):
    with pytest.raises(AfpbenchError, match=match) as exc:
        plan(get_recipe("sd3"), BuildConfig(count=4, source=source))
    assert "--source" in str(exc.value) and "\n" not in str(exc.value)


# -- image folders --------------------------------------------------------------------
def test_image_plan_finds_coco_captions_and_crops_reproducibly(coco):
    recipe = get_recipe("sd2ip")
    cfg = BuildConfig(count=5, source=str(coco / "train2014"), params={"crop_size": 64})
    items = plan(recipe, cfg).items
    assert len(items) == 5 and all(i.id.startswith("sd2ip/coco-10") for i in items)
    assert all("caption of image" in i.prompt for i in items)
    a = load_input(items[0])
    box = list(items[0].meta["crop_box"])
    again = plan(recipe, cfg).items[0]
    b = load_input(again)
    assert a.size == (64, 64) and a.tobytes() == b.tobytes()
    assert again.meta["crop_box"] == box
    # The crop is really that box of the original file.
    original = Image.open(coco / "train2014" / items[0].source).convert("RGB")
    assert original.crop(tuple(box)).tobytes() == a.tobytes()


def test_small_images_are_enlarged_before_cropping(coco):
    items = plan(get_recipe("sd2ip"), BuildConfig(count=1, source=str(coco / "train2014"), params={"crop_size": 128})).items
    img = load_input(items[0])
    assert img.size == (128, 128)
    assert items[0].meta["input_size"] == [96, 72] and items[0].meta["enlarged_to"][1] == 128


def test_editing_recipe_without_captions_fails_with_fix(coco, tmp_path):
    bare = tmp_path / "imgs"
    bare.mkdir()
    for p in list((coco / "train2014").iterdir())[:2]:
        (bare / p.name).write_bytes(p.read_bytes())
    with pytest.raises(AfpbenchError, match="captions=PATH"):
        plan(get_recipe("sd2sr"), BuildConfig(count=2, source=str(bare)))
    # With the captions named explicitly it plans.
    items = plan(get_recipe("sd2sr"), BuildConfig(count=2, source=f"coco={bare},captions={coco}/annotations/captions_train2014.json")).items
    assert all(i.prompt for i in items)


def test_flickr_folder_with_results_csv(flickr, tmp_path, pytestconfig):
    from afpbench.build import build
    from afpbench.sources import plan as plan_

    items = plan_(get_recipe("flickr"), BuildConfig(count=3, source=str(flickr / "flickr30k-images"))).items
    assert [i.id.split("/")[0] for i in items] == ["flickr"] * 3
    assert all(i.source.endswith(".jpg") for i in items)
    path = build("flickr", BuildConfig(out=tmp_path, count=3, source=str(flickr / "flickr30k-images"), quiet=True))
    _regression.check(pytestconfig, "flickr", _regression.dataset_rows(path), {"source": "the test's mini Flickr30k (5 photo crops, JPEG q90)", "count": 3})


def test_missing_image_folder_error(tmp_path):
    with pytest.raises(AfpbenchError, match="does not exist"):
        plan(get_recipe("coco"), BuildConfig(count=2, source=str(tmp_path / "missing")))


def test_import_only_set_cannot_be_built():
    from afpbench.generate import backend_for

    with pytest.raises(AfpbenchError, match="afpbench import dalle2"):
        backend_for(get_recipe("dalle2"), None)


def test_coco_sample_build_keeps_original_bytes(coco, tmp_path, pytestconfig):
    from afpbench.build import build
    from afpbench.dataset import open_dataset, verify

    path = build("coco", BuildConfig(out=tmp_path, count=4, source=str(coco / "train2014"), quiet=True))
    rows = list(open_dataset(path).rows())
    assert len(rows) == 4 and all(r["label"] == 0 and r["format"] == "jpeg" for r in rows)
    for r in rows:
        assert r["image"]["bytes"] == (coco / "train2014" / r["source"]).read_bytes()
        assert (r["width"], r["height"]) == (96, 72)
    assert verify(path).ok
    _regression.check(pytestconfig, "coco", _regression.dataset_rows(path), {"source": "the test's mini COCO 2014 (8 photo crops, JPEG q90)", "count": 4})


# -- bundled photos -------------------------------------------------------------------
def test_photos_build_equals_photo_crops(tmp_path, pytestconfig):
    from afpbench.build import build
    from afpbench.dataset import decode_image, open_dataset
    from afpbench.sources.photos import photo_crops

    path = build("photos", BuildConfig(out=tmp_path, count=6, quiet=True, params={"size": 64}))
    rows = list(open_dataset(path).rows())
    crops = list(photo_crops(6, seed=0, size=64))
    assert [r["id"] for r in rows] == [c.id for c in crops]
    for r, c in zip(rows, crops):
        assert decode_image(r["image"]).tobytes() == c.image.tobytes()
        assert r["format"] == "png" and r["prompt"] and json.loads(r["meta"])["crop_box"] == list(c.box)
    _regression.check(pytestconfig, "photos", _regression.dataset_rows(path), {"params": {"size": 64}, "count": 6})


def test_photos_source_for_any_image_recipe():
    for name in ("sd2ip", "sd2sr", "stylization", "coco", "flickr", "adversarial", "backdoor", "data_poisoning", "lama", "liif"):
        items = plan(get_recipe(name), BuildConfig(count=2, source="photos")).items
        assert len(items) == 2 and items[0].id.startswith(f"{name}/photos/")
        img = load_input(items[0])
        assert img.mode == "RGB" and img.width == img.height
        assert load_original(items[0]) is None  # a crop, stored as PNG
    assert load_input(plan(get_recipe("adversarial"), BuildConfig(count=1, source="photos")).items[0]).size == (224, 224)


# -- ImageNet and classes -------------------------------------------------------------
def test_full_imagenet_folder_gets_standard_indices(tmp_path):
    root = tmp_path / "val"
    img = _photo_images(1, (40, 30))[0]
    wnids = [f"n{k:08d}" for k in range(1000)]
    for wnid in wnids[:3] + wnids[-1:]:
        (root / wnid).mkdir(parents=True)
        img.save(root / wnid / "a.JPEG")
    for wnid in wnids[3:-1]:
        (root / wnid).mkdir(parents=True)  # the other classes' folders exist (empty here)
    items = plan(get_recipe("adversarial"), BuildConfig(count=4, source=str(root))).items
    assert sorted(i.meta["class_index"] for i in items) == [0, 1, 2, 999]


def test_imagenet_folder_labels_and_geometry(tmp_path):
    root = tmp_path / "val"
    imgs = _photo_images(6, (120, 90))
    for k, wnid in enumerate(["n01440764", "n01443537"]):
        (root / wnid).mkdir(parents=True)
        for j in range(3):
            imgs[k * 3 + j].save(root / wnid / f"ILSVRC2012_val_{k * 3 + j:08d}.JPEG")
    items = plan(get_recipe("adversarial"), BuildConfig(count=6, source=str(root))).items
    # two classes are not ImageNet-1k: sorted-folder indices would name wrong classes
    assert all("class_index" not in i.meta for i in items)
    assert all(i.meta["wnid"] == i.source.split("/")[0] for i in items)
    assert load_input(items[0]).size == (224, 224)


def test_classes_plan_is_seeded():
    recipe = get_recipe("sgxl")
    a = plan(recipe, BuildConfig(count=50)).items
    b = plan(recipe, BuildConfig(count=10)).items
    assert [i.meta["class_index"] for i in a[:10]] == [i.meta["class_index"] for i in b]
    assert all(0 <= i.meta["class_index"] < 1000 for i in a) and len({i.meta["class_index"] for i in a}) > 30


# -- Hugging Face datasets (DiffusionDB layout) ---------------------------------------
@pytest.fixture(scope="module")
def diffusiondb(tmp_path_factory) -> Path:
    import datasets

    root = tmp_path_factory.mktemp("ddb")
    imgs = _photo_images(6, (64, 64))
    blobs = []
    for img in imgs:
        buf = io.BytesIO()
        img.save(buf, format="WEBP", quality=80)
        blobs.append(buf.getvalue())
    ds = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": b, "path": f"{i:08x}-aaaa.webp"} for i, b in enumerate(blobs)],
            "prompt": [f"user prompt {i}" for i in range(6)],
            "seed": [1000 + i for i in range(6)],
            "cfg": [7.0] * 6,
            "sampler": ["k_lms"] * 6,
        },
        features=datasets.Features({"image": datasets.Image(), "prompt": datasets.Value("string"), "seed": datasets.Value("int64"), "cfg": datasets.Value("float32"),
                                    "sampler": datasets.Value("string")}),
    )
    ds.save_to_disk(str(root / "saved"))
    (root / "parquet").mkdir()
    ds.to_parquet(str(root / "parquet" / "train-00000.parquet"))
    return root


@pytest.mark.parametrize("layout", ["saved", "parquet"])
def test_diffusiondb_sample_build(diffusiondb, tmp_path, layout, pytestconfig):
    from afpbench.build import build
    from afpbench.dataset import open_dataset, verify

    path = build("diffusiondb", BuildConfig(out=tmp_path, count=4, source=str(diffusiondb / layout), quiet=True))
    rows = list(open_dataset(path).rows())
    assert len(rows) == 4 and all(r["format"] == "webp" and r["label"] == 1 for r in rows)
    for r in rows:
        meta = json.loads(r["meta"])
        i = int(r["prompt"].split()[-1])
        assert r["id"] == f"diffusiondb/{i:08x}-aaaa" and meta["source_seed"] == 1000 + i and meta["sampler"] == "k_lms"
    assert verify(path).ok
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["source"]["rows_available"] == 6 and manifest["sample"]["copied"] == 4
    # Both layouts of one dataset give the same rows: one fixture.
    _regression.check(pytestconfig, "diffusiondb", _regression.dataset_rows(path), {"source": "the test's mini DiffusionDB (6 photo crops, WebP q80)", "count": 4})


def test_diffusiondb_errors(diffusiondb, tmp_path):
    from afpbench.build import build

    with pytest.raises(AfpbenchError, match="--count 6"):
        build("diffusiondb", BuildConfig(out=tmp_path, count=9, source=str(diffusiondb / "saved"), quiet=True))
    with pytest.raises(AfpbenchError, match="save_to_disk"):
        build("diffusiondb", BuildConfig(out=tmp_path, count=2, quiet=True))  # the hub id, offline and not cached
    assert not (tmp_path / "diffusiondb").exists()


# -- the image-folder walker (shared with afpbench import) ------------------------------
def test_image_listing_rules(tmp_path):
    """What a build lists from an image folder: image extensions in any case, no hidden entries,
    no special files; a link to a folder inside the tree is refused (its images would be listed twice)."""
    import os

    from afpbench.sources.files import iter_image_files, walk

    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    (root / ".cache").mkdir()
    for rel in ("b.JPG", "a.png", "sub/c.webp", "notes.txt", ".hidden.png", ".cache/d.png"):
        (root / rel).write_bytes(b"x")
    os.mkfifo(root / "pipe.png")
    assert list(iter_image_files(root)) == ["a.png", "b.JPG", "sub/c.webp"]
    assert list(iter_image_files(root, include_hidden=True)) == [".cache/d.png", ".hidden.png", "a.png", "b.JPG", "sub/c.webp"]
    # The import walk sees every entry, the special file as a report.
    seen = {e.relpath: e.problem for e in walk(root, include_hidden=True)}
    assert seen["notes.txt"] is None and seen["pipe.png"] == "not a regular file" and len(seen) == 7
    os.symlink(root / "sub", root / "alias")
    with pytest.raises(AfpbenchError, match="alias is a symbolic link to sub, a folder inside") as exc:
        list(iter_image_files(root))
    assert "\n" not in str(exc.value)
