"""Results, predictions and leaderboard files: versioned pydantic models and their I/O.

A results file (``<results>/<detector[.tag]>[@<perturbation>]/results.json``) holds one
detector's numbers on a list of sets with everything needed to trust and reproduce them:
versions, git commit, environment, weights hash, dataset fingerprints, threshold policy,
perturbation, bootstrap settings, throughput and the hashes of the per-image predictions
it was computed from. Each predictions file (parquet: id, label, score, pred) carries a
:class:`PredictionsMeta` in its schema metadata, so ``afpbench score`` recomputes the
metrics from those files alone (:mod:`afpbench.scoring` computes them for both).

Every file model has ``schema_version`` first; readers refuse files written by a newer
schema and validate the rest (no silent defaults for a missing field). The JSON Schema
files are exported into ``afpbench/schemas/`` (shipped in the wheel) and ``docs/schemas/``
by :func:`export_schemas`. Only pydantic and numpy are imported at module level (pyarrow
inside the predictions functions).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from afpbench._util.schema import first_error, newer_version
from afpbench.detectors.base import DetectorCard
from afpbench.errors import AfpbenchError

#: Bump on any incompatible change to the results or leaderboard JSON.
SCHEMA_VERSION = 1
#: Key of the afpbench metadata stored in each predictions parquet file.
PREDICTIONS_META_KEY = b"afpbench"
SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"


class _Model(BaseModel):
    # NaN and infinities are refused everywhere: a number that is not finite is never a
    # result (Python's json module would otherwise read NaN/Infinity literals).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    #: Optional fields added to schema 1 after files were first written: left out of a file
    #: while null, so a run that uses none of them writes what earlier releases wrote, byte
    #: for byte (tests/test_evaluate_regression.py holds such files).
    _added_optional: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_added_nulls(self, handler: Any) -> Any:
        data = handler(self)
        if self._added_optional and isinstance(data, dict):
            for key in self._added_optional:
                if key in data and data[key] is None:
                    del data[key]
        return data


#: Every metric is a fraction (tables multiply by 100): accuracies, AUC, AP, EER, TPRs.
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Count = Annotated[int, Field(ge=0)]
_SHA256 = r"^[0-9a-f]{64}$"


def _relative_inside(value: str) -> str:
    """A path recorded in a results file, opened relative to it: it must stay inside."""
    parts = value.replace("\\", "/").split("/")
    if not value or value.startswith(("/", "\\")) or ":" in parts[0] or any(x in ("", ".", "..") for x in parts):
        raise ValueError("must be a relative path inside the results folder (no '..', not absolute)")
    return value


# -- shared pieces ------------------------------------------------------------------------
class Metric(_Model):
    """A number with its bootstrap confidence interval (fractions in [0, 1] for rates)."""

    value: Fraction | None = Field(description="Point estimate on the evaluated images (null when undefined).")
    ci_low: Fraction | None = Field(None, description="Lower end of the bootstrap confidence interval.")
    ci_high: Fraction | None = Field(None, description="Upper end of the bootstrap confidence interval.")

    @model_validator(mode="after")
    def _ordered_interval(self) -> Metric:
        if self.ci_low is not None and self.ci_high is not None and self.ci_low > self.ci_high:
            raise ValueError(f"ci_low {self.ci_low} is above ci_high {self.ci_high}")
        return self

    @classmethod
    def of(cls, est: Any) -> "Metric | None":
        """From an ``afpbench.metrics.Estimate`` (NaN becomes null: JSON has no NaN)."""
        if est is None:
            return None

        def clean(x: float) -> float | None:
            if x is None or not math.isfinite(x):
                return None
            # Sums of float steps (AUC, AP) may land an ulp outside [0, 1]: that is
            # rounding, not a value the schema should refuse.
            return min(max(float(x), 0.0), 1.0) if -1e-9 < x < 1.0 + 1e-9 else float(x)

        return cls(value=clean(est.value), ci_low=clean(est.ci_low), ci_high=clean(est.ci_high))


class GitInfo(_Model):
    """Source revision of the afpbench that wrote the file."""

    commit: str | None = Field(None, description="Git commit of the afpbench checkout (null outside a git checkout).")
    dirty: bool | None = Field(None, description="True when the checkout had uncommitted changes.")


#: The packages results files written before ``Environment.packages`` recorded one field each.
_LEGACY_PACKAGE_FIELDS = ("numpy", "torch", "transformers", "diffusers", "datasets", "accelerate")


class Environment(_Model):
    """Library versions and hardware the numbers were produced with."""

    python: str = Field(description="Python version.")
    platform: str = Field(description="Operating system and machine.")
    packages: dict[str, str | None] = Field(
        default_factory=dict, description="Version of each package of the stack (afpbench.envinfo.PACKAGES), null when not installed."
    )
    cuda: str | None = Field(None, description="CUDA version torch was built with (null for CPU builds).")
    gpu_name: str | None = Field(None, description="Name of the GPU used (null on CPU).")

    @model_validator(mode="before")
    @classmethod
    def _packages_of_older_files(cls, data: Any) -> Any:
        # Files written by 0.1.0 before `packages` existed hold numpy, torch, ... as fields.
        if isinstance(data, dict) and any(k in data for k in _LEGACY_PACKAGE_FIELDS):
            data = dict(data)
            packages = dict(data.get("packages") or {})
            for k in _LEGACY_PACKAGE_FIELDS:
                if k in data:
                    packages.setdefault(k, data.pop(k))
            data["packages"] = packages
        return data


class DetectorInfo(_Model):
    """Which detector produced the scores, with which weights."""

    name: str = Field(description="Registered detector name.")
    tag: str | None = Field(None, description="Weight variant tag (the part after the dot), if any.")
    full_name: str = Field(description="name[.tag], as given to --detector.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="The detector's construction arguments.")
    weights: str | None = Field(None, description="Weights path or reference given by the user, if any.")
    weights_sha256: str | None = Field(None, description="sha256 of the weights actually loaded (null for weightless detectors).")
    card: DetectorCard | None = Field(None, description="The detector's card (paper, license, weights, preprocessing, notes), when it provides one.")


class PerturbationInfo(_Model):
    """A robustness perturbation applied before preprocessing (an afpbench extension)."""

    _added_optional: ClassVar[frozenset[str]] = frozenset({"families", "length"})

    name: str = Field(description="Suite name (e.g. 'social') or the canonical spec.")
    spec: str = Field(description="Canonical chain of operations, e.g. 'resize:0.5+jpeg:75'.")
    seed: int = Field(description="Suite seed; each image's seed derives from it and the row id.")
    ops: list[dict[str, Any]] = Field(description="The operations in order, each {kind, param}.")
    extension: bool = Field(True, description="Always true: the paper has no robustness experiments.")
    families: dict[str, list[float]] | None = Field(
        None, description="Chain suite only: the operation families drawn from, each with its parameter range [low, high] (each image's drawn chain is in its predictions)."
    )
    length: list[int] | None = Field(None, description="Chain suite only: the range [min, max] of operations drawn per image.")


class ViewInfo(_Model):
    """An evaluation view: the stored bytes harmonised before decoding (afpbench.views)."""

    name: str = Field(description="View name as given to --view (native, jpeg:Q, codec-matched, size-matched, crop:N).")
    kind: str = Field(description="The view without its parameter (native, jpeg, codec-matched, size-matched, crop).")
    param: int | None = Field(None, description="The view's parameter (JPEG quality, crop size), null when it has none.")
    seed: int = Field(0, description="Seed of the per-row draws of the matched views.")
    rows: Literal["all", "fakes", "none"] | None = Field(None, description="Which rows the view rewrites: all, only the fakes (matched views) or none (native).")
    pool: dict[str, Any] | None = Field(None, description="What the matched views drew from: the real pool's sets, image count, formats and JPEG qualities.")
    excluded_sets: list[str] | None = Field(None, description="Sets this view left out entirely (crop:N larger than every image of the set).")

    _added_optional: ClassVar[frozenset[str]] = frozenset({"excluded_sets"})


class ThresholdPolicy(_Model):
    """How scores became real/fake predictions (pred = score > value: a tie is real)."""

    kind: Literal["fixed", "calibrated"] = Field(description="fixed: the detector's rule or 0.5; calibrated: chosen on calibration sets.")
    value: float = Field(description="The threshold applied to P(fake).")
    source: str = Field(description="Where the threshold comes from (the detector's natural rule, a default, or the calibration criterion).")
    calibration_sets: list[str] = Field(default_factory=list, description="Sets the threshold was calibrated on (never a test set).")


class BootstrapInfo(_Model):
    """Settings of the bootstrap confidence intervals."""

    n_resamples: int = Field(ge=1, description="Number of bootstrap resamples.")
    seed: int = Field(description="Seed of the resampling streams.")
    confidence: float = Field(gt=0.0, lt=1.0, description="Confidence level of the intervals (0.95 = 95%).")


class PredictionsFileInfo(_Model):
    """A per-image predictions file (parquet: id, label, score, pred)."""

    path: str = Field(description="Path relative to the results file.")
    sha256: str = Field(pattern=_SHA256, description="sha256 of the file's bytes.")
    rows: Count = Field(description="Number of predictions in the file.")

    @field_validator("path")
    @classmethod
    def _inside(cls, value: str) -> str:
        return _relative_inside(value)


class DatasetInfo(_Model):
    """One evaluated set, pinned by its fingerprint."""

    _added_optional: ClassVar[frozenset[str]] = frozenset({"recipe_fingerprint", "refused"})

    name: str = Field(description="Set name.")
    role: Literal["held-in", "held-out", "calibration"] = Field(description="Role in the profile; calibration sets only set the threshold.")
    label: Literal["real", "fake", "mixed"] = Field(description="Class of the set's images (the benchmark's sets are single-class).")
    family: str | None = Field(None, description="Generator family (text-to-image, GAN, inpainting, ...).")
    recipe_name: str | None = Field(None, description="Recipe the set was built from.")
    recipe_version: int | None = Field(None, description="Recipe version the set was built from.")
    fingerprint: str = Field(description="Dataset fingerprint from its manifest.")
    recipe_fingerprint: str | None = Field(
        None, description="Recipe fingerprint from its manifest: equal for any faithful rebuild of the recipe (null in files written before it was recorded)."
    )
    rows_total: Count = Field(description="Rows in the dataset.")
    rows_evaluated: Count = Field(description="Rows evaluated (less than rows_total only with --limit, or with rows a view refused).")
    refused: list[str] | None = Field(
        None, description="Ids of the rows the evaluation view left out (crop:N: images smaller than N), which are not in the predictions; null when none."
    )
    predictions: PredictionsFileInfo = Field(description="The per-image predictions of this set.")

    @model_validator(mode="after")
    def _rows(self) -> DatasetInfo:
        if self.rows_evaluated + len(self.refused or ()) > self.rows_total:
            raise ValueError(f"rows_evaluated {self.rows_evaluated} (+ {len(self.refused or ())} refused) exceeds rows_total {self.rows_total}")
        if self.predictions.rows != self.rows_evaluated:
            raise ValueError(f"the predictions file holds {self.predictions.rows} rows, rows_evaluated says {self.rows_evaluated}")
        return self


class RunInfo(_Model):
    """How the evaluation ran: device, batching, throughput, memory."""

    device: str = Field(description="torch device the detector ran on.")
    dtype: str | None = Field(None, description="Compute dtype requested for the detector (null = its default).")
    batch_size: int = Field(ge=1, description="Images per batch.")
    num_processes: int = Field(ge=1, description="Processes the rows were sharded across (accelerate / torchrun).")
    num_workers: Count = Field(description="DataLoader workers decoding and preprocessing images, per process.")
    torch_threads: int | None = Field(None, description="torch intra-op threads the main process scored with (CPU: cores left by the workers).")
    detectors_in_pass: int = Field(description="Detectors scored in the same pass over the images (they share decoding).")
    limit: int | None = Field(None, description="--limit: rows per set evaluated; results with a limit cannot be published.")
    rows_scored: Count = Field(description="Images scored in this run (rows already cached are not counted).")
    rows_per_process: list[Count] = Field(default_factory=list, description="Images scored by each process, by process index (the shard sizes).")
    rows_cached: Count = Field(description="Images whose predictions came from the resume cache.")
    wall_seconds: float = Field(ge=0.0, description="Wall time of the scoring pass (all detectors of the pass).")
    images_per_second: float | None = Field(None, ge=0.0, description="rows_scored / wall_seconds, end to end (read, decode, preprocess, score, write), all processes.")
    score_seconds: float = Field(ge=0.0, description="Seconds spent inside this detector's score() (summed over processes).")
    peak_rss_bytes: Count | None = Field(None, description="Peak resident memory of the main evaluation process.")
    peak_gpu_memory_bytes: Count | None = Field(None, description="Peak GPU memory allocated by torch (null on CPU).")
    evaluation_id: str | None = Field(
        None, description="Id of the evaluate call that wrote this file; each of its predictions files records the same id (null in files written before ids were recorded).")
    verify_seconds: float | None = Field(
        None, ge=0.0,
        description="Seconds spent checking the sets against their manifests before scoring: the content fingerprint, row total and label counts recomputed from every row "
                    "(with --limit: the sha256 of the shards read).",
    )


class SetMetrics(_Model):
    """The paper's per-set accuracy."""

    label: Literal["real", "fake", "mixed"] = Field(description="Class of the set.")
    n: Count = Field(description="Images evaluated.")
    accuracy: Metric = Field(description="Fraction of images predicted as their label (real sets: called real; fake sets: called fake).")


