"""Fidelity of the InstructBLIP family to the authors' code (docs/detectors.md, "Fidelity
to the authors' code"): their trainer's checkpoint layout, their precision, ties, the
vision LayerNorm epsilon, summed candidate losses and the two prompt tokenizations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _tiny import (
    lavis_buffers,
    make_split,
    one_thread,
    photos,
    tiny_instructblip,
    tiny_llama,
    trainer_state_dict,
    write_lavis_checkpoint,
    write_lavis_trainer_checkpoint,
)
from click.testing import CliRunner
from helpers import REPO

from afpbench.detectors import load_detector
from afpbench.detectors.antifakeprompt import LAVIS_LLM_KEY, LAVIS_QFORMER_KEY
from afpbench.errors import AfpbenchError, WeightsError
from afpbench.evaluate import EvalConfig, detector_options, evaluate
from afpbench.results import load_results, read_predictions

Q_HIDDEN, LLM_HIDDEN, LLM_LAYERS = 32, 48, 2  # the tiny builder's sizes


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return str(tiny_instructblip(tmp_path_factory))


@pytest.fixture(scope="module")
def vectors():
    g = torch.Generator().manual_seed(21)
    return {LAVIS_QFORMER_KEY: torch.randn(1, Q_HIDDEN, generator=g) * 0.5, LAVIS_LLM_KEY: torch.randn(1, LLM_HIDDEN, generator=g) * 0.5}


@pytest.fixture(scope="module")
def two_key(tmp_path_factory, vectors):
    return write_lavis_checkpoint(tmp_path_factory.mktemp("afp") / "two_key.pth", 0, 0, model=dict(vectors))


@pytest.fixture(scope="module")
def trainer_file(tmp_path_factory, base, vectors):
    """The two vectors in the layout the authors' trainer writes: frozen parameters deleted,
    registered buffers kept (position_ids and one inv_freq per LLM layer)."""
    model = {LAVIS_QFORMER_KEY: vectors[LAVIS_QFORMER_KEY], **lavis_buffers(base), LAVIS_LLM_KEY: vectors[LAVIS_LLM_KEY]}
    return write_lavis_trainer_checkpoint(tmp_path_factory.mktemp("afp") / "COCO_150k_SD3_SD2IP.pth", model)


@pytest.fixture(scope="module")
def det(base, two_key):
    return load_detector("antifakeprompt", base=base, weights=two_key)


@pytest.fixture(scope="module")
def batch(det):
    return det.collate([det.preprocess(im) for im in photos(6)])


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    make_split(root, 4, seed=3, prefix="t")
    return root


def _eval(dets, sets, out, **kw):
    cfg = EvalConfig(detectors=dets, data=[sets], datasets=["t_real", "t_fake"], profile=None, out=out, batch_size=4, bootstrap=20, num_workers=0, progress=False, **kw)
    return [e.path for e in evaluate(cfg)]


# -- 1. the authors' trainer checkpoints -------------------------------------------------------
def test_trainer_layout_is_what_the_trainer_writes(trainer_file, base):
    obj = torch.load(trainer_file, weights_only=True)
    assert list(obj) == ["model", "optimizer", "config", "scaler", "epoch"]
    names = list(obj["model"])
    assert "Qformer.bert.embeddings.position_ids" in names and len(names) == 2 + 1 + LLM_LAYERS
    assert obj["model"]["Qformer.bert.embeddings.position_ids"].shape == (1, 64)  # the tiny Q-Former's max_position_embeddings
    assert obj["model"]["llm_model.model.layers.1.self_attn.rotary_emb.inv_freq"].shape == (LLM_HIDDEN // 4 // 2,)
    assert obj["optimizer"]["param_groups"][0]["lr"] == 1e-5 and len(obj["optimizer"]["state"]) == 2


def test_trainer_checkpoint_loads_and_scores_like_the_two_key_file(det, trainer_file, base, batch, tmp_path, vectors):
    full = load_detector("antifakeprompt", base=base, weights=trainer_file)
    assert torch.equal(full.score(batch), det.score(batch))
    assert torch.equal(full.q_pseudo.pseudo.data, vectors[LAVIS_QFORMER_KEY]) and torch.equal(full.llm_pseudo.pseudo.data, vectors[LAVIS_LLM_KEY])
    expected = ["Qformer.bert.embeddings.position_ids"] + [f"llm_model.model.layers.{i}.self_attn.rotary_emb.inv_freq" for i in range(LLM_LAYERS)]
    assert full.arguments()["ignored_checkpoint_buffers"] == expected
    assert det.arguments()["ignored_checkpoint_buffers"] == []
    # inv_freq as it comes out of an fp16 Vicuna checkpoint is accepted too.
    rounded = {**vectors, **lavis_buffers(base, fp16_rounded=True)}
    assert not torch.equal(rounded["llm_model.model.layers.0.self_attn.rotary_emb.inv_freq"], lavis_buffers(base)["llm_model.model.layers.0.self_attn.rotary_emb.inv_freq"])
    d16 = load_detector("antifakeprompt", base=base, weights=write_lavis_trainer_checkpoint(tmp_path / "r.pth", rounded))
    assert torch.equal(d16.score(batch), det.score(batch))


@pytest.mark.parametrize(
    "case, match",
    [
        ("position_ids_shifted", r"buffer Qformer.bert.embeddings.position_ids holds 1 at index 0 where the base computes 0"),
        ("rope_theta", r"buffer llm_model.model.layers.1.self_attn.rotary_emb.inv_freq holds .* where the base computes"),
        ("other_head_dim", r"buffer llm_model.model.layers.0.self_attn.rotary_emb.inv_freq is \(8,\), the base computes \(6,\)"),
        ("layer_out_of_range", r"unexpected llm_model.model.layers.2.self_attn.rotary_emb.inv_freq"),
        ("frozen_weight", r"unexpected llm_model.model.embed_tokens.weight"),
        ("other_buffer", r"unexpected visual_encoder.blocks.0.attn.relative_position_index"),
    ],
)
def test_trainer_checkpoint_with_a_wrong_buffer_or_extra_key_is_refused(case, match, base, vectors, tmp_path):
    model = {**vectors, **lavis_buffers(base)}
    inv = "llm_model.model.layers.{}.self_attn.rotary_emb.inv_freq"
    if case == "position_ids_shifted":
        model["Qformer.bert.embeddings.position_ids"] = model["Qformer.bert.embeddings.position_ids"] + 1
    elif case == "rope_theta":  # a base with rope_theta 1e6 (not the authors' LLaMA)
        model[inv.format(1)] = 1.0 / (1e6 ** (torch.arange(0, 12, 2).float() / 12))
    elif case == "other_head_dim":
        model[inv.format(0)] = 1.0 / (10000 ** (torch.arange(0, 16, 2).float() / 16))
    elif case == "layer_out_of_range":
        model[inv.format(2)] = model[inv.format(0)].clone()
    elif case == "frozen_weight":
        model["llm_model.model.embed_tokens.weight"] = torch.zeros(8, LLM_HIDDEN)
    elif case == "other_buffer":
        model["visual_encoder.blocks.0.attn.relative_position_index"] = torch.zeros(5, 5, dtype=torch.long)
    path = write_lavis_trainer_checkpoint(tmp_path / f"{case}.pth", model)
    with pytest.raises(WeightsError, match=match) as err:
        load_detector("antifakeprompt", base=base, weights=path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_lora_checkpoint_of_the_authors_trainer(base, batch, tmp_path):
    """instructblip_lora reads what the trainer writes for the authors' LoRA baseline: peft's
    adapters inside their model (llm_model = get_peft_model(LLaMA)) plus the buffers."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import InstructBlipForConditionalGeneration

    llm = InstructBlipForConditionalGeneration.from_pretrained(base).language_model
    lavis = torch.nn.Module()  # the attribute layout of their Blip2VicunaInstructLoRA
    lavis.llm_model = get_peft_model(llm, LoraConfig(task_type=TaskType.CAUSAL_LM, inference_mode=False, r=8, lora_alpha=32, lora_dropout=0.1))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, p in lavis.llm_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    state = trainer_state_dict(lavis)
    assert state and all(".lora_" in k and k.startswith("llm_model.base_model.model.model.layers.") for k in state)
    model = {**lavis_buffers(base, llm_prefix="llm_model.base_model.model.model."), **state}
    path = write_lavis_trainer_checkpoint(tmp_path / "lora.pth", model, arch="blip2_vicuna_instruct_lora")
    d = load_detector("instructblip_lora", base=base, weights=path)
    for k, v in state.items():
        assert torch.equal(d._lora[k.removeprefix("llm_model.base_model.model.")].data, v)
    assert len(d.arguments()["ignored_checkpoint_buffers"]) == 1 + LLM_LAYERS
    again = load_detector("instructblip_lora", weights=d.save(tmp_path / "own"))
    assert torch.equal(again.score(batch), d.score(batch))
    zero_shot = load_detector("instructblip", base=base)
    assert not torch.allclose(d.score(batch), zero_shot.score(batch), atol=1e-3), "the adapters must change the scores"
    # LoRA on the Q-Former (lora_on_Qformer: True) is not something afpbench builds: refused.
    model["Qformer.base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.default.weight"] = torch.zeros(8, Q_HIDDEN)
    bad = write_lavis_trainer_checkpoint(tmp_path / "qlora.pth", model, arch="blip2_vicuna_instruct_lora")
    with pytest.raises(WeightsError, match="unexpected Qformer.base_model.model.bert") as err:
        load_detector("instructblip_lora", base=base, weights=bad)
    assert "\n" not in str(err.value)


