"""The retrain flow: a challenger from labelled traffic, registered and aliased for shadow.

Started by ``lifecycle.drift.detected`` (a deployment trigger), a schedule, or by hand
(``lifecycle retrain``). At most one runs per specialist: a global concurrency limit of one
slot per specialist, plus the step's own idempotence (a champion that already has a
challenger trained from it gets no second one), so a repeated trigger for the same drift
starts nothing new and a flow retried after a crash does not register twice.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from prefect import flow, get_run_logger, task

from flows import events
from flows.context import context

#: Seconds a retrain's slot outlives its holder. The holder renews its lease (Prefect) and its
#: heartbeat (a Prefect variable) while it runs. A holder that was killed (OOM, node lost)
#: stops both: a real Prefect server's repossessor then frees the slot after the lease, and
#: where none runs (the temporary local server of the embedded default) the next trigger
#: sees the stale heartbeat and frees it.
RETRAIN_LEASE_S = 60.0  # the least a Prefect server accepts
#: A heartbeat this old means its retrain is dead (it beats every quarter of this). Longer
#: than the lease plus the repossessor's period, so that where a repossessor runs it frees
#: the slot first and the two never both release it.
HEARTBEAT_STALE_S = 120.0


def heartbeat_variable(specialist: str) -> str:
    return f"lifecycle-retrain-{specialist}-heartbeat".replace("_", "-")


@contextlib.contextmanager
def _heartbeat(specialist: str) -> Iterator[None]:
    """Beat every quarter lease while the body runs; forget the beat when it ends."""
    from prefect.variables import Variable

    name = heartbeat_variable(specialist)
    stop = threading.Event()

    def beat() -> None:
        Variable.set(name, {"at": time.time(), "pid": os.getpid()}, overwrite=True)

    def loop() -> None:
        while not stop.wait(HEARTBEAT_STALE_S / 4):
            with contextlib.suppress(Exception):  # a missed beat only ages the heartbeat
                beat()

    beat()
    # The thread runs in a copy of this context: Prefect's settings (the API URL) live there.
    thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(loop,),
        name=f"retrain-heartbeat-{specialist}",
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(Exception):
            Variable.unset(name)


def _free_if_holder_died(specialist: str, limit: str) -> float | None:
    """Release the slot when its holder's heartbeat is older than a lease; its age, or None."""
    from prefect.client.orchestration import get_client
    from prefect.variables import Variable

    name = heartbeat_variable(specialist)
    last = Variable.get(name, default=None)
    if not isinstance(last, dict) or not isinstance(last.get("at"), int | float):
        return None  # the holder has not beaten yet, or the slot was taken by hand
    age = time.time() - float(last["at"])
    if age <= HEARTBEAT_STALE_S:
        return None
    with get_client(sync_client=True) as client:
        client.release_concurrency_slots(names=[limit], slots=1, occupancy_seconds=age)
    Variable.unset(name)
    return age


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
    from lifecycle.steps import retrain_from_traffic

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
                # Proposed labels short of training.min_examples_per_label: label -> needed.
                extra={"labels_short": outcome.plan.get("labels_short", {})},
                actions=[
                    f"label {outcome.missing} more requests: "
                    f"POST /v1/specialists/{specialist}/feedback",
                    f"lifecycle label-requests -s {specialist}   # the requests worth a label",
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
        elif outcome.status == "rejected":
            ctx.alert(
                "retrain",
                "REJECTED_CANDIDATE",
                f"candidate v{outcome.challenger_version} not made challenger: it does not "
                f"beat champion v{outcome.champion_version} on held-out drifted labels "
                f"({outcome.reason})"[:500],
                champion_version=outcome.champion_version,
                extra={"evaluation": outcome.evaluation},
                actions=[
                    f"lifecycle status -s {specialist}   # the version's "
                    "lifecycle.rejected_reason tag says why",
                    f"collect more labels, then lifecycle retrain -s {specialist}",
                ],
            )
    return outcome.as_dict()


@flow(name="lifecycle-retrain", log_prints=True)
def retrain_flow(specialist: str, trigger: str = "drift") -> dict[str, Any]:
    """Train a challenger for one specialist from its labelled traffic (one at a time)."""
    from prefect.concurrency.sync import concurrency

    logger = get_run_logger()
    limit = retrain_limit(specialist)
    ensure_limit(limit)

    def run() -> dict[str, Any]:
        with (
            concurrency(
                limit, occupy=1, timeout_seconds=1, strict=True, lease_duration=RETRAIN_LEASE_S
            ),
            _heartbeat(specialist),
        ):
            return train_challenger(specialist, trigger)

    try:
        try:
            outcome = run()
        except TimeoutError:
            age = _free_if_holder_died(specialist, limit)
            if age is None:
                raise
            logger.warning(
                "%s: the retrain holding the slot stopped beating %.0f s ago (killed?); "
                "its slot is freed and this run trains",
                specialist,
                age,
            )
            outcome = run()
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
