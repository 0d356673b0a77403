"""The diffusion backend, run for real on tiny random pipelines built from configs.

Each regenerated diffusion recipe is built through ``--model PATH`` from a pipeline
saved with ``save_pretrained`` (afpbench.generate.tiny), on a caption file the test
writes or on crops of the bundled photos. Real checkpoints are exercised by the tests
marked ``slow`` (hub weights) and ``gpu`` (CUDA, fp16).
"""

from __future__ import annotations

import json
from pathlib import Path

import _regression
import numpy as np
import pytest

from afpbench.build import build
from afpbench.catalog import get_generator, get_recipe, recipes
from afpbench.dataset import decode_image, open_dataset, verify
from afpbench.errors import AfpbenchError
from afpbench.generate.tiny import build_tiny_pipeline, kind_for
from afpbench.plan import BuildConfig

SMALL = {"height": 32, "width": 32, "num_inference_steps": 2}
IF_SMALL = {"num_inference_steps": 2, "stage2_num_inference_steps": 2, "stage3_num_inference_steps": 2}
# task -> (small params, expected output size); the IF cascade's size is its tiny stages'.
TASK_CASES = {
    "text2image": (SMALL, (32, 32)),
    "inpaint": ({"crop_size": 32, "num_inference_steps": 2}, (32, 32)),
    "upscale": ({"crop_size": 64, "num_inference_steps": 2}, (64, 64)),
    "controlnet": (SMALL, (32, 32)),
}
# Every diffusion recipe of the catalog: a new one is tested the moment its YAML exists.
DIFFUSION = sorted(n for n, r in recipes().items() if r.generator and get_generator(r.generator).backend == "diffusion")


def _case(name: str) -> tuple[str | None, str, dict, tuple[int, int]]:
    """(tiny kind, source, params, expected output size) of a diffusion recipe, from its card and task."""
    r = get_recipe(name)
    card = get_generator(r.generator)
    params, size = TASK_CASES.get(r.task, ({}, None))
    if card.stages and card.pipeline.startswith("IF"):
        params, size = IF_SMALL, (64, 64)
    return kind_for(card.pipeline), ("captions" if r.source.kind == "captions" else "photos"), params, size


CASES = {name: _case(name) for name in DIFFUSION}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """kind -> folder of a tiny pipeline, built once per module on first use."""
    root = tmp_path_factory.mktemp("tiny")
    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            made[kind] = build_tiny_pipeline(kind, root / kind)
        return made[kind]

    return get


@pytest.fixture(scope="module")
def captions(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("caps") / "captions.txt"
    p.write_text("A red bus parked by the road.\nA cat asleep on a sofa.\nA bowl of oranges on a table.\nA sailboat on a calm lake.\n")
    return p


def _build(name, tiny, captions, out, count=3, **kw):
    kind, source, params, _ = CASES[name]
    cfg = BuildConfig(out=out, count=count, model=str(tiny(kind)), source=str(captions) if source == "captions" else source, params=dict(params), quiet=True, batch_size=2)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return build(name, cfg)


# -- tokenizers -----------------------------------------------------------------------
def test_offline_clip_tokenizer_matches_openai_ids():
    from afpbench.generate.tiny import clip_tokenizer

    tok = clip_tokenizer()
    # Ids of OpenAI CLIP's tokenizer: <|startoftext|> a photo of a cat <|endoftext|>.
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tok) == 49408


def test_offline_t5_tokenizer_layout():
    from afpbench.generate.tiny import t5_tokenizer

    tok = t5_tokenizer()
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids = tok("a cat on a sofa").input_ids
    assert ids[-1] == 1 and 2 not in ids[:-1]


# -- every diffusion recipe on a tiny pipeline ----------------------------------------
@pytest.mark.parametrize("name", DIFFUSION)
def test_recipe_builds_from_tiny_pipeline(name, tiny, captions, tmp_path, pytestconfig):
    kind, source, params, size = CASES[name]
    if kind is None or size is None:
        pytest.fail(f"no tiny stand-in for '{name}': add its pipeline class to afpbench.generate.tiny.PIPELINE_KINDS and its task to TASK_CASES")
    path = _build(name, tiny, captions, tmp_path)
    rows = list(open_dataset(path).rows())
    assert [r["id"].split("/")[0] for r in rows] == [name] * 3
    for r in rows:
        img = decode_image(r["image"])
        assert img.size == size == (r["width"], r["height"])
        assert r["format"] == "png" and r["label"] == 1 and r["prompt"] and r["seed"] >= 0
        assert np.asarray(img).std() > 0  # a generated picture, not a constant fill
    assert verify(path).ok
    m = json.loads((path / "manifest.json").read_text())
    gen = m["generator"]
    assert gen["model_id"] == str(tiny(CASES[name][0])) or gen["model_id"].startswith(str(tiny(CASES[name][0])))
    assert gen["revision"].startswith("sha256:") and gen["pipeline"] and gen["scheduler"]
    assert gen["dtype"] == "fp32" and gen["device"] == "cpu"
    assert m["libraries"]["diffusers"] and m["libraries"]["torch"]
    assert m["recipe"]["params"]["num_inference_steps"] == 2
    spec = {"tiny": kind, "source": source, "params": params, "count": 3, "batch_size": 2, "device": "cpu", "dtype": "fp32"}
    _regression.check(pytestconfig, name, _regression.dataset_rows(path), spec)


