"""The ``network`` backend (lama, liif, lte, sgxl, glide) and the inpainting masks.

Every pipeline convention is exercised with a small real network from ``_nets.py``,
both as a ``module:callable`` and scripted with ``torch.jit.script`` and saved, through
the real catalog recipes and generator cards (with small sizes passed as --param).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import _nets
import _regression
import numpy as np
import pytest
import torch

from afpbench.catalog import get_generator, get_recipe, recipes
from afpbench.errors import AfpbenchError, UnknownNameError
from afpbench.generate.masks import MaskConfig, make_mask
from afpbench.generate.network import NetworkBackend, fit_square
from afpbench.plan import BuildConfig, WorkItem
from afpbench.seeding import row_seed

# recipe -> (factory name in _nets, small-size params)
CASES = {
    "lama": ("make_inpainter", {"crop_size": 64}),
    "liif": ("make_sr", {"crop_size": 64}),
    "lte": ("make_sr", {"crop_size": 32}),
    "sgxl": ("make_generator", {"resolution": 32}),
    "glide": ("make_text_to_image", {"height": 32, "width": 32}),
}
NETS = Path(_nets.__file__)


def backend(recipe: str, model: str, **params) -> NetworkBackend:
    r = get_recipe(recipe)
    return NetworkBackend(r, get_generator(r.generator), BuildConfig(model=model, params={**CASES[recipe][1], **params}, device="cpu"))


def rows(recipe: str, photos, n: int = 3):
    """Items and inputs as the sources hand them over (photo inputs, class ids, prompts)."""
    items, inputs = [], []
    for i in range(n):
        rid = f"{recipe}/row-{i}"
        meta = {"class_index": 7 * i + 1} if recipe == "sgxl" else {}
        items.append(WorkItem(index=i, id=rid, seed=row_seed(0, rid), prompt=f"a photo number {i} of a cat", source=f"src-{i}", meta=meta))
        inputs.append(None if recipe in ("sgxl", "glide") else photos[i][1].resize((96, 80)))
    return items, inputs


def as_bytes(outputs) -> list[bytes]:
    return [np.asarray(o.image).tobytes() for o in outputs]


# -- masks ------------------------------------------------------------------------------
def test_masks_are_reproducible_seeded_and_bounded():
    cfg = MaskConfig(min_ratio=0.1, max_ratio=0.4)
    a, b = make_mask((128, 96), 1234, cfg), make_mask((128, 96), 1234, cfg)
    assert a.array.shape == (96, 128) and a.array.dtype == np.uint8
    assert np.array_equal(a.array, b.array) and a.ratio == b.ratio
    assert not np.array_equal(a.array, make_mask((128, 96), 1235, cfg).array)
    ratios = [make_mask((128, 128), s, cfg).ratio for s in range(40)]
    assert all(r <= 0.4 for r in ratios)
    assert sum(r >= 0.1 for r in ratios) >= 38  # the target is reached except in rare give-ups
    assert len({round(r, 3) for r in ratios}) > 30  # coverage varies per row
    pil = a.to_pil()
    assert pil.mode == "L" and set(np.unique(np.asarray(pil))) <= {0, 255}
    for kind in ("box", "mixed"):
        m = make_mask((64, 64), 5, MaskConfig(kind=kind))
        assert 0 < m.ratio <= 0.4


def test_mask_config_errors_and_params():
    with pytest.raises(AfpbenchError, match="mask kind"):
        MaskConfig(kind="blob")
    with pytest.raises(AfpbenchError, match="mask_min_ratio"):
        MaskConfig(min_ratio=0.5, max_ratio=0.2)
    cfg = MaskConfig.from_params({"mask_kind": "box", "mask_max_ratio": 0.3, "crop_size": 512})
    assert cfg.kind == "box" and cfg.max_ratio == 0.3


# -- every pipeline, as module:callable and as TorchScript ----------------------------
def test_every_network_recipe_has_a_case():
    """A network recipe added to the catalog is not covered until it has a CASES entry (and a fixture)."""
    assert set(CASES) == {n for n, r in recipes().items() if r.generator and get_generator(r.generator).backend == "network"}


@pytest.mark.parametrize("recipe", list(CASES))
def test_pipeline_callable_and_torchscript_agree_and_are_deterministic(recipe, photos, tmp_path, pytestconfig):
    factory = CASES[recipe][0]
    items, inputs = rows(recipe, photos)

    b1 = backend(recipe, f"_nets:{factory}")
    prov = b1.load()
    out1 = b1.run(items, inputs)
    spec = {"model": f"_nets:{factory}", "params": CASES[recipe][1], "rows": len(items), "inputs": "photos 0-2 resized to 96x80", "device": "cpu"}
    _regression.check(pytestconfig, recipe, _regression.output_rows(items, out1), spec)
    card = get_generator(get_recipe(recipe).generator)
    assert prov["pipeline"] == card.pipeline and prov["model_kind"] == "callable"
    expected_rev = hashlib.sha256(NETS.read_bytes() + b"\0" + factory.encode()).hexdigest()
    assert prov["revision"] == "sha256:" + expected_rev

    side = {"lama": 64, "liif": 64, "lte": 32, "sgxl": 32, "glide": 32}[recipe]
    assert [o.image.size for o in out1] == [(side, side)] * len(items)
    assert all(o.image.mode == "RGB" for o in out1)
    assert len(set(as_bytes(out1))) == len(items)  # each row is its own image

    # Same seed -> same bytes, from a fresh backend.
    b2 = backend(recipe, f"_nets:{factory}")
    b2.load()
    assert as_bytes(b2.run(items, inputs)) == as_bytes(out1)

    # The same network scripted and saved as TorchScript gives the same images.
    path = _nets.save_scripted(getattr(_nets, factory), tmp_path / f"{recipe}.pt")
    b3 = backend(recipe, path)
    prov3 = b3.load()
    assert prov3["model_kind"] == "torchscript"
    assert prov3["revision"] == "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert as_bytes(b3.run(items, inputs)) == as_bytes(out1)

    # A row does not depend on the batch it falls in (seeded per row).
    alone = b1.run(items[1:2], inputs[1:2])
    diff = np.abs(np.asarray(alone[0].image, dtype=int) - np.asarray(out1[1].image, dtype=int)).max()
    assert diff <= 1  # identical up to float summation order of batched kernels


def test_inpaint_keeps_known_pixels_and_records_the_mask(photos):
    items, inputs = rows("lama", photos, 2)
    b = backend("lama", "_nets:make_inpainter")
    prov = b.load()
    assert prov["params"]["mask"]["kind"] == "irregular" and prov["params"]["composite"] is True
    out = b.run(items, inputs)
    for it, im, o in zip(items, inputs, out):
        crop, _ = fit_square(im, 64, it.seed)
        mask = make_mask((64, 64), it.seed, b.settings.mask).array.astype(bool)
        got, src = np.asarray(o.image), np.asarray(crop)
        assert np.array_equal(got[~mask], src[~mask])  # outside the hole: the input, exactly
        assert (got[mask] != src[mask]).any()  # inside: the network's pixels
        assert o.meta["mask_ratio"] == pytest.approx(mask.mean(), abs=1e-6)
        assert 0.1 <= o.meta["mask_ratio"] <= 0.4
        assert o.meta["network_crop_box"]  # the 96x80 input was cropped with the row's seed
    summary = NetworkBackend.summarize([o.meta for o in out])
    assert summary["mask_ratio_min"] >= 0.1 and summary["mask_ratio_max"] <= 0.4


def test_class_to_image_uses_row_classes_truncation_and_z_dim():
    items, _ = rows("sgxl", None, 3)
    b = backend("sgxl", "_nets:make_generator")
    prov = b.load()
    assert prov["params"]["z_dim"] == 16  # read from the network's z_dim attribute
    out = b.run(items, [None] * 3)
    assert [o.meta["class_index"] for o in out] == [1, 8, 15]
    # psi = 0 collapses every latent onto the average: rows of one class become equal.
    same = [WorkItem(index=i, id=f"s{i}", seed=100 + i, meta={"class_index": 3}) for i in range(2)]
    b0 = backend("sgxl", "_nets:make_generator", truncation_psi=0.0)
    b0.load()
    o0 = b0.run(same, [None, None])
    assert as_bytes(o0)[0] == as_bytes(o0)[1]
    o1 = b.run(same, [None, None])
    assert as_bytes(o1)[0] != as_bytes(o1)[1]
    assert NetworkBackend.summarize([o.meta for o in out])["distinct_classes"] == 3


def test_text_to_image_passes_guidance_when_declared(photos):
    items, _ = rows("glide", photos, 2)
    b = backend("glide", "_nets:make_text_to_image")
    prov = b.load()
    assert prov["guidance_scale_passed"] is True
    out = b.run(items, [None, None])
    assert out[0].meta["guidance_scale"] == 3.0
    b2 = backend("glide", "_nets:make_text_to_image", guidance_scale=9.0)
    b2.load()
    assert as_bytes(b2.run(items, [None, None])) != as_bytes(out)  # the recipe's value reaches the net


def test_super_resolution_input_is_the_downscaled_crop(photos):
    items, inputs = rows("liif", photos, 1)
    b = backend("liif", "_nets:make_sr")
    b.load()
    seen = {}
    real = b.net

    def spy(lr, scale):
        seen["lr"], seen["scale"] = lr.shape, scale
        return real(lr, scale)

    b.net = spy
    out = b.run(items, inputs)
    assert seen == {"lr": torch.Size([1, 3, 16, 16]), "scale": 4}
    assert out[0].meta["low_res_size"] == [16, 16] and out[0].image.size == (64, 64)


# -- loud failures -----------------------------------------------------------------------
def test_missing_and_non_torchscript_files_fail_in_load(tmp_path):
    with pytest.raises(AfpbenchError, match="does not exist.*TorchScript"):
        backend("lama", str(tmp_path / "nope.pt")).load()
    state = tmp_path / "state_dict.pt"
    torch.save(_nets.make_inpainter().state_dict(), state)
    text = tmp_path / "notes.pt"
    text.write_text("not a network\n")
    for bad in (state, text):
        with pytest.raises(AfpbenchError, match="is not a TorchScript file") as err:
            backend("lama", str(bad)).load()
        assert "\n" not in str(err.value)


def test_bad_callables_fail_in_load():
    with pytest.raises(AfpbenchError, match="Cannot import 'no_such_module_xyz'"):
        backend("lama", "no_such_module_xyz:make").load()
    with pytest.raises(AfpbenchError, match="has no attribute 'make_nothing'"):
        backend("lama", "_nets:make_nothing").load()
    with pytest.raises(AfpbenchError, match="called with no arguments"):
        backend("lama", "_nets:needs_args").load()
    with pytest.raises(AfpbenchError, match="supplied by the user.*--model"):
        backend("lama", None).load()


def test_factory_weights_join_the_revision(tmp_path, monkeypatch):
    revisions = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = tmp_path / f"sr-{seed}.pt"
        torch.save(_nets.TinySR().state_dict(), path)
        monkeypatch.setenv("AFPBENCH_TEST_SR_WEIGHTS", str(path))
        prov = backend("liif", "_nets:make_sr_from_checkpoint").load()
        assert prov["weights"] == {str(path): "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()}
        revisions.append(prov["revision"])
    assert revisions[0] != revisions[1]  # same code, other checkpoint: another revision
    monkeypatch.setenv("AFPBENCH_TEST_SR_WEIGHTS", str(tmp_path / "gone.pt"))
    with pytest.raises(AfpbenchError, match="failed while building the liif network.*FileNotFoundError"):
        backend("liif", "_nets:make_sr_from_checkpoint").load()


def test_wrong_output_shape_fails_before_any_work(tmp_path, photos):
    with pytest.raises(AfpbenchError, match=r"returned shape \[1, 3, 32, 32\] where \[1, 3, 64, 64\]"):
        backend("lama", "_nets:make_wrong_inpainter").load()
    with pytest.raises(AfpbenchError, match="failed on a probe input"):
        backend("lama", "_nets:make_sr").load()  # an SR net given to the inpaint convention
    scripted = _nets.save_scripted(_nets.make_wrong_inpainter, tmp_path / "wrong.pt")
    with pytest.raises(AfpbenchError, match="returned shape"):
        backend("lama", scripted).load()
    # text_to_image is not probed (sampling is slow): the first batch refuses it.
    b = backend("glide", "_nets:make_wrong_text_to_image")
    b.load()
    items, _ = rows("glide", photos, 1)
    with pytest.raises(AfpbenchError, match="returned shape"):
        b.run(items, [None])


def test_bad_params_fail_early():
    with pytest.raises(UnknownNameError, match="Did you mean: crop_size"):
        backend("lama", "_nets:make_inpainter", crop_sise=64)
    with pytest.raises(AfpbenchError, match="not a multiple of scale"):
        backend("liif", "_nets:make_sr", crop_size=66)
    with pytest.raises(AfpbenchError, match="z_dim"):
        b = backend("sgxl", "_nets:make_inpainter", probe=False)
        b.load()


# -- end to end through the CLI -------------------------------------------------------------
def test_cli_builds_network_sets_and_fails_before_writing(cli, tmp_path):
    env = {"PYTHONPATH": str(NETS.parent), "OMP_NUM_THREADS": "1"}  # --model _nets:... imports; two workers share two cores
    out = tmp_path / "out"
    lama = cli("build", "lama", "--source", "photos", "--model", "_nets:make_inpainter", "--param", "crop_size=64",
               "--count", "3", "--out", str(out), "--quiet", env=env)
    assert lama.returncode == 0, lama.stderr

    import datasets

    ds = datasets.load_dataset(str(out / "lama"), split="test")
    assert ds.num_rows == 3 and ds[0]["image"].size == (64, 64)
    m = json.loads(ds[0]["meta"])
    assert 0.1 <= m["mask_ratio"] <= 0.4 and m["mask_kind"] == "irregular"
    man = json.loads((out / "lama" / "manifest.json").read_text())
    assert man["generator"]["revision"] == "sha256:" + hashlib.sha256(NETS.read_bytes() + b"\0make_inpainter").hexdigest()
    assert man["generator"]["params"]["mask"]["max_ratio"] == 0.4 and "mask_ratio_mean" in man

    # TorchScript files go through the same path (tested in-process above); a missing one fails first.
    bad = cli("build", "liif", "--source", "photos", "--model", str(tmp_path / "missing.pt"), "--count", "1", "--out", str(out), env=env)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (out / "liif").exists()


def test_dtype_casts_torchscript_but_not_factories(tmp_path, photos):
    items, inputs = rows("lama", photos, 2)
    path = _nets.save_scripted(_nets.make_inpainter, tmp_path / "lama.pt")
    r = get_recipe("lama")
    half = NetworkBackend(r, get_generator(r.generator), BuildConfig(model=path, params={"crop_size": 64}, device="cpu", dtype="bf16"))
    assert half.load()["dtype"] == "bfloat16"
    full = backend("lama", path)
    full.load()
    a, b = full.run(items, inputs), half.run(items, inputs)
    diff = max(np.abs(np.asarray(x.image, dtype=int) - np.asarray(y.image, dtype=int)).max() for x, y in zip(a, b))
    assert 0 < diff <= 8  # bf16 really ran, and still follows the convention
    # A factory keeps its own precision (GLIDE mixes fp16 and fp32 on purpose).
    keep = NetworkBackend(r, get_generator(r.generator), BuildConfig(model="_nets:make_inpainter", params={"crop_size": 64}, device="cpu", dtype="bf16"))
    assert keep.load()["dtype"] == "float32"


@pytest.mark.gpu
@pytest.mark.parametrize("recipe", ["lama", "sgxl"])
def test_cuda_fp16_matches_cpu_fp32(recipe, photos, tmp_path):
    items, inputs = rows(recipe, photos)
    factory = CASES[recipe][0]
    cpu = backend(recipe, f"_nets:{factory}")
    cpu.load()
    path = _nets.save_scripted(getattr(_nets, factory), tmp_path / f"{recipe}.pt")
    r = get_recipe(recipe)
    gpu = NetworkBackend(r, get_generator(r.generator), BuildConfig(model=path, params=CASES[recipe][1], device="cuda", dtype="fp16"))
    prov = gpu.load()
    assert prov["device"] == "cuda" and prov["dtype"] == "float16"
    a, b = cpu.run(items, inputs), gpu.run(items, inputs)
    for x, y in zip(a, b):
        assert np.abs(np.asarray(x.image, dtype=int) - np.asarray(y.image, dtype=int)).max() <= 3
    assert as_bytes(gpu.run(items, inputs)) == as_bytes(b)
