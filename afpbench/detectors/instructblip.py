"""InstructBLIP asked "Is this photo real?" (zero-shot), and the machinery its family shares.

``InstructBlipYesNo`` holds everything the three InstructBLIP detectors have in common
(``instructblip`` zero-shot here, ``antifakeprompt`` and ``instructblip_lora`` in their
own files): loading a base, encoding the prompt the way the authors' LAVIS code does,
and the scoring rule.

The rule. The authors rank the candidate answers ``yes`` (real) and ``no`` (fake) by the
LM loss of each candidate after the prompt, and take the lower one. For single-token
answers the loss of a candidate is ``-log softmax(logits)[candidate]`` at the answer
position, so ``loss(yes) - loss(no) = logit(no) - logit(yes)``: one forward pass that
reads the two logits at the last prompt position gives the same decision, and
``P(fake) = softmax(logit(yes), logit(no))[no]`` is a soft score for AUC/AP whose 0.5
threshold *is* the authors' rule, ties included (``pred = score > 0.5``: equal losses
answer ``yes``, real, as the authors' ``argsort`` ranks the first candidate first).
``candidate_losses`` implements the authors' two-candidate computation (used to prove the
equivalence in tests and in the benchmark).

Prompt encoding (as LAVIS ``blip2_vicuna_instruct_textinv``):

* LLM: ``[32 projected query outputs] + "</s>" + prompt``. The authors set the LLaMA
  tokenizer's ``bos_token`` to ``</s>``, so every prompt starts with ``</s>`` (id 2), not
  ``<s>``; afpbench does the same. Text around a pseudo-word is tokenised piece by piece
  (the slow LLaMA tokenizer's behaviour around special tokens), so "... real [*]?" gives
  ``▁real [*] ▁?`` as under transformers 4.30, which the authors ran. From 4.35 on the
  same LAVIS code gives ``▁real ▁ [*] ?`` (``tokenization="transformers-4.35"``).
* Q-Former: the BERT tokenizer on the same text (``[CLS] ... [SEP]``).
* The prompt is identical for every image, so a batch needs no padding.

Bases. ``base`` is a preset name, a folder, a hub id, or ``BLIP+LLM`` (vision tower,
Q-Former and projection from BLIP, language model and its tokenizer from LLM):

* ``vicuna-v1.3`` (default) = ``Salesforce/instructblip-vicuna-7b+lmsys/vicuna-7b-v1.3``:
  what the authors ran (LAVIS loads the LLM from Vicuna v1.3 weights).
* ``hf`` = ``Salesforce/instructblip-vicuna-7b``: the plain HF port (its LLM is the
  v1.1-based Vicuna InstructBLIP was trained with).

A composed ``BLIP+LLM`` base (the default preset included) is the authors' LAVIS
arrangement, so its vision tower ends with LAVIS's ``ln_vision`` epsilon, 1e-5 (the HF
port's ``post_layernorm`` has 1e-6); a single-source base keeps its config's value.

Precision. ``precision="authors"`` (the default on GPU unless ``dtype`` is given) is
LAVIS's arrangement: vision tower under fp16 autocast (its weights kept in fp32, so the
autocast casts round them as LAVIS's fp16 copies are), Q-Former, query tokens and
projection in fp32 outside autocast, the LLM's weights in fp16 under fp16 autocast with
an fp32 input sequence (AntifakePrompt's embedding table and ``[*]`` are fp32, as in the
authors' textual-inversion LLaMA), so the LLM's residual stream stays fp32.
``precision="uniform"`` casts the whole model to ``dtype`` (fp32 on CPU, or the fp16/bf16
asked for).

Checkpoints written by the authors' trainer (LAVIS ``RunnerBase._save_checkpoint``) keep
the frozen model's registered buffers beside the trained tensors: the Q-Former's
``position_ids`` and one rotary ``inv_freq`` per LLM layer. Those names are accepted
after checking that their values are what the base computes, and recorded as ignored;
any other extra entry is refused.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Any, ClassVar

from afpbench.cards import Preprocessing, Variant
from afpbench.detectors._hf import from_config_on_meta, from_pretrained_strict, load_tokenizer, quiet_transformers
from afpbench.detectors._transforms import apply_preprocessing
from afpbench.detectors._weights import is_own_format, read_own
from afpbench.detectors.base import Detector
from afpbench.errors import AfpbenchError, WeightsError

PRESET_BASES = {
    "vicuna-v1.3": "Salesforce/instructblip-vicuna-7b+lmsys/vicuna-7b-v1.3",
    "hf": "Salesforce/instructblip-vicuna-7b",
}
DEFAULT_BASE = "vicuna-v1.3"

PRECISIONS = ("authors", "uniform")
# The two prompt tokenizations the authors' LAVIS code produces: transformers 4.30 (what
# they ran) and 4.35+ (a lone "▁" before the pseudo-word, no "▁" on the text after it).
TOKENIZATIONS = ("transformers-4.30", "transformers-4.35")
# LAVIS's ln_vision is a plain nn.LayerNorm (eps 1e-5); the HF port's post_layernorm uses 1e-6.
LAVIS_LN_VISION_EPS = 1e-5
LAVIS_POSITION_IDS = "Qformer.bert.embeddings.position_ids"

# Choices every InstructBLIP-family card lists (docs/detectors.md, "Fidelity to the authors' code").
FAMILY_CHOICES = [
    ("Vision LayerNorm eps: a composed BLIP+LLM base (the default vicuna-v1.3, the authors' arrangement) ends the vision tower with eps 1e-5 as LAVIS's ln_vision; "
     "a single-source base (e.g. 'hf') keeps its config's post_layernorm eps (1e-6 in the HF port)."),
    ("Precision: on GPU by default the authors' arrangement (vision tower under fp16 autocast, Q-Former and projection in fp32 outside it, "
     "LLM fp16 weights under fp16 autocast on an fp32 input sequence); precision=uniform, or an explicit --dtype, casts the whole model instead. CPU runs fp32."),
    "pred = P(no) > 0.5: a tie is real, as the authors' argsort ranks 'yes' first when the two losses are equal.",
    ("Checkpoints of the authors' trainer: the Q-Former position_ids and per-layer rotary inv_freq buffers saved beside the trained tensors are checked against the base "
     "and ignored (recorded in the results); any other extra entry is refused."),
]

# The paper's normalisation (computed on their training data), not the CLIP statistics.
AFP_MEAN = (0.4730, 0.4499, 0.4129)
AFP_STD = (0.2780, 0.2713, 0.2872)

PAPER = "Chang, Yeh, Chiu, Yu. AntifakePrompt: Prompt-Tuned Vision-Language Models are Fake Image Detectors. arXiv 2310.17419 (v3, 2024)."
INSTRUCTBLIP_PAPER = "Dai et al. InstructBLIP: Towards General-purpose Vision-Language Models with Instruction Tuning. NeurIPS 2023."
CODE = "https://github.com/nctu-eva-lab/AntifakePrompt (a modified Salesforce LAVIS)"
LICENSE = "code BSD-3-Clause (LAVIS); Vicuna/LLaMA weights: non-commercial LLaMA license"


def resolve_base(base: str | None) -> tuple[str, str | None]:
    """``base`` -> (InstructBLIP source, separate LLM source or None)."""
    spec = PRESET_BASES.get(base or DEFAULT_BASE, base or DEFAULT_BASE)
    blip, _, llm = spec.partition("+")
    if not blip:
        raise AfpbenchError(f"Base '{base}' names no InstructBLIP model; write FOLDER, HUB_ID or BLIP+LLM, or one of {', '.join(PRESET_BASES)}.")
    return blip, (llm or None)


def _cast_parameters(module: Any, dtype: Any) -> None:
    """Cast a module's parameters only: buffers (the rotary ``inv_freq``) stay fp32."""
    for p in module.parameters():
        if p.dtype != dtype and p.is_floating_point():
            p.data = p.data.to(dtype)