def test_sd3_without_t5_folder(tiny, captions, tmp_path):
    cfg = BuildConfig(out=tmp_path, count=2, model=str(tiny("sd3-no-t5")), source=str(captions), params=dict(SMALL), quiet=True)
    path = build("sd3", cfg)
    gen = json.loads((path / "manifest.json").read_text())["generator"]
    assert gen["components_absent"] == ["text_encoder_3", "tokenizer_3"]
    # use_t5=false drops the T5 of a full folder and changes the images.
    with_t5 = build("sd3", BuildConfig(out=tmp_path / "a", count=2, model=str(tiny("sd3")), source=str(captions), params=dict(SMALL), quiet=True))
    without = build("sd3", BuildConfig(out=tmp_path / "b", count=2, model=str(tiny("sd3")), source=str(captions), params={**SMALL, "use_t5": False}, quiet=True))
    fa = json.loads((with_t5 / "manifest.json").read_text())["fingerprint"]
    fb = json.loads((without / "manifest.json").read_text())["fingerprint"]
    assert fa != fb


def test_if_cascade_records_every_stage(tiny, captions, tmp_path):
    path = _build("if", tiny, captions, tmp_path, count=2)
    gen = json.loads((path / "manifest.json").read_text())["generator"]
    assert gen["pipeline"] == "IFPipeline"
    assert [s["pipeline"] for s in gen["stages"]] == ["IFSuperResolutionPipeline", "StableDiffusionUpscalePipeline"]
    assert all(s["revision"].startswith("sha256:") for s in gen["stages"])
    # The same stages given as a comma-separated list load the same models.
    root = tiny("if")
    again = build("if", BuildConfig(out=tmp_path / "list", count=2, model=",".join(str(root / f"stage_{i}") for i in (1, 2, 3)), source=str(captions), params=dict(IF_SMALL), quiet=True, batch_size=2))
    assert json.loads((again / "manifest.json").read_text())["fingerprint"] == json.loads((path / "manifest.json").read_text())["fingerprint"]


# -- editing specifics ----------------------------------------------------------------
def test_inpaint_masks_follow_the_recipe_and_the_row_seed(tiny, tmp_path):
    """Each row's mask is redrawn from its seed with the recipe's mask params, and the
    composite option keeps every known pixel of the crop."""
    from afpbench.catalog import get_recipe
    from afpbench.generate.masks import MaskConfig, make_mask
    from afpbench.seeding import row_seed
    from afpbench.sources import load_input, plan

    params = {"crop_size": 32, "num_inference_steps": 2, "composite": True, "mask_min_ratio": 0.2, "mask_max_ratio": 0.3}
    path = build("sd2ip", BuildConfig(out=tmp_path, count=3, model=str(tiny("inpaint")), source="photos", params=params, quiet=True))
    items = plan(get_recipe("sd2ip"), BuildConfig(count=3, source="photos", params=params)).items
    cfg = MaskConfig.from_params({**get_recipe("sd2ip").resolved_params(), **params})
    for row, item in zip(open_dataset(path).rows(), items):
        out = np.asarray(decode_image(row["image"]))
        src = np.asarray(load_input(item))
        mask = make_mask((32, 32), row_seed(item.seed, "mask"), cfg)
        hole = mask.array > 0
        assert (out[~hole] == src[~hole]).all()
        meta = json.loads(row["meta"])
        assert meta["mask_ratio"] == round(mask.ratio, 6) and 0.2 <= mask.target_ratio <= 0.3 and mask.ratio <= 0.3
    # Without composite the decoded image is kept as is: known pixels change too.
    plain = build("sd2ip", BuildConfig(out=tmp_path / "plain", count=1, model=str(tiny("inpaint")), source="photos", params={**params, "composite": False}, quiet=True))
    row = next(open_dataset(plain).rows())
    assert (np.asarray(decode_image(row["image"])) != np.asarray(load_input(items[0]))).any()


def test_canny_control_image():
    from afpbench.generate.diffusion import canny_edges, fit
    from afpbench.sources.photos import photo_images

    photo = dict(photo_images())["skimage/astronaut"]
    edges = canny_edges(fit(photo, 128, 96), 100, 200)
    arr = np.asarray(edges)
    assert edges.size == (128, 96) and set(np.unique(arr)) <= {0, 255}
    assert 0.01 < (arr[..., 0] == 255).mean() < 0.4
    # Higher thresholds keep fewer edges.
    assert (np.asarray(canny_edges(fit(photo, 128, 96), 200, 400))[..., 0] == 255).sum() < (arr[..., 0] == 255).sum()