class Averages(_Model):
    """The paper's averages of per-set accuracy."""

    all: Metric | None = Field(description="Plain mean over every evaluated test set.")
    held_out: Metric | None = Field(description="Plain mean over the held-out sets (null when none).")
    n_sets: Count = Field(description="Sets in the 'all' mean.")
    n_held_out: Count = Field(description="Sets in the 'held_out' mean.")


class PairResult(_Model):
    """Threshold-free metrics of one fake set against a real pool."""

    fake: str = Field(description="The fake set (or a mixed set scored on its own).")
    real: list[str] = Field(description="The real sets pooled against it (empty for a mixed set scored on its own).")
    n_fake: Count = Field(description="Fake images in the pair.")
    n_real: Count = Field(description="Real images in the pair.")
    auc: Metric = Field(description="Area under the ROC curve (fake = positive).")
    ap: Metric = Field(description="Average precision (fake = positive).")
    eer: Metric = Field(description="Equal error rate (lower is better).")
    tpr_at_fpr_1: Metric = Field(description="Best TPR among thresholds with FPR <= 1%.")
    tpr_at_fpr_5: Metric = Field(description="Best TPR among thresholds with FPR <= 5%.")
    balanced_accuracy: Metric = Field(description="Mean of TPR and TNR at the recorded threshold.")
    oracle_balanced_accuracy: Metric = Field(description="ORACLE: best balanced accuracy with the threshold chosen on this pair itself; never the detector's accuracy.")


