"""A specialist's monitoring history as one figure per check: what on-call opens first.

Every check logs one point per metric to the specialist's monitoring run in MLflow, at the
check's number (1, 2, 3...) as its step, so the MLflow UI's x-axis counts checks. After
logging, a check draws the recent checks (``RECENT_CHECKS``): each drift signal's score
against its threshold, one small panel per signal, and the estimated and measured accuracy,
with the champion's promotions and rollbacks as vertical lines. The figure goes into the
check's own folder (``checks/TIME/signals.png``) beside its Evidently report and verdict.

The markers and the drawing are pure functions of plain numbers; ``check_number`` and
``log_history_figure`` read and write through ``lifecycle.registry.models.Registry`` only.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from monitors.results import SIGNALS

if TYPE_CHECKING:
    from lifecycle.registry.models import Registry

logger = logging.getLogger(__name__)

#: Run tag holding how many checks the monitoring run has recorded.
CHECKS_TAG = "lifecycle.checks"
#: How many of the newest checks the figure shows.
RECENT_CHECKS = 50
FIGURE_NAME = "signals.png"
#: Metrics every check logs once; counts the checks of a run from before ``CHECKS_TAG``.
COUNTED_METRIC = "status_level"
#: The accuracy panel's series: metric, legend, line style, colour (promotions are C2 green,
#: rollbacks C3 red: the series keep clear of both).
ACCURACY_SERIES = (
    ("estimated_accuracy", "estimated", "-", "C0"),
    ("estimated_accuracy_low", "estimated, low bound", ":", "C0"),
    ("accuracy", "measured (labels)", "-", "black"),
    # An extractor's figures (entity F1): the same panel, a classifier has no points here.
    ("estimated_entity_f1", "estimated F1", "-", "C1"),
    ("estimated_entity_f1_low", "estimated F1, low bound", ":", "C1"),
    ("entity_f1", "measured F1 (labels)", "-", "dimgray"),
)

#: ``(check number, value)`` points of one metric, by check number.
Series = Sequence[tuple[int, float]]


@dataclass(frozen=True)
class Marker:
    """The champion changed between two checks; ``step`` is the first check of the new one."""

    step: int
    kind: str  # "promotion" or "rollback"
    from_version: int
    to_version: int

    @property
    def label(self) -> str:
        return f"{self.kind} v{self.from_version}\u2192v{self.to_version}"


def recent(series: Series, *, last: int, count: int = RECENT_CHECKS) -> list[tuple[int, float]]:
    """The points of checks ``last - count + 1`` to ``last``.

    Also what drops a run's old points logged at timestamp steps (far beyond any count)."""
    return [(s, v) for s, v in series if last - count < s <= last]


def champion_changes(
    champion: Series, *, rolled_back: Collection[int] | None = None
) -> list[Marker]:
    """Promotions and rollbacks, read off the ``champion_version`` each check logged.

    A move to a higher version is a promotion. A move to a lower one is a rollback, unless
    ``rolled_back`` (the versions the registry tagged as rolled back) is given and does not
    hold the version left: then it was a forced promotion of an older version.
    """
    markers: list[Marker] = []
    points = [(s, v) for s, v in sorted(champion) if math.isfinite(v)]
    for (_, before), (step, after) in itertools.pairwise(points):
        old, new = int(before), int(after)
        if new == old:
            continue
        down_is_rollback = rolled_back is None or old in rolled_back
        kind = "rollback" if new < old and down_is_rollback else "promotion"
        markers.append(Marker(step=step, kind=kind, from_version=old, to_version=new))
    return markers


