"""What a check does differently per task kind, behind one small interface.

A classifier and an extractor are checked by the same steps (``monitors.check.assess``):
frames, drift signals with calibrated thresholds, quality on labelled rows, a label-free
estimate, the policy. What differs is how the rows are read (an extractor's answers add the
columns of ``monitors.entities``, which ``monitors.drift`` picks up as signals by themselves),
which quality figure is the headline (accuracy, or entity F1) and how it is estimated
without labels. ``monitor_kind(spec.task)`` is the one place a check dispatches on the task.

``MonitorKind`` holds a classifier's behaviour as the default; another kind overrides only
what it does differently (a new kind adds a subclass, not a branch in ``assess``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from monitors import entities, entity_quality, frames, quality, thresholds

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    import numpy as np
    import pandas as pd

    from lifecycle.config.spec import SpecialistSpec
    from monitors.frames import MonitorData
    from monitors.results import Estimate, Quality


class MonitorKind:
    """A task kind as monitoring sees it; the defaults are a classifier's.

    The methods are the interface ``monitors.check`` calls; what a kind changes is the
    functions behind them (class attributes), so a kind swaps a function without restating
    a method's signature.
    """

    #: The headline quality figure (``Quality.metric``): what ``quality_drop`` applies to.
    metric: ClassVar[str] = "accuracy"
    #: Readers of the reference rows and of a traffic window (the options of ``_reading``).
    _read_reference: ClassVar[Callable[..., MonitorData]] = staticmethod(frames.reference_data)
    _read_window: ClassVar[Callable[..., MonitorData]] = staticmethod(frames.window_data)
    #: The headline figure on the reference (measured, estimated) and on labelled rows.
    _reference_quality: ClassVar[Callable[..., tuple[float, float]]] = staticmethod(
        thresholds.accuracy_profile
    )
    _measured_quality: ClassVar[Callable[..., Quality]] = staticmethod(quality.measured_quality)

    def _reading(self, spec: SpecialistSpec, vocabulary: Collection[str]) -> dict[str, Any]:
        """The readers' keyword arguments, from the specialist's spec."""
        return {
            "vocabulary": vocabulary,
            "escalation_threshold": spec.escalation.confidence_threshold,
        }

    def reference_data(
        self,
        frame: pd.DataFrame,
        embeddings: np.ndarray | None,
        *,
        spec: SpecialistSpec,
        vocabulary: Collection[str],
    ) -> MonitorData:
        """The champion's reference rows as monitor data."""
        return self._read_reference(frame, embeddings, **self._reading(spec, vocabulary))

    def window_data(
        self, raw: pd.DataFrame, *, spec: SpecialistSpec, vocabulary: Collection[str]
    ) -> MonitorData:
        """A ``TrafficStore.window`` frame as monitor data."""
        return self._read_window(raw, **self._reading(spec, vocabulary))

    def reference_quality(self, data: MonitorData) -> tuple[float, float]:
        """The reference's measured headline figure and its label-free estimate."""
        return self._reference_quality(data)

    def measured_quality(self, data: MonitorData, *, min_labels: int) -> Quality:
        """The headline figure (and the others) on the window's labelled rows."""
        return self._measured_quality(data, min_labels=min_labels)

    def estimate(
        self,
        reference: MonitorData,
        current: MonitorData,
        *,
        base: Estimate | None,
        min_labels: int,
    ) -> Estimate | None:
        """The label-free estimate of the headline figure; ``base`` is the accuracy
        estimate the check computed (the open-world one, or CBPE): a classifier's own."""
        return base

    def describe(self, current: MonitorData) -> dict[str, Any]:
        """What the window's JSON adds for this kind."""
        return {}


class ClassificationMonitor(MonitorKind):
    """A classifier: accuracy, estimated from calibrated confidences (CBPE, open world)."""


class ExtractionMonitor(MonitorKind):
    """An extractor: entity F1, estimated from calibrated span confidences; its answers'
    shape (``monitors.entities``) adds drift signals."""

    metric = entity_quality.METRIC
    _read_reference = staticmethod(entities.extraction_reference_data)
    _read_window = staticmethod(entities.extraction_window_data)
    _reference_quality = staticmethod(entity_quality.reference_entity_quality)
    _measured_quality = staticmethod(entity_quality.measured_entity_quality)

    def _reading(self, spec: SpecialistSpec, vocabulary: Collection[str]) -> dict[str, Any]:
        # The fields every answer should have: their absence is a drift signal of its own.
        return MonitorKind._reading(self, spec, vocabulary) | {"required": spec.required}

    def estimate(
        self, reference: MonitorData, current: MonitorData, **options: Any
    ) -> Estimate | None:
        # ``options`` are the base's keywords (base, min_labels), handed on unchanged.
        model = entity_quality.fit_miss_model(reference)
        return entity_quality.estimate_entity_f1(current, model, **options)

    def describe(self, current: MonitorData) -> dict[str, Any]:
        return entities.describe_answers(current)


_KINDS: dict[str, type[MonitorKind]] = {
    "classification": ClassificationMonitor,
    "extraction": ExtractionMonitor,
}


def monitor_kind(task: str) -> MonitorKind:
    """The monitoring side of the task kind ``task`` (``SpecialistSpec.task``)."""
    if task not in _KINDS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(_KINDS)}")
    return _KINDS[task]()
