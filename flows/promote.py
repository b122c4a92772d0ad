"""The shadow-and-promote flow: gate the shadowed challenger against the champion.

Runs on a schedule (and after a candidate is registered). The gate is a sequential paired
test on labelled shadowed requests, valid at every run (``lifecycle.promotion.gate``); promotion
moves the aliases, emits ``lifecycle.promoted`` and alerts; a failing challenger loses its
alias and the alert says why; an undecided one outgrown by the labels that arrived since its
training is superseded (alias removed, alert ``SUPERSEDED``, event ``lifecycle.rejected``)
so that the next retrain can start; undecided otherwise: nothing happens.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from flows import events
from flows.context import context
from flows.monitor import RETRY_DELAYS
from lifecycle.notify import texts


@task(retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS)
def decide(specialist: str) -> dict[str, Any]:
    from lifecycle.steps import gate_challenger

    with context(specialist) as ctx:
        outcome = gate_challenger(ctx.settings, ctx.spec, store=ctx.store, registry=ctx.registry)
        d = outcome.decision
        if d is None:
            return outcome.as_dict()
        text = texts.gate_outcome(
            outcome.action,
            specialist,
            challenger_version=outcome.challenger_version,
            champion_version=outcome.champion_version,
            challenger_accuracy=d.challenger_f1
            if d.task == "extraction"
            else d.challenger_accuracy,
            champion_accuracy=d.champion_f1 if d.task == "extraction" else d.champion_accuracy,
            metric="mean F1 per request" if d.task == "extraction" else "accuracy",
            n_labelled=d.n_labelled,
            reasons=d.reasons,
        )
        if text is not None:
            ctx.alert(
                "gate",
                outcome.action.upper(),
                text.summary,
                reasons=_reasons(d, ctx.spec.promotion),
                champion_version=outcome.champion_version,
                actions=text.actions,
            )
    return outcome.as_dict()


def _reasons(d: Any, policy: Any) -> list[dict[str, Any]]:
    """The alert's evidence: the statistic's difference always (accuracy, or an extractor's
    per-request F1), errors and latency where they were measured."""
    out: list[dict[str, Any]] = [
        {
            "signal": "f1_difference" if d.task == "extraction" else "accuracy_difference",
            "value": d.difference,
            "threshold": -d.margin,
            "detail": "; ".join(d.reasons),
        }
    ]
    calls = d.n_pairs + d.shadow_errors
    if d.shadow_errors:
        out.append(
            {
                "signal": "shadow_error_rate",
                "value": d.shadow_errors / calls,
                "threshold": policy.max_error_rate,
            }
        )
    if d.champion_latency_ms and d.challenger_latency_ms is not None:
        out.append(
            {
                "signal": "latency_ratio",
                "value": d.challenger_latency_ms / d.champion_latency_ms,
                "threshold": policy.max_latency_ratio,
            }
        )
    return out


@flow(name="lifecycle-promote", log_prints=True)
def promote_flow(specialist: str) -> dict[str, Any]:
    """Promote the challenger through the statistical gate, or retire it."""
    logger = get_run_logger()
    outcome = decide(specialist)
    logger.info("%s: gate %s", specialist, outcome["action"])
    if outcome["action"] == "promoted":
        events.emit(events.PROMOTED, specialist, outcome)
    elif outcome["action"] in ("rejected", "superseded"):
        events.emit(events.REJECTED, specialist, outcome)
    return outcome
