"""What one running gateway holds (on ``app.state.gw``), shared by the routers, and the
figures refreshed from it off the request path (gauges, outcomes from the traffic store)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lifecycle.config.settings import Settings
from lifecycle.config.spec import SpecialistSpec
from lifecycle.serving.engine import ModelEngine
from lifecycle.serving.metrics import GatewayMetrics
from lifecycle.serving.outcomes import Outcome, read_outcomes
from lifecycle.serving.sync import RegistrySync

logger = logging.getLogger(__name__)


@dataclass
class Counters:
    requests: int = 0
    escalations: int = 0


@dataclass
class Gateway:
    """What one running gateway holds."""

    settings: Settings
    specs: dict[str, SpecialistSpec]
    engine: ModelEngine
    sync: RegistrySync
    writer: Any
    metrics: GatewayMetrics
    fallbacks: dict[str, Any]
    #: Builds a registry client: the admin routes' as well as the sync's (tests pass a fake).
    registry_factory: Callable[[], Any]
    #: Per specialist whose ``escalation.on_out_of_scope`` is 'review': the review queue that
    #: takes its out-of-scope texts, whatever its ``escalation.fallback`` is.
    review_queues: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, Counters] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    #: Per specialist, what the traffic store last said (cost per correct answer, monitor
    #: verdict): ``lifecycle.serving.outcomes``, refreshed after each registry poll.
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    #: Why the last read of them failed (None: it worked), so that an outage is logged once.
    outcomes_error: str | None = None
    #: Per specialist, proposed labels this process accepted (``lifecycle.labels.feedback``): they
    #: count against LIFECYCLE_MAX_PROPOSED_LABELS before the writer has stored them.
    proposed_accepted: dict[str, set[str]] = field(default_factory=dict)


def cost_of(gw: Gateway, name: str) -> tuple[float, float]:
    from lifecycle.serving.cost import estimate_cost

    counters = gw.counters[name]
    cost = estimate_cost(
        requests=counters.requests,
        escalations=counters.escalations,
        specialist_price_per_1k=gw.settings.specialist_price_per_1k,
        fallback_price_per_1k=gw.settings.fallback_price_per_1k,
    )
    return cost.per_1k, cost.fallback_only_per_1k


async def refresh_outcomes(gw: Gateway) -> None:
    """Re-read every specialist's figures; on a store error keep the last ones and say so
    (once per distinct error: the poller retries every few seconds)."""
    try:
        gw.outcomes = await asyncio.to_thread(
            read_outcomes, gw.writer.store, list(gw.specs), gw.settings
        )
    except Exception as exc:  # an outage (or a database not migrated yet): keep serving
        error = f"{type(exc).__name__}: {exc}"[:300]
        if error != gw.outcomes_error:
            logger.info("cost and monitor status not read from the traffic store: %s", error)
        gw.outcomes_error = error
        return
    if gw.outcomes_error is not None:
        logger.info("cost and monitor status read from the traffic store again")
    gw.outcomes_error = None


def refresh_gauges(gw: Gateway) -> None:
    m = gw.metrics
    for queue, depth in gw.engine.queue_depths.items():
        m.queue_depth.labels(queue).set(depth)
    m.shadow_pauses.set(gw.engine.priority.pauses)
    m.registry_up.set(1 if gw.sync.state.registry_up else 0)
    m.store_up.set(1 if gw.writer.healthy else 0)
    m.store_pending.labels("memory").set(gw.writer.pending_memory)
    m.store_pending.labels("journal").set(gw.writer.pending_journal)
    for name in gw.specs:
        cost, fallback_only = cost_of(gw, name)
        m.cost_per_1k.labels(name, "specialist").set(cost)
        m.cost_per_1k.labels(name, "fallback_only").set(fallback_only)
        _outcome_gauges(gw, name)
        route = gw.engine.routes.get(name)
        if route is not None:
            m.model_version.labels(name, "champion").set(route.champion.version)
            m.model_version.labels(name, "challenger").set(
                route.challenger.version if route.challenger else 0
            )


def _outcome_gauges(gw: Gateway, name: str) -> None:
    """The store-derived gauges: NaN while a cost is unknown, -1 while no verdict is."""
    m = gw.metrics
    outcome = gw.outcomes.get(name) or Outcome()
    cost = outcome.cost
    nan = float("nan")
    per_correct = cost.per_correct if cost is not None else None
    fallback_only = cost.fallback_only_per_correct if cost is not None else None
    m.cost_per_correct.labels(name).set(nan if per_correct is None else per_correct)
    m.fallback_cost_per_correct.labels(name).set(nan if fallback_only is None else fallback_only)
    m.monitor_status.labels(name).set(outcome.monitor_status)
