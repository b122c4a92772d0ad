"""What the gateway learns from the traffic store, off the request path: for each specialist,
the cost per correct answer (``lifecycle.serving.cost``) and its monitor's latest verdict.

Read after every registry poll (``RegistrySync.after_sync`` runs ``state.refresh_outcomes``),
in a thread, and kept on the gateway (``Gateway.outcomes``) for /metrics and GET
/v1/specialists. A store that cannot be read leaves the last figures in place: the gateway
serves on, the figures just age.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lifecycle.config.settings import Settings
    from lifecycle.serving.cost import CostPerCorrect

#: ``monitors.results.Status`` in its order, from calm to urgent (serving does not import
#: monitors; tests/serving/test_gateway_outcomes.py holds the two equal).
STATUS_ORDER = ("OK", "WARN", "DRIFT", "QUALITY_DROP", "NEEDS_LABELS", "NEEDS_DATA")
#: The gauge's value while no monitor verdict is on record.
UNKNOWN = -1
#: The alert that closes a problem: the monitor says OK again.
RESOLVED = "RESOLVED"


@dataclass(frozen=True)
class Outcome:
    """One specialist's figures as last read from the traffic store."""

    cost: CostPerCorrect | None = None
    #: The newest monitor alert's verdict (``RESOLVED`` after a problem closed); None: none.
    monitor_verdict: str | None = None
    #: People's labels per label (``TrafficStore.label_counts``): the listing shows those the
    #: champion does not know as ``proposed_labels``.
    label_counts: dict[str, int] = field(default_factory=dict)

    @property
    def monitor_status(self) -> int:
        """The verdict's index in ``STATUS_ORDER`` (RESOLVED counts as OK), or ``UNKNOWN``."""
        return monitor_level(self.monitor_verdict)

    def listing(self) -> dict[str, Any]:
        """The fields of GET /v1/specialists (``SpecialistOut``) these figures fill."""
        c = self.cost
        return {
            "cost_per_correct": c.per_correct if c else None,
            "fallback_only_cost_per_correct": c.fallback_only_per_correct if c else None,
            "correct_measured_on": c.correct_measured_on if c else 0,
            "answer_accuracy": c.accuracy if c else None,
            "monitor_verdict": self.monitor_verdict,
        }


def monitor_level(verdict: str | None) -> int:
    if verdict == RESOLVED:
        return STATUS_ORDER.index("OK")
    return STATUS_ORDER.index(verdict) if verdict in STATUS_ORDER else UNKNOWN


def read_outcomes(store: Any, names: Iterable[str], settings: Settings) -> dict[str, Outcome]:
    """Each specialist's figures from the store (blocking; raises when it cannot be read).

    The cost is over the newest ``OUTCOME_WINDOW`` requests: a current figure at a bounded
    cost per read.
    """
    from lifecycle.serving.cost import OUTCOME_WINDOW, OutcomeCounts, cost_per_correct

    out = {}
    for name in names:
        counts = OutcomeCounts(**store.outcome_counts(name, last=OUTCOME_WINDOW))
        cost = cost_per_correct(
            counts,
            specialist_price_per_1k=settings.specialist_price_per_1k,
            fallback_price_per_1k=settings.fallback_price_per_1k,
            fallback_accuracy=settings.fallback_accuracy,
        )
        out[name] = Outcome(
            cost=cost,
            monitor_verdict=store.latest_alert_verdict(name),
            label_counts=store.label_counts(name),
        )
    return out
