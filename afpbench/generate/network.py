"""The ``network`` backend: generators that diffusers does not ship (LaMa, LIIF, LTE,
StyleGAN-XL, GLIDE), supplied by the user.

The user exports the network once (``docs/networks.md`` shows how for each upstream
repository) and passes it as ``--model path/to/net.pt`` (a TorchScript file) or
``--model package.module:make_net`` (a factory called with no arguments that returns the
network). afpbench does everything around it: crops, masks, downscaling, latent codes,
batching, per-row seeding, range checks and packaging. The network only has to follow
the I/O convention of its card's ``pipeline``:

=================  ============================================================  ======================
pipeline           call                                                          returns
=================  ============================================================  ======================
inpaint            ``net(image [B,3,H,W] in [0,1], mask [B,1,H,W], 1 = hole)``   ``[B,3,H,W]`` in [0,1]
super_resolution   ``net(low_res [B,3,h,w] in [0,1], scale: int)``               ``[B,3,h*s,w*s]`` in [0,1]
class_to_image     ``net(z [B,D], class_ids [B] int64, truncation_psi: float)``  ``[B,3,R,R]`` in [-1,1]
text_to_image      ``net(prompts: list[str], seeds [B] int64)``                  ``[B,3,H,W]`` in [0,1]
=================  ============================================================  ======================

``text_to_image`` networks that declare a ``guidance_scale`` argument also get the
recipe's guidance scale; ``class_to_image`` networks may expose ``z_dim`` as an
attribute (StyleGAN's generators do), else the ``z_dim`` parameter is used. Randomness
must come only from the inputs (``z``, ``seeds``): that is what makes a row
reproducible from its seed alone.
"""

from __future__ import annotations

import inspect
import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from afpbench._util.crops import seeded_square_crop
from afpbench._util.devices import resolve_device, torch_dtype
from afpbench.errors import AfpbenchError
from afpbench.generate._tensors import pil_to_tensor, tensor_to_pil
from afpbench.generate._usernet import DOCS, load_user_network
from afpbench.generate.base import Backend, Output, build_dtype
from afpbench.generate.masks import PARAM_NAMES as MASK_PARAMS
from afpbench.generate.masks import MaskConfig, make_mask
from afpbench.plan import BuildConfig, WorkItem
from afpbench.registry import did_you_mean

PIPELINES = ("inpaint", "super_resolution", "class_to_image", "text_to_image")
# The recipe task each pipeline convention runs.
TASK_PIPELINES = {"inpaint": "inpaint", "super_resolution": "super_resolution", "gan": "class_to_image", "text2image": "text_to_image"}


def floating_dtype(net: Any, default: torch.dtype) -> torch.dtype:
    """The dtype of a network's first floating parameter (what its inputs should be)."""
    params = net.parameters() if isinstance(net, torch.nn.Module) else ()
    for p in params:
        if p.is_floating_point():
            return p.dtype
    return default


def accepts_argument(fn: Any, name: str) -> bool:
    """Whether ``fn`` (a TorchScript module, an nn.Module or a function) takes ``name``."""
    forward = getattr(fn, "forward", None)
    schema = getattr(forward, "schema", None)
    if schema is not None:  # a ScriptMethod
        return any(a.name == name for a in schema.arguments)
    target = forward if isinstance(fn, torch.nn.Module) else fn
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def fit_square(image, size: int, seed: int) -> tuple[Any, dict[str, Any]]:
    """The input as a ``size`` x ``size`` RGB image.

    The sources already deliver seeded ``crop_size`` crops; anything else (a library
    caller's own images) gets the same seeded crop here, recorded under ``network_*``
    keys so it never overwrites what the source recorded.
    """
    image = image.convert("RGB")
    if image.size == (size, size):
        return image, {}
    crop, facts = seeded_square_crop(image, size, seed)
    return crop, {f"network_{k}": v for k, v in facts.items()}


