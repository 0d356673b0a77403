"""What a build or an evaluation needs before it starts: models, bytes, GPU memory, disk.

Everything is computed from the real architectures, built from their configuration files
on the meta device (no weights are read or allocated):

* **Parameters** are counted on the meta-built models, component by component, through the
  same loading code a run uses (``DiffusionBackend.load`` with its ``_from_pretrained`` hook
  pointed at the configs; ``load_detector(..., device="meta")``). Where a model's configs are
  not at hand (the DeepFloyd IF UNets), its published parameter count is used and marked so.
* **Peak GPU memory** = parameter bytes (every component sits on the GPU: the backends call
  ``pipe.to(device)``) + the peak of live activation bytes of the largest step, found by
  running that step on meta tensors and adding up the bytes of every tensor the step creates
  while it is alive (a ``TorchDispatchMode`` tracks creation and garbage collection, as the
  CUDA caching allocator would see them). Attention is counted as a fused kernel does it
  (flash / memory-efficient SDPA on a GPU): the output only, never the L x L score matrix.
  The steps traced: one denoiser call at the classifier-free-guidance batch (2 x batch),
  with its ControlNet when there is one, and the VAE decode of one batch; for detectors one
  scoring forward. A 15% margin covers the allocator's fragmentation and the CUDA context
  (about 0.5 GiB, added separately). This is an estimate, not a measurement:
  ``benchmarks/gpu_check.py`` measures the real peak on a GPU.
* **Disk** for a build = count x the PNG size of one image, taken as half the raw RGB
  bytes (natural photos compress to about 40-60% in PNG); evaluation writes predictions
  (a few hundred bytes a row) and scores nothing to disk besides.

Config folders are looked up under ``$AFPBENCH_CONFIGS`` and then in a source checkout's
``tests/testdata/configs/<owner>--<name>/`` (where ``SOURCES.json`` says where each file
came from).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from afpbench.errors import AfpbenchError
from afpbench.generate.diffusion import DiffusionBackend

log = logging.getLogger(__name__)

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
GIB = 1024**3
FRAGMENTATION = 1.15  # allocator slack on top of the traced live bytes
CUDA_CONTEXT = int(0.5 * GIB)
PNG_RATIO = 0.5  # PNG bytes / raw RGB bytes of a natural image

# Models whose configuration files could not be obtained offline: published parameter counts.
PUBLISHED: dict[str, dict[str, tuple[int, str]]] = {
    "DeepFloyd/IF-I-XL-v1.0": {"unet": (4_300_000_000, "IF-I-XL-v1.0 model card: 'Num Parameters: 4.3B'")},
    "DeepFloyd/IF-II-L-v1.0": {"unet": (1_200_000_000, "IF-II-L-v1.0 model card and deep-floyd/IF README: 'IF-II 1.2B'")},
}
# Base hub ids of the detectors whose architectures are built here.
DETECTOR_BASES = {
    "antifakeprompt": "vicuna-v1.3",
    "instructblip": "vicuna-v1.3",
    "instructblip_lora": "vicuna-v1.3",
    "univfd": "openai/clip-vit-large-patch14",
    "cnnspot": "microsoft/resnet-50",
}


# -- config folders ------------------------------------------------------------------------
def configs_root() -> Path | None:
    env = os.environ.get("AFPBENCH_CONFIGS")
    if env:
        return Path(env).expanduser()
    here = Path(__file__).resolve().parent.parent / "tests" / "testdata" / "configs"
    return here if here.is_dir() else None


def config_dir(model_id: str | None) -> Path | None:
    """The shipped config folder of a hub id (``owner/name`` -> ``owner--name``), if any."""
    root = configs_root()
    if root is None or not model_id:
        return None
    path = root / model_id.replace("/", "--")
    return path if path.is_dir() else None


def sources() -> dict[str, Any]:
    root = configs_root()
    f = root / "SOURCES.json" if root else None
    return json.loads(f.read_text()) if f and f.is_file() else {}


def count_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


# -- building from configs on the meta device ------------------------------------------------
def _empty_model(cls: Any, folder: Path, dtype: Any) -> Any:
    """A diffusers or transformers model class built from ``folder``'s config, parameters on meta."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        if hasattr(cls, "load_config") and hasattr(cls, "from_config"):  # diffusers ModelMixin
            model = cls.from_config(cls.load_config(str(folder)))
        else:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(str(folder))
            if cls.__name__ == "StableDiffusionSafetyChecker":
                from transformers import CLIPConfig

                config = CLIPConfig.from_pretrained(str(folder))
            model = cls._from_config(config)
    # Buffers (position tables, rotary frequencies) join the parameters on meta, so that a
    # traced forward never mixes devices.
    return model.to(device="meta", dtype=dtype) if dtype is not None else model.to(device="meta")


