"""``lifecycle deploy``: the loop's flows as Prefect deployments, scheduled and triggered.

Per specialist:

- ``monitor-NAME`` on the spec's ``monitoring.schedule`` (cron);
- ``retrain-NAME`` triggered by ``lifecycle.drift.detected`` about that specialist (and by
  hand: ``lifecycle retrain`` or the Prefect UI), one run at a time;
- ``promote-NAME`` on the same cron, and triggered by ``lifecycle.candidate.registered``.

``serve_all`` runs them in this process (a Prefect runner), so the Prefect UI shows the
whole loop; with ``retrain_pool`` the retrain deployments go to that work pool instead (e.g.
a pool whose workers have GPUs). ``deploy_to_pools`` puts them all on work pools and
returns: the production stack (compose.yaml) runs them on Prefect workers, pulling the code
from ``source``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows import events
from flows.monitor import monitor_flow
from flows.promote import promote_flow
from flows.retrain import retrain_flow

if TYPE_CHECKING:
    from lifecycle.config.spec import SpecialistsFile

REPO = Path(__file__).resolve().parents[1]


def _trigger(event: str, specialist: str, parameters: dict[str, Any]) -> Any:
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name=f"{event} -> {specialist}",
        expect={event},
        match={"prefect.resource.id": events.resource(specialist)["prefect.resource.id"]},
        parameters=parameters,
    )


@dataclass(frozen=True)
class Plan:
    """One deployment: which flow, where its code is, and how it is started."""

    kind: str  # monitor, retrain or promote
    flow: Any
    entrypoint: str
    name: str
    options: dict[str, Any]


def plans(specs: SpecialistsFile) -> list[Plan]:
    """Every specialist's monitor, retrain and promote deployments, as data."""
    out: list[Plan] = []
    for spec in specs.specialists:
        name = spec.name
        tags = ["lifecycle", f"specialist:{name}"]
        out.append(
            Plan(
                "monitor",
                monitor_flow,
                "flows/monitor.py:monitor_flow",
                f"monitor-{name}",
                {
                    "cron": spec.monitoring.schedule,
                    "parameters": {"specialist": name},
                    "tags": tags,
                    "description": f"Drift and quality check of {name}; emits drift.detected.",
                },
            )
        )
        out.append(
            Plan(
                "retrain",
                retrain_flow,
                "flows/retrain.py:retrain_flow",
                f"retrain-{name}",
                {
                    "parameters": {"specialist": name, "trigger": "manual"},
                    "triggers": [
                        _trigger(
                            events.DRIFT_DETECTED, name, {"specialist": name, "trigger": "drift"}
                        )
                    ],
                    "concurrency_limit": 1,
                    "tags": tags,
                    "description": f"Retrain {name} from labelled traffic; registers a challenger.",
                },
            )
        )
        out.append(
            Plan(
                "promote",
                promote_flow,
                "flows/promote.py:promote_flow",
                f"promote-{name}",
                {
                    "cron": spec.monitoring.schedule,
                    "parameters": {"specialist": name},
                    "triggers": [_trigger(events.CANDIDATE_REGISTERED, name, {"specialist": name})],
                    "concurrency_limit": 1,
                    "tags": tags,
                    "description": f"Gate {name}'s shadowed challenger; promote or retire it.",
                },
            )
        )
    return out


def build_deployments(specs: SpecialistsFile, *, with_retrain: bool = True) -> list[Any]:
    """The runner deployments of every specialist (retrain ones left out on request)."""
    return [
        plan.flow.to_deployment(name=plan.name, **plan.options)
        for plan in plans(specs)
        if with_retrain or plan.kind != "retrain"
    ]


def deploy_to_pools(
    specs: SpecialistsFile,
    *,
    pool: str | None,
    retrain_pool: str | None = None,
    source: Path = REPO,
) -> dict[str, str]:
    """Deployments on work pools, their code pulled from ``source``; name -> deployment id.

    Retraining goes to ``retrain_pool`` (workers with GPUs) or else ``pool``; with no
    ``pool`` only retraining is deployed (the rest is served by the caller). Missing pools
    are created as process pools; a worker (``prefect worker start --pool NAME``) runs them.
    """
    ids: dict[str, str] = {}
    for plan in plans(specs):
        target = (retrain_pool or pool) if plan.kind == "retrain" else pool
        if target is None:
            continue
        ensure_pool(target)
        flow: Any = plan.flow.from_source(str(source), entrypoint=plan.entrypoint)
        ids[plan.name] = str(
            flow.deploy(
                name=plan.name,
                work_pool_name=target,
                build=False,
                push=False,
                print_next_steps=False,
                **plan.options,
            )
        )
    return ids


def ensure_pool(name: str, *, kind: str = "process") -> None:
    """Create the work pool if the server does not have it (a worker may create it too)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_work_pool(WorkPoolCreate(name=name, type=kind))


def serve_all(specs: SpecialistsFile, *, retrain_pool: str | None = None) -> None:
    """Register the deployments and run them here until interrupted (retraining, with
    ``retrain_pool``, on that pool's workers instead)."""
    from prefect import serve

    if retrain_pool:
        deploy_to_pools(specs, pool=None, retrain_pool=retrain_pool)
    serve(*build_deployments(specs, with_retrain=retrain_pool is None))