# -- loud failures before any work -----------------------------------------------------
def _no_partial(out: Path) -> bool:
    return not (out / ".afpbench-partial").exists()


def test_missing_model_folder(captions, tmp_path):
    with pytest.raises(AfpbenchError, match="does not exist") as exc:
        build("sd2", BuildConfig(out=tmp_path, count=2, model=str(tmp_path / "no" / "such"), source=str(captions), params=dict(SMALL), quiet=True))
    assert "--model" in str(exc.value) and "\n" not in str(exc.value) and _no_partial(tmp_path)


def test_hub_model_offline(captions, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AfpbenchError, match="not in the local Hugging Face cache") as exc:
        build("sd2", BuildConfig(out=tmp_path, count=2, model="afpbench-test/no-such-model", source=str(captions), params=dict(SMALL), quiet=True))
    assert "hf download afpbench-test/no-such-model" in str(exc.value) and _no_partial(tmp_path)


def test_wrong_pipeline_class(tiny, captions, tmp_path):
    with pytest.raises(AfpbenchError, match="holds a StableDiffusionXLPipeline, but 'sd2' runs StableDiffusionPipeline"):
        build("sd2", BuildConfig(out=tmp_path, count=2, model=str(tiny("sdxl")), source=str(captions), params=dict(SMALL), quiet=True))
    with pytest.raises(AfpbenchError, match="no model_index.json"):
        build("sd2", BuildConfig(out=tmp_path, count=2, model=str(tiny("if")), source=str(captions), params=dict(SMALL), quiet=True))
    assert _no_partial(tmp_path)


def test_cuda_without_gpu(tiny, captions, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible; this checks the message on machines without one")
    with pytest.raises(AfpbenchError, match="no CUDA device"):
        build("sd2", BuildConfig(out=tmp_path, count=2, model=str(tiny("sd")), source=str(captions), device="cuda", params=dict(SMALL), quiet=True))


def test_half_precision_on_cpu_is_refused_before_any_work(tiny, captions, tmp_path, monkeypatch):
    from afpbench.generate.diffusion import DiffusionBackend

    def boom(self):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(DiffusionBackend, "load", boom)
    for dtype in ("fp16", "float16"):  # one vocabulary: both spellings name the same dtype
        with pytest.raises(AfpbenchError, match="float16 is not supported on CPU") as exc:
            build("sd2", BuildConfig(out=tmp_path, count=2, model=str(tiny("sd")), source=str(captions), device="cpu", dtype=dtype, params=dict(SMALL), quiet=True))
        assert "\n" not in str(exc.value)
    with pytest.raises(AfpbenchError, match="Unknown dtype 'fp8'"):
        build("sd2", BuildConfig(out=tmp_path, count=2, model=str(tiny("sd")), source=str(captions), device="cpu", dtype="fp8", params=dict(SMALL), quiet=True))
    assert not (tmp_path / "sd2").exists() and _no_partial(tmp_path)


def test_dtype_is_honoured_on_cpu(tiny, captions, tmp_path):
    path = build("sd2", BuildConfig(out=tmp_path, count=2, model=str(tiny("sd")), source=str(captions), dtype="bf16", params=dict(SMALL), quiet=True))
    m = json.loads((path / "manifest.json").read_text())
    assert m["generator"]["dtype"] == "bf16" and m["build"]["key"]["dtype"] == "bf16"
    # The long spelling names the same build (the manifest keeps the short one): nothing to redo.
    again = build("sd2", BuildConfig(out=tmp_path, count=2, model=str(tiny("sd")), source=str(captions), dtype="bfloat16", params=dict(SMALL), quiet=True))
    assert (again / "manifest.json").read_text() == (path / "manifest.json").read_text()


# -- real hardware / real weights -----------------------------------------------------
@pytest.mark.gpu
def test_fp16_on_gpu(tiny, captions, tmp_path):
    import torch

    assert torch.cuda.is_available(), "run the gpu tests on a CUDA machine"
    for dtype in ("fp16", "bf16"):
        path = build("sdxl", BuildConfig(out=tmp_path / dtype, count=4, model=str(tiny("sdxl")), source=str(captions), dtype=dtype, params=dict(SMALL), quiet=True))
        m = json.loads((path / "manifest.json").read_text())
        assert m["generator"]["device"].startswith("cuda") and m["generator"]["dtype"] == dtype
        assert all(np.asarray(decode_image(r["image"])).std() > 0 for r in open_dataset(path).rows())


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["sd2", "sd3", "sdxl"])
def test_real_weights_from_the_hub(name, captions, tmp_path):
    """Needs the real checkpoint in the Hugging Face cache (or the hub) and a GPU."""
    path = build(name, BuildConfig(out=tmp_path, count=2, source=str(captions), params={"num_inference_steps": 4}, quiet=True))
    m = json.loads((path / "manifest.json").read_text())
    assert len(m["generator"]["revision"]) == 40  # a resolved hub commit hash
    assert verify(path).ok