def fp32_kept(module: Any, dtype: str) -> int:
    """Parameters a real half-precision load keeps in fp32 (T5's ``wo``, InstructBLIP's query tokens)."""
    import torch

    from afpbench.detectors._hf import fp32_kept_parameters

    if dtype == "fp32":
        return 0
    half = torch.float16 if dtype == "fp16" else torch.bfloat16
    sizes = dict((n, p.numel()) for n, p in module.named_parameters())
    return sum(sizes[n] for n in fp32_kept_parameters(module, half))


def _component_class(lib: str, name: str) -> Any:
    import importlib

    if lib in ("diffusers", "transformers"):
        return getattr(importlib.import_module(lib), name)
    if lib == "stable_diffusion":
        from diffusers.pipelines.stable_diffusion.safety_checker import (
            StableDiffusionSafetyChecker,
        )

        return StableDiffusionSafetyChecker
    return None  # IF's safety checker/watermarker: configs not shipped


def empty_pipeline(cls: Any, folder: Path, dtype: Any, overrides: dict[str, Any]) -> Any:
    """The pipeline of ``folder``'s model_index.json with every component built on meta.

    Tokenizers and image processors hold no parameters and their vocabulary files are not
    shipped: they are None. A component the index names but whose config is missing is an
    error (the estimate would silently drop its weights otherwise).
    """
    index = json.loads((folder / "model_index.json").read_text())
    expected, _optional = cls._get_signature_keys(cls)
    kwargs: dict[str, Any] = {}
    missing = []
    for key in expected:
        if key in overrides:
            kwargs[key] = overrides[key]
            continue
        spec = index.get(key)
        if not isinstance(spec, list):
            if spec is not None:
                kwargs[key] = spec  # registered values: requires_safety_checker, max_noise_level...
            continue
        lib, name = spec
        if key == "feature_extractor" and lib == "transformers":
            from transformers import CLIPImageProcessor

            kwargs[key] = CLIPImageProcessor()  # no parameters; the safety checker needs one
            continue
        if lib is None or "tokenizer" in key or key in ("feature_extractor", "image_encoder", "watermarker"):
            kwargs[key] = None
            continue
        comp_cls = _component_class(lib, name)
        sub = folder / key
        if comp_cls is None:
            kwargs[key] = None
        elif "scheduler" in key:
            kwargs[key] = comp_cls.from_pretrained(str(folder), subfolder=key) if sub.is_dir() else comp_cls()
        elif not sub.is_dir():
            missing.append(key)
        else:
            kwargs[key] = _empty_model(comp_cls, sub, dtype)
    if missing:
        raise AfpbenchError(f"{folder} lacks the configs of {', '.join(missing)}; add them under {folder} (see SOURCES.json) to estimate this pipeline.")
    if "add_watermarker" in expected:
        kwargs["add_watermarker"] = False  # the watermark is a post-process, no parameters
    return cls(**kwargs)


def _quiet() -> None:
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    dlog.set_verbosity_error()
    tlog.set_verbosity_error()