def load_instructblip(base: str | None, *, dtype: Any, device: str, llm_dtype: Any = None) -> tuple[Any, Any, Any, str]:
    """Load (model, Q-Former tokenizer, LLM tokenizer, resolved spec) for ``base``.

    ``dtype`` is the dtype of the vision tower, Q-Former and projection; ``llm_dtype``
    (default ``dtype``) that of the language model's parameters.
    """
    from transformers import AutoModelForCausalLM, InstructBlipForConditionalGeneration

    quiet_transformers()
    llm_dtype = llm_dtype or dtype
    blip, llm = resolve_base(base)
    load = from_config_on_meta if str(device) == "meta" else from_pretrained_strict
    model = load(InstructBlipForConditionalGeneration, blip, "InstructBLIP model", dtype=dtype)
    q_tok = load_tokenizer(blip, "Q-Former tokenizer", subfolder="qformer_tokenizer")
    if llm:
        # Free the bundled LLM before loading the replacement, so peak memory stays ~one LLM.
        model.language_model = None
        gc.collect()
        lm = load(AutoModelForCausalLM, llm, "language model", dtype=llm_dtype)
        model.language_model = lm
        model.config.text_config = lm.config
        if lm.config.hidden_size != model.language_projection.out_features:
            raise WeightsError(f"LLM '{llm}' has hidden size {lm.config.hidden_size}, the projection of '{blip}' outputs {model.language_projection.out_features}; pair bases of the same size.")
        llm_tok = load_tokenizer(llm, "LLM tokenizer")
    else:
        _cast_parameters(model.language_model, llm_dtype)
        llm_tok = load_tokenizer(blip, "LLM tokenizer")
    model.requires_grad_(False)
    model.eval()
    if str(device) != "meta":
        model.to(device)
    spec = f"{blip}+{llm}" if llm else blip
    return model, q_tok, llm_tok, spec


