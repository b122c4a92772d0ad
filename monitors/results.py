"""What a monitoring check returns: our own types, never Evidently objects.

Plain frozen dataclasses with a JSON form (``as_dict``), so that a verdict can travel as a
Prefect event payload, an alert, or an MLflow artifact without dragging a library along.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Any


class Status(str, enum.Enum):  # noqa: UP042  (StrEnum would change str(status))
    """The outcome of one check, from calm to urgent."""

    OK = "OK"
    #: Inputs drifted but measured quality holds: watch, do not retrain.
    WARN = "WARN"
    #: Inputs or predictions drifted and quality cannot be measured yet; the estimate holds.
    DRIFT = "DRIFT"
    #: Measured or estimated quality fell: retrain.
    QUALITY_DROP = "QUALITY_DROP"
    #: Traffic left the reference's support and too few labels exist to tell what it costs.
    NEEDS_LABELS = "NEEDS_LABELS"
    #: Too little traffic, or no reference: nothing can be said.
    NEEDS_DATA = "NEEDS_DATA"

    def __str__(self) -> str:
        return self.value


#: Signals whose drift is about inputs (what users send), as opposed to the model's outputs.
INPUT_SIGNALS = ("text", "text_length", "word_count", "oov_share", "embeddings")
OUTPUT_SIGNALS = ("prediction", "confidence", "escalation_rate")
#: An extractor's answers (``monitors.entities``): outputs too, absent for a classifier.
ANSWER_SIGNALS = ("n_entities", "entity_confidence", "span_length", "no_entity", "missing_required")
SIGNALS = INPUT_SIGNALS + OUTPUT_SIGNALS + ANSWER_SIGNALS


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a verdict is what it is: one signal, its value and the threshold it crossed."""

    signal: str
    value: float | None
    threshold: float | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SignalResult:
    """One drift signal: Evidently's raw score and our size-aware calibrated threshold."""

    name: str
    method: str
    score: float
    threshold: float
    drifted: bool

    @property
    def margin(self) -> float:
        """How far past its threshold the score is (negative: under it)."""
        return self.score - self.threshold


@dataclass(frozen=True, slots=True)
class Quality:
    """Quality on the window's rows that have a person's label: a classifier's accuracy and
    macro-F1, or an extractor's entity micro-F1 (exact spans) and exact match.

    ``metric`` names the headline figure the policy compares with the reference
    (``accuracy`` or ``entity_f1``); ``value`` and ``interval`` read it.
    """

    labelled: int
    accuracy: float | None = None
    accuracy_ci: tuple[float, float] | None = None
    macro_f1: float | None = None
    macro_f1_ci: tuple[float, float] | None = None
    entity_f1: float | None = None
    entity_f1_ci: tuple[float, float] | None = None
    exact_match: float | None = None
    exact_match_ci: tuple[float, float] | None = None
    metric: str = "accuracy"

    @property
    def value(self) -> float | None:
        """The headline figure (``metric``), None when too few labels measured it."""
        value: float | None = getattr(self, self.metric)
        return value

    @property
    def interval(self) -> tuple[float, float] | None:
        """The headline figure's 95% interval."""
        interval: tuple[float, float] | None = getattr(self, f"{self.metric}_ci")
        return interval


@dataclass(frozen=True, slots=True)
class Estimate:
    """The window's accuracy when labels are few or none (``monitors.estimate``), or for an
    extractor (``metric`` ``entity_f1``) its entity F1 (``monitors.entity_quality``), held in
    the same fields so that the policy reads both alike.

    ``accuracy`` is the in-scope share times the calibrated accuracy of in-scope rows, with
    the labels that arrived folded in (prediction-powered inference) when there are enough;
    ``accuracy_low``/``accuracy_high`` its interval. ``out_of_support`` is the estimated share
    of rows from outside the label set, ``out_of_scope`` the share the detector flags.
    ``assumptions`` says what the figure rests on, so a reader knows where it is blind.
    Where enough labels exist, ``measured`` is the real figure on the labelled rows and
    ``error`` the label-free estimate on those same rows minus it: how far off the estimate
    is on this window, where that can be known.
    """

    accuracy: float
    accuracy_low: float
    out_of_support: float
    accuracy_high: float | None = None
    out_of_scope: float | None = None
    labels_used: int = 0
    method: str = "label-free"
    label_free: float | None = None
    assumptions: tuple[str, ...] = ()
    metric: str = "accuracy"
    measured: float | None = None
    error: float | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of one check of one specialist's window."""

    specialist: str
    status: Status
    reasons: tuple[Reason, ...]
    champion_version: int | None
    window: dict[str, Any]
    signals: tuple[SignalResult, ...] = ()
    quality: Quality | None = None
    estimate: Estimate | None = None
    reference: dict[str, float] = field(default_factory=dict)
    report_uri: str | None = None
    run_id: str | None = None
    #: Clusters of the window's out-of-scope requests (``lifecycle.labels.discovery``'s JSON form).
    discovery: dict[str, Any] | None = None

    @property
    def retrain(self) -> bool:
        """Whether this verdict asks for retraining (only a quality drop does)."""
        return self.status is Status.QUALITY_DROP

    @property
    def drifted(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.signals if s.drifted)

    def metrics(self) -> dict[str, float]:
        """Flat, finite numbers for MLflow: one series per signal and quality figure."""
        out: dict[str, float] = {}
        for s in self.signals:
            out[f"drift_{s.name}"] = s.score
            out[f"threshold_{s.name}"] = s.threshold
        if self.estimate is not None:
            name = f"estimated_{self.estimate.metric}"  # estimated_accuracy, estimated_entity_f1
            out[name] = self.estimate.accuracy
            out[f"{name}_low"] = self.estimate.accuracy_low
            out["out_of_support_share"] = self.estimate.out_of_support
            if self.estimate.accuracy_high is not None:
                out[f"{name}_high"] = self.estimate.accuracy_high
            if self.estimate.error is not None:
                out["estimate_error"] = self.estimate.error
            if self.estimate.out_of_scope is not None:
                out["out_of_scope_share"] = self.estimate.out_of_scope
            out["estimate_labels_used"] = float(self.estimate.labels_used)
        if self.discovery is not None:
            clusters = self.discovery.get("clusters", [])
            # A surging label's group is counted as a surge, not as a cluster of new traffic.
            out["new_traffic_clusters"] = float(sum(not c.get("hidden_under") for c in clusters))
            out["surging_labels"] = float(len(self.discovery.get("surges", [])))
        if self.quality is not None:
            out["labelled_rows"] = float(self.quality.labelled)
            if self.quality.accuracy is not None:
                out["accuracy"] = self.quality.accuracy
            for key in ("macro_f1", "entity_f1", "exact_match"):
                value = getattr(self.quality, key)
                if value is not None:
                    out[key] = value
        rows = self.window.get("rows")
        if isinstance(rows, int | float):
            out["window_rows"] = float(rows)
        for key in ("escalation_rate", "mean_confidence"):
            value = self.window.get(key)
            if isinstance(value, int | float):
                out[key] = float(value)
        out["status_level"] = float(list(Status).index(self.status))
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["retrain"] = self.retrain
        data["drifted"] = list(self.drifted)
        return data
