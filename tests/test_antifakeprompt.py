"""AntifakePrompt on a tiny InstructBLIP: parameters, prompt, rule, preprocessing, weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _tiny import one_thread, photos, tiny_instructblip, tiny_llama, write_lavis_checkpoint
from PIL import Image

from afpbench.detectors import load_detector
from afpbench.detectors.antifakeprompt import LAVIS_LLM_KEY, LAVIS_QFORMER_KEY, AntifakePrompt
from afpbench.detectors.base import training_kind
from afpbench.detectors.instructblip import AFP_MEAN, AFP_STD, PRESET_BASES, resolve_base
from afpbench.errors import WeightsError

Q_HIDDEN, LLM_HIDDEN = 32, 48  # the tiny builder's sizes


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return str(tiny_instructblip(tmp_path_factory))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_lavis_checkpoint(tmp_path_factory.mktemp("afp") / "COCO_150k_SD3_SD2IP.pth", Q_HIDDEN, LLM_HIDDEN, seed=11)


@pytest.fixture(scope="module")
def det(base, ckpt):
    return load_detector("antifakeprompt", base=base, weights=ckpt)


@pytest.fixture(scope="module")
def batch(det):
    return det.collate([det.preprocess(im) for im in photos(6)])


def test_only_the_two_pseudo_word_embeddings_are_trainable(det):
    cfg = det.model.config
    n = sum(p.numel() for p in det.trainable_parameters())
    assert n == cfg.qformer_config.hidden_size + cfg.text_config.hidden_size == Q_HIDDEN + LLM_HIDDEN
    assert sum(p.numel() for p in det.model.parameters() if p.requires_grad) == n
    assert {id(p) for p in det.model.parameters() if p.requires_grad} == {id(p) for p in det.trainable_parameters()}


def test_real_size_count_is_4864():
    """At real size the formula gives the paper's 4,864 (Q-Former 768 + Vicuna-7B 4,096)."""
    from transformers import InstructBlipQFormerConfig, LlamaConfig

    assert InstructBlipQFormerConfig().hidden_size + LlamaConfig().hidden_size == 4864


def test_prompt_is_encoded_like_lavis(det):
    tokens = det.llm_tok.convert_ids_to_tokens(det.llm_ids[0].tolist())
    assert tokens[0] == "</s>"  # the authors' bos_token
    assert tokens[-2:] == ["[*]", "▁?"] and tokens[1:5] == ["▁Is", "▁this", "▁photo", "▁real"]
    q = det.q_ids[0].tolist()
    assert q.count(det.q_pseudo_id) == 1 and q[0] == det.q_tok.cls_token_id and q[-1] == det.q_tok.sep_token_id
    assert det.q_tok.decode(q, skip_special_tokens=False).startswith("[CLS] is this photo real [*]")
    # The pseudo id sits past the frozen tables: only the trainable row can serve it.
    assert det.q_pseudo_id >= det.model.qformer.get_input_embeddings().num_embeddings
    saved = torch.load(det.weights_path, weights_only=True)["model"]
    emb = det.model.language_model.get_input_embeddings()(det.llm_ids)
    assert torch.equal(emb[0, -2], saved[LAVIS_LLM_KEY][0])
    q_emb = det.model.qformer.get_input_embeddings()(det.q_ids)
    assert torch.equal(q_emb[0, q.index(det.q_pseudo_id)], saved[LAVIS_QFORMER_KEY][0])


def test_one_forward_ranks_exactly_like_the_authors_two_candidate_rule(det, batch):
    p_fake = det.score(batch).double()
    with torch.no_grad():
        losses = det.candidate_losses(det.to_device(batch)).double()
    # loss(yes) - loss(no) = logit(no) - logit(yes) = logit(P(fake))
    assert torch.allclose(losses[:, 0] - losses[:, 1], torch.logit(p_fake), atol=1e-4)
    authors = losses.argmin(dim=1) == 1  # "no" has the lower loss -> fake
    assert torch.equal(authors, p_fake > det.threshold)
    assert authors.any() and (~authors).any(), "the tiny checkpoint should call some photos real and some fake"


def test_preprocessing_is_the_papers_eval_transform(det):
    size = det.image_size
    im = photos(1)[0].resize((300, 200))
    ref = im.resize((int(size * 300 / 200), size), Image.BICUBIC)
    left = int(round((ref.width - size) / 2.0))
    ref = ref.crop((left, 0, left + size, size))
    arr = (np.asarray(ref, dtype=np.float32) / 255.0 - np.array(AFP_MEAN, dtype=np.float32)) / np.array(AFP_STD, dtype=np.float32)
    assert np.allclose(det.preprocess(im).numpy(), arr.transpose(2, 0, 1), atol=1e-6)
    p = det.card.preprocessing
    assert (p.resize, p.crop, p.interpolation, p.mean, p.std) == (size, size, "bicubic", AFP_MEAN, AFP_STD)
    grey = im.convert("L")
    assert det.preprocess(grey).shape == (3, size, size)  # RGB conversion on every path


def test_lavis_checkpoint_loads_by_key(det, base, tmp_path):
    a = write_lavis_checkpoint(tmp_path / "a.pth", Q_HIDDEN, LLM_HIDDEN, seed=1)
    d = load_detector("antifakeprompt", base=base, weights=a)
    saved = torch.load(a, weights_only=True)["model"]
    assert torch.equal(d.q_pseudo.pseudo.data, saved[LAVIS_QFORMER_KEY])
    assert torch.equal(d.llm_pseudo.pseudo.data, saved[LAVIS_LLM_KEY])
    x = d.collate([d.preprocess(im) for im in photos(4)])
    assert not torch.allclose(d.score(x), det.score(x)), "different soft prompts must change the scores"


