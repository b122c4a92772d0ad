"""The closed loop on the production stack: compose.yaml's services, run natively.

PostgreSQL (127.0.0.1:5432, three fresh databases), ``mlflow server`` on it with proxied
artifacts, ``prefect server`` on it, two gateways sharing one traffic store, the one-shot
``lifecycle deploy`` onto work pools, and two process workers (flows, retraining). The test
trains a champion through the MLflow server, drives a drift through gateway A, starts the
monitor deployment and then only watches: the drift event triggers retraining on the
retrain worker, both gateways pick the challenger up as shadow, labelled traffic through
gateway B feeds the gate, the promote deployment promotes it, and both gateways serve it.
Nothing is left running.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from lifecycle.serving.background import free_port
from lifecycle.store import TrafficStore

from ..fakes.slack_server import FakeSlack
from .stack import Service, environment, group_alive, load_compose, run, services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
NAME = "router"
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@pytest.fixture
def databases() -> Iterator[dict[str, str]]:
    """Fresh mlflow, prefect and traffic databases; dropped (connections and all) after."""
    suffix = uuid.uuid4().hex[:10]
    names = {kind: f"lifecycle_{kind}_{suffix}" for kind in ("mlflow", "prefect", "traffic")}
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # fails, not skips, when PostgreSQL is down
        for name in names.values():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield names
    finally:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _spec_file(folder: Path) -> Path:
    import yaml

    from lifecycle.synthetic.scenarios import build_scenario

    sc = build_scenario("new_intent", n_before=10, n_after=10, seed=0)
    data = folder / "reference.csv"
    sc.reference.sample(800, random_state=0)[["text", "label"]].to_csv(data, index=False)
    spec = {
        "name": NAME,
        "labels": sorted(set(sc.labels_before) | set(sc.labels_after)),
        "data": {"kind": "file", "path": str(data)},
        "training": {"epochs": 2, "batch_size": 32, "max_length": 32},
        "monitoring": {"window_size": 300, "min_window": 100, "min_labels": 60},
        "promotion": {"min_samples": 60, "alpha": 0.05},
    }
    path = folder / "specialists.yaml"
    path.write_text(yaml.safe_dump({"specialists": [spec]}, sort_keys=False))
    return path


def _wait(what: str, check: Callable[[], Any], timeout: float, logs: list[Service]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1.0)
    tails = "\n\n".join(f"== {s.name}\n{s.tail(25)}" for s in logs)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def test_the_closed_loop_on_the_production_stack(tmp_path: Path, databases: dict[str, str]) -> None:
    token = secrets.token_urlsafe(24)
    compose = load_compose(
        {
            "POSTGRES_PASSWORD": "unused-here",
            "LIFECYCLE_ADMIN_TOKEN": token,
            "GRAFANA_ADMIN_PASSWORD": "unused-here",  # Prometheus and Grafana are not run here
        }
    )
    svc = compose["services"]
    ports = {k: free_port() for k in ("mlflow", "prefect", "gateway-a", "gateway-b")}
    mlflow_url = f"http://127.0.0.1:{ports['mlflow']}"
    prefect_api = f"http://127.0.0.1:{ports['prefect']}/api"
    spec_file = _spec_file(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    pg = "postgres@127.0.0.1:5432"
    slack = FakeSlack().__enter__()

    # The loopback value of every setting compose.yaml gives any service.
    local = {
        "MLFLOW_BACKEND_STORE_URI": f"postgresql://{pg}/{databases['mlflow']}",
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        "MLFLOW_SERVE_ARTIFACTS": "true",
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(ports["mlflow"]),
        "MLFLOW_SERVER_ALLOWED_HOSTS": f"127.0.0.1:{ports['mlflow']},localhost:{ports['mlflow']}",
        "PREFECT_API_DATABASE_CONNECTION_URL": (
            f"postgresql+asyncpg://{pg}/{databases['prefect']}"
        ),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(ports["prefect"]),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": prefect_api,
        "PREFECT_API_URL": prefect_api,
        "MLFLOW_TRACKING_URI": mlflow_url,
        "LIFECYCLE_TRAFFIC_DB_URL": f"postgresql+psycopg2://{pg}/{databases['traffic']}",
        "LIFECYCLE_SPECIALISTS_FILE": str(spec_file),
        "LIFECYCLE_ALERT_WEBHOOKS": json.dumps([slack.url]),
        "LIFECYCLE_HOST": "127.0.0.1",
        "LIFECYCLE_ADMIN_TOKEN": token,
        "LIFECYCLE_DEVICE": "cpu",
    }
    base = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "LIFECYCLE_PROGRESS": "false",
        # Workers look for work every 2 s instead of 10 (test speed only).
        "PREFECT_WORKER_QUERY_SECONDS": "2",
    }

    def env_of(service: str, home: str, **extra: str) -> dict[str, str]:
        """The service's settings from compose.yaml, each with its loopback value (``extra``:
        this instance's own, e.g. its port, and test-only knobs)."""
        wanted = environment(svc[service])
        mine = {**local, "LIFECYCLE_HOME": str(tmp_path / home), **extra}
        missing = sorted(set(wanted) - set(mine))
        assert not missing, f"compose.yaml gives {service} {missing}, which this test does not"
        return {**base, **{k: mine[k] for k in wanted}, **extra}

    def service(name: str, key: str, health: str | None = None, **extra: str) -> Service:
        return Service(
            name, svc[key]["command"], env_of(key, f"home-{name}", **extra), logs, health=health
        )

    gateway_env = {"LIFECYCLE_REGISTRY_POLL_S": "1"}
    mlflow = service("mlflow", "mlflow", f"{mlflow_url}/health")
    prefect = service("prefect-server", "prefect-server", f"{prefect_api}/health")
    every: list[Service] = [mlflow, prefect]
    try:
        with services(mlflow, prefect):
            cli_env = env_of("gateway", "home-cli", LIFECYCLE_PORT=str(ports["gateway-a"]))
            run(["lifecycle", "train", "-s", NAME], cli_env)  # the first champion, over HTTP
            run(svc["deploy"]["command"], env_of("deploy", "home-deploy"))
            gateway_a = service(
                "gateway-a", "gateway", None, LIFECYCLE_PORT=str(ports["gateway-a"]), **gateway_env
            )
            gateway_b = service(
                "gateway-b", "gateway", None, LIFECYCLE_PORT=str(ports["gateway-b"]), **gateway_env
            )
            gateway_a.health = f"http://127.0.0.1:{ports['gateway-a']}/readyz"
            gateway_b.health = f"http://127.0.0.1:{ports['gateway-b']}/readyz"
            worker = service("worker", "worker")
            retrain_worker = service("retrain-worker", "retrain-worker")
            every += [gateway_a, gateway_b, worker, retrain_worker]
            with services(gateway_a, gateway_b, worker, retrain_worker):
                _closed_loop(
                    cli_env,
                    mlflow_url,
                    prefect_api,
                    [f"http://127.0.0.1:{ports[g]}" for g in ("gateway-a", "gateway-b")],
                    every,
                )
        for s in every:
            assert s.proc is not None and not group_alive(s.proc.pid), f"{s.name} left running"
        # On-call heard about each step (the flows ran in the workers' processes).
        store = TrafficStore(local["LIFECYCLE_TRAFFIC_DB_URL"])
        try:
            alerts = store.alerts(NAME)
            counts = store.counts(NAME)
        finally:
            store.dispose()
        kinds = set(zip(alerts["kind"], alerts["verdict"], strict=True))
        assert ("gate", "PROMOTED") in kinds, kinds
        assert any(kind == "monitor" for kind, _ in kinds), kinds
        # Every alert that was not a repeat within the cooldown went out, and was accepted.
        statuses = [p.get("status") for p in alerts["payload"]]
        assert set(statuses) <= {"sent", "suppressed"}, statuses
        assert len(slack.requests) >= statuses.count("sent") > 0
        texts = " ".join(str(b.get("text")) for b in slack.bodies if isinstance(b, dict))
        assert "PROMOTED" in texts
        # Both gateways wrote to the one store: every request of both runs is there.
        assert counts["requests"] == 100 + 400 + 300, counts
        assert counts["shadow"] >= 250, counts
    finally:
        slack.__exit__(None, None, None)