class Pairing(_Model):
    """How fake sets were paired with real images for threshold-free metrics."""

    real_pool: list[str] = Field(description="Real sets pooled as the negatives of every pair.")
    rule: str = Field(description="How the pool was chosen (explicit, or the default rule).")


class MetricsBlock(_Model):
    """All metrics of one results file."""

    per_set: dict[str, SetMetrics] = Field(description="Per-set accuracy, keyed by set name.")
    averages: Averages = Field(description="Means of the per-set accuracies.")
    pairing: Pairing = Field(description="The real pool the fake sets were paired with.")
    pairs: list[PairResult] = Field(description="Threshold-free metrics per fake set.")


class ResultsFile(_Model):
    """One detector (x perturbation) evaluated on a list of sets."""

    _added_optional: ClassVar[frozenset[str]] = frozenset({"view"})

    schema_version: int = Field(SCHEMA_VERSION, description="Version of this schema; readers refuse newer versions.")
    kind: Literal["afpbench.results"] = Field("afpbench.results", description="File type marker.")
    created: str = Field(description="UTC time the file was written (ISO 8601).")
    afpbench_version: str = Field(description="afpbench version that wrote the file.")
    git: GitInfo = Field(description="Source revision of afpbench.")
    command: list[str] | None = Field(None, description="Command line of the run, when run from the CLI.")
    environment: Environment = Field(description="Library versions and hardware.")
    detector: DetectorInfo = Field(description="The detector and its weights.")
    profile: str | None = Field(None, description="Benchmark profile (v3, v1) or null for a custom list of sets.")
    perturbation: PerturbationInfo | None = Field(None, description="Robustness perturbation applied (null = clean images).")
    view: ViewInfo | None = Field(None, description="Evaluation view the images were scored under (null = native: the stored bytes).")
    threshold: ThresholdPolicy = Field(description="How predictions were derived from scores.")
    bootstrap: BootstrapInfo = Field(description="Bootstrap settings of every interval.")
    run: RunInfo = Field(description="Device, batching, throughput and memory of the run.")
    datasets: list[DatasetInfo] = Field(description="Test sets, in evaluation order.")
    calibration: list[DatasetInfo] = Field(default_factory=list, description="Sets used only to calibrate the threshold.")
    metrics: MetricsBlock = Field(description="Every metric, with confidence intervals.")


