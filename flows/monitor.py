"""The monitor flow: check the champion's newest window, alert, and ask for a retrain.

Runs per specialist on the spec's cron schedule. A verdict that asks for retraining emits
``lifecycle.drift.detected`` with the verdict as payload; the retrain deployment's trigger
listens for it. The same run guards a fresh promotion: a significant drop in the new
champion's labelled accuracy rolls it back.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from flows import events
from flows.context import context
from lifecycle.notify import texts

# Store or registry briefly down: retry with growing waits instead of giving up the loop.
RETRY_DELAYS: list[float] = [2.0, 10.0, 30.0]


@task(retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS)
def check(specialist: str) -> dict[str, Any]:
    from monitors.check import run_check

    with context(specialist) as ctx:
        result = run_check(ctx.settings, ctx.spec, store=ctx.store, registry=ctx.registry)
    payload = result.verdict.as_dict()
    payload["alert"] = None if result.alert is None else result.alert.status
    return payload


@task(retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS)
def guard(specialist: str) -> dict[str, Any]:
    from lifecycle.steps import guard_promotion

    with context(specialist) as ctx:
        outcome = guard_promotion(ctx.settings, ctx.spec, store=ctx.store, registry=ctx.registry)
        if outcome.action == "rolled_back":
            assert outcome.decision is not None
            text = texts.rolled_back(
                specialist,
                champion_version=outcome.champion_version,
                previous_version=outcome.previous_version,
            )
            ctx.alert(
                "rollback",
                "ROLLED_BACK",
                text.summary,
                reasons=[
                    {
                        "signal": "accuracy_drop",
                        "value": outcome.decision.difference,
                        "threshold": -ctx.spec.promotion.margin,
                        "detail": "; ".join(outcome.decision.reasons),
                    }
                ],
                champion_version=outcome.previous_version,
                actions=text.actions,
            )
    return outcome.as_dict()


@flow(name="lifecycle-monitor", log_prints=True)
def monitor_flow(specialist: str) -> dict[str, Any]:
    """Check one specialist's traffic; emit drift.detected when quality asks for a retrain."""
    logger = get_run_logger()
    verdict = check(specialist)
    logger.info("%s: %s %s", specialist, verdict["status"], verdict.get("drifted"))
    if verdict["retrain"]:
        events.emit(events.DRIFT_DETECTED, specialist, _event_payload(verdict))
    guarded = guard(specialist)
    if guarded["action"] == "rolled_back":
        events.emit(events.ROLLED_BACK, specialist, guarded)
    return {"verdict": verdict, "guardrail": guarded}


def _event_payload(verdict: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "specialist",
        "status",
        "champion_version",
        "reasons",
        "drifted",
        "report_uri",
        "run_id",
    )
    discovery = verdict.get("discovery") or {}
    return {k: verdict.get(k) for k in keep} | {
        "new_traffic": discovery.get("headline"),
        "window": {
            k: verdict["window"].get(k)
            for k in ("rows", "labelled", "first_request", "last_request")
        },
    }
