"""The open-world check end to end: a real trained specialist with its stored detector, real
MLflow and traffic store; traffic from other domains arrives and the check flags it,
estimates accuracy with it counted wrong, clusters it, logs the table and map, and says so
in the alert. Also: texts withheld by the store, a champion without a detector, and
`lifecycle discover`."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from lifecycle.synthetic.scenarios import generate_tickets
from tests.conftest import mlflow_client

T0 = datetime(2026, 11, 1, tzinfo=UTC)
DOMAINS = {
    "music": (
        "play {x} by {y} on spotify",
        "add {x} by {y} to my playlist",
        "put on some {x} from {y}",
    ),
    "weather": (
        "what is the weather in {z} {w}",
        "will it rain in {z} {w}",
        "forecast for {z} {w} please",
    ),
}
FILL = {
    "x": ["jazz", "the new album", "that song", "some rock", "classical music"],
    "y": ["miles davis", "adele", "the beatles", "coldplay", "mozart"],
    "z": ["paris", "london", "tokyo", "new york", "berlin"],
    "w": ["tomorrow", "tonight", "this weekend", "on monday", "next week"],
}


def other_domains(n_each: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for domain, templates in DOMAINS.items():
        for _ in range(n_each):
            text = rng.choice(templates).format(**{k: rng.choice(v) for k, v in FILL.items()})
            rows.append({"text": text, "label": domain})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, trained: Any, tiny_spec: Any) -> Iterator[Any]:
    from lifecycle.config.settings import load_settings
    from lifecycle.registry.models import CHAMPION, Registry

    home = tmp_path_factory.mktemp("openworld") / "home"
    spec = tiny_spec.model_copy(
        update={
            "monitoring": tiny_spec.monitoring.model_copy(
                update={"window_size": 300, "min_window": 50, "discovery_min_cluster": 8}
            )
        }
    )
    specialists = home.parent / "specialists.yaml"
    specialists.write_text(yaml.safe_dump({"specialists": [spec.model_dump(mode="json")]}))
    settings = load_settings(home=home, specialists_file=specialists, calibration_rounds=10)
    registry = Registry(settings)
    info = registry.log_training(spec, trained, trigger="initial")
    registry.set_alias(spec.name, CHAMPION, info.version)
    yield {"settings": settings, "spec": spec, "version": info.version, "trained": trained}


def _record(
    world: Any, store: Any, frame: pd.DataFrame, *, start: datetime, keep_text: bool = True
) -> None:
    from lifecycle.store import RequestRecord

    host, adapter_id = world["trained"].host, world["trained"].adapter_id
    preds = host.predict(frame["text"].tolist(), adapter_id)
    store.write(
        [
            RequestRecord(
                specialist=world["spec"].name,
                model_version=world["version"],
                text=text if keep_text else None,
                text_sha256=None if keep_text else "0" * 64,
                label=p.label,
                confidence=p.confidence,
                embedding=p.embedding,
                latency_ms=1.0,
                created_at=start + timedelta(milliseconds=10 * i),
            )
            for i, (text, p) in enumerate(zip(frame["text"], preds, strict=True))
        ]
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    from lifecycle.store import TrafficStore

    s = TrafficStore(f"sqlite:///{tmp_path / 'traffic.db'}")
    s.upgrade()
    yield s
    s.dispose()


def test_new_domains_are_flagged_counted_wrong_and_clustered(world: Any, store: Any) -> None:
    from lifecycle.registry.models import Registry
    from monitors.check import run_check
    from monitors.message import alert_message

    tickets = generate_tickets(160, seed=41)
    strange = other_domains(40, seed=1)
    frame = pd.concat([tickets, strange], ignore_index=True).sample(frac=1.0, random_state=0)
    _record(world, store, frame, start=T0)
    result = run_check(world["settings"], world["spec"], store=store, alert=False, now=T0)
    v = result.verdict
    est = v.estimate
    assert est is not None and est.method == "label-free" and est.accuracy_high is not None
    assert est.out_of_scope is not None and est.out_of_scope > 0.2
    assert est.out_of_support > 0.15
    assert est.assumptions
    # Every other-domain request is wrong: the estimate must sit well under the confidences.
    assert est.accuracy < float(v.window["mean_confidence"]) - 0.1
    assert v.window["detector"]["origin"] == "training"
    found = v.discovery
    assert found is not None and len(found["clusters"]) >= 1
    largest = found["clusters"][0]
    assert largest["size"] >= 20 and largest["examples"] and largest["top_terms"]
    assert (
        "clusters of new traffic" in found["headline"]
        or "cluster of new traffic" in found["headline"]
    )
    message = alert_message(world["spec"], v)
    assert found["headline"] in message.summary
    # MLflow: the table and the map sit with the check's report.
    registry = Registry(world["settings"])
    assert v.run_id is not None
    checks = [f.path for f in mlflow_client(registry).list_artifacts(v.run_id, "checks")]
    inside = [f.path for f in mlflow_client(registry).list_artifacts(v.run_id, checks[-1])]
    assert any(p.endswith("discovery.csv") for p in inside)
    assert any(p.endswith("discovery.png") for p in inside)
    assert json.loads(json.dumps(v.as_dict(), default=str))["discovery"]["clusters"]


def test_a_window_with_no_new_traffic_has_no_large_cluster(world: Any, store: Any) -> None:
    from monitors.check import run_check

    _record(world, store, generate_tickets(200, seed=43), start=T0)
    v = run_check(world["settings"], world["spec"], store=store, alert=False, log=False).verdict
    assert v.discovery is not None
    # In-scope rows past the threshold (the calibrated few) may group, but never as a mass.
    assert sum(c["size"] for c in v.discovery["clusters"]) <= 0.1 * v.window["rows"]
    assert v.estimate is not None and v.estimate.out_of_support < 0.15
    assert v.discovery["surges"] == []  # the reference's own mix of intents: nothing surges
    assert "answered far more often" not in v.discovery["headline"]


def test_a_label_given_far_more_often_than_on_the_reference_is_named(
    world: Any, store: Any
) -> None:
    # The detector's blind spot: traffic a known label absorbs is not flagged. The check
    # names the label that surges, in its JSON, its headline, the alert and the estimate's
    # assumptions.
    from monitors.check import run_check
    from monitors.message import alert_message

    tickets = generate_tickets(400, seed=45)
    intent = str(tickets["label"].iloc[0])
    frame = pd.concat(
        [tickets[tickets["label"] == intent].head(150), generate_tickets(60, seed=46)]
    ).sample(frac=1.0, random_state=1)
    _record(world, store, frame, start=T0)
    v = run_check(world["settings"], world["spec"], store=store, alert=False, log=False).verdict
    assert v.discovery is not None
    surges = v.discovery["surges"]
    assert surges, v.discovery
    top = surges[0]
    assert top["observed"] > 2 * top["expected"] and top["p_value"] < 1e-3
    answers = store.window(world["spec"].name, with_embeddings=False)["label"]
    assert top["observed"] == int((answers == top["label"]).sum())
    assert f"{top['label']} (" in v.discovery["headline"]
    assert "answered far more often than on the reference" in v.discovery["headline"]
    assert v.estimate is not None
    assert any("counted right" in a for a in v.estimate.assumptions)
    assert v.discovery["headline"] in alert_message(world["spec"], v).summary
    # Discovery shows the surging label's unflagged answers beyond its usual share as a group,
    # since no cluster of flagged rows can hold them.
    hidden = [c for c in v.discovery["clusters"] if c["hidden_under"] == top["label"]]
    assert len(hidden) == 1, v.discovery["clusters"]
    assert 0 < hidden[0]["size"] <= top["observed"]
    assert hidden[0]["examples"] and "beyond its usual share" in v.discovery["headline"]
    metrics = v.metrics()
    assert metrics["surging_labels"] == len(surges)
    clusters = v.discovery["clusters"]
    assert metrics["new_traffic_clusters"] == len(clusters) - len(hidden)


def test_withheld_texts_give_counts_not_text(world: Any, store: Any) -> None:
    from monitors.check import run_check

    frame = pd.concat([generate_tickets(100, seed=44), other_domains(40, seed=2)])
    _record(world, store, frame, start=T0, keep_text=False)
    v = run_check(world["settings"], world["spec"], store=store, alert=False, log=False).verdict
    assert v.discovery is not None and v.discovery["clusters"]
    for cluster in v.discovery["clusters"]:
        assert cluster["examples"] == [] and cluster["top_terms"] == []
        assert cluster["size"] > 0
    assert "like '" not in v.discovery["headline"]


def test_a_champion_without_a_stored_detector_gets_one_from_its_reference(world: Any) -> None:
    from lifecycle.registry.models import Registry
    from monitors.check import load_reference
    from monitors.openworld import prepare

    registry = Registry(world["settings"])
    info = registry.resolve(world["spec"].name, "champion")
    reference = load_reference(registry, world["spec"], info, settings=world["settings"])
    world_old = prepare(reference.data, None, target_rate=0.05)
    assert world_old is not None
    assert world_old.detector.origin == "reference"
    assert "no out-of-scope detector stored" in world_old.note
    assert np.isfinite(world_old.reference_scores).all()


def test_cli_discover_prints_the_clusters(
    world: Any, store: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    from lifecycle.cli.main import app

    frame = pd.concat([generate_tickets(120, seed=45), other_domains(40, seed=3)])
    _record(world, store, frame, start=datetime.now(UTC) - timedelta(minutes=5))
    settings = world["settings"]
    monkeypatch.setenv("LIFECYCLE_HOME", str(settings.home))
    monkeypatch.setenv("LIFECYCLE_SPECIALISTS_FILE", str(settings.specialists_file))
    monkeypatch.setenv("LIFECYCLE_TRAFFIC_DB_URL", str(store.url))
    out = CliRunner().invoke(app, ["discover", "-s", world["spec"].name, "--last", "200"])
    assert out.exit_code == 0, out.output
    assert "new traffic" in out.output and "#" in out.output
    as_json = CliRunner().invoke(app, ["discover", "-s", world["spec"].name, "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["clusters"] and data["clusters"][0]["size"] >= 10
    table = CliRunner().invoke(
        app, ["monitor", "-s", world["spec"].name, "--last", "200", "--no-alert"]
    )
    assert table.exit_code == 0, table.output
    for needle in ("new traffic:", "out of scope:", "assumes:", "estimated accuracy"):
        assert needle in table.output, needle
    missing = CliRunner().invoke(app, ["discover", "-s", "nobody"])
    assert missing.exit_code == 1 and "nobody" in missing.output
