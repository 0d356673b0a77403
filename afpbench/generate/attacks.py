"""The ``attacks`` backend: the adversarial, backdoor and data-poisoning sets.

Every row starts from an ImageNet-style image (an ImageNet folder, or the bundled photos
with ``--source photos``), resized so its shorter side is ``image_size`` and center
cropped, and is turned into an attacked image against a real ImageNet classifier
(``classifier.py``; default ``microsoft/resnet-50``, ``--model`` picks another):

* ``task: attack`` -- any torchattacks attack, named by its class in the recipe
  (``attack: PGD``) with ``attack_params`` passed to its constructor; untargeted by
  default, against the true class when the source knows it (``meta["class_index"]``) and
  the clean prediction otherwise. Success: the prediction on the stored 8-bit image is
  no longer that class (targeted: it is the target).
* ``task: backdoor`` -- a BadNets patch (Gu et al. 2017) or a blended trigger (Chen et al.
  2017), alternating by row index. The trigger is one pattern for the whole set, drawn
  from ``trigger_seed`` (the recipe seed by default), as a real poisoned dataset uses one
  trigger. The classifier is not backdoored, so the recorded "success" is only whether
  the trigger changes its prediction.
* ``task: poison`` -- clean-label feature collision (Shafahi et al. 2018): the base image
  is moved, within an L-inf budget ``eps``, so that its penultimate features approach
  those of a target image of another class. Targets come from a seeded pool
  (``target_pool``: the bundled photos, or a folder of images). Success: the poison is
  classified as the target's class.

Each row is attacked on its own under ``torch.manual_seed(row seed)``, so its bytes do
not depend on the batch it fell in, on resuming, or on how rows were split over
processes. Each row's meta records the clean and the attacked predictions (class ids and
top-1 probabilities, measured on the stored 8-bit image); ``summarize`` gives the set's
attack success rate for the manifest.
"""

from __future__ import annotations

import inspect
import math
import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from afpbench._util.crops import center_resize_crop
from afpbench._util.devices import resolve_device, torch_dtype
from afpbench.errors import AfpbenchError
from afpbench.generate._tensors import pil_to_tensor, tensor_to_pil
from afpbench.generate.base import Backend, Output, build_dtype
from afpbench.generate.classifier import load_classifier
from afpbench.plan import BuildConfig, WorkItem
from afpbench.registry import did_you_mean

TASKS = ("attack", "backdoor", "poison")
TASK_ALIASES = {"adversarial": "attack", "data_poisoning": "poison"}
TRIGGERS = ("badnets", "blended")
TARGET_MODES = ("random", "least_likely")
# torchattacks classes that cannot be built from a model and keyword params alone.
_NOT_NAMEABLE = {"MultiAttack", "LGV"}
SUCCESS_DEFINITIONS = {
    "attack": "untargeted: the prediction on the stored image differs from the attacked class (true class when known, else the clean prediction); targeted: it equals the target",
    "backdoor": "the trigger changes the clean classifier's prediction (the classifier is not backdoored)",
    "poison": "the poison is classified as its target's class (feature collision reached)",
}


@dataclass
class AttackParams:
    """Recipe params (< --param overrides) of the three tasks."""

    image_size: int = 224
    # task: attack
    attack: str = "PGD"
    attack_params: dict[str, Any] = field(default_factory=dict)
    target_mode: str | None = None  # None = untargeted; "random" or "least_likely"
    # task: backdoor
    triggers: list[str] = field(default_factory=lambda: list(TRIGGERS))
    patch_size: int = 24
    patch_cells: int = 4  # the BadNets pattern is a patch_cells x patch_cells black/white grid
    patch_margin: int = 0  # pixels between the patch and the bottom-right corner
    blend_alpha: float = 0.15
    trigger_seed: int | None = None  # None = the recipe seed
    # task: poison
    method: str = "feature_collision"
    steps: int = 100
    step_size: float = 1 / 255
    beta: float = 0.25
    eps: float = 16 / 255
    target_pool: str = "photos"
    target_pool_size: int = 32

    @classmethod
    def from_sources(cls, *layers: dict[str, Any]) -> "AttackParams":
        import yaml

        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for layer in layers:
            if "attack" in layer and values.get("attack") not in (None, layer["attack"]):
                # Another attack: the previous attack's params would not fit it, so it
                # gets only the params given with it (else torchattacks' defaults).
                values.pop("attack_params", None)
            for key, value in layer.items():
                if key not in known:
                    raise did_you_mean(key, sorted(known), "attack parameter", "Fix the recipe params or --param.")
                if isinstance(value, str):
                    # --param values arrive as text: parse them as YAML, except names.
                    if key not in ("attack", "method", "target_pool", "target_mode"):
                        value = yaml.safe_load(value)
                    elif value.lower() in ("null", "none", ""):
                        value = None
                if key == "attack_params" and isinstance(value, dict) and isinstance(values.get(key), dict):
                    value = {**values[key], **value}  # --param attack_params={steps: 20} keeps eps
                values[key] = value
        return cls(**values)