class EmptyWeightsBackend(DiffusionBackend):
    """The diffusion backend with its weight-reading hook pointed at config folders.

    ``load()`` runs unchanged (stage references, class checks, the T5 drop, ControlNet
    bundling, IF's text-encoder sharing); only ``cls.from_pretrained`` is replaced by a build
    from the configs on the meta device, and nothing is moved to a device.
    """

    def _from_pretrained(self, cls: Any, source: str, **kwargs: Any) -> Any:
        from diffusers import DiffusionPipeline

        folder = Path(source) if Path(source).is_dir() else config_dir(source)
        if folder is None:
            raise AfpbenchError(f"No shipped configs for '{source}'; put its config files under $AFPBENCH_CONFIGS/{source.replace('/', '--')}/.")
        dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
        for k in ("revision", "variant"):
            kwargs.pop(k, None)
        if isinstance(cls, type) and issubclass(cls, DiffusionPipeline):
            return empty_pipeline(cls, folder, dtype, kwargs)
        return _empty_model(cls, folder, dtype)

    def _to_device(self, pipe: Any) -> None:
        """Nothing to move: the parameters are on the meta device."""


def build_backend(recipe_name: str, *, dtype: str = "fp16", params: dict[str, Any] | None = None, model: str | None = None) -> EmptyWeightsBackend:
    """The recipe's diffusion backend, loaded from the shipped configs (one folder per stage)."""
    from afpbench.catalog import get_generator, get_recipe
    from afpbench.plan import BuildConfig

    _quiet()
    recipe = get_recipe(recipe_name)
    card = get_generator(recipe.generator)
    if model is None:
        refs = [card.model_id] + [s.model_id for s in card.stages if s.pipeline not in ("ControlNetModel",)]
        dirs = [config_dir(r) for r in refs]
        if any(d is None for d in dirs):
            raise AfpbenchError(f"No shipped configs for {', '.join(r for r, d in zip(refs, dirs) if d is None)}.")
        model = ",".join(str(d) for d in dirs)
    # The backend runs on the CPU here (fp16 is refused there), so it builds in bf16: the
    # same bytes per parameter.
    config = BuildConfig(model=model, device="cpu", dtype="bf16" if DTYPE_BYTES[dtype] == 2 else "fp32", params=dict(params or {}), quiet=True)
    backend = EmptyWeightsBackend(recipe, card, config)
    backend.load()
    return backend


