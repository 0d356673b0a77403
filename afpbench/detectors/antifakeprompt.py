"""AntifakePrompt: InstructBLIP with a prompt-tuned pseudo-word, "Is this photo real [*]?".

The frozen InstructBLIP (Vicuna-7B) gets one new word ``[*]`` with two trainable
embeddings, one on each side of the model: 768 numbers for the Q-Former's text input and
4,096 for the LLM's (4,864 parameters in all, nothing else trainable). P(fake) is the
softmax over the ``yes``/``no`` logits at the answer position, taking ``no`` (see
``instructblip.py`` for why this is the authors' lower-loss rule).

Token ids. In LAVIS the word is appended to each tokenizer after its extra special
token: Q-Former ``[DEC]`` = 30522 so ``[*]`` = 30523; LLM ``[PAD]`` = 32000 so ``[*]`` =
32001. The authors look up any id at or past the size of the frozen embedding table in
the one-row trainable table instead. afpbench adds ``[*]`` to both tokenizers too, but
whatever id a tokenizer gives it, positions holding that id read the trainable vector and
the frozen table is never indexed with it (``PseudoWordEmbedding``). So the released
vectors are mapped by *name*, not by id, and work with the HF port (whose LLM tokenizer
already holds ``<image>``) and with Vicuna v1.3 (32,000 tokens) alike.

Weights: the authors' LAVIS ``.pth`` as their trainer writes it (``{"model": ...,
"optimizer": ..., "config": ..., "scaler": ..., "epoch": ...}``; ``model`` holds
``<Q-Former key>: [1, 768]`` and ``<LLM key>: [1, 4096]`` plus the frozen model's
registered buffers, ``Qformer.bert.embeddings.position_ids`` and 32
``llm_model.model.layers.<i>.self_attn.rotary_emb.inv_freq``), mapped key by key with
shape checks, the buffers checked against the base and ignored; or afpbench's own folder
(``model.safetensors`` with the two keys + ``detector.json``).

Options: ``precision`` (``authors``/``uniform``, see ``instructblip.py``) and
``tokenization``: ``transformers-4.30`` (default, what the authors ran: ``▁real [*] ▁?``)
or ``transformers-4.35`` (``▁real ▁ [*] ?``, what the same code gives on newer
transformers), for a checkpoint trained in that context.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from afpbench.cards import Variant, WeightsSource
from afpbench.detectors._weights import check_state_dict, torch_load
from afpbench.detectors.base import Trainable
from afpbench.detectors.instructblip import (
    CODE,
    FAMILY_CHOICES,
    LICENSE,
    PAPER,
    PRECISIONS,
    TOKENIZATIONS,
    InstructBlipYesNo,
)
from afpbench.errors import AfpbenchError, WeightsError

LAVIS_QFORMER_KEY = "Qformer.bert.embeddings.train_word_embeddings.weight"
LAVIS_LLM_KEY = "llm_model.model.train_embed_tokens.weight"
# Where the authors' ids sit (for the record; afpbench maps by name, see the docstring).
LAVIS_TOKEN_IDS = {"qformer": 30523, "llm": 32001}

_RELEASE = "https://github.com/nctu-eva-lab/AntifakePrompt (README, 'Checkpoints downloading': Google Drive via gdown, ckpt/download_checkpoints.sh)"


def _release(filename: str, gdrive: str | None = None) -> WeightsSource:
    src = _RELEASE + (f"; gdown {gdrive}" if gdrive else "")
    return WeightsSource(filename=filename, source=src, sha256=None, license="BSD-3-Clause (repository); base weights under the LLaMA license")


class PseudoWordEmbedding(nn.Module):
    """A frozen embedding table plus one trainable row for a pseudo-word id.

    The trainable row is kept in float32 (as LAVIS's ``nn.Embedding(1, d, dtype=float32)``)
    and cast to the table's dtype on the fly, so fp16/bf16 models train it in fp32.
    """

    def __init__(self, base: nn.Embedding, token_id: int, vector: torch.Tensor):
        super().__init__()
        self.base = base
        self.token_id = int(token_id)
        self.pseudo = nn.Parameter(vector.detach().reshape(1, -1).to(device=base.weight.device, dtype=torch.float32).clone())

    @property
    def weight(self) -> torch.Tensor:  # code that inspects the table sees the frozen one
        return self.base.weight

    @property
    def num_embeddings(self) -> int:
        return self.base.num_embeddings

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = input_ids == self.token_id
        emb = self.base(input_ids.masked_fill(mask, 0))  # never index the frozen table with the new id
        return torch.where(mask.unsqueeze(-1), self.pseudo.to(emb.dtype), emb)


class AntifakePrompt(InstructBlipYesNo, Trainable):
    """Prompt-tuned InstructBLIP fake-image detector (4,864 trainable parameters)."""

    name = "antifakeprompt"
    description = "InstructBLIP (Vicuna-7B) with a prompt-tuned pseudo-word: 'Is this photo real [*]?'; P(fake) = softmax over the yes/no logits, taking no."
    paper = PAPER
    code = CODE
    license = LICENSE
    prompt = "Is this photo real [*]?"
    pseudo_word = "[*]"
    needs_weights = True
    option_values: ClassVar[dict[str, tuple[str, ...]]] = {"precision": PRECISIONS, "tokenization": TOKENIZATIONS}
    fp32_llm_embeddings = True  # the authors' LlamaModelTextualInversion builds its tables in fp32
    variants = {
        None: Variant(_release("COCO_150k_SD3_SD2IP.pth"), "COCO (real) + SD3 + SD2IP (fake), 150k images; paper v3 average over 23 sets 91.81%"),
        "lama": Variant(_release("COCO_150k_SD3_SD2IP_lama.pth"), "COCO + SD3 + SD2IP + LaMa, 180k images; paper v3 average 94.50%"),
        "v1": Variant(_release("COCO_150k_SD2_SD2IP.pth", "1fu8oxPI0eXrqtlgYKg00SfgXC-jZVCaT"), "COCO + SD2 + SD2IP, 150k images (paper v1)"),
        "v1_lama": Variant(_release("COCO_150k_SD2_SD2IP_lama.pth", "1bltqH3KPT03ypb49c4bs0VXKsaY6lKb7"), "COCO + SD2 + SD2IP + LaMa, 180k images (paper v1)"),
    }
    choices = [
        "Default base = vision/Q-Former/projection of Salesforce/instructblip-vicuna-7b + LLM lmsys/vicuna-7b-v1.3 (what the authors ran); base 'hf' = the plain HF checkpoint.",
        ("[*] ids: LAVIS uses Q-Former 30523 (after [DEC]) and LLM 32001 (after [PAD]); afpbench maps the released vectors by key name and substitutes them "
         "wherever the tokenizer's [*] id appears, so the id number never matters."),
        ("LLM prompt starts with </s> (the authors set bos_token='</s>'); text around [*] is tokenised piecewise like the slow LLaMA tokenizer of transformers 4.30 ('▁real [*] ▁?'); "
         "option tokenization=transformers-4.35 gives what the same code yields on newer transformers ('▁real ▁ [*] ?')."),
        "Threshold 0.5 on P(no | yes, no) reproduces the authors' lower-loss rule exactly, ties included (a tie is real).",
        "New [*] vectors start from N(0, initializer_range) as in LAVIS without init_word.",
        *FAMILY_CHOICES,
        "Authors' precision: the LLM's input embedding table and [*] stay fp32, as in their textual-inversion LLaMA.",
    ]

    # -- weights -------------------------------------------------------------------------
    def read_weights(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        return self.read_trained_weights(self.read_lavis)

    def read_lavis(self, p: Path) -> dict[str, Any]:
        """The trained tensors of a checkpoint of the authors' LAVIS trainer (buffers still in)."""
        obj = torch_load(p)
        if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
            raise WeightsError(f"{p} is not a LAVIS checkpoint: expected a dict whose 'model' entry holds {LAVIS_QFORMER_KEY} and {LAVIS_LLM_KEY}; use a released AntifakePrompt .pth.")
        # The trainer's other entries (optimizer, config, scaler, epoch) are not needed to score.
        self._lavis_file = True
        return dict(obj["model"])

    def before_prompt(self) -> None:
        for tok, what in ((self.q_tok, "Q-Former"), (self.llm_tok, "LLM")):
            if self.pseudo_word in tok.get_vocab():
                raise AfpbenchError(f"The {what} tokenizer of '{self.base_spec}' already has {self.pseudo_word!r}; use an unmodified InstructBLIP base.")
            tok.add_special_tokens({"additional_special_tokens": [self.pseudo_word]})
        self.q_pseudo_id = int(self.q_tok.convert_tokens_to_ids(self.pseudo_word))
        self.llm_pseudo_id = int(self.llm_tok.convert_tokens_to_ids(self.pseudo_word))
        q_table = self.model.qformer.get_input_embeddings()
        l_table = self.model.language_model.get_input_embeddings()
        self.q_pseudo = PseudoWordEmbedding(q_table, self.q_pseudo_id, torch.zeros(1, self.qformer_hidden))
        self.llm_pseudo = PseudoWordEmbedding(l_table, self.llm_pseudo_id, torch.zeros(1, self.llm_hidden))
        self.model.qformer.set_input_embeddings(self.q_pseudo)
        self.model.language_model.set_input_embeddings(self.llm_pseudo)

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        return {LAVIS_QFORMER_KEY: (1, self.qformer_hidden), LAVIS_LLM_KEY: (1, self.llm_hidden)}

    def install(self, tensors: dict[str, Any] | None) -> None:
        if tensors is None:
            # train_init: LAVIS without init_word leaves both rows at the models' N(0, initializer_range).
            g = torch.Generator().manual_seed(0)
            q_std = self.model.config.qformer_config.initializer_range
            l_std = getattr(self.model.language_model.config, "initializer_range", 0.02)
            tensors = {
                LAVIS_QFORMER_KEY: torch.randn(1, self.qformer_hidden, generator=g) * q_std,
                LAVIS_LLM_KEY: torch.randn(1, self.llm_hidden, generator=g) * l_std,
            }
            self._copy(tensors)
            return
        if getattr(self, "_lavis_file", False):
            tensors = self.drop_lavis_buffers(tensors, self.weights_path)
        self.load_trainable_state(tensors, self.weights_path or "weights")

    def _copy(self, tensors: dict[str, Any]) -> None:
        with torch.no_grad():
            self.q_pseudo.pseudo.copy_(tensors[LAVIS_QFORMER_KEY].reshape(1, -1).float())
            self.llm_pseudo.pseudo.copy_(tensors[LAVIS_LLM_KEY].reshape(1, -1).float())

    def load_trainable_state(self, state: dict[str, Any], source: Path | str) -> None:
        check_state_dict(self.expected_shapes(), state, source, "AntifakePrompt's two pseudo-word embeddings ([1, Q-Former hidden] and [1, LLM hidden] of the base)")
        for k in self.expected_shapes():
            t = state[k]
            if not torch.is_floating_point(t) or not torch.isfinite(t).all():
                raise WeightsError(f"{source}: {k} holds non-float or non-finite values; the file is corrupt, download or train it again.")
        self._copy(state)

    # -- training ------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.q_pseudo.pseudo, self.llm_pseudo.pseudo]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {LAVIS_QFORMER_KEY: self.q_pseudo.pseudo.detach().float().cpu().clone(), LAVIS_LLM_KEY: self.llm_pseudo.pseudo.detach().float().cpu().clone()}

    def saved_meta(self) -> dict[str, Any]:
        meta = super().saved_meta()
        meta.update(
            prompt=self.prompt,
            pseudo_word=self.pseudo_word,
            token_ids={"qformer": self.q_pseudo_id, "llm": self.llm_pseudo_id},
            lavis_token_ids=LAVIS_TOKEN_IDS,
            tokenization=self.tokenization,
            trainable_parameters=self.qformer_hidden + self.llm_hidden,
        )
        return meta

    def arguments(self) -> dict[str, Any]:
        out = super().arguments()
        out["tokenization"] = self.tokenization
        return out

    def export_lavis(self, path: str | Path) -> Path:
        """Write the two embeddings as the authors' LAVIS checkpoint (``{"model": {...}}``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": self.trainable_state()}, path)
        return path


__all__ = ["AntifakePrompt", "PseudoWordEmbedding", "LAVIS_QFORMER_KEY", "LAVIS_LLM_KEY", "LAVIS_TOKEN_IDS"]
