"""The retrain flow: a challenger from labelled traffic, registered and aliased for shadow.

Started by ``lifecycle.drift.detected`` (a deployment trigger), a schedule, or by hand
(``lifecycle retrain``). At most one runs per specialist: a global concurrency limit of one
slot per specialist, plus the step's own idempotence (a champion that already has a
challenger trained from it gets no second one), so a repeated trigger for the same drift
starts nothing new and a flow retried after a crash does not register twice.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prefect import flow, get_run_logger, task

from flows import events
from flows.context import context


def retrain_limit(specialist: str) -> str:
    return f"lifecycle-retrain-{specialist}"


def ensure_limit(name: str) -> None:
    """Create the one-slot concurrency limit if the server does not have it yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )


@task
def train_challenger(specialist: str, trigger: str) -> dict[str, Any]:
    from lifecycle.loop import retrain_from_traffic

    with context(specialist) as ctx:
        outcome = retrain_from_traffic(
            ctx.settings, ctx.spec, store=ctx.store, registry=ctx.registry, trigger=trigger
        )
        if outcome.status == "needs_labels":
            ctx.alert(
                "retrain",
                "NEEDS_LABELS",
                f"retraining {specialist} needs {outcome.missing} more labels: {outcome.reason}",
                reasons=[
                    {
                        "signal": "labels",
                        "value": outcome.plan.get("human_labels", 0)
                        + outcome.plan.get("fallback_labels", 0),
                        "threshold": ctx.spec.monitoring.min_labels,
                    }
                ],
                champion_version=outcome.champion_version,
                actions=[
                    f"label {outcome.missing} more requests: "
                    f"POST /v1/specialists/{specialist}/feedback"
                ],
            )
        elif outcome.status == "registered":
            ctx.alert(
                "retrain",
                "CANDIDATE",
                f"challenger v{outcome.challenger_version} registered; the gateway shadows it",
                champion_version=outcome.champion_version,
                extra={"evaluation": outcome.evaluation},
                actions=[f"lifecycle status -s {specialist}"],
            )
    return outcome.as_dict()


@flow(name="lifecycle-retrain", log_prints=True)
def retrain_flow(specialist: str, trigger: str = "drift") -> dict[str, Any]:
    """Train a challenger for one specialist from its labelled traffic (one at a time)."""
    from prefect.concurrency.sync import concurrency

    logger = get_run_logger()
    limit = retrain_limit(specialist)
    ensure_limit(limit)
    try:
        with concurrency(limit, occupy=1, timeout_seconds=1, strict=True):
            outcome = train_challenger(specialist, trigger)
    except TimeoutError:
        logger.info("%s: another retrain is running; this trigger starts nothing", specialist)
        return {"status": "skipped", "reason": "another retrain of this specialist is running"}
    except Exception as exc:
        # The aliases are untouched (registration is the step's last write): say so, loudly.
        with context(specialist) as ctx:
            ctx.alert(
                "retrain",
                "RETRAIN_FAILED",
                f"retraining {specialist} failed: {exc}"[:500],
                actions=[f"lifecycle retrain -s {specialist}   # after fixing the cause"],
            )
        events.emit(events.RETRAIN_FAILED, specialist, {"error": str(exc)[:1000]})
        raise
    logger.info("%s: %s (%s)", specialist, outcome["status"], outcome["reason"])
    if outcome["status"] == "registered":
        events.emit(events.CANDIDATE_REGISTERED, specialist, outcome)
    return outcome