# -- activation tracing on meta tensors ------------------------------------------------------
def trace_peak(fn: Any) -> int:
    """Peak bytes of the tensors ``fn()`` creates and keeps alive at once (run on meta)."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    state = {"live": 0, "peak": 0}

    def free(n: int) -> None:
        state["live"] -= n

    class Live(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {id(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and id(t) not in inputs and t._base is None:
                    n = t.numel() * t.element_size()
                    state["live"] += n
                    state["peak"] = max(state["peak"], state["live"])
                    weakref.finalize(t, free, n)
            return out

    class FusedAttention(TorchFunctionMode):
        # What flash / memory-efficient attention allocates: the output, not the scores.
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in (torch.Tensor.__bool__, torch.Tensor.item) and args and getattr(args[0], "is_meta", False):
                # Data-dependent checks (is this mask all ones?) have no value on meta; every
                # mask afpbench passes is all ones, so the answer is True.
                return True
            if func is F.scaled_dot_product_attention:
                q, v = args[0], args[2] if len(args) > 2 else kwargs["value"]
                return q.new_empty(*q.shape[:-1], v.shape[-1])
            return func(*args, **(kwargs or {}))

    with torch.inference_mode(), FusedAttention(), Live():
        out = fn()
        del out
    return int(state["peak"])


def _meta(*shape: int, dtype: Any) -> Any:
    import torch

    return torch.empty(*shape, device="meta", dtype=dtype)


def diffusion_activation_bytes(backend: EmptyWeightsBackend, batch: int) -> dict[str, int]:
    """Traced peak activation bytes of one denoiser step and one VAE decode at ``batch``."""
    import torch

    pipe = backend.stages[-1] if backend.stages else backend.pipe  # the last stage works at the output size
    h, w = int(backend.param("height", 512)), int(backend.param("width", 512))
    dt = next(pipe.vae.parameters()).dtype if getattr(pipe, "vae", None) is not None else torch.bfloat16
    vae = pipe.vae
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    lh, lw = h // f, w // f
    b2 = 2 * batch  # classifier-free guidance runs the conditional and the unconditional row together
    out: dict[str, int] = {}
    denoiser = getattr(pipe, "transformer", None) or pipe.unet
    cfg = denoiser.config
    t = _meta(b2, dtype=torch.float32)
    if getattr(pipe, "transformer", None) is not None:  # SD3 MMDiT: 77 CLIP + 256 T5 tokens (zeros when T5 is dropped)
        def step():
            return denoiser(hidden_states=_meta(b2, cfg.in_channels, lh, lw, dtype=dt), encoder_hidden_states=_meta(b2, 77 + 256, cfg.joint_attention_dim, dtype=dt),
                            pooled_projections=_meta(b2, cfg.pooled_projection_dim, dtype=dt), timestep=t, return_dict=False)
    else:
        kw: dict[str, Any] = {}
        if cfg.addition_embed_type == "text_time":
            kw["added_cond_kwargs"] = {"text_embeds": _meta(b2, cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim, dtype=dt), "time_ids": _meta(b2, 6, dtype=dt)}
        if cfg.num_class_embeds:
            kw["class_labels"] = torch.zeros(b2, dtype=torch.long, device="meta")
        ehs = _meta(b2, 77, cfg.cross_attention_dim, dtype=dt)
        controlnet = getattr(pipe, "controlnet", None)

        def step():
            extra = dict(kw)
            if controlnet is not None:
                down, mid = controlnet(_meta(b2, cfg.in_channels, lh, lw, dtype=dt), t, encoder_hidden_states=ehs, controlnet_cond=_meta(b2, 3, h, w, dtype=dt), return_dict=False)
                extra.update(down_block_additional_residuals=down, mid_block_additional_residual=mid)
            return denoiser(_meta(b2, cfg.in_channels, lh, lw, dtype=dt), t, encoder_hidden_states=ehs, return_dict=False, **extra)
    out["denoiser_step"] = trace_peak(step)
    out["vae_decode"] = trace_peak(lambda: vae.decode(_meta(batch, vae.config.latent_channels, lh, lw, dtype=dt), return_dict=False))
    return out


# -- the plan ------------------------------------------------------------------------------
@dataclass
class Part:
    """One model a run downloads and holds on the GPU."""

    model_id: str
    component: str
    cls: str
    parameters: int
    source: str  # "config" (built on meta) or "published"
    revision: str | None = None
    #: Of ``parameters``, those a half-precision load keeps in fp32 (set per the plan's dtype).
    fp32_parameters: int = 0


@dataclass
class Plan:
    schema_version: int
    kind: str  # build | evaluate
    name: str
    dtype: str
    batch_size: int
    images: int
    parts: list[Part]
    weights_bytes: int
    activation_bytes: int
    activation_steps: dict[str, int]
    peak_gpu_bytes: int
    output_bytes: int
    gpu_name: str | None = None
    gpu_total_bytes: int | None = None
    disk_free_bytes: int | None = None
    fits_gpu: bool | None = None
    fits_disk: bool | None = None
    fixes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def parameters(self) -> int:
        return sum(p.parameters for p in self.parts)

    def bytes_per_dtype(self) -> dict[str, int]:
        return {k: self.parameters * v for k, v in DTYPE_BYTES.items()}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["parameters"] = self.parameters
        d["parameter_bytes"] = self.bytes_per_dtype()
        return d

    def render(self) -> str:
        g = lambda n: f"{n / GIB:.2f} GiB"
        lines = [f"plan: {self.kind} {self.name}  (dtype {self.dtype}, batch {self.batch_size})", "models to download:"]
        for p in self.parts:
            rev = p.revision or "main"
            lines.append(f"  {p.model_id}:{p.component:<16} {p.cls:<32} {p.parameters / 1e9:7.3f} B params  "
                         f"{p.parameters * DTYPE_BYTES[self.dtype] / 1e9:7.2f} GB ({self.dtype}) [{p.source}; revision {rev}]")
        b = self.bytes_per_dtype()
        lines.append(f"parameters: {self.parameters / 1e9:.3f} B = {b['fp32'] / 1e9:.2f} GB fp32 / {b['fp16'] / 1e9:.2f} GB fp16 or bf16")
        steps = ", ".join(f"{k} {g(v)}" for k, v in self.activation_steps.items()) or "not traced"
        lines.append(f"peak GPU memory (estimate): {g(self.peak_gpu_bytes)} = weights {g(self.weights_bytes)} + activations {g(self.activation_bytes)} ({steps}) x {FRAGMENTATION} + CUDA context")
        lines.append(f"images: {self.images}; output on disk: {self.output_bytes / 1e9:.2f} GB")
        if self.gpu_total_bytes is not None:
            lines.append(f"this machine: {self.gpu_name} with {g(self.gpu_total_bytes)}: {'fits' if self.fits_gpu else 'does NOT fit'}")
        else:
            lines.append("this machine: no CUDA GPU visible (the estimate is for the GPU you will run on)")
        if self.disk_free_bytes is not None:
            lines.append(f"disk free: {self.disk_free_bytes / 1e9:.1f} GB: {'enough' if self.fits_disk else 'NOT enough'}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def weight_bytes(parts: list[Part], dtype: str) -> int:
    """Bytes the parts' weights take on the GPU in ``dtype`` (fp32-kept parameters at 4 bytes)."""
    return sum(p.parameters * DTYPE_BYTES[dtype] + p.fp32_parameters * (4 - DTYPE_BYTES[dtype]) for p in parts)


