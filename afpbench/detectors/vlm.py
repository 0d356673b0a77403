"""Qwen2.5-VL asked InstructBLIP's question zero-shot: the modern open-VLM baseline.

The same question as the paper's zero-shot InstructBLIP baseline, ``Is this photo real?``,
put to ``Qwen2.5-VL-Instruct`` through transformers (``Qwen2_5_VLForConditionalGeneration``
and its processor). The prompt is the model's own chat template applied to one user turn
holding the image then the question, with the generation prompt appended
(``apply_chat_template(..., add_generation_prompt=True)``; the template adds its default
system message). Nothing is generated: one forward pass reads the logits of the first
answer token, and ``P(fake) = softmax(logit("Yes"), logit("No"))["No"]`` (the assistant's
reply starts a sentence, so the capitalised words are its answer tokens). A score above
0.5 is the greedy decoder's choice between the two answers.

Images keep the processor's dynamic resolution (each side rounded to a multiple of 28
within the checkpoint's min/max pixel budget), so a batch holds images of different token
counts: prompts are left-padded and the multimodal rotary positions skip the padding, so
an image's score does not depend on its batch (tested).
"""

from __future__ import annotations

from typing import Any

import torch

from afpbench.cards import Preprocessing, Variant
from afpbench.detectors._hf import from_pretrained_strict, quiet_transformers
from afpbench.detectors._transforms import CLIP_MEAN, CLIP_STD
from afpbench.detectors.base import Detector
from afpbench.errors import AfpbenchError, WeightsError

PROMPT = "Is this photo real?"
ANSWERS = ("Yes", "No")  # (real, fake)


