"""Whether the Hugging Face hub may be reached, and the one-line errors when it cannot."""

from __future__ import annotations

import os

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline() -> bool:
    """True when any of the Hugging Face offline switches is set (each library reads its own)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)


__all__ = ["offline", "OFFLINE_VARIABLES"]