def machine() -> tuple[str | None, int | None]:
    import torch

    if not torch.cuda.is_available():
        return None, None
    props = torch.cuda.get_device_properties(0)
    return props.name, int(props.total_memory)


def _finish(plan: Plan, out: Path, gpu: tuple[str | None, int | None] | None, fixes: list[str]) -> Plan:
    plan.peak_gpu_bytes = int(plan.weights_bytes + plan.activation_bytes * FRAGMENTATION + CUDA_CONTEXT)
    plan.gpu_name, plan.gpu_total_bytes = gpu if gpu is not None else machine()
    if plan.gpu_total_bytes is not None:
        plan.fits_gpu = plan.peak_gpu_bytes <= plan.gpu_total_bytes
        if not plan.fits_gpu:
            plan.fixes = fixes
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    plan.disk_free_bytes = shutil.disk_usage(probe).free
    plan.fits_disk = plan.output_bytes <= plan.disk_free_bytes
    return plan


def plan_build(name: str, *, batch_size: int = 4, dtype: str | None = None, count: int | None = None, params: dict[str, Any] | None = None,
               out: Path | str = "out", gpu: tuple[str | None, int | None] | None = None) -> Plan:
    """Resources of ``afpbench build NAME`` (diffusion and classifier recipes are built on meta)."""
    from afpbench._util.devices import DTYPES, canonical_dtype
    from afpbench.catalog import get_generator, get_recipe

    recipe = get_recipe(name)
    card = get_generator(recipe.generator)
    dtype = DTYPES[canonical_dtype(dtype or card.dtype)][1]  # build's vocabulary: fp16 and float16 alike
    images = int(count or recipe.count.value)
    params = dict(params or {})
    parts: list[Part] = []
    steps: dict[str, int] = {}
    notes: list[str] = []
    fixes = [f"afpbench build {name} --batch-size {max(1, batch_size // 2)}"] if batch_size > 1 else []
    if card.backend == "diffusion":
        backend = None
        try:
            backend = build_backend(name, dtype=dtype, params=params)
        except AfpbenchError as exc:
            notes.append(f"pipeline not built from configs ({exc}); published counts used where known")
        if backend is not None:
            pipes = [(card.model_id, backend.pipe)] + [(s.model_id, p) for s, p in zip([s for s in card.stages if s.pipeline != "ControlNetModel"], backend.stages)]
            for mid, pipe in pipes:
                for comp, mod in pipe.components.items():
                    if hasattr(mod, "parameters"):
                        src_id = next((s.model_id for s in card.stages if s.pipeline == type(mod).__name__), mid)
                        parts.append(Part(src_id, comp, type(mod).__name__, count_parameters(mod), "config", card.revision, fp32_kept(mod, dtype)))
            steps = diffusion_activation_bytes(backend, batch_size)
        else:
            for mid in [card.model_id] + [s.model_id for s in card.stages]:
                folder = config_dir(mid)
                for comp, (n, why) in PUBLISHED.get(mid, {}).items():
                    parts.append(Part(mid, comp, "UNet2DConditionModel", n, "published"))
                    notes.append(f"{mid} {comp}: {why}")
                if folder is not None and mid in PUBLISHED and (folder / "text_encoder").is_dir():
                    from transformers import T5EncoderModel

                    te = _empty_model(T5EncoderModel, folder / "text_encoder", None)
                    parts.append(Part(mid, "text_encoder", "T5EncoderModel", count_parameters(te), "config", None, fp32_kept(te, dtype)))
                elif folder is not None and mid not in PUBLISHED:
                    from diffusers import DiffusionPipeline

                    index = json.loads((folder / "model_index.json").read_text())
                    cls = getattr(__import__("diffusers"), index["_class_name"])
                    pipe = empty_pipeline(cls, folder, None, {"text_encoder": None} if index["_class_name"].startswith("IF") else {})
                    assert isinstance(pipe, DiffusionPipeline)
                    for comp, mod in pipe.components.items():
                        if hasattr(mod, "parameters"):
                            parts.append(Part(mid, comp, type(mod).__name__, count_parameters(mod), "config", None, fp32_kept(mod, dtype)))
            notes.append("activations of the stages without configs are not traced; the estimate counts their weights only")
        use_t5 = backend.param("use_t5") if backend is not None else params.get("use_t5")
        if card.pipeline == "StableDiffusion3Pipeline" and use_t5 is not False:
            fixes.append(f"afpbench build {name} --param use_t5=false (drops the 4.8B-parameter T5-XXL encoder)")
        if dtype == "fp32":
            fixes.append(f"afpbench build {name} --dtype fp16")
        h, w = int(backend.param("height", 512) if backend else params.get("height", 1024)), int(backend.param("width", 512) if backend else params.get("width", 1024))
    elif card.backend == "classifier":
        folder = config_dir(card.model_id)
        if folder is not None:
            from transformers import ResNetForImageClassification

            model = _empty_model(ResNetForImageClassification, folder, None)
            parts.append(Part(card.model_id, "classifier", type(model).__name__, count_parameters(model), "config", card.revision))
        h = w = int(recipe.params["image_size"].value) if "image_size" in recipe.params else 224
    else:
        notes.append(f"'{card.name}' ({card.backend}) has no hub model to download" + (" (supplied by the user)" if getattr(card, "supplied_by_user", False) else ""))
        h = w = int(recipe.params["resolution"].value) if "resolution" in recipe.params else 256
    weights = weight_bytes(parts, dtype)
    act = max(steps.values()) if steps else 0
    plan = Plan(1, "build", name, dtype, batch_size, images, parts, weights, act, steps, 0, int(images * h * w * 3 * PNG_RATIO), notes=notes)
    fixes.append("enable model CPU offload (pipe.enable_model_cpu_offload()) in a custom run")
    return _finish(plan, Path(out), gpu, fixes)