def resolve_attack(name: str):
    """The torchattacks class called ``name`` (exact, else a unique case-insensitive match)."""
    import torchattacks
    from torchattacks.attack import Attack

    names = [n for n in getattr(torchattacks, "__all__", dir(torchattacks))
             if isinstance(getattr(torchattacks, n, None), type) and issubclass(getattr(torchattacks, n), Attack) and n not in _NOT_NAMEABLE]
    if name in names:
        return getattr(torchattacks, name)
    folded = [n for n in names if n.lower() == str(name).lower()]
    if len(folded) == 1:
        return getattr(torchattacks, folded[0])
    raise did_you_mean(str(name), names, "torchattacks attack", f"Set 'attack' to a torchattacks class: {', '.join(sorted(names))}.")


def preprocess(image, size: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """The classifier's view of an input, [1,3,S,S] in [0,1].

    The sources already deliver ``image_size`` squares (ImageNet evaluation geometry, or
    seeded photo crops); other sizes get that same geometry here (shorter side to
    size/0.875, center crop), recorded in the row.
    """
    image = image.convert("RGB")
    if image.size == (size, size):
        return pil_to_tensor(image)[None], {}
    meta = {"attack_input_size": [image.width, image.height], "attack_preprocess": f"shorter side to {round(size / 0.875)}, center crop {size}"}
    return pil_to_tensor(center_resize_crop(image, size))[None], meta


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels: predictions are measured on exactly what gets stored."""
    return x.detach().clamp(0, 1).mul(255).round().div(255)


class AttackBackend(Backend):
    """Adversarial examples, backdoor triggers and clean-label poisons on ImageNet images."""

    kind = "attacks"
    tasks = TASKS + tuple(TASK_ALIASES)
    param_names = frozenset(f.name for f in fields(AttackParams))

    def __init__(self, recipe, card, config: BuildConfig, inputs=None):
        super().__init__(recipe, card, config, inputs)
        self.task = TASK_ALIASES.get(recipe.task or "attack", recipe.task or "attack")
        if self.task not in TASKS:
            raise did_you_mean(self.task, list(TASKS), "attack task", f"Set 'task' in recipes/{recipe.name}.yaml to one of {', '.join(TASKS)}.")
        defaults = {k: v for k, v in (dict(card.defaults) if card else {}).items() if k in {f.name for f in fields(AttackParams)}}
        # Typed settings (the base class keeps the raw dict in self.params).
        self.settings = AttackParams.from_sources(defaults, recipe.resolved_params(), dict(config.params or {}))
        self.seed = int(config.seed if config.seed is not None else recipe.seed)
        if self.task == "attack":
            # Names and parameter names are checked now, before any model is loaded.
            self.attack_cls = resolve_attack(self.settings.attack)
            self.attack_kwargs = self._attack_kwargs()
        self.clf: Any = None
        self.attack: Any = None
        self.device = "cpu"

    def model_ref(self) -> str:
        """--model, else the generator card's model id (microsoft/resnet-50)."""
        return self.config.model or (self.card.model_id if self.card else None) or "microsoft/resnet-50"

    # -- load --------------------------------------------------------------------------
    def load(self) -> dict[str, Any]:
        self.device = resolve_device(self.config.device)
        dtype = torch_dtype(build_dtype(self.config, self.card, self.device))
        ref = self.model_ref()
        revision = self.card.revision if (self.card is not None and not self.config.model) else None
        self.clf, prov = load_classifier(ref, revision=revision, device=self.device, dtype=dtype)
        self.num_classes = int(prov["num_classes"])
        prov.update(task=self.task, device=self.device, dtype=str(dtype).replace("torch.", ""), image_size=self.settings.image_size)
        prov.update(getattr(self, f"_load_{self.task}")())
        prov["success_definition"] = SUCCESS_DEFINITIONS[self.task]
        return prov

    def _attack_kwargs(self) -> dict[str, Any]:
        cls = self.attack_cls
        sig = inspect.signature(cls.__init__).parameters
        kwargs = dict(self.settings.attack_params or {})
        unknown = [k for k in kwargs if k not in sig and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values())]
        if unknown:
            valid = [k for k in sig if k not in ("self", "model")]
            raise AfpbenchError(f"torchattacks.{cls.__name__} has no parameter {', '.join(unknown)}; its parameters are {', '.join(valid)}. Fix attack_params.")
        # Attacks with their own seed (APGD, AutoAttack...) otherwise draw it from the clock.
        if "seed" in sig and kwargs.get("seed") is None:
            kwargs["seed"] = self.seed
        return kwargs

    def _load_attack(self) -> dict[str, Any]:
        import torchattacks

        cls, kwargs = self.attack_cls, dict(self.attack_kwargs)
        # Attacks made for CIFAR default to 10 classes; the classifier knows better.
        if "n_classes" in inspect.signature(cls.__init__).parameters and "n_classes" not in kwargs:
            kwargs["n_classes"] = self.num_classes
        try:
            self.attack = cls(self.clf, **kwargs)
        except (TypeError, ValueError, AssertionError) as exc:
            raise AfpbenchError(f"torchattacks.{cls.__name__}({kwargs}) failed: {exc}; fix attack_params.") from exc
        mode = self.settings.target_mode
        if mode is not None:
            if mode not in TARGET_MODES:
                raise did_you_mean(str(mode), list(TARGET_MODES), "target mode", "Set target_mode to random, least_likely or null (untargeted).")
            try:
                # afpbench picks each row's target itself (seeded per row) and hands it over.
                self.attack.set_mode_targeted_by_label(quiet=True)
            except ValueError as exc:
                raise AfpbenchError(f"torchattacks.{cls.__name__} has no targeted mode; set target_mode to null.") from exc
        return {"attack": cls.__name__, "attack_params": _jsonable(kwargs), "target_mode": mode, "torchattacks": torchattacks.__version__}

    def _load_backdoor(self) -> dict[str, Any]:
        import numpy as np

        p = self.settings
        bad = [t for t in p.triggers if t not in TRIGGERS]
        if bad or not p.triggers:
            raise did_you_mean(str(bad[0] if bad else ""), list(TRIGGERS), "trigger", "Set triggers to a list of badnets and/or blended.")
        if not 0 < p.patch_size + p.patch_margin <= p.image_size:
            raise AfpbenchError(f"patch_size {p.patch_size} (+ margin {p.patch_margin}) does not fit a {p.image_size} px image; make it smaller.")
        if not 0.0 < p.blend_alpha < 1.0:
            raise AfpbenchError(f"blend_alpha {p.blend_alpha} must lie strictly between 0 and 1; fix the recipe param.")
        tseed = int(p.trigger_seed if p.trigger_seed is not None else self.seed)
        rng = np.random.default_rng(tseed)
        cells = rng.integers(0, 2, size=(p.patch_cells, p.patch_cells))
        cells[0, 0], cells[-1, -1] = 1, 0  # never a uniform square: it must read as a pattern
        grid = torch.from_numpy(cells.astype("float32"))[None, None]
        self.patch = torch.nn.functional.interpolate(grid, size=(p.patch_size, p.patch_size), mode="nearest")[0].expand(3, -1, -1).clone()
        self.blend = torch.from_numpy(rng.random((3, p.image_size, p.image_size), dtype=np.float32))
        return {
            "triggers": list(p.triggers),
            "trigger_seed": tseed,
            "badnets": {"patch_size": p.patch_size, "patch_cells": p.patch_cells, "position": "bottom_right", "margin": p.patch_margin, "pattern": cells.tolist()},
            "blended": {"alpha": p.blend_alpha, "pattern": f"uniform noise {p.image_size}x{p.image_size} from trigger_seed"},
        }

    def _load_poison(self) -> dict[str, Any]:
        p = self.settings
        if p.method != "feature_collision":
            raise did_you_mean(str(p.method), ["feature_collision"], "poisoning method")
        if not self.clf.has_features:
            raise AfpbenchError("Feature-collision poisoning needs the classifier's penultimate features; use a classifier whose last layer is nn.Linear.")
        ids, images = self._target_images()
        tensors = torch.cat([preprocess(im, p.image_size)[0] for im in images]).to(self.device)
        with torch.no_grad():
            feats, preds = [], []
            for chunk in tensors.split(8):
                feats.append(self.clf.features(chunk).float())
                preds.append(self.clf(chunk).argmax(-1))
        self.pool_ids, self.pool_feats, self.pool_preds = ids, torch.cat(feats), torch.cat(preds).tolist()
        self.pixel_dim = 3 * p.image_size * p.image_size
        self.beta_eff = p.beta * (self.pool_feats.shape[1] / self.pixel_dim) ** 2
        return {
            "method": "feature_collision",
            "poison_params": {"steps": p.steps, "step_size": p.step_size, "beta": p.beta, "beta_effective": self.beta_eff, "eps": p.eps},
            "target_pool": p.target_pool,
            "target_pool_ids": ids,
            "feature_dim": int(self.pool_feats.shape[1]),
        }

    def _target_images(self) -> tuple[list[str], list[Any]]:
        p = self.settings
        if p.target_pool != "photos" and not Path(p.target_pool).expanduser().is_dir():
            raise AfpbenchError(f"target_pool '{p.target_pool}' is neither 'photos' nor a folder; pass --param target_pool=photos or a folder of images.")
        ids, images = self.inputs.image_pool(p.target_pool, p.target_pool_size, size=p.image_size, seed=self.seed, prefix="targets")
        if len(images) < 2:
            raise AfpbenchError(f"target_pool '{p.target_pool}' holds fewer than 2 images; point it at a folder of target images.")
        return ids, images

    # -- run ---------------------------------------------------------------------------
    def run(self, items: list[WorkItem], inputs: list[Any]) -> list[Output]:
        if self.clf is None:
            raise RuntimeError("AttackBackend.run called before load()")
        outputs = []
        for item, image in zip(items, inputs):
            if image is None:
                raise AfpbenchError(f"Row {item.id} has no input image; the {self.recipe.name} set needs ImageNet images (--source FOLDER) or --source photos.")
            x, meta = preprocess(image, self.settings.image_size)
            x = x.to(self.device)
            fork = [torch.cuda.current_device()] if str(self.device).startswith("cuda") else []
            with torch.random.fork_rng(devices=fork):
                torch.manual_seed(int(item.seed))
                adv, extra = getattr(self, f"_run_{self.task}")(item, x)
            adv = quantize(adv)
            meta.update(self._predictions(x, adv, item), **extra)
            meta["success"] = self._success(meta)
            meta["linf_255"] = int(round(float((adv - x).abs().max()) * 255))
            outputs.append(Output(image=tensor_to_pil(adv[0]), meta=meta))
        return outputs

    def _true_class(self, item: WorkItem) -> int | None:
        # The imagenet source records class_index; library callers may say class_id.
        cls = item.meta.get("class_id", item.meta.get("class_index"))
        return int(cls) if cls is not None and 0 <= int(cls) < self.num_classes else None

    @torch.no_grad()
    def _top1(self, x: torch.Tensor) -> tuple[int, float, torch.Tensor]:
        probs = self.clf(x).float().softmax(-1)[0]
        c = int(probs.argmax())
        return c, float(probs[c]), probs

    def _predictions(self, x: torch.Tensor, adv: torch.Tensor, item: WorkItem) -> dict[str, Any]:
        c, pc, _ = self._top1(x)
        a, pa, _ = self._top1(adv)
        out = {"task": self.task, "clean_class": c, "clean_prob": round(pc, 6), "adv_class": a, "adv_prob": round(pa, 6)}
        true = self._true_class(item)
        if true is not None:
            out["true_class"] = true
        return out

    def _success(self, meta: dict[str, Any]) -> bool:
        """Whether the row succeeded, by the task's definition (SUCCESS_DEFINITIONS)."""
        if self.task == "backdoor":
            return meta["adv_class"] != meta["clean_class"]
        if self.task == "poison" or "target_class" in meta:
            return meta["adv_class"] == meta["target_class"]
        return meta["adv_class"] != meta["attacked_class"]

    def _run_attack(self, item: WorkItem, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        clean, _, probs = self._top1(x)
        true = self._true_class(item)
        label = true if true is not None else clean
        extra: dict[str, Any] = {"attacked_class": label, "attacked_class_from": "source_label" if true is not None else "clean_prediction"}
        if self.settings.target_mode is None:
            adv = self.attack(x, torch.tensor([label], device=self.device))
        else:
            if self.settings.target_mode == "least_likely":
                target = int(probs.argmin())
            else:
                target = random.Random(int(item.seed)).choice([k for k in range(self.num_classes) if k != label])
            adv = self.attack(x, torch.tensor([target], device=self.device))
            extra["target_class"] = target
        return adv, extra

    def _run_backdoor(self, item: WorkItem, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        p = self.settings
        kind = p.triggers[item.index % len(p.triggers)]
        if kind == "badnets":
            s, m = p.image_size, p.patch_margin
            y0, x0 = s - m - p.patch_size, s - m - p.patch_size
            adv = x.clone()
            adv[0, :, y0 : y0 + p.patch_size, x0 : x0 + p.patch_size] = self.patch.to(x)
            extra = {"trigger": "badnets", "trigger_box": [x0, y0, x0 + p.patch_size, y0 + p.patch_size]}
        else:
            adv = (1 - p.blend_alpha) * x + p.blend_alpha * self.blend.to(x)[None]
            extra = {"trigger": "blended", "blend_alpha": p.blend_alpha}
        return adv, extra

    def _run_poison(self, item: WorkItem, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        p = self.settings
        base_class, _, _ = self._top1(x)
        true = self._true_class(item)
        avoid = {base_class} | ({true} if true is not None else set())
        candidates = [j for j, c in enumerate(self.pool_preds) if c not in avoid]
        if not candidates:
            raise AfpbenchError(f"No target of another class than {sorted(avoid)} in the target pool; enlarge target_pool_size or use another target_pool folder.")
        j = random.Random(int(item.seed)).choice(candidates)
        target_feat = self.pool_feats[j : j + 1]
        with torch.no_grad():
            d0 = float((self.clf.features(x).float() - target_feat).norm())
        poison = x.clone()
        steps = int(p.steps)
        for t in range(steps):
            # Cosine-decayed step: large moves first, then fine convergence instead of
            # oscillating around the target features at a fixed step.
            lam = p.step_size * 0.5 * (1 + math.cos(math.pi * t / steps))
            poison.requires_grad_(True)
            loss = (self.clf.features(poison).float() - target_feat).pow(2).sum()
            (grad,) = torch.autograd.grad(loss, poison)
            # Forward step on the feature loss; a signed step so its size is in pixel units
            # whatever the scale of the features.
            poison = poison.detach() - lam * grad.sign()
            # Backward (proximal) step on beta * ||poison - base||^2, as Shafahi et al.
            poison = (poison + lam * self.beta_eff * x) / (1 + lam * self.beta_eff)
            poison = (x + (poison - x).clamp(-p.eps, p.eps)).clamp(0, 1)
        q = quantize(poison)
        with torch.no_grad():
            d1 = float((self.clf.features(q).float() - target_feat).norm())
        return poison, {
            "base_id": item.source or item.id,
            "base_class": base_class,
            "target_id": self.pool_ids[j],
            "target_class": int(self.pool_preds[j]),
            "feature_distance_before": round(d0, 4),
            "feature_distance_after": round(d1, 4),
        }

    # -- manifest ------------------------------------------------------------------------
    @staticmethod
    def summarize(metas: list[dict]) -> dict[str, Any]:
        rows = [m for m in metas if "success" in m]
        out: dict[str, Any] = {}
        if not rows:
            return out
        task = rows[0].get("task", "attack")
        out["attack_rows"] = len(rows)
        out["attack_success_rate"] = round(sum(bool(m["success"]) for m in rows) / len(rows), 6)
        out["success_definition"] = SUCCESS_DEFINITIONS.get(task, "")
        out["clean_vs_attacked_changed_rate"] = round(sum(m["clean_class"] != m["adv_class"] for m in rows) / len(rows), 6)
        out["mean_linf_255"] = round(sum(m.get("linf_255", 0) for m in rows) / len(rows), 4)
        labelled = [m for m in rows if "true_class" in m]
        if labelled:
            out["clean_accuracy"] = round(sum(m["clean_class"] == m["true_class"] for m in labelled) / len(labelled), 6)
            out["attacked_accuracy"] = round(sum(m["adv_class"] == m["true_class"] for m in labelled) / len(labelled), 6)
        if task == "poison":
            ratios = [m["feature_distance_after"] / m["feature_distance_before"] for m in rows if m.get("feature_distance_before")]
            if ratios:
                out["mean_feature_distance_ratio"] = round(sum(ratios) / len(ratios), 6)
        if task == "backdoor":
            out["rows_per_trigger"] = {t: sum(m.get("trigger") == t for m in rows) for t in TRIGGERS}
        return out


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None), list, dict)) else repr(v)) for k, v in d.items()}
