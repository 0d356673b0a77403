"""What a detector is, as data: its card, its eval preprocessing, its released weights, its variants.

These models are torch-free, so ``afpbench list``, the results files (which embed the
card of the detector that produced the scores) and the leaderboard use them without
importing a model library. ``afpbench.detectors.base`` builds a detector's card from its
class attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field


class Preprocessing(BaseModel):
    """How a detector turns a decoded RGB image into its input tensor (eval time)."""

    resize: int | None = Field(None, description="Target of the shorter side in pixels (None: no resize).")
    resize_policy: Literal["shorter", "upscale_only", "none"] = Field(
        "shorter", description="'shorter': always resize the shorter side to `resize`; 'upscale_only': only images smaller than `crop` are resized up (keeps high-frequency traces); 'none'."
    )
    interpolation: Literal["bicubic", "bilinear", "nearest"] = Field("bicubic", description="PIL resampling filter of the resize.")
    crop: int | None = Field(None, description="Side of the square center crop (None: no crop).")
    mean: tuple[float, float, float] | None = Field(None, description="Per-channel mean subtracted after scaling to [0, 1].")
    std: tuple[float, float, float] | None = Field(None, description="Per-channel std divided after the mean.")
    colour: Literal["rgb", "grey"] = Field("rgb", description="Channels fed to the model.")
    note: str = Field("", description="Anything else (afpbench choices, departures from the paper).")


class WeightsSource(BaseModel):
    """One released weights file: what it is called, where it comes from, how to check it."""

    filename: str = Field(description="File name the cache lookup searches for.")
    source: str = Field(description="Where to download it (URL or repository path).")
    sha256: str | None = Field(None, description="Expected sha256 when known; afpbench always records the sha256 of the file it loaded.")
    license: str = Field("", description="License of the weights.")
    note: str = Field("", description="Anything else about the file.")


class DetectorCard(BaseModel):
    """Everything a results file needs to say about a detector."""

    name: str = Field(description="Registry name, e.g. 'antifakeprompt'.")
    tag: str | None = Field(None, description="Variant tag (the part after the dot), None for the default.")
    variants: list[str] = Field(default_factory=list, description="Every selectable 'name.tag'.")
    description: str = Field("", description="What the detector is, in one sentence.")
    paper: str = Field("", description="Citation of the method.")
    code: str = Field("", description="Upstream code the method comes from.")
    license: str = Field("", description="License of the method's code/weights.")
    weights: WeightsSource | None = Field(None, description="Released weights this variant loads (None: no file needed or trained by afpbench).")
    training_data: str = Field("", description="What the weights were trained on.")
    base: str | None = Field(None, description="Backbone this detector was built on (folder or hub id), when any.")
    preprocessing: Preprocessing = Field(default_factory=Preprocessing, description="How an image becomes the detector's input.")
    threshold: float = Field(0.5, description="pred = score > threshold (a tie is real).")
    threshold_policy: str = Field("fixed", description="How the threshold was chosen.")
    trainable: bool = Field(False, description="Whether `afpbench train` can train it.")
    noncommercial: bool = Field(
        False, description="True when the licence of the weights or code does not allow commercial use (non-profit, research-only, NC, or no licence granted); leaderboards flag such rows."
    )
    choices: list[str] = Field(default_factory=list, description="Decisions afpbench made that the paper does not document.")


@dataclass(frozen=True)
class Variant:
    """One ``name.tag``: the weights it loads and what they were trained on.

    ``noncommercial`` overrides the detector's class-wide licence flag for this variant
    (e.g. one checkpoint of a family under a research-only licence); None keeps it.
    """

    weights: WeightsSource | None = None
    training_data: str = ""
    note: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    noncommercial: bool | None = None


__all__ = ["DetectorCard", "Preprocessing", "Variant", "WeightsSource"]
