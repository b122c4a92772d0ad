"""What on-call sees of a specialist's outcomes: the cost per correct answer beside the
fallback's, and the monitor's latest verdict, on GET /v1/specialists, /metrics and
`lifecycle status`. A real gateway (uvicorn, MLflow registry, traffic store) polling fast."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lifecycle.config.settings import Settings
from lifecycle.config.spec import SpecialistsFile
from tests.conftest import TINY
from tests.gateway_harness import RunningGateway, SharedHost, running_gateway
from tests.waits import wait_until

TOKEN = "outcomes-admin-token-for-tests"
TEXTS = [
    "I lost my card at the station",
    "refund my last order please",
    "the app keeps crashing",
    "how do I change my address",
    "my payment was declined twice",
    "cancel my subscription",
]


@pytest.fixture(scope="module")
def gateway(served_home: Path, host) -> Iterator[RunningGateway]:  # type: ignore[no-untyped-def]
    from lifecycle.serving.app import create_app

    settings = Settings(
        home=served_home, admin_token=TOKEN, registry_poll_s=0.2, fallback_accuracy=0.8
    )
    specs = SpecialistsFile.model_validate({"specialists": [TINY]})
    with SharedHost(host) as shared:
        app = create_app(settings, specs, host=shared)
        with running_gateway(app, token=TOKEN) as running:
            yield running


def _sample(metrics: str, name: str) -> float:
    match = re.search(rf'^{name}\{{specialist="tiny"\}} (\S+)$', metrics, re.M)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


def test_the_status_order_is_the_monitors() -> None:
    from lifecycle.serving.outcomes import STATUS_ORDER, UNKNOWN, monitor_level
    from monitors.results import Status

    assert [s.value for s in Status] == list(STATUS_ORDER)
    assert monitor_level("RESOLVED") == 0 and monitor_level("DRIFT") == 2
    assert monitor_level(None) == UNKNOWN == monitor_level("SOMETHING_NEW")


def test_cost_per_correct_and_monitor_status_on_every_surface(
    gateway: RunningGateway, served_home: Path, tmp_path: Path
) -> None:
    import yaml
    from typer.testing import CliRunner

    from lifecycle.cli.main import app
    from lifecycle.store import AlertRecord

    with gateway.client() as client:
        before = client.get("/metrics").text
        preds = client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS}).json()
        answers = [(p["request_id"], p["label"]) for p in preds["predictions"]]
        labels = gateway.gw.engine.routes["tiny"].champion.labels
        wrong = next(label for label in labels if label != answers[3][1])
        items = [{"request_id": i, "label": a} for i, a in answers[:3]]
        items.append({"request_id": answers[3][0], "label": wrong})
        sent = client.post("/v1/specialists/tiny/feedback", json={"items": items})
        assert sent.status_code == 202, sent.text
    # No verdict on record yet: the gauge says so.
    assert _sample(before, "lifecycle_monitor_status") == -1
    gateway.gw.writer.flush(timeout=30)
    gateway.gw.writer.store.write(
        [AlertRecord(specialist="tiny", kind="monitor", verdict="DRIFT", payload={})]
    )

    def listed() -> dict[str, Any] | None:
        with gateway.client() as client:
            entry = client.get("/v1/specialists").json()["specialists"][0]
        ready = entry["correct_measured_on"] >= 4 and entry["monitor_verdict"] == "DRIFT"
        return entry if ready else None

    entry = wait_until(listed)  # refreshed by the registry poller, off the request path
    assert entry["correct_measured_on"] == 4
    assert entry["cost_per_correct"] > 0
    assert entry["fallback_only_cost_per_correct"] == pytest.approx(0.5 / 1000 / 0.8)
    assert 0 < entry["answer_accuracy"] <= 1

    with gateway.client() as client:
        metrics = client.get("/metrics").text
        schema = client.get("/openapi.json").json()["components"]["schemas"]["SpecialistOut"]
    assert _sample(metrics, "lifecycle_monitor_status") == 2  # DRIFT
    assert _sample(metrics, "lifecycle_cost_per_correct_answer") == pytest.approx(
        entry["cost_per_correct"]
    )
    assert _sample(metrics, "lifecycle_fallback_cost_per_correct_answer") == pytest.approx(
        entry["fallback_only_cost_per_correct"]
    )
    for field in ("cost_per_correct", "fallback_only_cost_per_correct", "correct_measured_on"):
        assert schema["properties"][field]["description"], field

    spec_file = tmp_path / "specialists.yaml"
    spec_file.write_text(yaml.safe_dump({"specialists": [TINY]}))
    env = {"LIFECYCLE_HOME": str(served_home), "LIFECYCLE_FALLBACK_ACCURACY": "0.8"}
    runner = CliRunner()
    as_json = runner.invoke(app, ["status", "-f", str(spec_file), "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    traffic = json.loads(as_json.stdout)[0]["traffic"]
    assert traffic["correct_measured_on"] == 4
    assert traffic["cost_per_correct"] == pytest.approx(entry["cost_per_correct"])
    assert traffic["fallback_only_cost_per_correct"] == pytest.approx(0.5 / 1000 / 0.8)
    assert traffic["fallback_accuracy_measured_on"] == 0
    text = runner.invoke(app, ["status", "-f", str(spec_file)], env=env)
    assert text.exit_code == 0, text.output
    line = next(x for x in text.output.splitlines() if "cost per correct answer" in x)
    assert "fallback only" in line and "4 checked by people" in line
    assert "80% assumed (LIFECYCLE_FALLBACK_ACCURACY)" in line


def test_a_store_outage_keeps_the_last_figures(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lifecycle.config.errors import StoreError

    gw = gateway.gw
    with gateway.client() as client:
        client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS[:2]})
    gw.writer.flush(timeout=30)
    wait_until(lambda: bool(gw.outcomes) and gw.outcomes["tiny"].cost.per_correct is not None)
    calls: list[str] = []

    def down(name: str, **kwargs: Any) -> Any:
        calls.append(name)
        raise StoreError("the traffic store is down (test)")

    monkeypatch.setattr(gw.writer.store, "outcome_counts", down)
    last = gw.outcomes
    wait_until(lambda: len(calls) >= 3)  # several polls went by
    assert gw.outcomes is last
    with gateway.client() as client:
        served = client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS[:2]})
        metrics = client.get("/metrics")
        listing = client.get("/v1/specialists")
    assert served.status_code == 200 and metrics.status_code == 200
    assert listing.json()["specialists"][0]["cost_per_correct"] is not None
