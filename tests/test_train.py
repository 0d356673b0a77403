"""afpbench.train and `afpbench train` on tiny real models and small real/fake sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _tiny import TINY, make_split, one_thread, photos, scores_on, tiny_clip, tiny_instructblip, tiny_resnet
from sklearn.metrics import roc_auc_score

from afpbench.detectors import load_detector
from afpbench.detectors.antifakeprompt import LAVIS_LLM_KEY, LAVIS_QFORMER_KEY
from afpbench.errors import AfpbenchError, DatasetError
from afpbench.train import PAPER_RECIPE, TrainConfig, train


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    return {"train": list(make_split(root, 32, 0, "tr")), "val": list(make_split(root, 12, 1, "va")), "root": root}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return str(tiny_instructblip(tmp_path_factory))


@pytest.fixture(scope="module")
def afp_run(data, base, tmp_path_factory):
    out = tmp_path_factory.mktemp("afp-run")
    cfg = TrainConfig(detector="antifakeprompt", train=[str(p) for p in data["train"]], val=[str(p) for p in data["val"]], out=str(out), base=base, lr=5e-2, epochs=5, batch_size=8, quiet=True)
    return train(cfg)


def test_paper_recipe_is_the_default():
    cfg = TrainConfig(detector="antifakeprompt", train=["x"], out="y").resolved()
    assert (cfg.lr, cfg.betas, cfg.weight_decay, cfg.scheduler, cfg.warmup_steps, cfg.epochs, cfg.batch_size, cfg.seed) == (1e-5, (0.9, 0.999), 0.05, "cosine", 0, 10, 6, 42)
    assert PAPER_RECIPE["lr"] == 1e-5
    assert TrainConfig(detector="x", train=["x"], out="y", lr=3e-3).resolved().lr == 3e-3


def test_soft_prompt_training_changes_only_the_embeddings_and_learns(afp_run, data, base):
    r = afp_run
    assert r.completed and len(r.epochs) == 5 and r.best_epoch >= 1
    assert r.train_losses[-1] < r.train_losses[0] and min(r.val_losses) < r.val_losses[0]
    assert r.best_epoch == int(np.argmin(r.val_losses)) + 1
    assert sorted(p.name for p in (r.out / "checkpoints").iterdir()) == [f"epoch-{i:03d}" for i in range(1, 6)]
    saved = json.loads((r.out / "train_result.json").read_text())
    assert saved["best_epoch"] == r.best_epoch and len(saved["epochs"]) == 5

    untrained = load_detector("antifakeprompt", base=base, train_init=True)
    trained = load_detector("antifakeprompt", weights=r.best_checkpoint)
    # Every frozen weight is the base's; the two embeddings moved.
    frozen_t = {k: v for k, v in trained.model.state_dict().items() if not k.endswith(".pseudo")}
    frozen_u = untrained.model.state_dict()
    assert all(torch.equal(v, frozen_u[k]) for k, v in frozen_t.items())
    assert not torch.equal(trained.q_pseudo.pseudo, untrained.q_pseudo.pseudo)
    assert not torch.equal(trained.llm_pseudo.pseudo, untrained.llm_pseudo.pseudo)
    # ... and the detector separates the training split better than before.
    y, s_before = scores_on(untrained, data["train"])
    _, s_after = scores_on(trained, data["train"])
    assert roc_auc_score(y, s_after) > roc_auc_score(y, s_before) + 0.1
    assert ((s_after >= 0.5) == y).mean() > ((s_before >= 0.5) == y).mean()
    assert "tr_real" in trained.card.training_data


def test_resume_after_a_stop_gives_the_same_weights(data, base, tmp_path):
    common = dict(detector="antifakeprompt", train=[str(p) for p in data["train"]], val=[str(p) for p in data["val"]], base=base, lr=5e-2, epochs=2, batch_size=6, limit=6, quiet=True)
    full = train(TrainConfig(out=str(tmp_path / "full"), **common))
    part = train(TrainConfig(out=str(tmp_path / "part"), stop_after_epochs=1, **common))
    assert not part.completed and [e.epoch for e in part.epochs] == [1]
    done = train(TrainConfig(out=str(tmp_path / "part"), **common))
    assert done.completed and done.resumed_from == 2
    a = load_detector("antifakeprompt", weights=full.out / "checkpoints" / "epoch-002" / "detector")
    b = load_detector("antifakeprompt", weights=done.out / "checkpoints" / "epoch-002" / "detector")
    for k in (LAVIS_QFORMER_KEY, LAVIS_LLM_KEY):
        assert torch.equal(a.trainable_state()[k], b.trainable_state()[k])
    assert full.train_losses == done.train_losses and full.val_losses == done.val_losses
    with pytest.raises(AfpbenchError, match="other settings"):
        train(TrainConfig(out=str(tmp_path / "part"), **{**common, "lr": 1e-3}))


def test_training_needs_both_classes(data, base, tmp_path):
    with pytest.raises(DatasetError, match="only real"):
        train(TrainConfig(detector="antifakeprompt", train=[str(data["train"][0])], out=str(tmp_path), base=base))
    with pytest.raises(AfpbenchError, match="not trainable"):
        train(TrainConfig(detector="constant", train=[str(data["train"][0])], out=str(tmp_path)))


def test_lora_training_moves_only_the_adapters(data, base, tmp_path):
    r = train(TrainConfig(detector="instructblip_lora", train=[str(p) for p in data["train"]], out=str(tmp_path), base=base, lr=1e-2, epochs=1, batch_size=8, limit=12, quiet=True))
    fresh = load_detector("instructblip_lora", base=base, train_init=True)
    trained = load_detector("instructblip_lora", weights=r.best_checkpoint)
    ft, tt = fresh.model.state_dict(), trained.model.state_dict()
    moved = {k for k in ft if not torch.equal(ft[k], tt[k])}
    assert moved and all("lora_B" in k or "lora_A" in k for k in moved)
    lora_modules = [n for n, m in trained.model.language_model.named_modules() if hasattr(m, "lora_A")]
    assert len(lora_modules) == 2 * trained.model.language_model.config.num_hidden_layers
    assert all(n.endswith(("q_proj", "v_proj")) for n in lora_modules)
    assert all(m.r["default"] == 8 and m.lora_alpha["default"] == 32 for _, m in trained.model.language_model.named_modules() if hasattr(m, "lora_A"))


def test_spectral_and_format_fit_in_closed_form(data, tmp_path, tmp_path_factory):
    dirs = [str(p) for p in data["train"]]
    r = train(TrainConfig(detector="spectral", train=dirs, val=[str(p) for p in data["val"]], out=str(tmp_path / "sp"), image_size=TINY, quiet=True, threads=2))
    assert torch.get_num_threads() == 1  # the run's thread setting is restored afterwards
    det = load_detector("spectral", weights=r.best_checkpoint)
    y, s = scores_on(det, data["val"])
    assert roc_auc_score(y, s) > 0.8 and r.epochs[0].val_loss < 0.69
    # A set whose reals are JPEG and fakes PNG: the fitted format detector finds the shortcut.
    biased = make_split(tmp_path_factory.mktemp("biased"), 16, 5, "bias", real_format="jpeg", fake_format="png")
    f = train(TrainConfig(detector="format", train=[str(p) for p in biased], out=str(tmp_path / "fmt"), quiet=True))
    y, s = scores_on(load_detector("format", weights=f.best_checkpoint), list(biased))
    assert roc_auc_score(y, s) == 1.0


@pytest.mark.parametrize("name", ["efficientnet", "univfd", "cnnspot"])
def test_cnn_and_probe_detectors_train(name, data, tmp_path, tmp_path_factory):
    kw = {"efficientnet": dict(image_size=TINY), "univfd": dict(base=str(tiny_clip(tmp_path_factory))), "cnnspot": dict(base=str(tiny_resnet(tmp_path_factory)), image_size=TINY)}[name]
    lr = {"efficientnet": 3e-4, "univfd": 1e-2, "cnnspot": 1e-3}[name]
    cfg = TrainConfig(detector=name, train=[str(p) for p in data["train"]], val=[str(p) for p in data["val"]], out=str(tmp_path), epochs=2, batch_size=16, lr=lr, limit=16, quiet=True, **kw)
    r = train(cfg)
    assert r.completed and all(np.isfinite(e.train_loss) and np.isfinite(e.val_loss) for e in r.epochs)
    assert r.train_losses[-1] < r.train_losses[0]
    det = load_detector(name, weights=r.best_checkpoint, **({"base": kw["base"]} if "base" in kw else {}))
    s = det.score(det.collate([det.preprocess(im) for im in photos(4)]))
    assert torch.all((s >= 0) & (s <= 1))


def test_cli_trains_and_reports_errors_on_one_line(data, tmp_path, capsys):
    from afpbench.cli import main

    train_arg = ",".join(str(p) for p in data["train"])
    main(["train", "--detector", "spectral", "--train", train_arg, "--val", str(data["val"][0]), "--val", str(data["val"][1]), "--out", str(tmp_path / "cli"), "--image-size", str(TINY), "--quiet"])
    assert "best epoch 1" in capsys.readouterr().out
    assert (tmp_path / "cli" / "best" / "model.safetensors").exists()
    with pytest.raises(SystemExit) as code:
        main(["train", "--detector", "random", "--train", train_arg, "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip()
    assert code.value.code == 2 and err.startswith("error:") and "not trainable" in err and "\n" not in err


def test_betas_given_alone_keep_the_recipe_s_other_one(data, tmp_path):
    cfg = TrainConfig(detector="antifakeprompt", train=["x"], out="y", betas=(None, 0.99)).resolved()
    assert cfg.betas == (0.9, 0.99)
    assert TrainConfig(detector="x", train=["x"], out="y", betas=(0.8, None)).resolved().betas == (0.8, 0.999)
    with pytest.raises(AfpbenchError, match="two numbers"):
        TrainConfig(detector="x", train=["x"], out="y", betas=(0.8,)).resolved()
    # The CLI's --beta2 alone goes through the same merge (recorded in train_config.json).
    from afpbench.cli import main

    main(["train", "--detector", "format", "--train", ",".join(str(p) for p in data["train"]), "--out", str(tmp_path / "b2"), "--beta2", "0.98", "--quiet"])
    assert json.loads((tmp_path / "b2" / "train_config.json").read_text())["betas"] == [0.9, 0.98]


def test_train_result_is_typed_and_read_back(afp_run, tmp_path):
    from afpbench.train import TRAIN_SCHEMA_VERSION, TrainResult, load_train_result

    path = afp_run.out / "train_result.json"
    raw = json.loads(path.read_text())
    assert list(raw)[:2] == ["schema_version", "kind"] and raw["schema_version"] == TRAIN_SCHEMA_VERSION
    back = load_train_result(afp_run.out)
    assert isinstance(back, TrainResult) and back == afp_run
    assert back.config.lr == 5e-2 and back.config.betas == (0.9, 0.999) and back.best_checkpoint == afp_run.out / "best"
    # The file afpbench 0.1.0 wrote: the same fields, sorted, without schema_version or kind.
    old = {
        "out": str(afp_run.out), "best_checkpoint": str(afp_run.best_checkpoint), "best_epoch": afp_run.best_epoch,
        "completed": afp_run.completed, "resumed_from": None,
        "epochs": [{"epoch": e.epoch, "train_loss": e.train_loss, "val_loss": e.val_loss, "lr": e.lr, "seconds": e.seconds} for e in afp_run.epochs],
        "config": {**raw["config"], "betas": [0.9, 0.999]},
    }
    (tmp_path / "old.json").write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    assert load_train_result(tmp_path / "old.json") == afp_run
    # Newer, malformed and missing files are refused in one line that names the fix.
    (tmp_path / "new.json").write_text(json.dumps({**raw, "schema_version": TRAIN_SCHEMA_VERSION + 1}))
    (tmp_path / "bad.json").write_text(json.dumps({**raw, "best_epoch": "last"}))
    for name, match in (("new.json", "newer than this afpbench reads"), ("bad.json", "validation at best_epoch"), ("none.json", "No training result")):
        with pytest.raises(AfpbenchError, match=match) as err:
            load_train_result(tmp_path / name)
        assert "\n" not in str(err.value)


def test_shipped_train_result_schema_is_current():
    from pathlib import Path

    from afpbench.train import train_result_schema

    root = Path(__file__).resolve().parent.parent
    generated = json.loads(json.dumps(train_result_schema()))
    for folder in (root / "afpbench" / "schemas", root / "docs" / "schemas"):
        shipped = json.loads((folder / "train_result.schema.json").read_text())
        assert shipped == generated, f"{folder}/train_result.schema.json is stale: write train_result_schema() to it"
    assert list(generated["properties"])[0] == "schema_version"
    described = [generated, *generated["$defs"].values()]
    assert all("description" in p for d in described for p in d["properties"].values())


def test_save_records_what_it_was_trained_on(tmp_path):
    det = load_detector("format")
    assert load_detector("format", weights=det.save(tmp_path / "plain")).card.training_data == det.variant.training_data
    folder = det.save(tmp_path / "given", training_data="set A (10 rows)")
    assert json.loads((folder / "detector.json").read_text())["training_data"] == "set A (10 rows)"
    assert load_detector("format", weights=folder).card.training_data == "set A (10 rows)"