# -- parameters ------------------------------------------------------------------------
@dataclass
class NetworkParams:
    """Everything the backend reads from card defaults < recipe params < --param."""

    crop_size: int = 512  # inpaint / super_resolution: side of the square crop (= output size)
    scale: int = 4  # super_resolution factor
    downscale: str = "bicubic"  # PIL filter making the low-res input
    composite: bool = True  # inpaint: keep the known pixels exactly (LaMa's own predict does this)
    truncation_psi: float = 1.0
    resolution: int = 256  # class_to_image output side; text_to_image default side
    num_classes: int = 1000
    z_dim: int | None = None  # when the network has no z_dim attribute
    guidance_scale: float | None = None
    height: int | None = None
    width: int | None = None
    probe: bool = True  # run the network once on a tiny input in load() to check its I/O
    mask: MaskConfig = field(default_factory=MaskConfig)

    @classmethod
    def from_sources(cls, *layers: dict[str, Any]) -> "NetworkParams":
        import yaml

        known = {f.name: f for f in fields(cls) if f.name != "mask"}
        values: dict[str, Any] = {}
        mask_values: dict[str, Any] = {}
        mask_keys = MASK_PARAMS
        for layer in layers:
            for key, value in layer.items():
                if isinstance(value, str) and key not in ("downscale", "mask_kind"):
                    value = yaml.safe_load(value)  # --param values arrive as text
                if key in mask_keys:
                    mask_values[key] = value
                elif key in known:
                    values[key] = value
                else:
                    raise did_you_mean(key, sorted(known) + sorted(mask_keys), "network parameter", "Fix the recipe params or --param.")
        return cls(**values, mask=MaskConfig.from_params(mask_values))

    def record(self) -> dict[str, Any]:
        d = asdict(self)
        d["mask"] = self.mask.as_dict()
        return d