# -- 2. the authors' precision ---------------------------------------------------------------
def _dtypes(module) -> set:
    return {p.dtype for p in module.parameters()}


def test_authors_precision_places_each_part(base, two_key, det, batch):
    a = load_detector("antifakeprompt", base=base, weights=two_key, options={"precision": "authors"})
    m = a.model
    assert a.precision == "authors" and a.dtype == torch.float16
    assert _dtypes(m.vision_model) == {torch.float32}  # autocast rounds its matmuls to fp16 on the fly
    assert _dtypes(m.qformer) == {torch.float32} and m.query_tokens.dtype == torch.float32 and _dtypes(m.language_projection) == {torch.float32}
    lm = m.language_model
    assert _dtypes(lm.model.layers) == {torch.float16} and lm.lm_head.weight.dtype == torch.float16 and lm.model.norm.weight.dtype == torch.float16
    assert lm.get_input_embeddings().weight.dtype == torch.float32 and a.llm_pseudo.pseudo.dtype == torch.float32
    assert lm.model.rotary_emb.inv_freq.dtype == torch.float32
    args = a.arguments()
    assert args["precision"] == "authors" and args["dtype"] == "float16"
    # Where each part computes: record output dtypes with hooks during one scoring pass.
    seen = {}

    def record(key):
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, tuple) else getattr(output, "last_hidden_state", output)
            seen.setdefault(key, out.dtype)

        return hook

    def record_input(_module, args, kwargs):
        seen.setdefault("residual", (args[0] if args else kwargs["hidden_states"]).dtype)

    hooks = [
        mod.register_forward_hook(record(k))
        for k, mod in {"vision_qkv": m.vision_model.encoder.layers[0].self_attn.qkv, "vision_out": m.vision_model.post_layernorm,
                       "qformer": m.qformer.encoder.layer[0].attention.attention.query, "projection": m.language_projection,
                       "llm_in": lm.model.layers[0].input_layernorm, "llm_q": lm.model.layers[0].self_attn.q_proj, "llm_layer": lm.model.layers[0]}.items()
    ]
    pre = lm.model.layers[0].register_forward_pre_hook(record_input, with_kwargs=True)
    try:
        s = a.score(batch)
    finally:
        for h in hooks + [pre]:
            h.remove()
    assert seen == {
        "vision_qkv": torch.float16, "vision_out": torch.float32, "qformer": torch.float32, "projection": torch.float32,
        "residual": torch.float32, "llm_in": torch.float32, "llm_q": torch.float16, "llm_layer": torch.float32,
    }
    assert torch.allclose(s, det.score(batch), atol=5e-3)  # fp16 arithmetic, fp32 where the authors keep it


