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
from collections.abc import Callable, Iterator
from typing import Any

from prefect import flow, get_run_logger, task

from flows import events
from flows.context import context
from lifecycle.notify import texts

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
#: Seconds a trigger waits for a free slot when its first, one-second try timed out although
#: no one held the slot: a busy server was slow to answer, which is not another retrain.
SLOW_SERVER_WAIT_S = 30.0
#: One try within that wait; between tries the slot is looked at again.
SLOW_SERVER_TRY_S = 5.0


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


def _slot_taken(limit: str) -> bool:
    """Whether someone holds the retrain slot (True when the server cannot say: skip then)."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return client.read_global_concurrency_limit_by_name(limit).active_slots > 0
    except Exception:
        return True


def _run_when_granted(run: Callable[[float], dict[str, Any]], limit: str) -> dict[str, Any]:
    """Retry the slot in short tries while it stays free; give up once someone holds it.

    One long wait would queue this trigger behind a retrain that took the slot a moment
    after the first look (two triggers racing on a slow server): it must skip instead.
    """
    deadline = time.monotonic() + SLOW_SERVER_WAIT_S
    while True:
        try:
            return run(SLOW_SERVER_TRY_S)
        except TimeoutError:
            if _slot_taken(limit) or time.monotonic() >= deadline:
                raise


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
            text = texts.retrain_needs_labels(
                specialist, missing=outcome.missing, reason=outcome.reason
            )
            ctx.alert(
                "retrain",
                "NEEDS_LABELS",
                text.summary,
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
                actions=text.actions,
            )
        elif outcome.status in ("registered", "rejected"):
            # A trained candidate, kept or not: one alert, its evaluation attached.
            if outcome.status == "registered":
                verdict = "CANDIDATE"
                text = texts.candidate_registered(
                    specialist, challenger_version=outcome.challenger_version
                )
            else:
                verdict = "REJECTED_CANDIDATE"
                text = texts.candidate_rejected(
                    specialist,
                    challenger_version=outcome.challenger_version,
                    champion_version=outcome.champion_version,
                    reason=outcome.reason,
                )
            ctx.alert(
                "retrain",
                verdict,
                text.summary,
                champion_version=outcome.champion_version,
                extra={"evaluation": outcome.evaluation},
                actions=text.actions,
            )
    return outcome.as_dict()


@flow(name="lifecycle-retrain", log_prints=True)
def retrain_flow(specialist: str, trigger: str = "drift") -> dict[str, Any]:
    """Train a challenger for one specialist from its labelled traffic (one at a time)."""
    from prefect.concurrency.sync import concurrency

    logger = get_run_logger()
    limit = retrain_limit(specialist)
    ensure_limit(limit)

    def run(wait_s: float = 1.0) -> dict[str, Any]:
        with (
            concurrency(
                limit,
                occupy=1,
                timeout_seconds=wait_s,
                strict=True,
                lease_duration=RETRAIN_LEASE_S,
            ),
            _heartbeat(specialist),
        ):
            return train_challenger(specialist, trigger)

    try:
        try:
            outcome = run()
        except TimeoutError:
            if not _slot_taken(limit):
                logger.info("%s: the slot is free but was slow to grant; waiting", specialist)
                outcome = _run_when_granted(run, limit)
            else:
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
        failed = texts.retrain_failed(specialist, error=exc)
        with context(specialist) as ctx:
            ctx.alert("retrain", "RETRAIN_FAILED", failed.summary, actions=failed.actions)
        events.emit(events.RETRAIN_FAILED, specialist, {"error": str(exc)[:1000]})
        raise
    logger.info("%s: %s (%s)", specialist, outcome["status"], outcome["reason"])
    if outcome["status"] == "registered":
        events.emit(events.CANDIDATE_REGISTERED, specialist, outcome)
    return outcome
