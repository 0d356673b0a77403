"""InstructBLIP + LoRA on the LLM: the paper's parameter-efficient fine-tuning baseline.

Same model, prompt (``Is this photo real?``, no pseudo-word) and yes/no rule as the
zero-shot ``instructblip``; peft injects LoRA adapters into the LLM's attention
(``q_proj``, ``v_proj``; r=8, alpha=32, dropout 0.1, as the authors' LAVIS LoRA config).
With fresh adapters (B = 0) the model *is* the zero-shot one, which is where
``afpbench train --detector instructblip_lora`` starts. There are no released LoRA
weights: scoring needs a folder written by ``afpbench train``, or a checkpoint of the
authors' LAVIS trainer (``blip2_vicuna_instruct_lora`` with ``lora_on_Qformer: False``,
as their ``lora_train.yaml``): ``{"model": ..., "optimizer": ..., ...}`` whose ``model``
holds peft's adapters under ``llm_model.base_model.model.<LLaMA key>`` plus the frozen
model's buffers (``Qformer.bert.embeddings.position_ids`` and one
``llm_model.base_model.model.model.layers.<i>.self_attn.rotary_emb.inv_freq`` per layer),
which are checked against the base and ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from afpbench.cards import Variant
from afpbench.detectors._weights import check_state_dict, torch_load
from afpbench.detectors.base import Trainable
from afpbench.detectors.instructblip import (
    CODE,
    FAMILY_CHOICES,
    LICENSE,
    PAPER,
    InstructBlipYesNo,
)
from afpbench.errors import WeightsError

LORA = {"r": 8, "lora_alpha": 32, "lora_dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}
# Where the authors' LAVIS model keeps the peft-wrapped LLM: llm_model = get_peft_model(LLaMA).
LAVIS_PEFT_PREFIX = "llm_model.base_model.model."


class InstructBlipLora(InstructBlipYesNo, Trainable):
    """InstructBLIP with LoRA adapters (r=8, alpha=32, dropout 0.1, q_proj/v_proj) in the LLM."""

    name = "instructblip_lora"
    description = "InstructBLIP (Vicuna-7B) + LoRA on the LLM's q_proj/v_proj, asked 'Is this photo real?'; P(fake) from the yes/no logits."
    paper = "Hu et al. LoRA (ICLR 2022), as the LoRA baseline of " + PAPER
    code = CODE + "; peft"
    license = LICENSE
    needs_weights = True
    lora: ClassVar[dict[str, Any]] = LORA
    variants = {None: Variant(training_data="trained by 'afpbench train' (no released LoRA weights)")}
    lavis_llm_prefix = LAVIS_PEFT_PREFIX + "model."
    choices = [
        "LoRA config r=8, alpha=32, dropout 0.1 on q_proj/v_proj of the LLM, as the authors' LAVIS LoRA baseline; adapters kept in float32.",
        "Also reads a checkpoint of the authors' LAVIS trainer (peft keys under llm_model.base_model.model.); LoRA on the Q-Former (lora_on_Qformer) is not supported and refused.",
        *FAMILY_CHOICES,
    ]

    def read_weights(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        return self.read_trained_weights(self.read_lavis)

    def read_lavis(self, p: Path) -> dict[str, Any]:
        """The adapters of a checkpoint of the authors' LAVIS trainer (buffers still in)."""
        obj = torch_load(p)
        if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
            raise WeightsError(f"{p} is not LoRA weights afpbench can read; pass the folder written by 'afpbench train --detector instructblip_lora' or a checkpoint of the authors' LAVIS trainer.")
        self._lavis_file = True
        return dict(obj["model"])

    def before_prompt(self) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(bias="none", **self.lora)
        inject_adapter_in_model(config, self.model.language_model, adapter_name="default")
        self._lora: dict[str, torch.nn.Parameter] = {}
        for name, param in self.model.language_model.named_parameters():
            if "lora_" in name:
                # Adapters train in fp32 even on an fp16 base (mixed precision).
                param.data = param.data.float()
                param.requires_grad_(True)
                self._lora[name] = param
            else:
                param.requires_grad_(False)
        if not self._lora:
            raise WeightsError(f"The LLM of '{self.base_spec}' has no q_proj/v_proj layers for LoRA; use a LLaMA/Vicuna base.")

    def install(self, tensors: dict[str, Any] | None) -> None:
        if tensors is None:
            return
        if getattr(self, "_lavis_file", False):
            tensors = self.drop_lavis_buffers(tensors, self.weights_path)
            # peft's names inside the LAVIS model -> the same adapters injected into the HF LLM.
            n = len(LAVIS_PEFT_PREFIX)
            tensors = {(k[n:] if k.startswith(LAVIS_PEFT_PREFIX) else k): v for k, v in tensors.items()}
        self.load_trainable_state(tensors, self.weights_path or "weights")

    def load_trainable_state(self, state: dict[str, Any], source: Path | str) -> None:
        expected = {k: tuple(p.shape) for k, p in self._lora.items()}
        check_state_dict(expected, state, source, f"the LoRA adapters of '{self.base_spec}' (r={self.lora['r']} on {'/'.join(self.lora['target_modules'])})")
        with torch.no_grad():
            for k, p in self._lora.items():
                p.copy_(state[k].to(p.dtype))

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self._lora.values())

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: p.detach().float().cpu().clone() for k, p in self._lora.items()}

    def saved_meta(self) -> dict[str, Any]:
        meta = super().saved_meta()
        meta.update(prompt=self.prompt, lora=self.lora)
        return meta


__all__ = ["InstructBlipLora", "LORA"]