def test_precision_defaults_and_refusals(base, two_key):
    cpu = load_detector("antifakeprompt", base=base, weights=two_key)
    assert cpu.precision == "uniform" and cpu.dtype == torch.float32 and cpu.arguments()["precision"] == "uniform"
    z = load_detector("instructblip", base=base, options={"precision": "authors"})
    # The zero-shot model keeps LAVIS's fp16 table; its fp32 prefix still makes the sequence fp32.
    assert z.model.language_model.get_input_embeddings().weight.dtype == torch.float16
    assert z.llm_embeds(torch.zeros(1, 2, LLM_HIDDEN), z.llm_ids).dtype == torch.float32
    with pytest.raises(AfpbenchError, match="precision=authors is the authors' fp16 mixed precision; drop --dtype bfloat16") as err:
        load_detector("antifakeprompt", base=base, weights=two_key, dtype="bfloat16", options={"precision": "authors"})
    assert "\n" not in str(err.value)
    with pytest.raises(AfpbenchError, match="Option precision=fp8 is not one antifakeprompt accepts; use one of authors, uniform"):
        load_detector("antifakeprompt", base=base, weights=two_key, options={"precision": "fp8"})


@pytest.mark.gpu
def test_authors_precision_is_the_gpu_default(base, two_key, det, batch):
    a = load_detector("antifakeprompt", base=base, weights=two_key, device="cuda")
    assert a.precision == "authors" and a.model.qformer.embeddings.word_embeddings.weight.dtype == torch.float32
    assert a.model.language_model.model.layers[0].self_attn.q_proj.weight.dtype == torch.float16
    assert torch.allclose(a.score(batch), det.score(batch), atol=5e-3)
    u = load_detector("antifakeprompt", base=base, weights=two_key, device="cuda", dtype="float16")
    assert u.precision == "uniform" and _dtypes(u.model.qformer.encoder) == {torch.float16}  # ([*] itself stays fp32)
    b = load_detector("antifakeprompt", base=base, weights=two_key, device="cuda", dtype="bfloat16")
    assert b.precision == "uniform" and _dtypes(b.model.language_model.model.layers) == {torch.bfloat16}
    assert torch.allclose(u.score(batch), det.score(batch), atol=0.02)


