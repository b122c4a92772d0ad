"""``lifecycle deploy``: the loop's flows as Prefect deployments, scheduled and triggered.

Per specialist:

- ``monitor-NAME`` on the spec's ``monitoring.schedule`` (cron);
- ``retrain-NAME`` triggered by ``lifecycle.drift.detected`` about that specialist (and by
  hand: ``lifecycle retrain`` or the Prefect UI), one run at a time;
- ``promote-NAME`` on the same cron, and triggered by ``lifecycle.candidate.registered``.

``serve`` runs them in this process (a Prefect runner), so the Prefect UI shows the whole
loop. With ``retrain_pool`` the retrain deployments go to that work pool instead (e.g. a
pool whose workers have GPUs), pulling the code from ``source``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows import events
from flows.monitor import monitor_flow
from flows.promote import promote_flow
from flows.retrain import retrain_flow

if TYPE_CHECKING:
    from lifecycle.spec import SpecialistsFile

REPO = Path(__file__).resolve().parents[1]


def _trigger(event: str, specialist: str, parameters: dict[str, Any]) -> Any:
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name=f"{event} -> {specialist}",
        expect={event},
        match={"prefect.resource.id": events.resource(specialist)["prefect.resource.id"]},
        parameters=parameters,
    )


def build_deployments(specs: SpecialistsFile, *, with_retrain: bool = True) -> list[Any]:
    """The runner deployments of every specialist (retrain ones left out on request)."""
    out: list[Any] = []
    for spec in specs.specialists:
        name = spec.name
        tags = ["lifecycle", f"specialist:{name}"]
        out.append(
            monitor_flow.to_deployment(
                name=f"monitor-{name}",
                cron=spec.monitoring.schedule,
                parameters={"specialist": name},
                tags=tags,
                description=f"Drift and quality check of {name}; emits drift.detected.",
            )
        )
        if with_retrain:
            out.append(
                retrain_flow.to_deployment(
                    name=f"retrain-{name}",
                    parameters={"specialist": name, "trigger": "manual"},
                    triggers=[
                        _trigger(
                            events.DRIFT_DETECTED, name, {"specialist": name, "trigger": "drift"}
                        )
                    ],
                    concurrency_limit=1,
                    tags=tags,
                    description=f"Retrain {name} from labelled traffic; registers a challenger.",
                )
            )
        out.append(
            promote_flow.to_deployment(
                name=f"promote-{name}",
                cron=spec.monitoring.schedule,
                parameters={"specialist": name},
                triggers=[_trigger(events.CANDIDATE_REGISTERED, name, {"specialist": name})],
                concurrency_limit=1,
                tags=tags,
                description=f"Gate {name}'s shadowed challenger; promote or retire it.",
            )
        )
    return out


def deploy_retrain_to_pool(specs: SpecialistsFile, pool: str, *, source: Path = REPO) -> list[str]:
    """Retrain deployments on a work pool (workers with GPUs pick them up); their ids."""
    ids = []
    for spec in specs.specialists:
        name = spec.name
        flow: Any = retrain_flow.from_source(
            str(source), entrypoint="flows/retrain.py:retrain_flow"
        )
        ids.append(
            str(
                flow.deploy(
                    name=f"retrain-{name}",
                    work_pool_name=pool,
                    parameters={"specialist": name, "trigger": "manual"},
                    triggers=[
                        _trigger(
                            events.DRIFT_DETECTED, name, {"specialist": name, "trigger": "drift"}
                        )
                    ],
                    concurrency_limit=1,
                    tags=["lifecycle", f"specialist:{name}"],
                    build=False,
                    push=False,
                    print_next_steps=False,
                )
            )
        )
    return ids


def serve_all(specs: SpecialistsFile, *, retrain_pool: str | None = None) -> None:
    """Register the deployments and run them here until interrupted."""
    from prefect import serve

    if retrain_pool:
        deploy_retrain_to_pool(specs, retrain_pool)
    serve(*build_deployments(specs, with_retrain=retrain_pool is None))