class InstructBlipYesNo(Detector):
    """InstructBLIP answering a yes/no question about the image; P(fake) = P(no | yes, no)."""

    prompt: ClassVar[str] = "Is this photo real?"
    pseudo_word: ClassVar[str | None] = None
    answers: ClassVar[tuple[str, str]] = ("yes", "no")  # (real, fake)
    llm_start_token: ClassVar[str] = "</s>"
    # LAVIS appends </s> to the answer during training; the loss covers both tokens.
    loss_on_eos: ClassVar[bool] = True
    cuda_dtype: ClassVar[str] = "float16"
    default_threshold_policy: ClassVar[str] = "fixed 0.5 on P(no | yes, no) = the authors' lower-loss answer rule (a tie is real)"
    option_values: ClassVar[dict[str, tuple[str, ...]]] = {"precision": PRECISIONS}
    # In the authors' precision: whether the LLM's input embedding table is kept in fp32
    # (LAVIS's textual-inversion LLaMA builds it so; the plain LAVIS models keep it fp16).
    fp32_llm_embeddings: ClassVar[bool] = False
    # Prefix of the LLM's keys in checkpoints of the authors' trainer (LAVIS names).
    lavis_llm_prefix: ClassVar[str] = "llm_model.model."

    # -- building ------------------------------------------------------------------------
    def setup(self) -> None:
        import torch

        self.base_spec: str = ""
        self.ignored_buffers: list[str] = []
        tensors, meta = self.read_weights()
        base = self.base or meta.get("base") or DEFAULT_BASE
        self.precision = self._resolve_precision()
        self.tokenization = self._resolve_tokenization(meta)
        authors = self.precision == "authors"
        self.model, self.q_tok, self.llm_tok, self.base_spec = self.load_base(base, dtype=torch.float32 if authors else self.dtype, llm_dtype=self.dtype)
        if authors and self.fp32_llm_embeddings:
            table = self.model.language_model.get_input_embeddings()
            table.weight.data = table.weight.data.float()
        # The authors' arrangement (a composed BLIP+LLM base) ends the vision tower with LAVIS's ln_vision.
        ln = self.model.vision_model.post_layernorm
        if resolve_base(base)[1] is not None:
            ln.eps = LAVIS_LN_VISION_EPS
        self.vision_ln_eps = float(ln.eps)
        cfg = self.model.config
        native = cfg.vision_config.image_size
        self.image_size = self.image_size or meta.get("image_size") or native
        self._interpolate = self.image_size != native
        self.qformer_hidden = cfg.qformer_config.hidden_size
        self.llm_hidden = self.model.language_model.config.hidden_size
        self.before_prompt()
        self.install(tensors)
        self.encode_prompt()
        self.model.eval()  # modules added by the hooks (LoRA dropout) start in train mode

    def load_base(self, base: str, *, dtype: Any, llm_dtype: Any) -> tuple[Any, Any, Any, str]:
        """Hook: (model, Q-Former tokenizer, LLM tokenizer, resolved spec) of ``base`` on
        ``self.device``, vision/Q-Former/projection parameters in ``dtype`` and the LLM's in
        ``llm_dtype``; the precision mode is applied around it. ``benchmarks/gpu_check.py``
        overrides it to hand over a real-size model with random weights, built from the
        shipped configs on the meta device and materialised on the GPU (no hub)."""
        return load_instructblip(base, dtype=dtype, device=self.device, llm_dtype=llm_dtype)

    def _resolve_precision(self) -> str:
        import torch

        asked = self.options.get("precision")
        if asked is None:
            asked = "authors" if str(self.device).startswith("cuda") and self.requested_dtype is None else "uniform"
        if asked == "authors":
            if self.requested_dtype is not None and self.dtype != torch.float16:
                raise AfpbenchError(f"precision=authors is the authors' fp16 mixed precision; drop --dtype {self.requested_dtype}, or use precision=uniform to run everything in it.")
            # The autocast dtype (CPU autocast runs fp16 too, slowly: for checks only).
            self.dtype = torch.float16
        return asked

    def _resolve_tokenization(self, meta: dict[str, Any]) -> str:
        return self.options.get("tokenization") or meta.get("tokenization") or TOKENIZATIONS[0]

    def read_weights(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Read the weights file before the base loads (it may name the base) -> (tensors,
        meta); the zero-shot model reads none."""
        return None, {}

    def read_trained_weights(self, read_release: Any) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """``read_weights`` of the trained members: (None, {}) without weights (train_init),
        afpbench's own formats here, and a released file through ``read_release(path) -> tensors``."""
        p = self.weights_path
        if p is None:
            return None, {}
        if is_own_format(p):
            return read_own(p, self.name)
        return read_release(p), {}

    def before_prompt(self) -> None:
        """Hook: add tokens to the tokenizers before the prompt is encoded."""

    def install(self, tensors: dict[str, Any] | None) -> None:
        """Hook: put trained tensors into the model (checked against its shapes)."""

    def base_description(self) -> str | None:
        return self.base_spec or self.base

    def arguments(self) -> dict[str, Any]:
        out = super().arguments()
        out.update(
            precision=self.precision,
            vision_ln_eps=self.vision_ln_eps,
            ignored_checkpoint_buffers=list(self.ignored_buffers),
        )
        return out

    # -- the authors' checkpoint buffers -------------------------------------------------
    def lavis_buffers(self) -> dict[str, Any]:
        """Name -> value of the registered buffers the authors' trainer saves with the trained
        tensors, as this base computes them: the Q-Former's position ids and, per LLM layer,
        the rotary inverse frequencies (a LLaMA of transformers 4.30 holds one per layer)."""
        out = {LAVIS_POSITION_IDS: self.model.qformer.embeddings.position_ids.detach().cpu()}
        lm = self.model.language_model
        rotary = getattr(getattr(lm, "model", lm), "rotary_emb", None)
        if rotary is not None:
            inv_freq = getattr(rotary, "original_inv_freq", None)
            inv_freq = (inv_freq if inv_freq is not None else rotary.inv_freq).detach().float().cpu()
            for i in range(lm.config.num_hidden_layers):
                out[f"{self.lavis_llm_prefix}layers.{i}.self_attn.rotary_emb.inv_freq"] = inv_freq
        return out

    def drop_lavis_buffers(self, state: dict[str, Any], source: Any) -> dict[str, Any]:
        """``state`` without the known buffers of the authors' trainer, each checked against
        the base (a mismatch -> WeightsError); their names go to ``ignored_buffers``."""
        import torch

        expected = self.lavis_buffers()
        kept = {}
        for key, value in state.items():
            ref = expected.get(key)
            if ref is None:
                kept[key] = value
                continue
            if not torch.is_tensor(value) or tuple(value.shape) != tuple(ref.shape):
                got = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
                raise WeightsError(f"{source}: buffer {key} is {got}, the base computes {tuple(ref.shape)}; the file was made for another base: pass the --base it was trained with.")
            if ref.is_floating_point():
                # The authors' values may have passed through an fp16 checkpoint: allow its rounding.
                rtol = max(torch.finfo(torch.float16).eps, torch.finfo(value.dtype).eps) if value.is_floating_point() else 0.0
                same = torch.allclose(value.double(), ref.double(), rtol=rtol, atol=0.0)
            else:
                same = torch.equal(value.double(), ref.double())
            if not same:
                where = int((value.double() - ref.double()).abs().flatten().argmax())
                raise WeightsError(
                    f"{source}: buffer {key} holds {value.flatten()[where].item():.6g} at index {where} where the base computes "
                    f"{ref.flatten()[where].item():.6g}; the file was made for another base (or is corrupt): pass the --base it was trained with."
                )
            self.ignored_buffers.append(key)
        return kept

    def _token_id(self, tok: Any, token: str, what: str) -> int:
        tid = tok.convert_tokens_to_ids(token)
        if tid is None or (tok.unk_token_id is not None and tid == tok.unk_token_id and token != tok.unk_token):
            raise AfpbenchError(f"The {what} tokenizer of base '{self.base_spec}' has no token {token!r}; use a LLaMA/Vicuna-based InstructBLIP base.")
        return int(tid)

    def encode_llm(self, text: str) -> list[int]:
        """LAVIS's LLM encoding: start token, then each piece around the pseudo-word on its own.

        transformers 4.30 (the default) strips the spaces next to a special token and gives
        every piece SentencePiece's "▁" prefix: ``▁real [*] ▁?``. transformers 4.35+ keeps a
        space before it as a lone "▁" token and (``legacy=False``) gives the text right
        after it no prefix: ``▁real ▁ [*] ?``.
        """
        ids = [self._token_id(self.llm_tok, self.llm_start_token, "LLM")]
        pieces = text.split(self.pseudo_word) if self.pseudo_word else [text]
        newer = self.tokenization == TOKENIZATIONS[1]
        for i, piece in enumerate(pieces):
            if i:
                ids.append(self.llm_pseudo_id)
            core = piece.strip()
            part = self.llm_tok(core, add_special_tokens=False).input_ids if core else []
            if newer and i and part and not piece[:1].isspace():
                part = self._without_prefix(part)
            ids += part
            if newer and i < len(pieces) - 1 and piece[-1:].isspace():
                ids.append(self._token_id(self.llm_tok, "▁", "LLM"))
        return ids

    def _without_prefix(self, ids: list[int]) -> list[int]:
        """Token ids of a piece as SentencePiece encodes it without the "▁" dummy prefix."""
        first = self.llm_tok.convert_ids_to_tokens(ids[0])
        if first == "▁":
            return ids[1:]
        if first.startswith("▁"):
            return [self._token_id(self.llm_tok, first[1:], "LLM")] + ids[1:]
        return ids

    def encode_prompt(self) -> None:
        import torch

        q = self.q_tok(self.prompt, add_special_tokens=True).input_ids
        self.q_ids = torch.tensor([q], dtype=torch.long, device=self.device)
        self.llm_ids = torch.tensor([self.encode_llm(self.prompt)], dtype=torch.long, device=self.device)
        answer_ids = []
        for word in self.answers:
            ids = self.llm_tok(word, add_special_tokens=False).input_ids
            if len(ids) != 1:
                raise AfpbenchError(f"The LLM tokenizer of base '{self.base_spec}' splits {word!r} into {len(ids)} tokens; the yes/no rule needs single-token answers (use a LLaMA/Vicuna base).")
            answer_ids.append(ids[0])
        self.answer_ids = answer_ids
        self.eos_id = self._token_id(self.llm_tok, self.llm_tok.eos_token or "</s>", "LLM")

    # -- preprocessing -------------------------------------------------------------------
    def preprocessing(self) -> Preprocessing:
        size = self.image_size or 224
        return Preprocessing(
            resize=size, resize_policy="shorter", interpolation="bicubic", crop=size, mean=AFP_MEAN, std=AFP_STD,
            note="The paper's eval transform (LAVIS blip_image_eval_textinv): RGB, shorter side to the vision tower's size (224; tiny bases use their own), center crop, the authors' mean/std.",
        )

    def train_preprocess(self, image: Any, row: dict[str, Any] | None, rng: Any) -> Any:
        # The paper's train transform: resize 224, random crop 224, horizontal flip.
        return apply_preprocessing(image, self.preprocessing(), rng=rng, flip=True)

    # -- the model -----------------------------------------------------------------------
    def _autocast(self, enabled: bool) -> Any:
        """In the authors' precision, a region under (or explicitly outside) fp16 autocast."""
        if self.precision != "authors":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(torch.device(self.device).type, dtype=torch.float16, enabled=enabled)

    def to_device(self, batch: Any) -> Any:
        import torch

        # The authors feed fp32 pixels; autocast casts them where the tower computes in fp16.
        dtype = torch.float32 if self.precision == "authors" else self.dtype
        return batch.to(self.device, dtype=dtype, non_blocking=True)

    def image_prefix(self, pixel_values: Any, regions: bool = True) -> Any:
        """Projected Q-Former query outputs [B, Q, H_llm] (the soft visual prompt of the LLM).

        In the authors' precision (``regions``) the vision tower runs under fp16 autocast and
        the Q-Former and projection in fp32 outside it, as LAVIS's ``predict_class``.
        Training passes ``regions=False``: LAVIS trains the whole forward under autocast.
        """
        import torch

        b = pixel_values.shape[0]
        q_ids = self.q_ids.expand(b, -1)
        if self.precision != "authors" or not regions:
            feats = self.model.get_image_features(
                pixel_values=pixel_values, qformer_input_ids=q_ids, qformer_attention_mask=torch.ones_like(q_ids),
                interpolate_pos_encoding=self._interpolate, return_dict=True,
            )
            return feats.pooler_output
        # The same three steps as get_image_features, each in the authors' precision.
        with self._autocast(True):
            image_embeds = self.model.vision_model(pixel_values=pixel_values, interpolate_pos_encoding=self._interpolate, return_dict=True)[0]
        with self._autocast(False):
            image_embeds = image_embeds.float()
            query = self.model.query_tokens.expand(b, -1, -1)
            image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
            mask = torch.cat([torch.ones(query.shape[:-1], dtype=torch.long, device=query.device), torch.ones_like(q_ids)], dim=1)
            out = self.model.qformer(
                input_ids=q_ids, attention_mask=mask, query_embeds=query, encoder_hidden_states=image_embeds,
                encoder_attention_mask=image_mask, return_dict=True,
            )
            return self.model.language_projection(out[0][:, : query.shape[1], :])

    def llm_embeds(self, prefix: Any, ids: Any) -> Any:
        import torch

        tokens = self.model.language_model.get_input_embeddings()(ids)
        if self.precision == "authors":
            # LAVIS concatenates as they come (torch.cat promotes): an fp32 prefix keeps the sequence fp32.
            dtype = torch.promote_types(prefix.dtype, tokens.dtype)
            return torch.cat([prefix.to(dtype), tokens.to(dtype)], dim=1)
        return torch.cat([prefix.to(tokens.dtype), tokens], dim=1)

    def _llm(self, embeds: Any, **kw: Any) -> Any:
        with self._autocast(True):
            return self.model.language_model(inputs_embeds=embeds, use_cache=False, **kw)

    def answer_logits(self, pixel_values: Any) -> Any:
        """Logits of (yes, no) at the answer position, one forward pass: [B, 2] float32."""
        prefix = self.image_prefix(pixel_values)
        embeds = self.llm_embeds(prefix, self.llm_ids.expand(prefix.shape[0], -1))
        out = self._llm(embeds, logits_to_keep=1)
        return out.logits[:, -1, self.answer_ids].float()

    def forward_scores(self, batch: Any) -> Any:
        return self.answer_logits(batch).softmax(dim=-1)[:, 1]

    def bare_forward(self, batch: Any) -> Any:
        """The HF modules' forward (vision + Q-Former + LLM) on prepared tensors."""
        prefix = self.image_prefix(batch)
        embeds = self.llm_embeds(prefix, self.llm_ids.expand(prefix.shape[0], -1))
        return self._llm(embeds, logits_to_keep=1).logits

    def candidate_losses(self, pixel_values: Any, candidates: tuple[str, ...] | None = None) -> Any:
        """The authors' rule: LM loss of each candidate answer after the prompt -> [B, n].

        As LAVIS ``_predict_class``: image features once, then one LLM pass over the batch
        repeated per candidate (``repeat_interleave``) with the candidate appended, full
        logits, and the cross-entropy *summed* over each candidate's tokens. (LAVIS's
        LLaMA averages the per-position loss over the whole padded sequence, whose length
        is the same for every candidate, so its ranking is the sum's.) Candidates of
        different token lengths are run in one pass per length (LAVIS pads instead).
        """
        import torch

        candidates = candidates or self.answers
        prefix = self.image_prefix(pixel_values)
        b = prefix.shape[0]
        cand_ids = [self.llm_tok(c, add_special_tokens=False).input_ids for c in candidates]
        losses = torch.empty(b, len(candidates), device=prefix.device)
        for n in sorted({len(ids) for ids in cand_ids}):
            group = [i for i, ids in enumerate(cand_ids) if len(ids) == n]
            k = len(group)
            answers = torch.tensor([cand_ids[i] for i in group], device=self.device)  # [k, n]
            seq = torch.cat([self.llm_ids.expand(b * k, -1), answers.repeat(b, 1)], dim=1)  # row r: image r // k, candidate r % k
            embeds = self.llm_embeds(prefix.repeat_interleave(k, dim=0), seq)
            logits = self._llm(embeds).logits.float()
            # Position t predicts token t+1: the candidate's n tokens are predicted by the n positions before them.
            pred = logits[:, -n - 1 : -1]
            ce = torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), seq[:, -n:].reshape(-1), reduction="none")
            losses[:, group] = ce.view(b, k, n).sum(dim=2)
        return losses

    # -- training ------------------------------------------------------------------------
    def training_loss(self, batch: Any, labels: Any) -> Any:
        """LM cross-entropy of the right answer (yes for real, no for fake) and, as LAVIS, the </s> after it."""
        import torch

        # LAVIS trains the whole forward under amp autocast (the Q-Former included).
        with self._autocast(True):
            prefix = self.image_prefix(batch, regions=False)
            b = prefix.shape[0]
            answers = torch.tensor(self.answer_ids, device=self.device)[labels.long().to(self.device)]
            seq = torch.cat([self.llm_ids.expand(b, -1), answers[:, None]], dim=1)
            embeds = self.llm_embeds(prefix, seq)
            # The last two positions: the prompt's end (predicts the answer) and the answer (predicts </s>).
            logits = self.model.language_model(inputs_embeds=embeds, logits_to_keep=2, use_cache=False).logits.float()
        if self.loss_on_eos:
            targets = torch.stack([answers, torch.full_like(answers, self.eos_id)], dim=1)
            pred = logits[:, -2:]
        else:
            targets = answers[:, None]
            pred = logits[:, -2:-1]
        return torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), targets.reshape(-1))

    def set_training(self, training: bool) -> None:
        # As LAVIS: the vision tower stays in eval (its train() is disabled); the Q-Former's
        # dropout is active while training; the LLaMA LLM has no dropout of its own.
        self.model.eval()
        if training:
            self.model.qformer.train()
            self.model.language_model.train()