def _detector_base(name: str) -> str | None:
    base = DETECTOR_BASES.get(name)
    if base is None:
        return None
    if base in ("vicuna-v1.3",):
        from afpbench.detectors.instructblip import PRESET_BASES

        blip_id, llm_id = PRESET_BASES[base].split("+")
        blip, llm = config_dir(blip_id), config_dir(llm_id)
        if blip is None or llm is None:
            return None
        return f"{instructblip_base_dir(blip)}+{llm}"
    folder = config_dir(base)
    return str(folder) if folder else None


def instructblip_base_dir(blip: Path) -> Path:
    """The InstructBLIP config folder plus its Q-Former tokenizer (the real bert-base-uncased
    vocabulary + [DEC], as the HF port ships it), in a temporary folder."""
    from afpbench.detectors._hf import qformer_tokenizer

    tmp = Path(tempfile.mkdtemp(prefix="afpbench-instructblip-"))
    shutil.copytree(blip, tmp, dirs_exist_ok=True)
    qformer_tokenizer().save_pretrained(tmp / "qformer_tokenizer")
    return tmp


class _Backbone:
    """A detector's backbone alone (the detectors whose setup reads weights with no meta path):
    the module the detector wraps, built from the base's config on meta."""

    def __init__(self, name: str, modules: dict[str, Any], image_size: int, dtype: Any, forward: Any):
        self.name, self.modules, self.image_size, self.dtype, self._forward = name, modules, image_size, dtype, forward

    def forward_scores(self, batch: Any) -> Any:
        return self._forward(batch)


