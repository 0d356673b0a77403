"""Helpers the tests, the demo and the benchmarks share (never used by the scoring library itself).

* ``write_images`` packages PIL images as a dataset folder, the quickest way to make a set
  whose content a test controls.
* ``ToyDetector`` (registered as ``test_toy``): a tiny deterministic detector with no
  weights, P(fake) from the image's high-frequency energy; hooks to count, slow down or
  break its scoring let tests exercise resume and failure paths (lm-eval's ``dummy``
  model, timm's ``test_*`` models).
* ``fakeify``: a simple, learnable "generator" (blur + colour cast) for fake sets.
* Tiny real backbones built from configs (``build_tiny_*``) and ``build_tiny_detector``,
  a tiny ready-to-score instance of any bundled detector. Each builder makes a randomly
  initialised but *real* model with the same classes as the full-size one, saves it with
  ``save_pretrained`` (plus real offline tokenizers) and returns a folder the detectors
  load as ``base=``. Seeds make them reproducible.

  - ``build_tiny_instructblip``: InstructBLIP (ViT vision tower, Q-Former, LLaMA LLM).
    Q-Former tokenizer: the real bert-base-uncased vocabulary plus ``[DEC]``
    (``detectors._hf.qformer_tokenizer``); LLM tokenizer: a small LLaMA-style BPE
    (Metaspace, ``<s>``/``</s>``/``<unk>``) trained offline with the ``tokenizers``
    library on fixed text, so that ``yes`` and ``no`` are single tokens.
  - ``build_tiny_llama``: the tiny LLM alone (to test composing a base from two sources).
  - ``build_tiny_clip_vision``: CLIPVisionModelWithProjection (univfd's backbone).
  - ``build_tiny_resnet``: a bottleneck ResNet for ResNetForImageClassification (cnnspot).

The test suite's own helpers (release-format weight writers, memoised fixtures) stay in
``tests/``. Importing this module imports no torch.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any, ClassVar

from afpbench.cards import Preprocessing, Variant
from afpbench.dataset import DatasetWriter, WriterOptions, encode_png, make_row, to_rgb
from afpbench.detectors.base import Detector


def write_images(
    out_dir: str | Path,
    name: str,
    images: list,
    labels: list[int] | int,
    *,
    family: str = "",
    generator: str = "",
    prompts: list[str] | None = None,
    image_format: str = "png",
    info: dict[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Package PIL images as a dataset folder (PNG by default; ``jpeg`` for format audits).

    Tests and the demo call this to (re)write fixture sets, so it replaces an existing set
    unless ``overwrite=False``.
    """
    if isinstance(labels, int):
        labels = [labels] * len(images)
    info = {"recipe": {"name": name, "version": 1}, "family": family, **(info or {})}
    with DatasetWriter(out_dir, name, info=info, options=WriterOptions(overwrite=overwrite)) as w:
        for i, (img, lab) in enumerate(zip(images, labels)):
            img = to_rgb(img)
            if image_format == "png":
                data = encode_png(img)
            else:
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=95)
                data = buf.getvalue()
            w.add(
                make_row(
                    id=f"{name}/{i:05d}", image=data, label=lab, dataset=name, family=family, generator=generator,
                    prompt=(prompts[i] if prompts else ""), seed=i, width=img.width, height=img.height, format=image_format,
                ),
                index=i,
            )
    w.finalize()
    return Path(out_dir) / name