def _closed_loop(
    cli_env: dict[str, str],
    mlflow_url: str,
    prefect_api: str,
    gateways: list[str],
    logs: list[Service],
) -> None:
    from mlflow import MlflowClient

    registry = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)

    def alias(name: str) -> int | None:
        try:
            return int(registry.get_model_version_by_alias(NAME, name).version)
        except Exception:
            return None

    def serving(url: str) -> dict[str, Any]:
        listing = httpx.get(f"{url}/v1/specialists", timeout=10).json()
        entry = listing["specialists"][0]
        return {
            "champion": (entry.get("champion") or {}).get("version"),
            "challenger": (entry.get("challenger") or {}).get("version"),
        }

    assert alias("champion") == 1
    assert [serving(g)["champion"] for g in gateways] == [1, 1]

    # Drift through gateway A, every text labelled (late), then the monitor deployment once.
    def simulate(url: str, before: int, after: int, seed: int) -> str:
        return run(
            [
                *("lifecycle", "simulate", "-s", NAME, "--scenario", "new_intent", "--url", url),
                *("--n-before", str(before), "--n-after", str(after), "--seed", str(seed)),
                *("--feedback-share", "1.0", "--feedback-delay", "20"),
            ],
            cli_env,
        )

    report = simulate(gateways[0], 100, 400, seed=1)
    assert "errors: 0" in report or '"errors": 0' in report, report
    monitor = _start_deployment(prefect_api, "lifecycle-monitor", f"monitor-{NAME}")
    state = _wait("the monitor run", lambda: _final_state(prefect_api, monitor), 300, logs)
    assert state == "COMPLETED", _run_logs(prefect_api, monitor)

    # lifecycle.drift.detected -> retrain-NAME on the retrain pool -> challenger v2.
    _wait("a challenger from the triggered retrain", lambda: alias("challenger"), 600, logs)
    # The monitor's own schedule may fire again meanwhile and trigger a second retrain for
    # the same drift: it must end without training (the champion has its challenger).
    retrains = _wait(
        "the retrain runs to finish",
        lambda: (
            (runs := _runs_of(prefect_api, f"retrain-{NAME}"))
            and all(r["state_type"] in FINAL for r in runs)
            and runs
        ),
        300,
        logs,
    )
    assert {r["state_type"] for r in retrains} == {"COMPLETED"}, retrains
    assert [int(v.version) for v in registry.search_model_versions(f"name='{NAME}'")] in (
        [2, 1],
        [1, 2],
    )
    _wait(
        "both gateways shadowing v2",
        lambda: all(serving(g)["challenger"] == 2 for g in gateways),
        120,
        logs,
    )

    # Labelled traffic through gateway B is shadowed; the gate gets its pairs.
    simulate(gateways[1], 0, 300, seed=2)
    # The gateways write in batches, off the hot path: the gate starts once they are stored.
    traffic = TrafficStore(cli_env["LIFECYCLE_TRAFFIC_DB_URL"])
    try:
        _wait("the shadow pairs stored", lambda: traffic.counts(NAME)["shadow"] >= 250, 120, logs)
    finally:
        traffic.dispose()
    promote = _start_deployment(prefect_api, "lifecycle-promote", f"promote-{NAME}")
    state = _wait("the promote run", lambda: _final_state(prefect_api, promote), 300, logs)
    assert state == "COMPLETED", _run_logs(prefect_api, promote)
    assert alias("champion") == 2 and alias("previous") == 1, _run_logs(prefect_api, promote)
    _wait(
        "both gateways serving v2",
        lambda: all(serving(g)["champion"] == 2 for g in gateways),
        120,
        logs,
    )


def _start_deployment(api: str, flow: str, deployment: str) -> str:
    found = httpx.get(f"{api}/deployments/name/{flow}/{deployment}", timeout=10)
    found.raise_for_status()
    created = httpx.post(
        f"{api}/deployments/{found.json()['id']}/create_flow_run", json={}, timeout=10
    )
    created.raise_for_status()
    return str(created.json()["id"])


def _final_state(api: str, run_id: str) -> str | None:
    state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"]["type"]
    return state if state in FINAL else None


def _runs_of(api: str, deployment: str) -> list[dict[str, Any]]:
    runs = httpx.post(
        f"{api}/flow_runs/filter",
        json={"deployments": {"name": {"any_": [deployment]}}},
        timeout=10,
    ).json()
    return [{"id": r["id"], "state_type": r["state_type"]} for r in runs]


def _run_logs(api: str, run_id: str) -> str:
    logs = httpx.post(
        f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}}, timeout=10
    ).json()
    return "\n".join(entry["message"] for entry in logs)[-4000:]