def build_detector(name: str, *, dtype: str = "bf16") -> Any:
    """Detector ``name`` at real size on the meta device.

    The InstructBLIP family goes through ``load_detector(..., device="meta", train_init=True)``
    (the detector's own loading code); univfd and cnnspot through their backbone classes
    (CLIPVisionModelWithProjection + the 768 -> 1 probe; ResNetForImageClassification with one output).
    """
    import torch

    from afpbench.detectors import load_detector
    from afpbench.registry import split_tag

    base_name, _ = split_tag(name)
    base = _detector_base(base_name)
    if base is None:
        raise AfpbenchError(f"No shipped configs for the base of '{name}'; its size cannot be estimated here.")
    tdt = torch.bfloat16 if DTYPE_BYTES[dtype] == 2 else torch.float32
    if base_name == "univfd":
        from accelerate import init_empty_weights
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        with init_empty_weights():  # the vision half of the composite CLIP config, as from_pretrained takes it
            clip = CLIPVisionModelWithProjection(CLIPVisionConfig.from_pretrained(base))
        clip = clip.to(device="meta", dtype=tdt)
        with torch.device("meta"):
            probe = torch.nn.Linear(clip.config.projection_dim, 1)
        return _Backbone(name, {"clip": clip, "probe": probe}, clip.config.image_size, tdt, lambda x: probe(clip(pixel_values=x).image_embeds.float()))
    if base_name == "cnnspot":
        from transformers import AutoConfig, ResNetForImageClassification

        config = AutoConfig.from_pretrained(base)
        config.num_labels = 1
        config.id2label, config.label2id = {0: "fake"}, {"fake": 0}
        from accelerate import init_empty_weights

        with init_empty_weights():
            model = ResNetForImageClassification(config)
        model = model.to(device="meta", dtype=tdt)
        return _Backbone(name, {"model": model}, 224, tdt, lambda x: model(pixel_values=x).logits)
    return load_detector(name, base=base, device="meta", dtype="bfloat16" if tdt is torch.bfloat16 else "float32", train_init=True)