def history_figure(
    series: Mapping[str, Series],
    *,
    specialist: str,
    markers: Sequence[Marker] = (),
    signals: Sequence[str] = SIGNALS,
) -> Any:
    """One panel per drift signal (score and threshold) and one for accuracy, x = check number.

    ``series`` maps metric names as the check logs them (``drift_text``, ``threshold_text``,
    ``estimated_accuracy``, ``accuracy``...) to their points; signals without points are left
    out. Returns a closed matplotlib figure, ready for ``Registry.log_figure``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    drawn = [name for name in signals if series.get(f"drift_{name}")]
    panels = len(drawn) + 1
    cols = 2 if panels > 3 else 1
    rows = -(-panels // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(6.0 * cols, 2.1 * rows + 0.6), sharex=True, squeeze=False
    )
    flat = list(axes.ravel())
    for ax, name in zip(flat, drawn, strict=False):
        _plot(ax, series.get(f"drift_{name}", ()), label="score", color="C0", style="-")
        _plot(ax, series.get(f"threshold_{name}", ()), label="threshold", color="C3", style="--")
        ax.set_title(name, fontsize=9)
    accuracy = flat[len(drawn)]
    for key, label, style, color in ACCURACY_SERIES:
        _plot(accuracy, series.get(key, ()), label=label, color=color, style=style)
    extractor = any(series.get(key) for key in ("estimated_entity_f1", "entity_f1"))
    accuracy.set_title("entity F1" if extractor else "accuracy", fontsize=9)
    for ax in flat[:panels]:
        for m in markers:
            # Between the last check of the old champion and the first of the new one.
            ax.axvline(m.step - 0.5, color="C2" if m.kind == "promotion" else "C3", lw=1.2)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for m in markers:
        accuracy.annotate(
            m.label,
            (m.step - 0.5, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            rotation=90,
            va="top",
            ha="right",
        )
    for ax in flat[panels:]:
        ax.set_visible(False)
    for ax in flat[max(0, panels - cols) : panels]:
        # The lowest visible panel of each column carries the axis (sharex hides the rest).
        ax.set_xlabel("check", fontsize=8)
        ax.tick_params(labelbottom=True)
    if drawn:
        flat[0].legend(fontsize=7, loc="upper left")
    if accuracy.get_legend_handles_labels()[0]:
        accuracy.legend(fontsize=7, loc="lower left")
    steps = [s for points in series.values() for s, _ in points]
    span = f"checks {min(steps)}-{max(steps)}" if steps else "no checks yet"
    fig.suptitle(f"{specialist}: drift signals against thresholds, accuracy ({span})", fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig


def _plot(ax: Any, points: Series, *, label: str, color: str, style: str) -> None:
    if not points:
        return
    xs, ys = zip(*points, strict=True)
    ax.plot(xs, ys, style, color=color, label=label, lw=1.2, marker="." if len(xs) < 20 else None)


# -- I/O through the registry ---------------------------------------------------------------


def check_number(registry: Registry, run_id: str) -> int:
    """The number of the check about to be logged: one more than the run has recorded.

    Counted by the run tag ``lifecycle.checks``; a run from before that tag (whose steps were
    timestamps) is counted by its ``status_level`` points, which every check logs once.
    """
    try:
        return int(registry.run_tags(run_id)[CHECKS_TAG]) + 1
    except (KeyError, ValueError):
        return len(registry.metric_history(run_id, COUNTED_METRIC)) + 1


def log_history_figure(
    registry: Registry,
    run_id: str,
    *,
    specialist: str,
    step: int,
    folder: str,
    count: int = RECENT_CHECKS,
) -> str | None:
    """Draw the run's last ``count`` checks and log the figure into the check's ``folder``.

    Returns the artifact path, or None when it could not be drawn: the figure is a view of
    what the check recorded, so its failure is logged and never fails the check.
    """
    try:
        logged = registry.run_metrics(run_id)
        keys = [k for k in logged if k.startswith(("drift_", "threshold_"))]
        keys += [k for k, *_ in ACCURACY_SERIES if k in logged]
        series = {
            k: recent(registry.metric_history(run_id, k), last=step, count=count) for k in keys
        }
        # One check more: a change at the window's first check is seen against the one before.
        champion = recent(
            registry.metric_history(run_id, "champion_version"), last=step, count=count + 1
        )
        markers = champion_changes(champion, rolled_back=_rolled_back(registry, specialist))
        figure = history_figure(
            series, specialist=specialist, markers=[m for m in markers if m.step > step - count]
        )
        path = f"{folder}/{FIGURE_NAME}"
        registry.log_figure(run_id, figure, path)
        return path
    except Exception as exc:
        logger.warning("no history figure for %s check %d: %s", specialist, step, exc)
        return None


def _rolled_back(registry: Registry, name: str) -> set[int] | None:
    """Versions the registry tagged as rolled back; None when the registry cannot say."""
    from lifecycle.registry.models import TAG

    try:
        return {v.version for v in registry.versions(name) if f"{TAG}rolled_back" in v.tags}
    except Exception:
        return None
