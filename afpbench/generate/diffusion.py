"""The ``diffusion`` backend: diffusers pipelines for text-to-image, inpainting, x4 upscaling
and ControlNet, including cascades (DeepFloyd IF: stage I -> stage II -> SD x4 upscaler).

The generator card names the pipeline class, the hub id and the extra stages; ``--model``
replaces them with a local folder saved by ``save_pretrained`` (or a comma-separated
list, one per stage; or a folder holding ``stage_1/``, ``stage_2/``... for a cascade).

Loading is loud and early: before any row is produced, a missing folder, a model that
is not in the offline cache, a gated repository or a folder holding another pipeline
class stops the build with one line naming the fix. The revision actually loaded is
recorded: the hub commit hash of the cached snapshot, or a sha256 of a local folder.

Every row gets its own ``torch.Generator`` seeded from the row seed, on the CPU so that
the initial noise is the same on any device; rows in a batch never share a stream.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from afpbench._util.devices import resolve_device, torch_dtype
from afpbench._util.hashing import revision_of
from afpbench._util.hub import offline
from afpbench.errors import AfpbenchError
from afpbench.generate.base import Backend, Output, build_dtype
from afpbench.generate.masks import PARAM_NAMES as MASK_PARAMS
from afpbench.plan import WorkItem, looks_like_path

TASKS = ("text2image", "inpaint", "upscale", "controlnet")
# Every parameter the backend reads (self.param / self.params), the masks' included.
PARAMS = frozenset({
    "num_inference_steps", "guidance_scale", "height", "width", "negative_prompt", "use_t5",  # text-to-image
    "stage2_num_inference_steps", "stage2_guidance_scale", "stage2_noise_level",  # the IF cascade
    "stage3_num_inference_steps", "stage3_guidance_scale", "stage3_noise_level",
    "strength", "composite",  # inpainting (+ the mask parameters)
    "scale", "downscale", "noise_level",  # x4 upscaling
    "canny_low", "canny_high", "canny_sigma", "controlnet_conditioning_scale",  # ControlNet
}) | MASK_PARAMS
# Folders saved as another class that a pipeline may still load (the hub's SD 1.5 base
# folder is a StableDiffusionPipeline; the ControlNet is given separately).
COMPATIBLE = {"StableDiffusionControlNetPipeline": ("StableDiffusionPipeline",)}
# Model classes (not pipelines) that a card may list as a stage.
MODEL_STAGES = ("ControlNetModel",)
RESAMPLE = {"bicubic": 3, "bilinear": 2, "lanczos": 1, "nearest": 0, "area": 4, "box": 4}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:240]


def _dtype_kwargs(dtype_name: str) -> dict[str, Any]:
    """``dtype=`` for diffusers releases that renamed it, ``torch_dtype=`` for older ones."""
    from diffusers.utils import deprecation_utils

    key = "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    return {key: torch_dtype(dtype_name)}


def hub_error(ref: str, exc: BaseException) -> AfpbenchError:
    """Turn a huggingface_hub failure into the one-line message that names the fix."""
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        return AfpbenchError(f"'{ref}' is a gated repository; accept its license on huggingface.co, log in (hf auth login) and retry, or pass --model with a local folder.")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return AfpbenchError(f"There is no hub repository '{ref}' (or it is private); check --model, or pass a local folder saved by save_pretrained.")
    if isinstance(exc, errors.RevisionNotFoundError):
        return AfpbenchError(f"'{ref}' has no such revision ({_first_line(exc)}); fix the revision in the generator card.")
    if offline() or isinstance(exc, errors.LocalEntryNotFoundError):
        return AfpbenchError(
            f"'{ref}' is not in the local Hugging Face cache and the hub is unreachable{' (offline mode: HF_HUB_OFFLINE=1 or a sibling switch is set)' if offline() else ''}; "
            f"download it on a connected machine (hf download {ref}) or pass --model with a local folder saved by save_pretrained."
        )
    return AfpbenchError(f"Cannot fetch '{ref}' from the hub ({type(exc).__name__}: {_first_line(exc)}); check the id and your connection, or pass --model with a local folder.")


def _commit_of(path: str | None) -> str | None:
    """The commit hash of a file inside the hub cache (``.../snapshots/<commit>/...``)."""
    if not path:
        return None
    parts = Path(path).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None


class DiffusionBackend(Backend):
    kind = "diffusion"
    tasks = TASKS
    param_names = PARAMS

    def __init__(self, recipe, card, config, inputs=None):
        super().__init__(recipe, card, config, inputs)
        self.pipe: Any = None
        self.stages: list[Any] = []  # the cascade's later pipelines (IF stage II, x4 upscaler)
        self.device = "cpu"
        self.dtype = "fp32"

    # -- loading ------------------------------------------------------------------------
    def _refs(self) -> list[str | None]:
        """One model reference per stage (main first); None = use the card's stage id."""
        card = self.card
        n = 1 + len(card.stages)
        model = self.config.model
        if not model:
            return [card.model_id] + [s.model_id for s in card.stages]
        path = Path(model).expanduser()
        if n > 1 and path.is_dir() and (path / "stage_1").is_dir():
            stages = sorted((p for p in path.iterdir() if p.is_dir() and p.name.startswith("stage_")), key=lambda p: int(p.name.split("_")[1]))
            if len(stages) != n:
                raise AfpbenchError(f"{model} holds {len(stages)} stage folders but '{card.name}' has {n} stages; add stage_1..stage_{n}.")
            return [str(p) for p in stages]
        if "," in model and not path.exists():
            parts = [p.strip() for p in model.split(",")]
            if len(parts) != n:
                raise AfpbenchError(f"--model lists {len(parts)} models but '{card.name}' has {n} stages ({card.pipeline}, {', '.join(s.pipeline for s in card.stages)}); give one per stage.")
            return parts  # type: ignore[return-value]
        return [model] + [None] * len(card.stages)

    def _index(self, ref: str, revision: str | None) -> tuple[dict[str, Any], Path | None, str | None]:
        """(model_index.json, local folder or None, revision) of a pipeline reference."""
        path = Path(ref).expanduser()
        if path.exists():
            index_file = path / "model_index.json"
            if not index_file.is_file():
                raise AfpbenchError(f"{ref} is not a diffusers pipeline folder (no model_index.json); pass a folder saved with save_pretrained or a hub id.")
            return json.loads(index_file.read_text()), path, revision_of(path)
        if looks_like_path(ref):
            raise AfpbenchError(f"Model folder {ref} does not exist; pass --model with an existing folder saved by save_pretrained, or a hub id.")
        from huggingface_hub import hf_hub_download

        try:
            index_file = hf_hub_download(ref, "model_index.json", revision=revision)
        except Exception as exc:  # huggingface_hub raises a family of errors
            raise hub_error(ref, exc) from exc
        return json.loads(Path(index_file).read_text()), None, _commit_of(index_file)

    def _check_class(self, cls, index: dict[str, Any], ref: str) -> None:
        found = index.get("_class_name")
        if found != cls.__name__ and found not in COMPATIBLE.get(cls.__name__, ()):
            raise AfpbenchError(
                f"{ref} holds a {found}, but '{self.recipe.name}' runs {cls.__name__}; pass --model with a {cls.__name__} "
                f"(a hub id or a folder saved by save_pretrained)."
            )

    def _load_pipeline(self, cls_name: str, ref: str, revision: str | None, variant: str | None, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        import diffusers

        cls = getattr(diffusers, cls_name, None)
        if cls is None:
            raise AfpbenchError(f"diffusers {diffusers.__version__} has no pipeline class {cls_name}; upgrade diffusers (pip install -U diffusers).")
        index, local, resolved = self._index(ref, revision)
        self._check_class(cls, index, ref)
        # Components the folder declares absent (SD3 saved without T5: text_encoder_3 = [null, null])
        # must be passed as None explicitly, or diffusers refuses the folder.
        expected, _ = cls._get_signature_keys(cls)
        dropped = [
            k for k, v in index.items()
            if k in expected and k not in cls._optional_components and k not in kwargs and isinstance(v, list) and v and v[0] is None
        ]
        kwargs.update({k: None for k in dropped})
        if local is not None and variant and not any(f".{variant}." in p.name for p in local.rglob("*")):
            variant = None  # a local folder without variant files holds the plain weights
        try:
            pipe = self._from_pretrained(cls, str(local) if local else ref, revision=None if local else revision, variant=variant, **_dtype_kwargs(self.dtype), **kwargs)
        except AfpbenchError:
            raise
        except Exception as exc:
            from huggingface_hub import errors

            # Weights missing from the cache or the hub surface as OSError/hub errors.
            if local is None and isinstance(exc, (errors.HfHubHTTPError, errors.LocalEntryNotFoundError, OSError)):
                raise hub_error(ref, exc) from exc
            raise AfpbenchError(f"Cannot load {cls_name} from {ref} ({type(exc).__name__}: {_first_line(exc)}); pass --model with a complete {cls_name} folder or hub id.") from exc
        self._to_device(pipe)
        pipe.set_progress_bar_config(disable=True)
        prov = {
            "model_id": ref,
            "revision": resolved,
            "pipeline": cls_name,
            "scheduler": type(pipe.scheduler).__name__ if getattr(pipe, "scheduler", None) is not None else None,
            "variant": variant,
        }
        if dropped:
            prov["components_absent"] = sorted(dropped)
        return pipe, prov

    def _from_pretrained(self, cls: Any, source: str, **kwargs: Any) -> Any:
        """``cls.from_pretrained``: the one place weights are read (afpbench.estimate builds the
        same classes from their configs on the meta device instead)."""
        return cls.from_pretrained(source, **kwargs)

    def _to_device(self, pipe: Any) -> None:
        pipe.to(self.device)

    def _load_model(self, cls_name: str, ref: str, revision: str | None) -> tuple[Any, dict[str, Any]]:
        """A single diffusers model used by a pipeline (the ControlNet of stylization)."""
        import diffusers

        cls = getattr(diffusers, cls_name)
        path = Path(ref).expanduser()
        if not path.exists() and looks_like_path(ref):
            raise AfpbenchError(f"Model folder {ref} does not exist; pass an existing {cls_name} folder saved by save_pretrained, or a hub id.")
        try:
            model = self._from_pretrained(cls, str(path) if path.exists() else ref, revision=None if path.exists() else revision, **_dtype_kwargs(self.dtype))
        except Exception as exc:
            if not path.exists():
                raise hub_error(ref, exc) from exc
            raise AfpbenchError(f"Cannot load {cls_name} from {ref} ({type(exc).__name__}: {_first_line(exc)}); pass a folder holding a {cls_name}.") from exc
        if path.exists():
            resolved = revision_of(path)
        else:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(ref, "config.json", revision=revision)
            resolved = _commit_of(cached if isinstance(cached, str) else None)
        return model.eval(), {"model_id": ref, "revision": resolved, "class": cls_name}

    def load(self) -> dict[str, Any]:
        card = self.card
        if card is None or not card.pipeline:
            raise AfpbenchError(f"'{self.recipe.name}' has no diffusers pipeline in its generator card; fix generators/{self.recipe.generator}.yaml.")
        self.device = resolve_device(self.config.device)
        self.dtype = build_dtype(self.config, card, self.device)
        if self.config.quiet:
            import diffusers.utils.logging as dlog
            import transformers.utils.logging as tlog

            dlog.disable_progress_bar()
            tlog.disable_progress_bar()
        refs = self._refs()
        own = not self.config.model or refs[0] == card.model_id  # variant files exist only in the card's own repo
        main_kwargs: dict[str, Any] = {}
        stage_prov: list[dict[str, Any]] = []
        pipeline_stages = []
        for stage, ref in zip(card.stages, refs[1:]):
            if stage.pipeline in MODEL_STAGES:
                # A pipeline folder may already bundle the ControlNet (a save_pretrained of the
                # whole pipeline); otherwise it is loaded from the stage's own reference.
                index_has = self._bundles(refs[0], stage.pipeline)
                if ref is None and index_has:
                    stage_prov.append({"role": "controlnet", "bundled_in": refs[0]})
                    continue
                model, prov = self._load_model(stage.pipeline, ref or stage.model_id, stage.revision)
                main_kwargs["controlnet"] = model
                stage_prov.append({"role": "controlnet", **prov})
            else:
                pipeline_stages.append((stage, ref or stage.model_id))
        if self.recipe.task == "text2image" and self.params.get("use_t5") is False:
            main_kwargs.update(text_encoder_3=None, tokenizer_3=None)  # SD3 without its T5 encoder
        self.pipe, prov = self._load_pipeline(card.pipeline, refs[0], card.revision, card.variant if own else None, **main_kwargs)
        for i, (stage, ref) in enumerate(pipeline_stages, start=2):
            # Later IF stages reuse stage I's prompt embeddings: their T5 is not loaded.
            extra = {"text_encoder": None, "tokenizer": None} if stage.pipeline.startswith("IF") else {}
            pipe, sp = self._load_pipeline(stage.pipeline, ref, stage.revision, card.variant if own and stage.pipeline.startswith("IF") else None, **extra)
            self.stages.append(pipe)
            stage_prov.append({"role": f"stage_{i}", **sp})
        if stage_prov:
            prov["stages"] = stage_prov
        prov.update(dtype=self.dtype, device=self.device, task=self.recipe.task)
        return prov

    def _bundles(self, ref: str | None, cls_name: str) -> bool:
        """Whether the pipeline folder ``ref`` already holds a component of class ``cls_name``."""
        if not ref:
            return False
        index_file = Path(ref).expanduser() / "model_index.json"
        if not index_file.is_file():
            return False
        index = json.loads(index_file.read_text())
        return any(isinstance(v, list) and len(v) == 2 and v[1] == cls_name for v in index.values())

    # -- generation ---------------------------------------------------------------------
    def _generators(self, items: list[WorkItem]):
        import torch

        return [torch.Generator("cpu").manual_seed(int(it.seed)) for it in items]

    def run(self, items: list[WorkItem], inputs: list[Any]) -> list[Output]:
        task = self.recipe.task
        prompts = [it.prompt for it in items]
        if self.stages:
            images, metas = self._run_cascade(items, prompts)
        elif task == "text2image":
            images, metas = self._run_t2i(items, prompts)
        elif task == "inpaint":
            images, metas = self._run_inpaint(items, prompts, inputs)
        elif task == "upscale":
            images, metas = self._run_upscale(items, prompts, inputs)
        else:
            images, metas = self._run_controlnet(items, prompts, inputs)
        return [Output(image=img.convert("RGB"), meta=m) for img, m in zip(images, metas)]

    def _negative(self, n: int):
        neg = self.param("negative_prompt")
        return [neg] * n if neg else None

    @staticmethod
    def _flags(out: Any, n: int) -> list[dict[str, Any]]:
        """Per-row safety-checker flags, when the pipeline has a checker (a flagged image is blacked out)."""
        flags = getattr(out, "nsfw_content_detected", None) or getattr(out, "nsfw_detected", None)
        return [{"nsfw": True} if flags is not None and bool(flags[i]) else {} for i in range(n)]

    def _run_t2i(self, items, prompts):
        h, w = int(self.param("height", 512)), int(self.param("width", 512))
        out = self.pipe(
            prompt=prompts, negative_prompt=self._negative(len(items)), height=h, width=w,
            num_inference_steps=int(self.param("num_inference_steps", 50)), guidance_scale=float(self.param("guidance_scale", 7.5)),
            generator=self._generators(items),
        )
        return out.images, self._flags(out, len(items))

    def _run_cascade(self, items, prompts):
        """DeepFloyd IF: stage I (64 px) -> stage II (256 px) -> SD x4 upscaler (1024 px).

        Each row's generator is carried through the three stages, so the row is still a
        function of its seed alone. Stage sizes are the stage models' own.
        """
        stage1, stage2, stage3 = self.pipe, self.stages[0], self.stages[1]
        gens = self._generators(items)
        g1 = float(self.param("guidance_scale", 7.0))
        # IF cleans captions with bs4/ftfy when installed; off, so rows do not depend on them.
        pe, ne = stage1.encode_prompt(prompts, do_classifier_free_guidance=g1 > 1, device=self.device, negative_prompt=self._negative(len(items)), clean_caption=False)
        x = stage1(prompt_embeds=pe, negative_prompt_embeds=ne, num_inference_steps=int(self.param("num_inference_steps", 100)), guidance_scale=g1, generator=gens, output_type="pt").images
        s2 = float(self.param("stage2_guidance_scale", 4.0))
        if (s2 > 1) != (g1 > 1):
            pe, ne = stage1.encode_prompt(prompts, do_classifier_free_guidance=s2 > 1, device=self.device, negative_prompt=self._negative(len(items)), clean_caption=False)
        x = stage2(
            image=x, prompt_embeds=pe, negative_prompt_embeds=ne, num_inference_steps=int(self.param("stage2_num_inference_steps", 50)),
            guidance_scale=s2, noise_level=int(self.param("stage2_noise_level", 250)), generator=gens, output_type="pt",
        ).images
        out = stage3(
            prompt=prompts, image=x, negative_prompt=self._negative(len(items)), noise_level=int(self.param("stage3_noise_level", 100)),
            num_inference_steps=int(self.param("stage3_num_inference_steps", 75)), guidance_scale=float(self.param("stage3_guidance_scale", 9.0)), generator=gens,
        )
        return out.images, self._flags(out, len(items))

    def _run_inpaint(self, items, prompts, inputs):
        from PIL import Image

        from afpbench.generate.masks import MaskConfig, make_mask
        from afpbench.seeding import row_seed

        # The same seeded brush-stroke masks as the lama recipe (afpbench.generate.masks),
        # drawn from a seed derived from the row seed: reproducible from the row alone.
        mask_cfg = MaskConfig.from_params(self.params)
        drawn = [make_mask(img.size, row_seed(it.seed, "mask"), mask_cfg) for it, img in zip(items, inputs)]
        masks = [m.to_pil() for m in drawn]
        h, w = inputs[0].height, inputs[0].width
        out = self.pipe(
            prompt=prompts, negative_prompt=self._negative(len(items)), image=inputs, mask_image=masks, height=h, width=w,
            num_inference_steps=int(self.param("num_inference_steps", 50)), guidance_scale=float(self.param("guidance_scale", 7.5)),
            strength=float(self.param("strength", 1.0)), generator=self._generators(items),
        )
        images = out.images
        if self.param("composite", False):
            # Paste the generated pixels into the original through the mask: only the hole
            # is synthetic (otherwise the VAE round trip alters the whole crop).
            images = [Image.composite(gen.resize(src.size), src, m) for gen, src, m in zip(images, inputs, masks)]
        return images, [{**m.meta(), **f} for m, f in zip(drawn, self._flags(out, len(items)))]

    def _run_upscale(self, items, prompts, inputs):
        scale = int(self.param("scale", 4))
        resample = RESAMPLE.get(str(self.param("downscale", "bicubic")).lower())
        if resample is None:
            raise AfpbenchError(f"Unknown downscale '{self.param('downscale')}'; use one of {', '.join(RESAMPLE)}.")
        lows = [img.resize((img.width // scale, img.height // scale), resample) for img in inputs]
        out = self.pipe(
            prompt=prompts, negative_prompt=self._negative(len(items)), image=lows, noise_level=int(self.param("noise_level", 20)),
            num_inference_steps=int(self.param("num_inference_steps", 75)), guidance_scale=float(self.param("guidance_scale", 9.0)),
            generator=self._generators(items),
        )
        metas = [{"low_res": [lo.width, lo.height], **f} for lo, f in zip(lows, self._flags(out, len(items)))]
        return out.images, metas

    def _run_controlnet(self, items, prompts, inputs):
        h, w = int(self.param("height", 512)), int(self.param("width", 512))
        controls, metas = [], []
        for img in inputs:
            edges = canny_edges(fit(img, w, h), float(self.param("canny_low", 100)), float(self.param("canny_high", 200)), float(self.param("canny_sigma", 1.0)))
            controls.append(edges)
            metas.append({"edge_fraction": round(edges.convert("L").histogram()[255] / (w * h), 4)})
        out = self.pipe(
            prompt=prompts, negative_prompt=self._negative(len(items)), image=controls, height=h, width=w,
            num_inference_steps=int(self.param("num_inference_steps", 30)), guidance_scale=float(self.param("guidance_scale", 7.5)),
            controlnet_conditioning_scale=float(self.param("controlnet_conditioning_scale", 1.0)), generator=self._generators(items),
        )
        return out.images, [{**m, **f} for m, f in zip(metas, self._flags(out, len(items)))]

    @staticmethod
    def summarize(metas: list[dict[str, Any]]) -> dict[str, Any]:
        flagged = sum(1 for m in metas if m.get("nsfw"))
        return {"safety_checker_flagged": flagged} if flagged else {}


def fit(image, width: int, height: int):
    """Resize to cover ``width`` x ``height`` (bicubic) and center crop: no distortion."""
    from PIL import Image

    scale = max(width / image.width, height / image.height)
    w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    image = image.resize((w, h), Image.BICUBIC)
    x, y = (w - width) // 2, (h - height) // 2
    return image.crop((x, y, x + width, y + height))


def canny_edges(image, low: float, high: float, sigma: float = 1.0):
    """White-on-black Canny edges as an RGB control image (skimage, not OpenCV).

    Thresholds are given on the 0-255 scale of the ControlNet example (cv2.Canny(img,
    100, 200)); skimage works on [0, 1] images, so they are divided by 255.
    """
    import numpy as np
    from PIL import Image
    from skimage.feature import canny

    grey = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    edges = canny(grey, sigma=sigma, low_threshold=low / 255.0, high_threshold=high / 255.0)
    arr = (edges.astype(np.uint8) * 255)[:, :, None].repeat(3, axis=2)
    return Image.fromarray(arr)
