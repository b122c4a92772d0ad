"""The loop's Prefect events: names, the specialist as their resource, and one emitter.

Deployment triggers match on these names (``lifecycle.drift.detected`` starts the retrain
flow), and the Prefect UI's event feed shows the loop's history per specialist.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

DRIFT_DETECTED = "lifecycle.drift.detected"
CANDIDATE_REGISTERED = "lifecycle.candidate.registered"
PROMOTED = "lifecycle.promoted"
REJECTED = "lifecycle.rejected"
ROLLED_BACK = "lifecycle.rolled_back"
RETRAIN_FAILED = "lifecycle.retrain.failed"


def resource(specialist: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"lifecycle.specialist.{specialist}",
        "prefect.resource.name": specialist,
        "lifecycle.specialist": specialist,
    }


def emit(event: str, specialist: str, payload: dict[str, Any]) -> str | None:
    """Emit ``event`` about ``specialist``; returns the event id (None if not sent).

    An event that cannot be sent is logged, never raised: the step it reports already
    happened and is recorded in MLflow and the traffic store.
    """
    from prefect.events import emit_event

    try:
        sent = emit_event(event=event, resource=resource(specialist), payload=payload)
    except Exception as exc:
        logger.warning("event %s for %s not sent: %s", event, specialist, exc)
        return None
    return None if sent is None else str(sent.id)