class PredictionsMeta(_Model):
    """What a predictions file says about its scores (stored in the parquet schema metadata)."""

    _added_optional: ClassVar[frozenset[str]] = frozenset({"view"})

    schema_version: int = Field(SCHEMA_VERSION, description="Version of this schema; readers refuse newer versions.")
    dataset: str = Field(description="The set the predictions are of.")
    position: Count = Field(description="Position of the set in the evaluation's order (score lists the sets in it).")
    role: Literal["held-in", "held-out", "calibration"] = Field(description="Role of the set in the evaluation.")
    label: Literal["real", "fake", "mixed"] = Field(description="Class of the set's images.")
    family: str | None = Field(description="Generator family of the set.")
    fingerprint: str = Field(description="Dataset fingerprint from its manifest.")
    recipe: dict[str, Any] = Field(description="The recipe reference of the set's manifest (empty when it has none).")
    rows_total: Count = Field(description="Rows in the dataset.")
    rows_evaluated: Count = Field(description="Rows evaluated (less than rows_total only with --limit).")
    limit: int | None = Field(description="--limit of the evaluation (null = every row).")
    detector: str = Field(description="name[.tag] of the detector that scored the set.")
    weights_sha256: str | None = Field(description="sha256 of the detector's weights (null for weightless detectors).")
    perturbation: PerturbationInfo | None = Field(description="Robustness perturbation applied (null = clean images).")
    view: ViewInfo | None = Field(None, description="Evaluation view the stored bytes were read through (null = native).")
    threshold: ThresholdPolicy = Field(description="How the predictions were derived from the scores.")
    real_pool: list[str] | None = Field(description="--real-pool of the evaluation (null = the default rule).")
    bootstrap: BootstrapInfo = Field(description="Bootstrap settings of the evaluation.")
    profile: str | None = Field(description="Benchmark profile (null for a custom list of sets).")
    cache_key: str = Field(description="Key of the score cache (detector, arguments, weights, data, perturbation) the scores belong to.")
    evaluation_id: str | None = Field(
        None, description="Id of the evaluate call that wrote the file, as in its results file (absent in files written before ids were recorded)."
    )