# -- 3. ties -------------------------------------------------------------------------------------
def test_a_tie_is_real_through_evaluate(base, two_key, sets, tmp_path):
    tied = load_detector("antifakeprompt", base=base, weights=two_key)
    with torch.no_grad():  # zero LM-head rows for yes and no: both logits are exactly 0
        tied.model.language_model.lm_head.weight[tied.answer_ids] = 0.0
    x = tied.collate([tied.preprocess(im) for im in photos(3)])
    with torch.no_grad():
        losses = tied.candidate_losses(tied.to_device(x))
    assert torch.equal(losses[:, 0], losses[:, 1])  # the authors' two losses tie: argsort puts "yes" first
    [path] = _eval([tied], sets, tmp_path)
    res = load_results(path)
    for name in ("t_real", "t_fake"):
        p = read_predictions(path.parent / "predictions" / f"{name}.parquet")
        assert np.all(p.scores == 0.5) and np.all(p.preds == 0), name
    assert res.metrics.per_set["t_real"].accuracy.value == 1.0 and res.metrics.per_set["t_fake"].accuracy.value == 0.0
    schema = json.loads((REPO / "afpbench" / "schemas" / "results.schema.json").read_text())
    assert "pred = score > value" in schema["$defs"]["ThresholdPolicy"]["description"]


# -- 4. the vision LayerNorm epsilon -------------------------------------------------------------
def test_vision_layernorm_eps_is_lavis_for_the_authors_arrangement(base, two_key, tmp_path_factory, batch):
    llm = str(tiny_llama(tmp_path_factory))
    composed = load_detector("antifakeprompt", base=f"{base}+{llm}", weights=two_key)
    single = load_detector("antifakeprompt", base=base, weights=two_key)
    assert composed.vision_ln_eps == 1e-5 and composed.arguments()["vision_ln_eps"] == 1e-5
    assert single.vision_ln_eps == single.model.config.vision_config.layer_norm_eps == 1e-6
    assert any("eps 1e-5" in c for c in composed.card.choices)
    from afpbench.detectors.instructblip import resolve_base

    assert resolve_base("vicuna-v1.3")[1] is not None  # the default preset is a composed base
    vm = composed.model.vision_model
    with torch.no_grad():
        out = vm(pixel_values=batch, output_hidden_states=True)
    ln = vm.post_layernorm
    ref = torch.nn.functional.layer_norm(out.hidden_states[-1], ln.normalized_shape, ln.weight, ln.bias, eps=1e-5)
    assert torch.allclose(out.last_hidden_state, ref, atol=1e-6)
    far = torch.nn.functional.layer_norm(out.hidden_states[-1], ln.normalized_shape, ln.weight, ln.bias, eps=1e-6)
    assert not torch.allclose(out.last_hidden_state, far, atol=1e-6)