def _detector_modules(det: Any) -> list[tuple[str, Any]]:
    if isinstance(det, _Backbone):
        return list(det.modules.items())
    return [(k, getattr(det, k)) for k in ("model", "clip", "probe") if hasattr(getattr(det, k, None), "parameters")]


def plan_evaluate(detectors: list[str], *, profile: str | None = "v3", datasets: list[str] | None = None, batch_size: int = 32, dtype: str | None = None,
                  images_per_set: int | None = None, out: Path | str = "results", gpu: tuple[str | None, int | None] | None = None) -> Plan:
    """Resources of ``afpbench evaluate --detector ... --profile v3``."""
    import torch

    from afpbench.catalog import get_profile, get_recipe

    sets = datasets or ([e.name for e in get_profile(profile).sets] if profile else [])
    images = sum(int(images_per_set or get_recipe(s).count.value) for s in sets)
    dtype = dtype or "fp16"
    if dtype not in DTYPE_BYTES:
        raise AfpbenchError(f"Unknown --dtype '{dtype}'; use one of {', '.join(DTYPE_BYTES)}.")
    parts: list[Part] = []
    steps: dict[str, int] = {}
    notes: list[str] = []
    for name in detectors:
        det = build_detector(name, dtype=dtype)
        base = DETECTOR_BASES.get(name.split(".")[0], "")
        from afpbench.detectors.instructblip import PRESET_BASES

        ids = PRESET_BASES.get(base, base).split("+")
        for comp, mod in _detector_modules(det):
            if comp == "model" and hasattr(mod, "language_model") and len(ids) == 2:
                lm = count_parameters(mod.language_model)
                parts.append(Part(ids[0], "vision+qformer+projection", type(mod).__name__, count_parameters(mod) - lm, "config"))
                parts.append(Part(ids[1], "language_model", type(mod.language_model).__name__, lm, "config"))
            else:
                parts.append(Part(ids[0] if comp != "probe" else f"{name} weights", comp, type(mod).__name__, count_parameters(mod), "config"))
        size = det.image_size or 224
        dt = det.dtype
        steps[name] = trace_peak(lambda det=det, size=size, dt=dt: det.forward_scores(torch.empty(batch_size, 3, size, size, device="meta", dtype=dt)))
    weights = weight_bytes(parts, dtype)
    act = max(steps.values()) if steps else 0
    notes.append(f"{len(sets)} sets ({profile or 'custom'}); predictions are written as parquet, a few hundred bytes a row")
    plan = Plan(1, "evaluate", "+".join(detectors), dtype, batch_size, images, parts, weights, act, steps, 0, images * 300, notes=notes)
    fixes = [f"--batch-size {max(1, batch_size // 2)}"] if batch_size > 1 else []
    if dtype == "fp32":
        fixes.append("--dtype fp16")
    return _finish(plan, Path(out), gpu, fixes)


def refusal(plan: Plan) -> str | None:
    """The one-line reason a run clearly does not fit, naming the fix; None when it fits."""
    if plan.fits_gpu is False:
        need, have = plan.peak_gpu_bytes / GIB, (plan.gpu_total_bytes or 0) / GIB
        return f"{plan.kind} {plan.name} needs about {need:.1f} GiB of GPU memory, {plan.gpu_name} has {have:.1f} GiB; try: {'; or '.join(plan.fixes)}."
    if plan.fits_disk is False:
        return (f"{plan.kind} {plan.name} writes about {plan.output_bytes / 1e9:.1f} GB, the disk has {(plan.disk_free_bytes or 0) / 1e9:.1f} GB free; "
                "free space or pass --out on a larger disk (or --count smaller).")
    return None


__all__ = ["EmptyWeightsBackend", "Part", "Plan", "build_backend", "build_detector", "config_dir", "configs_root", "count_parameters", "empty_pipeline",
           "plan_build", "plan_evaluate", "refusal", "trace_peak"]