# -- leaderboard ---------------------------------------------------------------------------
class LeaderboardSet(_Model):
    """A column of the leaderboard."""

    name: str = Field(description="Set name.")
    role: Literal["held-in", "held-out"] = Field(description="Role of the set in the profile (or in the evaluation, for custom sets).")
    label: str = Field(description="real, fake or mixed.")
    family: str | None = Field(None, description="Generator family.")
    recipe_version: int | None = Field(None, description="Recipe version of the measured data (null if only reported).")
    fingerprint: str | None = Field(None, description="Content fingerprint of the build most measured entries used (null if only reported).")
    recipe_fingerprint: str | None = Field(None, description="Recipe fingerprint of the measured builds (null when not recorded); with --same-recipe every build of the column shares it.")


class PairSummary(_Model):
    """Threshold-free metrics of a fake set against the real pool (the pair's, or their means over an entry's fake sets)."""

    auc: Metric | None = Field(None, description="Area under the ROC curve (fake = positive).")
    ap: Metric | None = Field(None, description="Average precision (fake = positive).")
    eer: Metric | None = Field(None, description="Equal error rate (lower is better).")
    tpr_at_fpr_1: Metric | None = Field(None, description="Best TPR among thresholds with FPR <= 1%.")
    tpr_at_fpr_5: Metric | None = Field(None, description="Best TPR among thresholds with FPR <= 5%.")


def _legacy_threshold(value: Any) -> Any:
    """Leaderboards written before thresholds were typed stored them as text ('fixed 0.5')."""
    if isinstance(value, str):
        kind, _, number = value.partition(" ")
        try:
            return {"kind": kind, "value": float(number), "source": "recorded as text by an earlier afpbench"}
        except ValueError:
            return value  # left for validation to refuse
    return value


class LeaderboardEntry(_Model):
    """A row: one detector (x view x perturbation), measured here or reported by the paper."""

    detector: str = Field(description="Detector name[.tag], or the method's name in the paper's table.")
    source: Literal["measured", "reported"] = Field(description="measured: computed by afpbench from predictions; reported: copied from the paper.")
    view: ViewInfo | None = Field(None, description="Evaluation view of a measured entry (null = native: the stored bytes).")
    perturbation: str | None = Field(None, description="Perturbation suite (null = clean images).")
    per_set: dict[str, Metric] = Field(description="Per-set accuracy (fraction), keyed by set name.")
    average_all: Metric | None = Field(description="Mean accuracy over all sets of the profile.")
    average_held_out: Metric | None = Field(description="Mean accuracy over the held-out sets.")
    families: dict[str, Fraction] = Field(default_factory=dict, description="Mean accuracy per family of sets.")
    pairs: dict[str, PairSummary] = Field(default_factory=dict, description="Threshold-free metrics per fake set (measured entries only).")
    pair_means: PairSummary | None = Field(None, description="Plain means of the threshold-free metrics over the fake sets (values only; measured entries only).")
    mean_auc: Fraction | None = Field(None, description="Mean pair AUC over fake sets (measured entries only; the same number as pair_means.auc).")
    threshold: ThresholdPolicy | None = Field(None, description="Threshold policy of a measured entry.")
    noncommercial: bool = Field(False, description="The detector's card says its licence does not allow commercial use; tables flag the row.")
    other_build: list[str] = Field(
        default_factory=list, description="Sets this entry was evaluated on another build of (same recipe fingerprint, different content; only with --same-recipe)."
    )
    weights_sha256: str | None = Field(None, description="Weights hash of a measured entry.")
    results_file: str | None = Field(None, description="Results file of a measured entry (as given).")
    results_sha256: str | None = Field(None, description="sha256 of that results file.")
    images_per_second: float | None = Field(None, ge=0.0, description="Throughput of the measured run.")
    n_sets: Count = Field(description="Sets this entry has a number for (fewer than the columns when partial).")

    @field_validator("threshold", mode="before")
    @classmethod
    def _typed_threshold(cls, value: Any) -> Any:
        return _legacy_threshold(value)