# -- the toy detector -----------------------------------------------------------------------
class ToyDetector(Detector):
    """P(fake) = sigmoid(gain * (mean |vertical pixel difference| - 0.06)) of the grey image
    squashed to 48x48: noisier (sharper) images look fake. Deterministic, no weights,
    batch-size invariant; any tag is accepted as a label (``test_toy.sharp``), so several
    instances can be told apart in one run.

    ``gain`` is an argument of the scores (recorded, part of the cache key); ``sleep``
    (seconds per batch), ``fail_after`` (raise on the batch after that many scoring calls)
    and ``nan`` (the first score of every batch is NaN) only change how scoring behaves,
    for resume and failure tests. ``calls`` and ``rows`` count scoring calls and rows over
    all instances (``reset_counts`` zeroes them).
    """

    name = "test_toy"
    description = "Test detector: P(fake) from the high-frequency energy of the grey image (48x48); no weights."
    paper = "afpbench test detector"
    license = "Apache-2.0"
    variants = {None: Variant(training_data="none")}
    default_threshold_policy = "fixed: 0.5"
    calls: ClassVar[int] = 0
    rows: ClassVar[int] = 0

    def __init__(self, tag: str | None = None, *, gain: float = 40.0, fail_after: int | None = None, sleep: float = 0.0, nan: bool = False, **kw: Any):
        if tag is not None and tag not in self.variants:
            self.variants = {**self.variants, tag: Variant(training_data="none")}
        self.gain, self.fail_after, self.sleep, self.nan = float(gain), fail_after, sleep, nan
        super().__init__(tag, **kw)

    @classmethod
    def reset_counts(cls) -> None:
        cls.calls = 0
        cls.rows = 0

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(resize=None, resize_policy="none", crop=None, colour="grey", note="Grey, squashed to 48x48 (PIL's default resampling), in [0, 1].")

    def preprocess(self, image: Any, row: dict[str, Any] | None = None) -> Any:
        import numpy as np
        import torch

        arr = np.asarray(image.convert("L").resize((48, 48)), dtype=np.float32) / 255.0
        return torch.from_numpy(arr)[None]

    def forward_scores(self, batch: Any) -> Any:
        import torch

        cls = type(self)
        cls.calls += 1
        cls.rows += len(batch)
        if self.fail_after is not None and cls.calls > self.fail_after:
            raise RuntimeError("simulated crash")
        if self.sleep:
            time.sleep(self.sleep)
        hf = (batch[..., 1:, :] - batch[..., :-1, :]).abs().mean(dim=(1, 2, 3))
        p = torch.sigmoid((hf - 0.06) * self.gain)
        if self.nan:
            p[0] = float("nan")
        return p

    def arguments(self) -> dict[str, Any]:
        return {**super().arguments(), "gain": self.gain}


def fakeify(image: Any) -> Any:
    """A simple, learnable 'generator': blur + colour cast."""
    import numpy as np
    from PIL import Image, ImageFilter

    a = np.asarray(image.convert("RGB").filter(ImageFilter.GaussianBlur(2))).astype(np.float32)
    a = a * np.array([1.25, 0.8, 0.6]) + 20
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


# -- tiny real backbones and detectors ---------------------------------------------------------
TINY_IMAGE_SIZE = 32

# Fixed text the tiny BPE is trained on: the prompts and answers of the detectors, some
# filler, and the bare "?" piece the piecewise prompt encoding produces.
_CORPUS = [
    "Is this photo real ? yes",
    "Is this photo real ? no",
    "yes no yes no real fake photo image picture",
    "a photo of a cat on a sofa . a picture of a city street at night .",
    "the quick brown fox jumps over the lazy dog , and the answer is yes or no .",
    "? ? ! . , : ; ( ) 0 1 2 3 4 5 6 7 8 9",
]


