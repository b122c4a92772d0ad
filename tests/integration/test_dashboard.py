"""The Grafana dashboard and its provisioning, held to compose.yaml and to a real gateway.

There is no Docker engine here to start Prometheus and Grafana, so this checks what would
break them silently: the dashboard is Grafana JSON with panels and PromQL targets, Grafana is
pointed at the Prometheus that compose runs, Prometheus scrapes the gateway service on its
port, and every metric a panel queries is on a real gateway's /metrics after some traffic
(suffixes as Prometheus exposes them: a counter as ``_total``, a histogram as ``_bucket``,
``_sum``, ``_count``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .stack import REPO, environment, load_compose

DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "lifecycle.json"
SETTINGS = {"POSTGRES_PASSWORD": "p", "LIFECYCLE_ADMIN_TOKEN": "t", "GRAFANA_ADMIN_PASSWORD": "g"}
#: Counters that a healthy gateway under light traffic has no sample of yet (prometheus_client
#: shows a labelled series only once it moved): declared on /metrics is what can be asked.
EVENT_ONLY = {
    "lifecycle_shadow_dropped_total": "only when the shadow queue overflows",
    "lifecycle_out_of_scope_total": "only when a text is flagged out of scope",
}
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_KEYWORDS |= {"and", "or", "unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, labels or keywords)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers ({specialist=~"$specialist"})
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range windows ([$__rate_interval])
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w$.])[A-Za-z_:][\w:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group() in _KEYWORDS:
            continue  # a function call or a keyword
        names.add(match.group())
    return names


def queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every PromQL query of the dashboard, by where it is (panel title and refId)."""
    found = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found[f"{panel['title']} [{target['refId']}]"] = target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", text.strip())
        if inner:  # Grafana's own function around a series selector
            found[f"variable {variable['name']}"] = inner.group(1)
    return found


def exposed_family(name: str, families: dict[str, str]) -> str | None:
    """The metric family (as the Prometheus parser names it) that serves ``name``, or None.

    A gauge is served by its own name; a counter only as ``NAME_total``; a histogram only as
    ``NAME_bucket``, ``NAME_sum`` and ``NAME_count``. So a panel that asks for a counter
    without ``_total``, or a histogram's bare name, fails here as it would in Prometheus.
    """
    if families.get(name) in ("gauge", "unknown", "untyped"):
        return name
    if name.endswith("_total") and families.get(name[: -len("_total")]) == "counter":
        return name[: -len("_total")]
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and families.get(base) == "histogram":
            return base
    return None


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def test_the_dashboard_is_grafana_json_with_panels_and_targets(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(graphs) >= 6
    for panel in graphs:
        grid = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= set(grid) and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"]["type"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["refId"] and target["expr"].strip(), panel["title"]
            assert metric_names(target["expr"]), (panel["title"], target["expr"])
    titles = " ".join(p["title"].lower() for p in graphs)
    for topic in ("requests", "latency", "escalat", "out-of-scope", "shadow", "monitor status"):
        assert topic in titles, topic


def test_the_expression_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, specialist) (rate(a_bucket{x=~"$v"}'
        "[$__rate_interval]))) / on (specialist) group_left sum(b_total) > bool 0 or c"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}
    families = {"a": "histogram", "b": "counter", "c": "gauge"}
    assert [exposed_family(n, families) for n in ("a_bucket", "b_total", "c")] == ["a", "b", "c"]
    assert exposed_family("b", families) is None and exposed_family("a", families) is None
    assert exposed_family("c_total", families) is None


def test_grafana_reads_the_prometheus_that_scrapes_the_gateway(dashboard: dict[str, Any]) -> None:
    compose = load_compose(SETTINGS)
    services = compose["services"]

    def mounts(service: str) -> dict[str, Path]:
        """Container path -> repository path of the service's bind mounts."""
        found = {}
        for mount in services[service].get("volumes") or []:
            source, target = mount.split(":")[:2]
            if source.startswith("."):
                local = REPO / source
                assert local.exists(), (service, source)
                found[target] = local
        return found

    grafana, prometheus = mounts("grafana"), mounts("prometheus")
    sources = yaml.safe_load(
        (grafana["/etc/grafana/provisioning"] / "datasources" / "prometheus.yaml").read_text()
    )["datasources"]
    (source,) = sources
    uids = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert uids == {source["uid"]}
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", source["url"]).groups()  # type: ignore[union-attr]
    assert host == "prometheus" and f"127.0.0.1:{port}:{port}" in services[host]["ports"]

    (provider,) = yaml.safe_load(
        (grafana["/etc/grafana/provisioning"] / "dashboards" / "dashboards.yaml").read_text()
    )["providers"]
    folder = grafana[provider["options"]["path"]]
    assert (folder / DASHBOARD.name).samefile(DASHBOARD)
    home = environment(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"

    config = yaml.safe_load(prometheus["/etc/prometheus/prometheus.yml"].read_text())
    (job,) = config["scrape_configs"]
    (dns,) = job["dns_sd_configs"]
    gateway_port = environment(services["gateway"])["LIFECYCLE_PORT"]
    assert dns["names"] == ["gateway"] and str(dns["port"]) == gateway_port
    assert job.get("metrics_path", "/metrics") == "/metrics"


# -- against a real gateway -----------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(served_home: Path, host) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    from lifecycle.config.settings import Settings
    from lifecycle.config.spec import SpecialistsFile
    from lifecycle.serving.app import create_app
    from tests.conftest import TINY
    from tests.gateway_harness import SharedHost, running_gateway

    # Every text escalates (to the review queue), so escalation series exist too.
    spec = {**TINY, "escalation": {"confidence_threshold": 1.0, "fallback": "review"}}
    settings = Settings(home=served_home, admin_token="dash-token", registry_poll_s=0.2)
    with SharedHost(host) as shared:
        app = create_app(
            settings, SpecialistsFile.model_validate({"specialists": [spec]}), host=shared
        )
        with running_gateway(app, token="dash-token") as running:
            yield running


@pytest.mark.integration
def test_every_metric_the_dashboard_queries_is_on_the_gateway(
    dashboard: dict[str, Any], gateway: Any
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    texts = ["I lost my card at the station", "refund my last order please", "app crashes"]
    with gateway.client() as client:
        for _ in range(3):
            answered = client.post("/v1/specialists/tiny/predict", json={"texts": texts})
            assert answered.status_code == 200, answered.text
        assert (
            client.post("/v1/specialists/nobody/predict", json={"texts": texts}).status_code == 404
        )
        deadline = time.monotonic() + 60
        while True:  # shadow work is scored after the answers went out
            metrics = client.get("/metrics").text
            if "lifecycle_shadow_predictions_total{" in metrics or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    families = {f.name: f.type for f in text_string_to_metric_families(metrics)}
    sampled = {s.name for f in text_string_to_metric_families(metrics) for s in f.samples}
    missing, silent = [], []
    for where, expr in queries(dashboard).items():
        for name in sorted(metric_names(expr)):
            if exposed_family(name, families) is None:
                missing.append(f"{where}: {name}")
            elif name not in sampled and name not in EVENT_ONLY:
                silent.append(f"{where}: {name}")
    assert not missing, f"not on the gateway's /metrics: {missing}"
    assert not silent, f"declared but no sample after traffic: {silent}"