class RankCorrelation(_Model):
    """Kendall's tau between the detectors' native and view mean AUCs, with a bootstrap interval."""

    value: float | None = Field(ge=-1.0, le=1.0, description="Kendall's tau-b (scipy.stats.kendalltau); null with fewer than two detectors or no variation.")
    ci_low: float | None = Field(None, ge=-1.0, le=1.0, description="Lower end of the bootstrap interval.")
    ci_high: float | None = Field(None, ge=-1.0, le=1.0, description="Upper end of the bootstrap interval.")
    n_detectors: Count = Field(description="Detectors measured both native and under the view.")
    resampled: list[str] = Field(description="The fake sets resampled with replacement (every detector's mean AUC is recomputed over each resample).")
    n_resamples: int = Field(ge=1, description="Bootstrap resamples.")
    seed: int = Field(description="Seed of the resampling generator.")
    confidence: float = Field(gt=0.0, lt=1.0, description="Confidence level of the interval.")


class ViewDetector(_Model):
    """One detector's mean AUC native and under a view."""

    detector: str = Field(description="Detector name[.tag].")
    native_auc: Fraction | None = Field(description="Mean pair AUC over the compared fake sets, native.")
    view_auc: Fraction | None = Field(description="Mean pair AUC over the same fake sets under the view.")
    drop: float | None = Field(description="native_auc - view_auc (positive: the view lowered the AUC).")
    flagged: bool = Field(description="The AUC drops by more than the comparison's drop_flag under the view.")


class ViewComparison(_Model):
    """Native against one view: every detector side by side, and how far the ranking moves."""

    view: ViewInfo = Field(description="The view.")
    fake_sets: list[str] = Field(description="Fake sets every compared detector has a pair AUC for, native and under the view (the means run over these).")
    drop_flag: float = Field(description="A detector is flagged when its mean AUC drops by more than this.")
    detectors: list[ViewDetector] = Field(description="Detectors measured native and under the view, best native AUC first.")
    kendall_tau: RankCorrelation = Field(description="Rank correlation of the native and view mean AUCs.")


class RobustnessRow(_Model):
    """One detector's clean and perturbed mean AUC under one suite (native view)."""

    detector: str = Field(description="Detector name[.tag].")
    suite: str = Field(description="Perturbation suite (chain: the chained degradations).")
    clean_auc: Fraction | None = Field(description="Mean pair AUC on the clean images.")
    robust_auc: Fraction | None = Field(description="Mean pair AUC under the suite.")
    drop: float | None = Field(description="clean_auc - robust_auc.")


class AuditShortcut(_Model):
    """AUC of a classifier that sees one shortcut feature only (from afpbench audit)."""

    value: Fraction = Field(description="Out-of-fold AUC.")
    ci_low: Fraction = Field(description="Lower end of its bootstrap interval.")
    ci_high: Fraction = Field(description="Upper end of its bootstrap interval.")
    flagged: bool = Field(description="The whole interval lies above the audit's flag level.")


class AuditPairSummary(_Model):
    """One fake set of the audit against its real pool."""

    fake: str = Field(description="The fake set.")
    real: list[str] = Field(description="The real pool it was audited against.")
    n_fake: Count = Field(description="Fake images read.")
    n_real: Count = Field(description="Real images read.")
    flagged: bool = Field(description="Any shortcut flagged.")
    summary: str = Field(description="One sentence on what differs between the fakes and the reals (empty when nothing is flagged).")
    shortcuts: dict[str, AuditShortcut] = Field(description="Shortcut name -> AUC, in the audit's order (format, jpeg_quality, ..., all).")
    plots: list[str] = Field(default_factory=list, description="The audit's plots of this pair, copied into the site (paths relative to it).")


