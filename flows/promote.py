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

#: What each gate outcome tells on-call: the verb and the commands to act.
ACTIONS: dict[str, tuple[str, list[str]]] = {
    "promoted": ("promoted", ["lifecycle rollback -s {name}"]),
    "rejected": (
        "rejected",
        ["lifecycle promote -s {name} --version {version} --force   # to override the gate"],
    ),
    "ready": (
        "passed the gate (auto_promote is off)",
        ["lifecycle promote -s {name} --force   # to promote it"],
    ),
    "superseded": (
        "was superseded by the labels that arrived since its training (undecided)",
        ["lifecycle retrain -s {name}   # to train on all of them now"],
    ),
}


@task(retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS)
def decide(specialist: str) -> dict[str, Any]:
    from lifecycle.steps import gate_challenger

    with context(specialist) as ctx:
        outcome = gate_challenger(ctx.settings, ctx.spec, store=ctx.store, registry=ctx.registry)
        d = outcome.decision
        if outcome.action in ACTIONS and d is not None:
            verb, actions = ACTIONS[outcome.action]
            ctx.alert(
                "gate",
                outcome.action.upper(),
                f"challenger v{outcome.challenger_version} {verb} against champion "
                f"v{outcome.champion_version}: {_summary(d)}",
                reasons=_reasons(d, ctx.spec.promotion),
                champion_version=outcome.champion_version,
                actions=[
                    a.format(name=specialist, version=outcome.challenger_version) for a in actions
                ],
            )
    return outcome.as_dict()


def _summary(d: Any) -> str:
    if d.challenger_accuracy is None:  # rejected before any label: it kept failing
        return d.reasons[-1]
    return (
        f"accuracy {d.challenger_accuracy:.3f} vs {d.champion_accuracy:.3f} on "
        f"{d.n_labelled} labelled shadowed requests"
    )


def _reasons(d: Any, policy: Any) -> list[dict[str, Any]]:
    """The alert's evidence: accuracy always, errors and latency where they were measured."""
    out: list[dict[str, Any]] = [
        {
            "signal": "accuracy_difference",
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
