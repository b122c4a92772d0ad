"""compose.yaml, the Dockerfile and .env.example: parsed and held to what the stack needs.

The services' commands themselves are exercised by test_stack.py, which runs them.
"""

from __future__ import annotations

import re

import pytest
import yaml

from .stack import COMPOSE, REPO, MissingSetting, environment, interpolate, load_compose

SETTINGS = {
    "POSTGRES_PASSWORD": "pw-from-env",
    "LIFECYCLE_ADMIN_TOKEN": "token-from-env",
    "GRAFANA_ADMIN_PASSWORD": "grafana-pw-from-env",
}
SERVICES = {
    "postgres",
    "mlflow",
    "prefect-server",
    "gateway",
    "deploy",
    "worker",
    "retrain-worker",
}
#: Third-party images with no lifecycle command: test_stack.py's native run skips them (there
#: is no Docker engine here to run an image); test_dashboard.py holds their configuration to
#: the gateway's real /metrics instead.
OBSERVABILITY = {"prometheus", "grafana"}
LONG_RUNNING = (SERVICES | OBSERVABILITY) - {"deploy"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose(SETTINGS)


def test_every_service_is_there_with_its_command(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == SERVICES | OBSERVABILITY
    for name in OBSERVABILITY:  # the image's own entrypoint, at a pinned version
        assert "command" not in services[name], name
        assert re.search(r":v?\d+\.\d+\.\d+$", services[name]["image"]), name
    assert services["mlflow"]["command"] == ["mlflow", "server"]
    assert services["prefect-server"]["command"] == ["prefect", "server", "start"]
    assert services["gateway"]["command"] == ["lifecycle", "serve"]
    assert services["deploy"]["command"][:2] == ["lifecycle", "deploy"]
    for worker in ("worker", "retrain-worker"):
        assert services[worker]["command"][:3] == ["prefect", "worker", "start"]
    pools = {
        services[w]["command"][services[w]["command"].index("--pool") + 1]
        for w in ("worker", "retrain-worker")
    }
    deploy = services["deploy"]["command"]
    assert {deploy[deploy.index("--pool") + 1], deploy[deploy.index("--retrain-pool") + 1]} == pools


def test_required_settings_fail_loudly() -> None:
    with pytest.raises(MissingSetting, match="POSTGRES_PASSWORD"):
        load_compose({"LIFECYCLE_ADMIN_TOKEN": "t"})
    with pytest.raises(MissingSetting, match="LIFECYCLE_ADMIN_TOKEN"):
        load_compose({"POSTGRES_PASSWORD": "p"})
    with pytest.raises(MissingSetting, match="GRAFANA_ADMIN_PASSWORD"):
        load_compose({"POSTGRES_PASSWORD": "p", "LIFECYCLE_ADMIN_TOKEN": "t"})
    assert interpolate("${A:-x}-${B}-$$C", {"B": "b"}) == "x-b-$C"


def test_no_secret_is_written_in_the_file() -> None:
    raw = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    for name, service in raw["services"].items():
        for key, value in environment(service).items():
            if re.search(r"PASSWORD|TOKEN|SECRET|KEY", key):
                assert value.startswith("${"), f"{name}.{key} holds a literal secret"
            if "://" in value and "@" in value:
                assert "${POSTGRES_PASSWORD" in value, f"{name}.{key} holds a literal password"


def test_health_order_and_volumes(compose: dict) -> None:
    services = compose["services"]
    for name in LONG_RUNNING:
        assert "healthcheck" in services[name] or name.endswith("worker"), name
        assert services[name].get("restart") == "unless-stopped", name
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            assert rule["condition"] in ("service_healthy", "service_completed_successfully")
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], dependency
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if not source.startswith("."):
                assert source in compose["volumes"], (name, source)
    gpu = services["retrain-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["count"] == 1
    init = compose["configs"]["postgres-init"]["content"]
    for database in ("mlflow", "prefect", "traffic"):
        assert f"CREATE DATABASE {database};" in init
        assert any(
            f"@postgres:5432/{database}" in v
            for s in services.values()
            for v in environment(s).values()
        ), database


def test_dockerfile_and_env_example_match_the_file() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG BASE_IMAGE=python:3\.\d+-slim", dockerfile, re.M)
    assert "WORKDIR /app" in dockerfile  # the deployments' code source inside the image
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    referenced = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE.read_text(encoding="utf-8")))
    documented = set(re.findall(r"^#?\s*([A-Z_]+)=", example, re.M))
    assert referenced <= documented, referenced - documented
    assert ".env" in (REPO / ".gitignore").read_text(encoding="utf-8").split()
