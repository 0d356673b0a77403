"""``afpbench plan``: estimates from the real architectures on meta, and a refusal that names the fix."""

from __future__ import annotations

import json

from helpers import run_cli


def test_build_plan_counts_equal_the_meta_models():
    from afpbench.estimate import (
        DTYPE_BYTES,
        build_backend,
        count_parameters,
        plan_build,
    )

    plan = plan_build("sd2", batch_size=2, dtype="fp16", count=10, gpu=(None, None))
    backend = build_backend("sd2")
    meta = {k: count_parameters(m) for k, m in backend.pipe.components.items() if hasattr(m, "parameters")}
    assert {p.component: p.parameters for p in plan.parts} == meta
    assert plan.weights_bytes == sum(meta.values()) * DTYPE_BYTES["fp16"]
    assert plan.bytes_per_dtype()["fp32"] == 2 * plan.bytes_per_dtype()["fp16"]
    # 10 images of 768 x 768 RGB at half the raw bytes (PNG).
    assert plan.images == 10 and plan.output_bytes == int(10 * 768 * 768 * 3 * 0.5)
    assert plan.activation_bytes > 0 and plan.peak_gpu_bytes > plan.weights_bytes + plan.activation_bytes


def test_activation_estimate_grows_with_the_batch():
    from afpbench.estimate import build_backend, diffusion_activation_bytes

    backend = build_backend("sd2")
    one, four = diffusion_activation_bytes(backend, 1), diffusion_activation_bytes(backend, 4)
    # The VAE decode of 4 images holds 4x the tensors of one (the same graph, batch 4).
    assert 3.5 * one["vae_decode"] <= four["vae_decode"] <= 4.5 * one["vae_decode"]


def test_trace_counts_live_bytes_not_freed_ones():
    import torch

    from afpbench.estimate import trace_peak

    def step():
        x = torch.empty(1024, device="meta")  # 4 KiB
        for _ in range(5):
            x = x * 2  # each result replaces the previous one: at most two alive at once
        return x

    assert trace_peak(step) == 2 * 4096


def test_evaluate_plan_antifakeprompt_v3():
    from afpbench.estimate import plan_evaluate

    plan = plan_evaluate(["antifakeprompt"], profile="v3", batch_size=8, dtype="fp16", gpu=(None, None))
    # 23 sets x 3,000 images; InstructBLIP-Vicuna-7B about 7.9B parameters in fp16.
    assert plan.images == 23 * 3000
    assert abs(plan.parameters - 7.913e9) < 0.01e9
    assert {p.model_id for p in plan.parts} == {"Salesforce/instructblip-vicuna-7b", "lmsys/vicuna-7b-v1.3"}


def test_plan_refuses_when_it_does_not_fit(tmp_path):
    r = run_cli("plan", "build", "sd3", "--gpu-memory", "16", "--count", "4", "--out", str(tmp_path / "o"), "--json", str(tmp_path / "p.json"), timeout=600)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: build sd3 needs about")
    assert "use_t5=false" in err[0] and "--batch-size 2" in err[0]
    assert "Traceback" not in r.stderr
    plan = json.loads((tmp_path / "p.json").read_text())
    assert plan["fits_gpu"] is False and plan["schema_version"] == 1
    # Dropping T5 and halving the batch fits the same 16 GiB GPU.
    ok = run_cli("plan", "build", "sd3", "--gpu-memory", "16", "--count", "4", "--batch-size", "2", "--param", "use_t5=false", "--out", str(tmp_path / "o"), timeout=600)
    assert ok.returncode == 0, ok.stderr
    assert "T5EncoderModel" not in ok.stdout and "fits" in ok.stdout


def test_list_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from afpbench.cli import main\ntry:\n    main(['list'])\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.stdout.strip().splitlines()[-1] == "False"
