"""What a check does differently per task kind, behind one small interface.

A classifier and an extractor are checked by the same steps (``monitors.check.assess``):
frames, drift signals with calibrated thresholds, quality on labelled rows, a label-free
estimate, the policy. What differs is how the rows are read (an extractor's answers add the
columns of ``monitors.entities``, which ``monitors.drift`` picks up as signals by themselves),
which quality figure is the headline (accuracy, or entity F1) and how it is estimated
without labels. ``monitor_kind(spec.task)`` is the one place a check dispatches on the task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Collection

    import numpy as np
    import pandas as pd

    from lifecycle.config.spec import SpecialistSpec
    from monitors.frames import MonitorData
    from monitors.results import Estimate, Quality


class MonitorKind(Protocol):
    """A task kind as monitoring sees it."""

    #: The headline quality figure (``Quality.metric``): what ``quality_drop`` applies to.
    metric: str

    def reference_data(
        self,
        frame: pd.DataFrame,
        embeddings: np.ndarray | None,
        *,
        spec: SpecialistSpec,
        vocabulary: Collection[str],
    ) -> MonitorData:
        """The champion's reference rows as monitor data."""
        ...

    def window_data(
        self, raw: pd.DataFrame, *, spec: SpecialistSpec, vocabulary: Collection[str]
    ) -> MonitorData:
        """A ``TrafficStore.window`` frame as monitor data."""
        ...

    def reference_quality(self, data: MonitorData) -> tuple[float, float]:
        """The reference's measured headline figure and its label-free estimate."""
        ...

    def measured_quality(self, data: MonitorData, *, min_labels: int) -> Quality:
        """The headline figure (and the others) on the window's labelled rows."""
        ...

    def estimate(
        self,
        reference: MonitorData,
        current: MonitorData,
        *,
        base: Estimate | None,
        min_labels: int,
    ) -> Estimate | None:
        """The label-free estimate of the headline figure; ``base`` is the accuracy
        estimate the check computed (the open-world one, or CBPE)."""
        ...

    def describe(self, current: MonitorData) -> dict[str, Any]:
        """What the window's JSON adds for this kind."""
        ...


class ClassificationMonitor:
    """A classifier: accuracy, estimated from calibrated confidences (CBPE, open world)."""

    metric = "accuracy"

    def reference_data(
        self,
        frame: pd.DataFrame,
        embeddings: np.ndarray | None,
        *,
        spec: SpecialistSpec,
        vocabulary: Collection[str],
    ) -> MonitorData:
        from monitors.frames import reference_data

        return reference_data(
            frame,
            embeddings,
            vocabulary=vocabulary,
            escalation_threshold=spec.escalation.confidence_threshold,
        )

    def window_data(
        self, raw: pd.DataFrame, *, spec: SpecialistSpec, vocabulary: Collection[str]
    ) -> MonitorData:
        from monitors.frames import window_data

        return window_data(
            raw, vocabulary=vocabulary, escalation_threshold=spec.escalation.confidence_threshold
        )

    def reference_quality(self, data: MonitorData) -> tuple[float, float]:
        from monitors.thresholds import accuracy_profile

        return accuracy_profile(data)

    def measured_quality(self, data: MonitorData, *, min_labels: int) -> Quality:
        from monitors.quality import measured_quality

        return measured_quality(data, min_labels=min_labels)

    def estimate(
        self,
        reference: MonitorData,
        current: MonitorData,
        *,
        base: Estimate | None,
        min_labels: int,
    ) -> Estimate | None:
        return base

    def describe(self, current: MonitorData) -> dict[str, Any]:
        return {}


class ExtractionMonitor:
    """An extractor: entity F1, estimated from calibrated span confidences; its answers'
    shape (``monitors.entities``) adds drift signals."""

    metric = "entity_f1"

    def reference_data(
        self,
        frame: pd.DataFrame,
        embeddings: np.ndarray | None,
        *,
        spec: SpecialistSpec,
        vocabulary: Collection[str],
    ) -> MonitorData:
        from monitors.entities import extraction_reference_data

        return extraction_reference_data(
            frame,
            embeddings,
            vocabulary=vocabulary,
            escalation_threshold=spec.escalation.confidence_threshold,
            required=spec.required,
        )

    def window_data(
        self, raw: pd.DataFrame, *, spec: SpecialistSpec, vocabulary: Collection[str]
    ) -> MonitorData:
        from monitors.entities import extraction_window_data

        return extraction_window_data(
            raw,
            vocabulary=vocabulary,
            escalation_threshold=spec.escalation.confidence_threshold,
            required=spec.required,
        )

    def reference_quality(self, data: MonitorData) -> tuple[float, float]:
        from monitors.entity_quality import reference_entity_quality

        return reference_entity_quality(data)

    def measured_quality(self, data: MonitorData, *, min_labels: int) -> Quality:
        from monitors.entity_quality import measured_entity_quality

        return measured_entity_quality(data, min_labels=min_labels)

    def estimate(
        self,
        reference: MonitorData,
        current: MonitorData,
        *,
        base: Estimate | None,
        min_labels: int,
    ) -> Estimate | None:
        from monitors.entity_quality import estimate_entity_f1, fit_miss_model

        return estimate_entity_f1(
            current, fit_miss_model(reference), base=base, min_labels=min_labels
        )

    def describe(self, current: MonitorData) -> dict[str, Any]:
        from monitors.entities import describe_answers

        return describe_answers(current)


def monitor_kind(task: str) -> MonitorKind:
    """The monitoring side of the task kind ``task`` (``SpecialistSpec.task``)."""
    if task == "classification":
        return ClassificationMonitor()
    if task == "extraction":
        return ExtractionMonitor()
    raise ValueError(f"unknown task {task!r}; known: classification, extraction")