class LeaderboardAudit(_Model):
    """The shortcut audit shown with the leaderboard (afpbench audit, given with --audit)."""

    file: str = Field(description="The audit.json given (as given).")
    sha256: str = Field(pattern=_SHA256, description="sha256 of that file.")
    created: str = Field(description="When the audit ran.")
    real_pool: list[str] = Field(description="Real sets pooled against every fake set.")
    flag_auc: Fraction = Field(description="A shortcut is flagged when its AUC interval lies entirely above this.")
    shortcuts: list[str] = Field(description="The shortcuts, in table order.")
    pairs: list[AuditPairSummary] = Field(description="Audited fake sets that are columns of this leaderboard.")


class Leaderboard(_Model):
    """The published leaderboard."""

    schema_version: int = Field(SCHEMA_VERSION, description="Version of this schema; readers refuse newer versions.")
    kind: Literal["afpbench.leaderboard"] = Field("afpbench.leaderboard", description="File type marker.")
    created: str = Field(description="UTC time the leaderboard was built (ISO 8601).")
    afpbench_version: str = Field(description="afpbench version that built it.")
    profile: str | None = Field(None, description="Benchmark profile of every entry (null for custom sets).")
    sets: list[LeaderboardSet] = Field(description="Columns, in profile order.")
    families: list[str] = Field(default_factory=list, description="Families of the columns (a set without one is 'other'), sorted: the per-family table's columns.")
    suites: list[str] = Field(default_factory=list, description="Perturbation suites present (robustness column groups).")
    entries: list[LeaderboardEntry] = Field(description="Rows; measured and reported rows are told apart by 'source'.")
    views: list[ViewComparison] = Field(default_factory=list, description="Native against each evaluation view present (afpbench extension).")
    robustness: list[RobustnessRow] = Field(default_factory=list, description="Clean against perturbed mean AUC per detector and suite (afpbench extension).")
    audit: LeaderboardAudit | None = Field(None, description="The shortcut audit given with --audit.")
    gallery: str | None = Field(None, description="The sets gallery page in the site (sets.html) when built with --data; column headers link to it.")
    same_recipe: bool = Field(
        False, description="True when some entries were evaluated on another build of a set's recipe (accepted only with --same-recipe; those entries list the sets in other_build).")
    notes: list[str] = Field(default_factory=list, description="Remarks shown with the table.")


# -- reading and writing -------------------------------------------------------------------
def _check_version(data: Any, path: Path, what: str) -> None:
    if not isinstance(data, dict):
        raise AfpbenchError(f"{path} is not a {what} file (expected a JSON object); pass a file written by afpbench.")
    if version := newer_version(data, SCHEMA_VERSION):
        raise AfpbenchError(
            f"{path} uses {what} schema version {version}, newer than this afpbench reads ({SCHEMA_VERSION}); upgrade afpbench."
        )


def _validate(model: type[BaseModel], data: Any, path: Path, what: str, fix: str = "regenerate it with afpbench") -> Any:
    _check_version(data, path, what)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        where, msg, n = first_error(exc)
        raise AfpbenchError(f"{path} fails {what} schema validation at {where}: {msg} ({n} error(s)); {fix}.") from None


def _read_json(path: Path, what: str) -> Any:
    path = Path(path)
    if path.is_dir():
        path = path / ("results.json" if what == "results" else "leaderboard.json")
    if not path.is_file():
        raise AfpbenchError(f"No {what} file at {path}; pass the path of a {what} JSON written by afpbench.")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise AfpbenchError(f"{path} is not a {what} file (not JSON text); pass the {what} JSON written by afpbench.") from None
    except json.JSONDecodeError as exc:
        raise AfpbenchError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); regenerate it with afpbench.") from None
    except OSError as exc:
        raise AfpbenchError(f"{path} cannot be read ({exc.strerror or exc}); check its permissions.") from None


def load_results(path: str | Path) -> ResultsFile:
    """Read and validate a results file (a folder means its ``results.json``)."""
    path = Path(path)
    data = _read_json(path, "results")
    return _validate(ResultsFile, data, path, "results")


def load_leaderboard(path: str | Path) -> Leaderboard:
    path = Path(path)
    return _validate(Leaderboard, _read_json(path, "leaderboard"), path, "leaderboard")