def tiny_llm_tokenizer():
    """A LLaMA-style fast tokenizer trained offline (deterministic: BPE on fixed text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=160, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(_CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    for word in ("yes", "no", "?"):
        ids = fast(word, add_special_tokens=False).input_ids
        if len(ids) != 1:  # pragma: no cover - guards the fixed corpus above
            raise RuntimeError(f"tiny tokenizer splits {word!r} into {len(ids)} tokens")
    return fast


def _llama_config(vocab_size: int, hidden: int = 32, initializer_range: float = 0.2):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        initializer_range=initializer_range,
    )


def build_tiny_instructblip(out_dir: str | Path, seed: int = 0, *, image_size: int = TINY_IMAGE_SIZE, qformer_hidden: int = 32, llm_hidden: int = 48) -> Path:
    """Save a tiny InstructBLIP (model + tokenizers, HF layout) to ``out_dir`` and return it.

    Layout as in ``Salesforce/instructblip-vicuna-7b``: model and LLM tokenizer at the
    root, the Q-Former tokenizer in ``qformer_tokenizer/``. The vision tower uses
    ``initializer_range=0.02`` (with the default 1e-10 a random tower ignores images);
    the Q-Former and the LLM use 0.2 (at 0.02 a random tiny model's yes/no logits barely
    depend on the image, so nothing could be learned from 64 soft-prompt numbers).
    """
    import torch
    from transformers import (
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipQFormerConfig,
        InstructBlipVisionConfig,
    )

    from afpbench.detectors._hf import qformer_tokenizer

    out = Path(out_dir)
    torch.manual_seed(seed)
    llm_tok = tiny_llm_tokenizer()
    q_tok = qformer_tokenizer()
    vision = InstructBlipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=image_size, patch_size=8, initializer_range=0.02,
    )
    qformer = InstructBlipQFormerConfig(
        vocab_size=len(q_tok), hidden_size=qformer_hidden, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=qformer_hidden * 2, encoder_hidden_size=32, cross_attention_frequency=1,
        max_position_embeddings=64, pad_token_id=q_tok.pad_token_id, initializer_range=0.2,
    )
    text = _llama_config(len(llm_tok), llm_hidden)
    config = InstructBlipConfig(
        vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(), num_query_tokens=4,
    )
    model = InstructBlipForConditionalGeneration(config).eval()
    _teach_yes_no(model, q_tok, llm_tok, image_size, seed)
    model.save_pretrained(out)
    llm_tok.save_pretrained(out)
    q_tok.save_pretrained(out / "qformer_tokenizer")
    return out


def _teach_yes_no(model, q_tok, llm_tok, image_size: int, seed: int, steps: int = 60) -> None:
    """Train the LM head alone to answer "yes" or "no" (at random) then "</s>".

    A real instruction-tuned Vicuna already answers a yes/no question with one of the two
    words and ends there; a random tiny LLM spreads its mass over the whole vocabulary,
    so its LM loss would be dominated by learning to say yes/no at all. This few-second
    warm-up gives the tiny model the real one's starting point while leaving the image
    pathway untouched (only ``lm_head`` changes, and the answers are random, i.e.
    independent of the image).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    lm = model.language_model
    head = lm.get_output_embeddings()
    q_ids = torch.tensor([q_tok("Is this photo real?").input_ids])
    start = llm_tok.convert_tokens_to_ids("</s>")
    ids = torch.tensor([[start] + llm_tok("Is this photo real ?", add_special_tokens=False).input_ids])
    n = 64
    pixels = torch.rand(n, 3, image_size, image_size, generator=g) * 4 - 2
    hidden, targets = [], []
    with torch.no_grad():  # the body is frozen: its hidden states are computed once
        prefix = model.get_image_features(pixel_values=pixels, qformer_input_ids=q_ids.expand(n, -1), return_dict=True).pooler_output
        for word in ("yes", "no"):
            answer = torch.full((n,), llm_tok(word, add_special_tokens=False).input_ids[0])
            seq = torch.cat([ids.expand(n, -1), answer[:, None]], dim=1)
            embeds = torch.cat([prefix, lm.get_input_embeddings()(seq)], dim=1)
            hidden.append(lm.model(inputs_embeds=embeds).last_hidden_state[:, -2:].reshape(-1, head.in_features))
            targets.append(torch.stack([answer, torch.full_like(answer, start)], dim=1).reshape(-1))
    hidden, targets = torch.cat(hidden), torch.cat(targets)
    opt = torch.optim.Adam(head.parameters(), lr=2e-2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(head(hidden), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)


def build_tiny_llama(out_dir: str | Path, seed: int = 1, *, hidden: int = 48) -> Path:
    """A tiny LLaMA causal LM + tokenizer alone (stands in for lmsys/vicuna-7b-v1.3)."""
    import torch
    from transformers import LlamaForCausalLM

    out = Path(out_dir)
    torch.manual_seed(seed)
    tok = tiny_llm_tokenizer()
    LlamaForCausalLM(_llama_config(len(tok), hidden)).eval().save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_tiny_clip_vision(out_dir: str | Path, seed: int = 0, *, image_size: int = TINY_IMAGE_SIZE, projection_dim: int = 16) -> Path:
    """A tiny CLIPVisionModelWithProjection (univfd's backbone)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    out = Path(out_dir)
    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=image_size, patch_size=8, projection_dim=projection_dim,
    )
    CLIPVisionModelWithProjection(cfg).eval().save_pretrained(out)
    return out


def build_tiny_resnet(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny bottleneck ResNet (same block types and key layout as ResNet-50, 1 output)."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    out = Path(out_dir)
    torch.manual_seed(seed)
    cfg = ResNetConfig(
        embedding_size=8, hidden_sizes=[16, 32, 32, 64], depths=[1, 1, 1, 1], layer_type="bottleneck",
        num_labels=1, downsample_in_first_stage=False,
    )
    ResNetForImageClassification(cfg).eval().save_pretrained(out)
    return out


def build_tiny_detector(name: str, root: str | Path, seed: int = 0, *, image_size: int = TINY_IMAGE_SIZE):
    """A tiny, ready-to-score instance of any bundled detector (benchmarks, demo, examples).

    Builds the tiny backbone it needs under ``root`` and, for detectors that need trained
    weights, fills the trainable tensors a fresh start leaves at zero (UnivFD's probe,
    LoRA's B, the spectral fit) with seeded random values, then goes through the real
    save/load path (``save`` then ``load_detector(name, weights=folder)``). The weights
    are random: use these detectors for speed and plumbing, never for accuracy.
    """
    import torch

    from afpbench.detectors import detector_class, load_detector
    from afpbench.registry import split_tag

    root = Path(root)
    base_name, _ = split_tag(name)
    kw: dict = {}
    if base_name in ("antifakeprompt", "instructblip", "instructblip_lora"):
        folder = root / "instructblip"
        if not (folder / "config.json").exists():
            build_tiny_instructblip(folder, seed=seed, image_size=image_size)
        kw["base"] = str(folder)
    elif base_name == "univfd":
        folder = root / "clip"
        if not (folder / "config.json").exists():
            build_tiny_clip_vision(folder, seed=seed, image_size=image_size)
        kw["base"] = str(folder)
    elif base_name == "cnnspot":
        folder = root / "resnet"
        if not (folder / "config.json").exists():
            build_tiny_resnet(folder, seed=seed)
        kw.update(base=str(folder), image_size=image_size)
    elif base_name in ("efficientnet", "spectral"):
        kw["image_size"] = image_size
    cls = detector_class(name)
    if not getattr(cls, "needs_weights", False):
        return load_detector(name, **kw)
    torch.manual_seed(seed)
    det = load_detector(name, train_init=True, **kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        state = det.trainable_state()
        for k, v in state.items():
            if v.is_floating_point() and not bool(v.any()):
                state[k] = torch.randn(v.shape, generator=g) * 0.3
    det.load_trainable_state(state, "tiny random values")
    folder = det.save(root / f"weights-{name}")
    return load_detector(name, weights=folder, **kw)


__all__ = [
    "write_images", "ToyDetector", "fakeify", "TINY_IMAGE_SIZE", "tiny_llm_tokenizer", "build_tiny_instructblip", "build_tiny_llama",
    "build_tiny_clip_vision", "build_tiny_resnet", "build_tiny_detector",
]