# -- the backend -----------------------------------------------------------------------
class NetworkBackend(Backend):
    """Runs a user-supplied network under one of the four pipeline conventions."""

    kind = "network"
    tasks = tuple(TASK_PIPELINES)
    param_names = frozenset(f.name for f in fields(NetworkParams) if f.name != "mask") | MASK_PARAMS | {"pipeline"}

    def __init__(self, recipe, card, config: BuildConfig, inputs=None):
        super().__init__(recipe, card, config, inputs)
        pipeline = (card.pipeline if card is not None else None) or recipe.resolved_params().get("pipeline")
        if pipeline not in PIPELINES:
            raise did_you_mean(str(pipeline), list(PIPELINES), "network pipeline", f"Set 'pipeline' in the generator card to one of {', '.join(PIPELINES)}.")
        if recipe.task in TASK_PIPELINES and TASK_PIPELINES[recipe.task] != pipeline:
            raise AfpbenchError(
                f"'{recipe.name}' has task '{recipe.task}' but its network follows the {pipeline} convention; "
                f"the {recipe.task} task needs {TASK_PIPELINES[recipe.task]}. Fix the recipe or the generator card."
            )
        self.pipeline = pipeline
        recipe_params = {k: v for k, v in recipe.resolved_params().items() if k != "pipeline"}
        # Typed settings (the base class keeps the raw dict in self.params).
        self.settings = NetworkParams.from_sources(dict(card.defaults) if card else {}, recipe_params, dict(config.params or {}))
        if pipeline == "super_resolution" and self.settings.crop_size % self.settings.scale:
            raise AfpbenchError(f"crop_size {self.settings.crop_size} is not a multiple of scale {self.settings.scale}; pick a crop_size divisible by the scale.")
        self.net: Any = None
        self.device = "cpu"
        self.dtype = torch.float32
        self._pass_guidance = False

    # -- load --------------------------------------------------------------------------
    def load(self) -> dict[str, Any]:
        self.device = resolve_device(self.config.device)
        self.dtype = torch_dtype(build_dtype(self.config, self.card, self.device))
        ref = self.config.model or (self.card.model_id if self.card else None)
        what = f"{self.card.name if self.card else self.recipe.name} network"
        self.net, prov = load_user_network(ref, self.device, self.dtype, what, cast_callables=False)
        if prov["model_kind"] == "callable":
            self.dtype = floating_dtype(self.net, self.dtype)  # inputs follow the factory's precision
        if self.pipeline == "class_to_image":
            z_dim = getattr(self.net, "z_dim", None) or self.settings.z_dim
            if not isinstance(z_dim, int) or z_dim <= 0:
                raise AfpbenchError("The class_to_image network has no integer 'z_dim' attribute; give it one or pass --param z_dim=D.")
            self.settings.z_dim = z_dim
        if self.pipeline == "text_to_image":
            self._pass_guidance = self.settings.guidance_scale is not None and accepts_argument(self.net, "guidance_scale")
        if self.settings.probe and self.pipeline != "text_to_image":
            # Sampling a text-to-image network costs minutes, so its first batch is the check.
            self._probe()
        prov.update(
            pipeline=self.pipeline,
            device=self.device,
            dtype=str(self.dtype).replace("torch.", ""),
            params=self.settings.record(),
            guidance_scale_passed=self._pass_guidance if self.pipeline == "text_to_image" else None,
            torch=torch.__version__,
        )
        return prov

    def _probe(self) -> None:
        side = 64 if self.pipeline == "inpaint" else 16
        item = WorkItem(index=0, id="probe", seed=0, meta={"class_index": 0})
        try:
            with torch.no_grad():
                if self.pipeline == "inpaint":
                    img = torch.full((1, 3, side, side), 0.5)
                    mask = torch.zeros(1, 1, side, side)
                    mask[..., side // 4 : side // 2, side // 4 : side // 2] = 1
                    out = self._call(img, mask)
                    self._check(out, 1, side, side, "inpaint", (0, 1))
                elif self.pipeline == "super_resolution":
                    out = self._call(torch.full((1, 3, side, side), 0.5), self.settings.scale)
                    self._check(out, 1, side * self.settings.scale, side * self.settings.scale, "super_resolution", (0, 1))
                else:
                    z, c = self._latents([item])
                    out = self._call(z, c, float(self.settings.truncation_psi))
                    self._check(out, 1, self.settings.resolution, self.settings.resolution, "class_to_image", (-1, 1))
        except AfpbenchError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise AfpbenchError(
                f"The network failed on a probe input of the {self.pipeline} convention ({type(exc).__name__}: {first}); "
                f"make it follow that convention ({DOCS}) or pass --param probe=false."
            ) from exc

    # -- helpers -----------------------------------------------------------------------
    def _to_device(self, a: Any) -> Any:
        if not isinstance(a, torch.Tensor):
            return a
        # Images and latents take the network's dtype; ids and seeds stay int64.
        return a.to(self.device, self.dtype) if a.is_floating_point() else a.to(self.device)

    def _call(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.net(*(self._to_device(a) for a in args), **kwargs)

    def _check(self, out: Any, batch: int, height: int, width: int, kind: str, value_range: tuple[int, int]) -> torch.Tensor:
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            out = out[0]  # e.g. a traced module returning (image, extras)
        if not isinstance(out, torch.Tensor):
            raise AfpbenchError(f"The {kind} network returned a {type(out).__name__}, not a tensor [B,3,H,W] in {list(value_range)}; fix its output ({DOCS}).")
        expected = (batch, 3, height, width)
        if tuple(out.shape) != expected:
            raise AfpbenchError(
                f"The {kind} network returned shape {list(out.shape)} where {list(expected)} was expected; "
                f"fix its output to the {kind} convention ({DOCS}) or the recipe's size params."
            )
        if not torch.isfinite(out).all():
            raise AfpbenchError(f"The {kind} network returned NaN or infinite values; check its weights and dtype (try --dtype fp32).")
        return out.float()

    def _latents(self, items: list[WorkItem]) -> tuple[torch.Tensor, torch.Tensor]:
        """One z per row from the row's own generator; class ids from the row or its seed."""
        zs, cs = [], []
        for it in items:
            g = torch.Generator().manual_seed(int(it.seed))
            zs.append(torch.randn(int(self.settings.z_dim), generator=g))
            # The classes source records class_index; library callers may say class_id.
            cls = it.meta.get("class_index", it.meta.get("class_id"))
            if cls is None:
                cls = random.Random(int(it.seed)).randrange(int(self.settings.num_classes))
            if not 0 <= int(cls) < int(self.settings.num_classes):
                raise AfpbenchError(f"Row {it.id} has class id {cls}, outside 0..{self.settings.num_classes - 1}; fix the source or --param num_classes.")
            cs.append(int(cls))
        return torch.stack(zs), torch.tensor(cs, dtype=torch.int64)

    # -- run ---------------------------------------------------------------------------
    def run(self, items: list[WorkItem], inputs: list[Any]) -> list[Output]:
        if self.net is None:
            raise RuntimeError("NetworkBackend.run called before load()")
        if not items:
            return []
        fork = [torch.cuda.current_device()] if str(self.device).startswith("cuda") else []
        with torch.no_grad(), torch.random.fork_rng(devices=fork):
            # A network should draw randomness only from its inputs; this makes any stray
            # use of torch's global RNG repeatable for the same batch too.
            torch.manual_seed(int(items[0].seed))
            return getattr(self, f"_run_{self.pipeline}")(items, inputs)

    def _need_images(self, items: list[WorkItem], inputs: list[Any]) -> None:
        missing = [it.id for it, im in zip(items, inputs) if im is None]
        if missing or len(inputs) != len(items):
            raise AfpbenchError(f"The {self.pipeline} pipeline needs an input image per row (missing for {missing[:1] or 'some rows'}); pass --source photos or a folder of images.")

    def _run_inpaint(self, items: list[WorkItem], inputs: list[Any]) -> list[Output]:
        self._need_images(items, inputs)
        size = int(self.settings.crop_size)
        imgs, masks, metas = [], [], []
        for it, im in zip(items, inputs):
            crop, meta = fit_square(im, size, it.seed)
            m = make_mask((size, size), it.seed, self.settings.mask)
            imgs.append(pil_to_tensor(crop))
            masks.append(torch.from_numpy(m.array).float()[None])
            metas.append({**meta, **m.meta(), "mask_kind": self.settings.mask.kind, "pipeline": "inpaint"})
        img, mask = torch.stack(imgs), torch.stack(masks)
        out = self._check(self._call(img, mask), len(items), size, size, "inpaint", (0, 1)).cpu()
        if self.settings.composite:
            out = mask * out.clamp(0, 1) + (1 - mask) * img
        return [Output(image=tensor_to_pil(o), meta=m) for o, m in zip(out, metas)]

    def _run_super_resolution(self, items: list[WorkItem], inputs: list[Any]) -> list[Output]:
        from PIL import Image

        self._need_images(items, inputs)
        size, s = int(self.settings.crop_size), int(self.settings.scale)
        filters = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS, "box": Image.BOX}
        if self.settings.downscale not in filters:
            raise did_you_mean(self.settings.downscale, list(filters), "downscale filter")
        lrs, metas = [], []
        for it, im in zip(items, inputs):
            crop, meta = fit_square(im, size, it.seed)
            lr = crop.resize((size // s, size // s), filters[self.settings.downscale])
            lrs.append(pil_to_tensor(lr))
            metas.append({**meta, "low_res_size": [size // s, size // s], "scale": s, "pipeline": "super_resolution"})
        out = self._check(self._call(torch.stack(lrs), s), len(items), size, size, "super_resolution", (0, 1)).cpu()
        return [Output(image=tensor_to_pil(o), meta=m) for o, m in zip(out, metas)]

    def _run_class_to_image(self, items: list[WorkItem], inputs: list[Any]) -> list[Output]:
        z, c = self._latents(items)
        r = int(self.settings.resolution)
        out = self._check(self._call(z, c, float(self.settings.truncation_psi)), len(items), r, r, "class_to_image", (-1, 1)).cpu()
        out = (out + 1) / 2  # the StyleGAN convention [-1,1] -> [0,1]
        metas = [{"class_index": int(ci), "truncation_psi": float(self.settings.truncation_psi), "z_dim": int(self.settings.z_dim), "pipeline": "class_to_image"} for ci in c]
        return [Output(image=tensor_to_pil(o), meta=m) for o, m in zip(out, metas)]

    def _run_text_to_image(self, items: list[WorkItem], inputs: list[Any]) -> list[Output]:
        prompts = [it.prompt for it in items]
        if any(not p for p in prompts):
            raise AfpbenchError("The text_to_image pipeline needs a prompt per row; use a captions source.")
        seeds = torch.tensor([int(it.seed) for it in items], dtype=torch.int64)
        h = int(self.settings.height or self.settings.resolution)
        w = int(self.settings.width or self.settings.resolution)
        kwargs = {"guidance_scale": float(self.settings.guidance_scale)} if self._pass_guidance else {}
        out = self._check(self._call(prompts, seeds, **kwargs), len(items), h, w, "text_to_image", (0, 1)).cpu()
        meta = {"pipeline": "text_to_image", "guidance_scale": float(self.settings.guidance_scale) if self._pass_guidance else None}
        return [Output(image=tensor_to_pil(o), meta=dict(meta)) for o in out]

    @staticmethod
    def summarize(metas: list[dict]) -> dict[str, Any]:
        ratios = [m["mask_ratio"] for m in metas if "mask_ratio" in m]
        out: dict[str, Any] = {}
        if ratios:
            out["mask_ratio_mean"] = round(sum(ratios) / len(ratios), 6)
            out["mask_ratio_min"] = min(ratios)
            out["mask_ratio_max"] = max(ratios)
        classes = [m["class_index"] for m in metas if "class_index" in m]
        if classes:
            out["distinct_classes"] = len(set(classes))
        return out
