"""What ``lifecycle demo`` measures and prints: the timeline, the clients' figures, the summary.

A classifier's figure is accuracy; an extractor's is entity micro-F1 on exact spans (with exact
match beside it). Both are counted from what the gateway answered, per phase of the stream:
before the drift, during it (the first champion), and after a promotion.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lifecycle.synthetic.simulate import PhaseStats


@dataclass
class Timeline:
    started: float = field(default_factory=time.perf_counter)
    events: list[tuple[float, int | None, str, str]] = field(default_factory=list)

    def add(self, request: int | None, what: str, detail: str = "") -> None:
        at = time.perf_counter() - self.started
        self.events.append((at, request, what, detail))
        where = f"request {request:>5}" if request is not None else " " * 13
        print(f"  {at:6.0f} s  {where}  {what:<22} {detail}", flush=True)


@dataclass
class Accuracy:
    """Answers the clients got: right ones (a classifier's label; an extractor's exact
    match), and for an extractor the span counts of entity micro-F1."""

    correct: int = 0
    total: int = 0
    true_spans: int = 0
    predicted_spans: int = 0
    gold_spans: int = 0

    def add(self, correct: int, total: int) -> None:
        self.correct += correct
        self.total += total

    def add_phase(self, stats: PhaseStats) -> None:
        """Count one phase of a simulation report."""
        self.add(stats.correct, stats.requests)
        self.true_spans += stats.true_spans
        self.predicted_spans += stats.predicted_spans
        self.gold_spans += stats.gold_spans

    def merge(self, other: Accuracy) -> None:
        self.add(other.correct, other.total)
        self.true_spans += other.true_spans
        self.predicted_spans += other.predicted_spans
        self.gold_spans += other.gold_spans

    @property
    def value(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    @property
    def f1(self) -> float:
        """Entity micro-F1 on exact spans (NaN without requests)."""
        if not self.total:
            return float("nan")
        spans = self.predicted_spans + self.gold_spans
        return 2 * self.true_spans / spans if spans else 1.0


@dataclass
class DemoResult:
    before: Accuracy
    during: Accuracy
    after: Accuracy
    promoted_version: int | None
    timeline: Timeline
    detection_delay: int | None
    seconds: float
    #: Requests served before the last promotion took effect (the stream index it happened at).
    promoted_at: int | None = None
    #: The simulated person's labels: from the label-request queue, at random, refused.
    labels: dict[str, int] = field(default_factory=dict)
    #: Drifted traffic answered by every promoted champion, from the first promotion on, and
    #: the stream index of that first promotion: the figure that does not hang on how late
    #: the last promotion happened to come.
    after_first: Accuracy = field(default_factory=Accuracy)
    first_promoted_at: int | None = None
    #: The specialist's task: "classification" (figure: accuracy) or "extraction" (entity F1).
    task: str = "classification"

    def seconds_at(self, what: str) -> float | None:
        """When the timeline first recorded ``what`` (seconds from the start)."""
        return next((at for at, _, name, _ in self.timeline.events if name == what), None)

    def figure(self, score: Accuracy) -> float:
        """The headline figure of a score: accuracy, or an extractor's entity micro-F1."""
        return score.f1 if self.task == "extraction" else score.value

    @property
    def ratio(self) -> float:
        """The figure after the promotion over the figure before the drift."""
        if not self.before.total:
            return float("nan")
        return self.figure(self.after) / self.figure(self.before)


def summary(result: DemoResult, settings_home: Path, tracking_uri: str) -> str:
    extractor = result.task == "extraction"
    name = "entity F1" if extractor else "accuracy"

    def line(score: Accuracy) -> str:
        text = f"{result.figure(score):.3f} on {score.total} requests"
        return text + (f" (exact match {score.value:.3f})" if extractor else "")

    lines = [
        "",
        f"{name} before the drift (champion v1): {line(result.before)}",
        f"{name} during the drift (champion v1): {line(result.during)}",
    ]
    if result.promoted_version is not None:
        lines.append(
            f"{name} after the promotion (v{result.promoted_version}, drifted traffic): "
            f"{line(result.after)} ({result.ratio:.1%} of before the drift)"
        )
    else:
        lines.append("no challenger was promoted in this run")
    if result.detection_delay is not None:
        lines.append(f"detected {result.detection_delay} requests after the onset")
    lines += [
        f"done in {result.seconds / 60:.1f} min",
        "",
        "Look at what it produced:",
        f"  MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {tracking_uri}",
        f"  Prefect UI: PREFECT_HOME={settings_home / 'prefect'} .venv/bin/prefect server start",
    ]
    return "\n".join(lines)
