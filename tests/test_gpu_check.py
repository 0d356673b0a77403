"""benchmarks/gpu_check.py: its tiny CPU mode end to end (what CI can run), and the two hooks
it hands random-weight models through (a detector's ``load_base``, the diffusion backend's
``_from_pretrained``/``_to_device``), checked against the ordinary loaders."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from _tiny import one_thread, photos, tiny_instructblip
from helpers import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_tiny_mode_runs_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "HF_HUB_OFFLINE": "1"}
    # --cpu: the tiny mode even where a GPU is visible (CI has none: there it is automatic).
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--out", str(out)], capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["schema_version"] == 1 and res["mode"] == "tiny" and res["random_weights"] is True
    secs = res["sections"]
    assert set(secs) == {"afp_throughput", "one_forward_vs_two_candidates", "sd3_build", "evaluate"}
    assert {k: v["status"] for k, v in secs.items()} == dict.fromkeys(secs, "ok")
    # Throughput at every batch, in both precision modes.
    rows = secs["afp_throughput"]["rows"]
    assert [(r["precision"], r["batch"]) for r in rows] == [(p, b) for p in ("authors", "bf16") for b in (1, 8, 32, 64)]
    assert all(r["images_per_s"] > 0 and r["calls"] >= 3 for r in rows)
    # The one-forward scorer beats the two-candidate rule and decides exactly as it does.
    ratio = secs["one_forward_vs_two_candidates"]["rows"]
    assert [r["batch"] for r in ratio] == [8, 32] and all(r["one_forward_img_s"] > 0 and r["two_candidate_img_s"] > 0 for r in ratio)
    assert ratio[-1]["ratio"] > 1
    assert all(r["agreement"] == 1.0 and r["max_rule_gap"] < 1e-3 for r in ratio)
    sd3 = secs["sd3_build"]
    assert sd3["backend_img_s"] > 0 and sd3["bare_img_s"] > 0 and sd3["ratio"] > 0 and sd3["size"] == 32 and sd3["steps"] == 4
    ev = secs["evaluate"]
    assert ev["e2e_img_s"] > 0 and ev["bare_img_s"] > 0 and ev["images"] == 32
    # One table on stdout, in markdown, a row per measurement.
    assert proc.stdout.count("| AntifakePrompt scoring |") == 8 and "| SD3-medium build |" in proc.stdout and "| evaluate |" in proc.stdout


def test_random_weight_detector_is_the_detector_with_other_weights(gpu_check, tmp_path_factory):
    """Through the ``load_base`` hook: the same parameter names, dtypes (precision mode applied
    by the detector's own setup) and buffers as the ordinary loader; seeded random weights."""
    from afpbench.detectors import load_detector

    base = str(tiny_instructblip(tmp_path_factory))
    opts = {"precision": "authors"}
    ref = load_detector("antifakeprompt", base=base, train_init=True, options=opts)
    rnd = gpu_check.random_detector("antifakeprompt", base, "cpu", options=opts, seed=0)
    assert type(rnd).__name__ == "AntifakePrompt" and rnd.precision == "authors"
    assert {k: (v.dtype, v.shape) for k, v in rnd.model.named_parameters()} == {k: (v.dtype, v.shape) for k, v in ref.model.named_parameters()}
    ref_bufs = dict(ref.model.named_buffers())
    assert ref_bufs.keys() == dict(rnd.model.named_buffers()).keys()
    for k, v in rnd.model.named_buffers():
        assert torch.equal(v, ref_bufs[k]), k
    assert rnd.lavis_buffers().keys() == ref.lavis_buffers().keys()
    # normal(0, 0.02) weights, zero biases, unit norm scales.
    w = rnd.model.language_model.model.layers[0].mlp.up_proj.weight.float()
    assert abs(w.std().item() - 0.02) < 0.004 and abs(w.mean().item()) < 0.004
    assert not torch.equal(w, ref.model.language_model.model.layers[0].mlp.up_proj.weight.float())
    assert torch.all(rnd.model.vision_model.post_layernorm.weight == 1) and torch.all(rnd.model.vision_model.post_layernorm.bias == 0)
    assert torch.all(rnd.model.language_model.model.norm.weight == 1)
    # Seeded: the same seed scores the same, another seed differently.
    x = rnd.collate([rnd.preprocess(im) for im in photos(3)])
    again = gpu_check.random_detector("antifakeprompt", base, "cpu", options=opts, seed=0)
    other = gpu_check.random_detector("antifakeprompt", base, "cpu", options=opts, seed=1)
    s = rnd.score(x)
    assert torch.isfinite(s).all() and torch.equal(s, again.score(x)) and not torch.equal(s, other.score(x))


def test_random_weight_backend_keeps_buffers_and_generates(gpu_check, tmp_path):
    """Through the diffusion backend's loading hooks: the pipeline of the folder's model_index,
    buffers as from_pretrained computes them, real tokenizers, and the backend's own generation."""
    from diffusers import StableDiffusion3Pipeline

    from afpbench.generate.tiny import build_tiny_pipeline
    from afpbench.plan import WorkItem

    folder = build_tiny_pipeline("sd3", tmp_path / "sd3")
    params = {"height": 32, "width": 32, "num_inference_steps": 2}
    backend = gpu_check.random_backend("sd3", folder, "cpu", params)
    ref = StableDiffusion3Pipeline.from_pretrained(folder)
    got = backend.pipe.components
    assert {k: type(v).__name__ for k, v in got.items()} == {k: type(v).__name__ for k, v in ref.components.items()}
    for key, comp in ref.components.items():
        if isinstance(comp, torch.nn.Module):
            mine = dict(got[key].named_buffers())
            assert {k: tuple(v.shape) for k, v in mine.items()} == {k: tuple(v.shape) for k, v in comp.named_buffers()}, key
            for k, v in comp.named_buffers():
                assert torch.equal(mine[k], v), f"{key}.{k}"
            assert not torch.equal(next(got[key].parameters()), next(comp.parameters())), key
    t5 = got["text_encoder_3"]
    assert t5.shared.weight is t5.encoder.embed_tokens.weight  # tied, as from_pretrained leaves T5
    assert got["tokenizer"]("a photo of a dog").input_ids == ref.components["tokenizer"]("a photo of a dog").input_ids
    out = backend.run([WorkItem(index=0, id="sd3/x-0", seed=5, prompt="a photo of a dog")], [None])
    assert len(out) == 1 and out[0].image.size == (32, 32)
    # A buffer left on meta has no value to restore: refused with the fix.
    with torch.device("meta"):
        lin = torch.nn.Linear(2, 2)
    lin.register_buffer("ids", torch.empty(3, device="meta"))
    with pytest.raises(RuntimeError, match=r"buffer ids has no value \(built on meta\): build with accelerate.init_empty_weights\(\)"):
        gpu_check.materialise(lin, "cpu")
