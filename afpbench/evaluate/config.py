"""What an evaluation is asked to do: :class:`EvalConfig`, :class:`DetectorSpec`, and the
:class:`Job` (one detector under one perturbation, one results folder) it is split into.

Validation happens when a config is built, so a bad value is refused before anything is
opened, loaded or written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from afpbench.errors import AfpbenchError

if TYPE_CHECKING:  # pragma: no cover
    from afpbench.detectors.base import Scorer
    from afpbench.perturb import Perturbation
    from afpbench.views import View

#: Roles of a test set; calibration sets have the role "calibration".
ROLES = ("held-in", "held-out")
FLUSH_SECONDS_ENV = "AFPBENCH_FLUSH_SECONDS"  # shared with build
DEFAULT_FLUSH_SECONDS = 30.0


def _env_seconds(default: float) -> float:
    raw = os.environ.get(FLUSH_SECONDS_ENV)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise AfpbenchError(f"{FLUSH_SECONDS_ENV}={raw!r} is not a number of seconds; set it to e.g. 30 or unset it.") from None


@dataclass
class DetectorSpec:
    """A detector to load: ``name[.tag]``, optional weights and backbone (``base``), and the detector's own options."""

    name: str
    weights: str | None = None
    base: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise AfpbenchError(f"Detector name {self.name!r} is empty; pass --detector NAME (see afpbench list detectors).")
        self.name = self.name.strip()


def detector_options(names: list[str], pairs: list[str]) -> list[dict[str, str]]:
    """``KEY=VALUE`` pairs -> the options of each detector in ``names``: a pair goes to
    every detector that has option KEY; one that none of them has is refused."""
    if not pairs:
        return [{} for _ in names]
    from afpbench.detectors import detector_class

    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise AfpbenchError(f"Detector option '{pair}' is not KEY=VALUE; write e.g. tokenization=transformers-4.35.")
        parsed.append((key.strip(), value.strip()))
    known = [getattr(detector_class(n), "option_values", {}) for n in names]
    for key, _ in parsed:
        if not any(key in k for k in known):
            have = sorted({o for k in known for o in k})
            raise AfpbenchError(f"No detector of this run has an option '{key}' (options here: {', '.join(have) or 'none'}); drop --detector-option {key}=... .")
    return [{key: value for key, value in parsed if key in k} for k in known]


@dataclass
class EvalConfig:
    """Everything ``evaluate`` needs; the CLI fills it from its options.

    ``detectors`` takes names (``"spectral"``, ``"antifakeprompt.lama"``),
    :class:`DetectorSpec` or already-built detectors (anything that satisfies
    :class:`afpbench.detectors.base.Scorer`). Sets come from ``datasets``, else from
    ``profile`` (v3, v1), else every dataset folder found in ``data``.
    """

    detectors: list[str | DetectorSpec | Scorer]
    data: list[Path]
    datasets: list[str] | None = None
    profile: str | None = None
    #: Perturbation specs ("jpeg:75", "social", "chain", ...); None or "none" = clean images.
    perturb: list[str | None] = field(default_factory=lambda: [None])
    perturb_seed: int = 0
    #: Views of the stored bytes ("native", "jpeg:90", "codec-matched", "size-matched",
    #: "crop:256"); every perturbation is applied under every view.
    views: list[str | None] = field(default_factory=lambda: [None])
    view_seed: int = 0
    out: Path = Path("results")
    batch_size: int = 32
    device: str = "auto"
    dtype: str | None = None
    #: Evaluate only the first N rows of each set (never publishable).
    limit: int | None = None
    #: Role per set, overriding the profile/catalog ("held-in" / "held-out").
    roles: dict[str, str] = field(default_factory=dict)
    #: Real sets paired with every fake set for AUC/AP/EER (default: held-out real sets).
    real_pool: list[str] | None = None
    #: Calibrate the threshold on these sets (never test sets); empty = fixed threshold.
    calibrate_on: list[str] = field(default_factory=list)
    bootstrap: int = 1000
    seed: int = 0
    confidence: float = 0.95
    #: DataLoader workers decoding and preprocessing; None = one per spare core (max 4).
    num_workers: int | None = None
    #: Rows buffered per (detector, set) before a cache part is written.
    flush_every: int = 256
    #: ... and seconds at most between cache writes, so a killed run on a small or slow
    #: set keeps its work too (AFPBENCH_FLUSH_SECONDS overrides the default).
    flush_seconds: float = field(default_factory=lambda: _env_seconds(DEFAULT_FLUSH_SECONDS))
    resume: bool = True
    progress: bool = True
    command: list[str] | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise AfpbenchError(f"--batch-size must be at least 1 (got {self.batch_size}).")
        if self.limit is not None and self.limit < 1:
            raise AfpbenchError(f"--limit must be at least 1 (got {self.limit}); leave it out to evaluate every row.")
        if not self.detectors:
            raise AfpbenchError("No detector given; pass --detector NAME (see afpbench list detectors).")
        if not self.data:
            raise AfpbenchError("No --data folder given; pass the folder that holds one folder per set.")
        if self.num_workers is not None and self.num_workers < 0:
            raise AfpbenchError(f"--num-workers must be 0 or more (got {self.num_workers}).")
        if not self.flush_seconds >= 0:
            raise AfpbenchError(f"The cache flush interval must be 0 seconds or more (got {self.flush_seconds}); fix {FLUSH_SECONDS_ENV}.")
        self.data = [Path(d) for d in self.data]
        self.out = Path(self.out)


@dataclass
class Job:
    """One detector under one view and one perturbation: one results folder."""

    det_pos: int
    pert_pos: int
    det: Scorer
    #: Weights as the user gave them (a DetectorSpec's), recorded in the results file.
    weights: str | None
    perturbation: Perturbation | None
    folder: Path
    #: set name -> key of the score cache the set's scores belong to
    keys: dict[str, str] = field(default_factory=dict)
    score_seconds: float = 0.0
    view_pos: int = 0
    #: None or a native view: the stored bytes.
    view: View | None = None

    @property
    def viewed(self) -> bool:
        return self.view is not None and not self.view.native

    @property
    def name(self) -> str:
        """``<detector>[@<view>][@<perturbation>]``: the results folder's name."""
        return self.det.full_name + (f"@{self.view.slug}" if self.viewed else "") + (f"@{self.perturbation.slug}" if self.perturbation else "")


__all__ = ["DEFAULT_FLUSH_SECONDS", "FLUSH_SECONDS_ENV", "ROLES", "DetectorSpec", "EvalConfig", "Job", "detector_options"]