def dump_json(model: BaseModel, path: Path) -> Path:
    """Write a model as indented JSON (atomically: a killed run never leaves half a file)."""
    from afpbench._util.io import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, model.model_dump_json(indent=2) + "\n")
    return path


def schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schemas of the results and leaderboard files and of the predictions metadata."""
    out = {}
    for name, model in (("results", ResultsFile), ("leaderboard", Leaderboard), ("predictions", PredictionsMeta)):
        schema = model.model_json_schema()
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"https://afpbench/schemas/{name}-v{SCHEMA_VERSION}.schema.json", **schema}
        out[name] = schema
    return out


def export_schemas(*folders: str | Path) -> list[Path]:
    """Write ``results.schema.json``, ``leaderboard.schema.json`` and ``predictions.schema.json`` into each folder."""
    written = []
    for folder in folders or (SCHEMAS_DIR,):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, schema in schemas().items():
            p = folder / f"{name}.schema.json"
            p.write_text(json.dumps(schema, indent=2, sort_keys=False) + "\n")
            written.append(p)
    return written


# -- predictions -----------------------------------------------------------------------------
@dataclass
class Predictions:
    """Per-image predictions of one set, with the metadata stored beside them (None for
    predictions that were never written to a file)."""

    ids: list[str]
    labels: np.ndarray
    scores: np.ndarray
    preds: np.ndarray
    meta: PredictionsMeta | None = None
    #: Per image, what it was scored under when that differs by image (the drawn chain of
    #: the ``chain`` suite); None when every image got the same condition.
    conditions: list[str] | None = None

    @property
    def name(self) -> str:
        if self.meta is None:
            raise AfpbenchError("These predictions carry no metadata, so they name no set; read them from a predictions file.")
        return self.meta.dataset


def write_predictions(path: Path, ids: Sequence[str], labels: Sequence[int], scores: Sequence[float], preds: Sequence[int], meta: PredictionsMeta,
                      conditions: Sequence[str] | None = None) -> str:
    """Write predictions (id, label, score, pred[, condition]) as parquet with afpbench metadata; return the sha256."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from afpbench._util.hashing import sha256_file

    columns = {
        "id": pa.array(list(ids), pa.string()),
        "label": pa.array(np.asarray(labels, dtype=np.int8), pa.int8()),
        "score": pa.array(np.asarray(scores, dtype=np.float64), pa.float64()),
        "pred": pa.array(np.asarray(preds, dtype=np.int8), pa.int8()),
    }
    if conditions is not None:
        columns["condition"] = pa.array(list(conditions), pa.string())
    table = pa.table(columns)
    table = table.replace_schema_metadata({PREDICTIONS_META_KEY: json.dumps(meta.model_dump(mode="json"), sort_keys=True).encode()})
    from afpbench._util.io import replacing

    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:  # a failed write (disk full) leaves the previous file
        pq.write_table(table, tmp)
    return sha256_file(path)


def read_predictions(path: str | Path) -> Predictions:
    """Read a predictions file written by :func:`write_predictions`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise AfpbenchError(f"No predictions file at {path}; pass a <results>/<detector>/predictions/<set>.parquet file.")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise AfpbenchError(f"{path} is not a readable parquet file ({exc}); evaluate again to rewrite it.") from None
    raw = (table.schema.metadata or {}).get(PREDICTIONS_META_KEY)
    missing = {"id", "label", "score", "pred"} - set(table.column_names)
    if raw is None or missing:
        raise AfpbenchError(f"{path} is not an afpbench predictions file (no metadata or missing columns); pass files written by afpbench evaluate.")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AfpbenchError(f"{path} has unreadable afpbench metadata (not JSON); evaluate again to rewrite it.") from None
    meta = _validate(PredictionsMeta, data, path, "predictions", fix="evaluate again to rewrite it")
    kinds = {"id": pa.types.is_string, "label": pa.types.is_integer, "score": pa.types.is_floating, "pred": pa.types.is_integer}
    for col, ok in kinds.items():
        if not ok(table.schema.field(col).type) or table.column(col).null_count:
            raise AfpbenchError(f"{path}: column '{col}' has type {table.schema.field(col).type} or empty cells; evaluate again to rewrite the file.")
    return Predictions(
        ids=table.column("id").to_pylist(),
        labels=table.column("label").to_numpy().astype(np.int8),
        scores=table.column("score").to_numpy().astype(np.float64),
        preds=table.column("pred").to_numpy().astype(np.int8),
        meta=meta,
        conditions=table.column("condition").to_pylist() if "condition" in table.column_names else None,
    )