class QwenVL(Detector):
    """Qwen2.5-VL-Instruct answering "Is this photo real?"; P(fake) = P(No | Yes, No)."""

    name = "qwen_vl"
    description = "Qwen2.5-VL-Instruct asked 'Is this photo real?' zero-shot (chat template); P(fake) = softmax over the first answer token's (Yes, No) logits, taking No."
    paper = "Bai et al. Qwen2.5-VL Technical Report. arXiv 2502.13923. Zero-shot question as the InstructBLIP baseline of Chang et al., AntifakePrompt (arXiv 2310.17419)."
    code = "https://github.com/QwenLM/Qwen2.5-VL; transformers Qwen2_5_VLForConditionalGeneration + Qwen2_5_VLProcessor"
    license = "Qwen2.5-VL-7B-Instruct: Apache-2.0; Qwen2.5-VL-3B-Instruct: Qwen Research License (non-commercial)"
    cuda_dtype = "bfloat16"  # the checkpoints' own dtype
    # The licence is per checkpoint: the 7B's is Apache-2.0, the 3B's research-only.
    variants = {
        None: Variant(training_data="none (zero-shot Qwen2.5-VL-7B-Instruct)", options={"base": "Qwen/Qwen2.5-VL-7B-Instruct"}, noncommercial=False),
        "3b": Variant(training_data="none (zero-shot Qwen2.5-VL-3B-Instruct)", options={"base": "Qwen/Qwen2.5-VL-3B-Instruct"}, noncommercial=True),
    }
    default_threshold_policy = "fixed 0.5 on P(No | Yes, No) = the greedy answer between Yes and No"
    choices = [
        f"Prompt: the checkpoint's chat template over one user turn [image, text '{PROMPT}'], add_generation_prompt=True (the template's default system message included).",
        "Decoding: none; one forward pass, logits of the first answer token; P(fake) = softmax over the (Yes, No) logits, taking No. No sampling, no abstention.",
        "Label convention: 'Yes' (it is real) = real, 'No' = fake, as the InstructBLIP baseline's yes/no.",
        "Images: the processor's own dynamic resolution and normalisation (smart resize to multiples of 28, bicubic, CLIP mean/std); --image-size S caps the pixel budget at S*S.",
        "Batches: prompts left-padded; the 3-D rotary positions come from the attention mask, so scores do not depend on batch composition.",
    ]

    def setup(self) -> None:
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        quiet_transformers()
        if self.weights_path is not None:
            raise WeightsError(f"qwen_vl is zero-shot and takes no --weights ({self.weights_path}); pass the checkpoint folder as --base.")
        self.base = self.base or str(self.variant.options["base"])
        try:
            self.processor = AutoProcessor.from_pretrained(self.base)
        except (OSError, ValueError) as exc:
            raise WeightsError(f"Cannot load the Qwen2.5-VL processor from '{self.base}' ({' '.join(str(exc).split())[:160]}); pass --base with a local folder holding the checkpoint.") from exc
        self.model = from_pretrained_strict(Qwen2_5_VLForConditionalGeneration, self.base, "Qwen2.5-VL model", dtype=self.dtype)
        self.model.requires_grad_(False)
        self.model.eval().to(self.device)
        tok = self.processor.tokenizer
        if getattr(self.processor, "chat_template", None) is None:
            raise WeightsError(f"'{self.base}' has no chat template; use an Instruct checkpoint.")
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
        self.text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if self.text.count(self.processor.image_token) != 1:
            raise AfpbenchError(f"The chat template of '{self.base}' does not place exactly one {self.processor.image_token} for the image.")
        ids = []
        for word in ANSWERS:
            enc = tok(word, add_special_tokens=False).input_ids
            if len(enc) != 1:
                raise AfpbenchError(f"The tokenizer of '{self.base}' splits {word!r} into {len(enc)} tokens; the yes/no rule needs single-token answers.")
            ids.append(enc[0])
        self.answer_ids = ids
        ip = self.processor.image_processor
        self.image_kwargs: dict[str, Any] = {}
        if self.image_size:
            longest = int(self.image_size) ** 2
            self.image_kwargs["size"] = {"shortest_edge": min(int(ip.size["shortest_edge"]), longest), "longest_edge": longest}

    def preprocessing(self) -> Preprocessing:
        ip = self.processor.image_processor
        size = self.image_kwargs.get("size") or ip.size
        return Preprocessing(
            resize=None, resize_policy="none", interpolation="bicubic", crop=None, mean=tuple(ip.image_mean) if ip.image_mean else CLIP_MEAN, std=tuple(ip.image_std) if ip.image_std else CLIP_STD,
            note=(f"The Qwen2.5-VL processor: each side resized (bicubic) to a multiple of {ip.patch_size * ip.merge_size} with the pixel count kept in "
                  f"[{size['shortest_edge']}, {size['longest_edge']}], rescaled, normalised, cut into {ip.patch_size}px patches (one image token per {ip.merge_size}x{ip.merge_size} patches)."),
        )

    # -- batching ----------------------------------------------------------------------------
    def preprocess(self, image: Any, row: dict[str, Any] | None = None) -> torch.Tensor:
        """The processor's patches of one image, shaped [grid_h, grid_w, patch_dim] (the grid travels in the shape)."""
        try:
            out = self.processor.image_processor(images=[image.convert("RGB")], return_tensors="pt", **self.image_kwargs)
        except ValueError as exc:  # e.g. an aspect ratio above 200, which Qwen's resize rule refuses
            raise AfpbenchError(f"The Qwen2.5-VL processor refuses a {image.width}x{image.height} image ({' '.join(str(exc).split())[:120]}); crop or pad it first.") from exc
        t, h, w = (int(v) for v in out["image_grid_thw"][0])
        if t != 1:  # pragma: no cover - still images have one temporal patch
            raise AfpbenchError(f"unexpected temporal grid {t} for a still image")
        return out["pixel_values"].reshape(h, w, -1)

    def collate(self, items: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Patches + grids + the left-padded prompts with each image's placeholder expanded, as the processor builds them."""
        grid = torch.tensor([[1, x.shape[0], x.shape[1]] for x in items], dtype=torch.long)
        pixel_values = torch.cat([x.reshape(-1, x.shape[-1]) for x in items])
        token = self.processor.image_token
        texts = [self.text.replace(token, self._image_tokens(grid, i), 1) for i in range(len(items))]
        enc = self.processor.tokenizer(texts, padding=True, padding_side="left", return_tensors="pt")
        out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "pixel_values": pixel_values, "image_grid_thw": grid}
        if hasattr(self.processor, "create_mm_token_type_ids"):  # transformers 5: the 3-D rotary positions read it
            out["mm_token_type_ids"] = torch.tensor(self.processor.create_mm_token_type_ids(enc["input_ids"].tolist()), dtype=torch.int32)
        return out

    def _image_tokens(self, grid: torch.Tensor, i: int) -> str:
        """The processor's expansion of image i's placeholder: one token per merge x merge patches."""
        if hasattr(self.processor, "replace_image_token"):
            return self.processor.replace_image_token({"image_grid_thw": grid}, i)
        return self.processor.image_token * int(grid[i].prod() // self.processor.image_processor.merge_size ** 2)  # transformers 4

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        out["pixel_values"] = out["pixel_values"].to(self.dtype)
        return out

    # -- scoring -------------------------------------------------------------------------------
    def answer_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(Yes, No) logits of the first answer token: [B, 2] float32."""
        out = self.model(**batch, logits_to_keep=1, use_cache=False)
        return out.logits[:, -1, self.answer_ids].float()

    def forward_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.answer_logits(batch).softmax(dim=-1)[:, 1]

    def bare_forward(self, batch: dict[str, torch.Tensor]) -> Any:
        return self.model(**batch, logits_to_keep=1, use_cache=False).logits


__all__ = ["QwenVL", "PROMPT", "ANSWERS"]
