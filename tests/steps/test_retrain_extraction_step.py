"""The retrain step for an extractor, end to end on a real registry and traffic store: a
champion that never saw tracking numbers, traffic where people corrected them, and a
challenger that learns the new field (its head grows), checked by entity F1 and registered
with lineage. No gateway and no Prefect: the traffic is recorded as the gateway records it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow

SPEC = {
    "name": "fields",
    "task": "extraction",
    "entities": ["order_id", "amount", "date", "email", "product"],
    "data": {"kind": "generator", "n": 300, "seed": 3},
    "training": {
        "epochs": 2,
        "batch_size": 16,
        "max_length": 64,
        "evals_per_epoch": 1,
        "min_examples_per_label": 5,
        "min_holdout_rows": 10,
    },
    "monitoring": {"window_size": 150, "min_window": 50, "min_labels": 40},
}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A home with champion v1 of ``fields`` and its traffic: the new-field drift, every
    request corrected by a person."""
    from lifecycle.config.settings import load_settings
    from lifecycle.config.spec import load_specialists
    from lifecycle.store import TrafficStore
    from lifecycle.synthetic.extraction_scenarios import extraction_scenario
    from lifecycle.synthetic.replay import record_traffic
    from lifecycle.training.pipeline import train_and_register

    specialists_file = tmp_path / "specialists.yaml"
    specialists_file.write_text(yaml.safe_dump({"specialists": [SPEC]}))
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LIFECYCLE_SPECIALISTS_FILE", str(specialists_file))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LIFECYCLE_TRAFFIC_DB_URL", raising=False)
    settings = load_settings(progress=False)
    spec = load_specialists(specialists_file).get("fields")
    trained = train_and_register(settings, spec)
    store = TrafficStore(settings.traffic_url)
    store.upgrade()
    stream = extraction_scenario("new_field", n_reference=10, n_before=0, n_after=160, seed=1)
    record_traffic(
        store,
        trained.result.host,
        trained.result.adapter_id,
        specialist="fields",
        model_version=trained.version.version,
        frame=stream.stream[["text", "entities"]],
        label_share=1.0,
    )

    class Env:
        pass

    out = Env()
    out.settings, out.spec, out.store, out.stream = settings, spec, store, stream.stream  # type: ignore[attr-defined]
    yield out
    store.dispose()


def test_an_extractor_retrains_on_corrected_spans_and_learns_the_new_field(env: Any) -> None:
    from lifecycle.registry.models import Registry
    from lifecycle.steps import CANDIDATE_CHECK_TAG, retrain_from_traffic

    # The store holds what the gateway would: the champion's spans, the person's corrections.
    window = env.store.window("fields", with_embeddings=False)
    assert window["true_entities"].notna().all() and window["entities"].notna().all()

    outcome = retrain_from_traffic(env.settings, env.spec, store=env.store, trigger="drift")
    assert outcome.status == "registered", outcome.reason
    assert outcome.plan["new_labels"] == ["tracking_number"]
    assert outcome.plan["fallback_labels"] == 0 and outcome.plan["replay_rows"] > 0
    ev = outcome.evaluation
    assert ev["holdout_new.challenger_micro_f1"] > ev["holdout_new.champion_micro_f1"]
    assert {"holdout_old.challenger_micro_f1", "holdout_old.champion_micro_f1"} <= set(ev)
    assert "people's corrections" in outcome.reason and "entity micro-F1" in outcome.reason

    registry = Registry(env.settings)
    assert registry.aliases("fields") == {"champion": 1, "challenger": 2}
    version = registry.get_version("fields", 2)
    lineage = version.lineage
    assert lineage["parent_version"] == "1" and lineage["trigger"] == "drift"
    labels = json.loads(lineage["labels"])
    assert labels[:5] == SPEC["entities"] and labels[5:] == ["tracking_number"]  # head grows
    assert "entity micro-F1" in version.tags[CANDIDATE_CHECK_TAG]
    trained_on = registry.training_set("fields", 2)
    assert trained_on is not None
    spans = [s for cell in trained_on["entities"] for s in json.loads(cell)]
    assert "tracking_number" in {s["label"] for s in spans}

    # A challenger from this champion exists: the next trigger trains nothing.
    again = retrain_from_traffic(env.settings, env.spec, store=env.store, trigger="drift")
    assert again.status == "skipped"