class InstructBlipZeroShot(InstructBlipYesNo):
    """The paper's zero-shot baseline: the same model and rule, prompt without [*]."""

    name = "instructblip"
    description = "InstructBLIP (Vicuna-7B) asked 'Is this photo real?' zero-shot; P(fake) = softmax over the yes/no logits, taking no."
    paper = INSTRUCTBLIP_PAPER + " Zero-shot baseline of " + PAPER
    code = "https://github.com/salesforce/LAVIS (projects/instructblip); HF transformers InstructBlipForConditionalGeneration"
    license = LICENSE
    variants = {None: Variant(training_data="none (zero-shot InstructBLIP)")}
    choices = [
        "Default base = vision/Q-Former/projection of Salesforce/instructblip-vicuna-7b with the LLM of lmsys/vicuna-7b-v1.3 (as the authors); base 'hf' = the plain HF checkpoint.",
        "LLM prompt starts with </s> (the authors set bos_token='</s>').",
        *FAMILY_CHOICES[:3],
    ]


__all__ = ["InstructBlipYesNo", "InstructBlipZeroShot", "load_instructblip", "resolve_base", "PRESET_BASES", "DEFAULT_BASE", "AFP_MEAN", "AFP_STD", "PRECISIONS", "TOKENIZATIONS",
           "LAVIS_LN_VISION_EPS", "LAVIS_POSITION_IDS", "FAMILY_CHOICES"]