@pytest.mark.parametrize(
    "case, match",
    [
        ("truncated", "cannot be read"),
        ("wrong_keys", "missing Qformer.bert.embeddings.train_word_embeddings.weight"),
        ("wrong_shape", r"shape mismatch llm_model.model.train_embed_tokens.weight \(1, 4096\) != \(1, 48\)"),
        ("no_model_entry", "is not a LAVIS checkpoint"),
        ("nan", "non-finite"),
    ],
)
def test_bad_checkpoints_are_refused(case, match, base, ckpt, tmp_path):
    path = tmp_path / f"{case}.pth"
    if case == "truncated":
        data = ckpt.read_bytes()
        path.write_bytes(data[: len(data) - 40])
    elif case == "wrong_keys":
        write_lavis_checkpoint(path, 0, 0, model={"Qformer.bert.embeddings.word_embeddings.weight": torch.zeros(1, Q_HIDDEN), LAVIS_LLM_KEY: torch.zeros(1, LLM_HIDDEN)})
    elif case == "wrong_shape":
        write_lavis_checkpoint(path, Q_HIDDEN, 4096)
    elif case == "no_model_entry":
        torch.save({LAVIS_QFORMER_KEY: torch.zeros(1, Q_HIDDEN)}, path)
    elif case == "nan":
        write_lavis_checkpoint(path, 0, 0, model={LAVIS_QFORMER_KEY: torch.full((1, Q_HIDDEN), float("nan")), LAVIS_LLM_KEY: torch.zeros(1, LLM_HIDDEN)})
    with pytest.raises(WeightsError, match=match) as err:
        load_detector("antifakeprompt", base=base, weights=path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_own_format_round_trip_and_lavis_export(det, base, batch, tmp_path):
    folder = det.save(tmp_path / "saved")
    meta = json.loads((folder / "detector.json").read_text())
    assert meta["detector"] == "antifakeprompt" and meta["base"] == base
    assert meta["lavis_token_ids"] == {"qformer": 30523, "llm": 32001}
    assert meta["token_ids"]["qformer"] == det.q_pseudo_id and meta["trainable_parameters"] == Q_HIDDEN + LLM_HIDDEN
    again = load_detector("antifakeprompt", weights=folder)  # the base comes from detector.json
    assert torch.equal(again.score(batch), det.score(batch))
    exported = again.export_lavis(tmp_path / "export.pth")
    third = load_detector("antifakeprompt", base=base, weights=exported)
    assert torch.equal(third.score(batch), det.score(batch))
    with pytest.raises(WeightsError, match="holds weights of detector 'antifakeprompt', not 'instructblip_lora'"):
        load_detector("instructblip_lora", base=base, weights=folder)


def test_variants_point_at_their_released_files(base, ckpt, tmp_path, monkeypatch):
    files = {"antifakeprompt": "COCO_150k_SD3_SD2IP.pth", "antifakeprompt.lama": "COCO_150k_SD3_SD2IP_lama.pth",
             "antifakeprompt.v1": "COCO_150k_SD2_SD2IP.pth", "antifakeprompt.v1_lama": "COCO_150k_SD2_SD2IP_lama.pth"}
    assert sorted(AntifakePrompt.variant_names()) == sorted(files)
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("AFPBENCH_WEIGHTS", str(cache))
    (cache / files["antifakeprompt.v1_lama"]).write_bytes(ckpt.read_bytes())
    d = load_detector("antifakeprompt.v1_lama", base=base)
    assert d.weights_path == cache / files["antifakeprompt.v1_lama"]
    assert d.card.weights.filename == files["antifakeprompt.v1_lama"] and "AntifakePrompt" in d.card.weights.source
    assert "LaMa" in d.card.training_data and d.card.tag == "v1_lama"


def test_composite_base_swaps_the_llm(base, ckpt, tmp_path_factory):
    from transformers import LlamaForCausalLM

    llm = str(tiny_llama(tmp_path_factory))
    d = load_detector("antifakeprompt", base=f"{base}+{llm}", weights=ckpt)
    ref = LlamaForCausalLM.from_pretrained(llm)
    assert torch.equal(d.model.language_model.lm_head.weight, ref.lm_head.weight)
    assert d.base_description() == f"{base}+{llm}"
    assert resolve_base(None) == ("Salesforce/instructblip-vicuna-7b", "lmsys/vicuna-7b-v1.3")
    assert resolve_base("hf") == (PRESET_BASES["hf"], None)


def test_zero_shot_uses_the_prompt_without_the_pseudo_word(base, batch):
    z = load_detector("instructblip", base=base)
    tokens = z.llm_tok.convert_ids_to_tokens(z.llm_ids[0].tolist())
    assert "[*]" not in tokens and tokens[0] == "</s>" and z.prompt == "Is this photo real?"
    assert training_kind(type(z)) is None and not z.card.trainable and sum(p.requires_grad for p in z.model.parameters()) == 0
    s = z.score(batch)
    assert torch.all((s > 0) & (s < 1))


def test_bf16_on_cpu_runs_close_to_fp32(base, ckpt, det, batch):
    d = load_detector("antifakeprompt", base=base, weights=ckpt, dtype="bfloat16")
    assert d.model.language_model.lm_head.weight.dtype == torch.bfloat16
    assert torch.allclose(d.score(batch), det.score(batch), atol=0.05)


@pytest.mark.gpu
def test_fp16_batched_on_gpu_matches_fp32(base, ckpt, det, batch):
    d = load_detector("antifakeprompt", base=base, weights=ckpt, device="cuda")
    assert d.dtype == torch.float16
    assert torch.allclose(d.score(batch), det.score(batch), atol=0.02)