# -- 5. candidate losses ----------------------------------------------------------------------
def test_candidate_losses_sum_a_multi_token_answer(det, batch):
    cands = ("yes", "no", "real photo")
    ids = [det.llm_tok(c, add_special_tokens=False).input_ids for c in cands]
    assert [len(i) for i in ids] == [1, 1, 2]
    x = det.to_device(batch[:3])
    with torch.no_grad():
        got = det.candidate_losses(x, cands).double()
        prefix = det.image_prefix(x)
        lm = det.model.language_model
        hand = torch.zeros(3, len(cands), dtype=torch.float64)
        for j, cand in enumerate(ids):  # token by token: -log p(t_k | prompt, t_<k), summed
            for k, token in enumerate(cand):
                seq = torch.cat([det.llm_ids.expand(3, -1), torch.tensor([cand[:k]] * 3, dtype=torch.long).reshape(3, k)], dim=1)
                emb = torch.cat([prefix, lm.get_input_embeddings()(seq)], dim=1)
                logp = lm(inputs_embeds=emb).logits[:, -1].double().log_softmax(-1)
                hand[:, j] -= logp[:, token]
    assert torch.allclose(got, hand, atol=1e-4)
    assert not torch.allclose(got[:, 2], hand[:, 2] / 2, atol=1e-3)  # a sum, not a mean


# -- 6. the two tokenizations -------------------------------------------------------------------
def test_tokenization_variants(base, two_key, det, batch, tmp_path):
    assert det.llm_tok.convert_ids_to_tokens(det.llm_ids[0].tolist()) == ["</s>", "▁Is", "▁this", "▁photo", "▁real", "[*]", "▁?"]
    new = load_detector("antifakeprompt", base=base, weights=two_key, options={"tokenization": "transformers-4.35"})
    assert new.llm_tok.convert_ids_to_tokens(new.llm_ids[0].tolist()) == ["</s>", "▁Is", "▁this", "▁photo", "▁real", "▁", "[*]", "?"]
    assert new.q_ids.tolist() == det.q_ids.tolist()  # the Q-Former's BERT tokenization is the same
    assert det.arguments()["tokenization"] == "transformers-4.30" and new.arguments()["tokenization"] == "transformers-4.35"
    assert not torch.allclose(new.score(batch), det.score(batch), atol=1e-3)
    folder = new.save(tmp_path / "saved")
    assert json.loads((folder / "detector.json").read_text())["tokenization"] == "transformers-4.35"
    again = load_detector("antifakeprompt", weights=folder)  # a saved detector keeps its tokenization
    assert again.tokenization == "transformers-4.35" and torch.equal(again.score(batch), new.score(batch))
    with pytest.raises(AfpbenchError, match="instructblip has no option 'tokenization' \\(its options: precision\\)"):
        load_detector("instructblip", base=base, options={"tokenization": "transformers-4.35"})


def test_detector_options_are_routed_and_recorded_by_evaluate(base, two_key, det, sets, tmp_path):
    folder = det.save(tmp_path / "afp")  # records the base, so `afpbench evaluate` needs no --base
    from afpbench.cli import cli

    out = CliRunner().invoke(cli, [
        "evaluate", "--detector", "antifakeprompt", "--weights", str(folder), "--detector", "constant.real", "--detector-option", "tokenization=transformers-4.35",
        "--data", str(sets), "--datasets", "t_real,t_fake", "--out", str(tmp_path / "res"), "--bootstrap", "20", "--num-workers", "0", "--no-progress",
    ])
    assert out.exit_code == 0, out.output
    args = load_results(tmp_path / "res" / "antifakeprompt").detector.arguments
    assert args["tokenization"] == "transformers-4.35" and args["precision"] == "uniform" and args["vision_ln_eps"] == 1e-6
    assert args["ignored_checkpoint_buffers"] == []
    assert detector_options(["antifakeprompt", "constant"], ["precision=uniform"]) == [{"precision": "uniform"}, {}]
    for pairs, match in ((["tokenization"], "is not KEY=VALUE"), (["colour=red"], "No detector of this run has an option 'colour'")):
        with pytest.raises(AfpbenchError, match=match):
            detector_options(["antifakeprompt", "constant"], pairs)


def test_ignored_buffers_reach_results_json(base, trainer_file, sets, tmp_path):
    full = load_detector("antifakeprompt", base=base, weights=trainer_file)
    [path] = _eval([full], sets, tmp_path)
    data = json.loads(path.read_text())
    args = data["detector"]["arguments"]
    assert args["ignored_checkpoint_buffers"][0] == "Qformer.bert.embeddings.position_ids" and len(args["ignored_checkpoint_buffers"]) == 1 + LLM_LAYERS
    assert args["precision"] == "uniform" and args["tokenization"] == "transformers-4.30"
    assert any("inv_freq" in c for c in data["detector"]["card"]["choices"])
