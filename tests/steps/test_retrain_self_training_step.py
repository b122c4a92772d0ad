"""Self-training in the retrain step, end to end on a real registry and traffic store: a
champion that never saw a new intent, traffic where people labelled a share of it, and a
challenger trained on their labels plus the unlabelled requests a first candidate answered
confidently. What must hold: the self-labelled rows are unlabelled traffic since the
champion, never validation (reference) rows, marked in the training set, mostly right, and
never replayed by the next retrain."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow

SPEC = {
    "name": "router",
    "data": {"kind": "generator", "n": 300, "seed": 3},
    "training": {
        "epochs": 2,
        "batch_size": 16,
        "max_length": 48,
        "evals_per_epoch": 1,
        "min_examples_per_label": 5,
        "min_holdout_rows": 10,
        "self_training_confidence": 0.5,
    },
    "monitoring": {"window_size": 400, "min_window": 50, "min_labels": 40},
}


def _record(env: Any, frame: Any, version: int, host: Any, adapter: str, seed: int) -> None:
    from lifecycle.synthetic.replay import record_traffic

    record_traffic(
        env.store,
        host,
        adapter,
        specialist="router",
        model_version=version,
        frame=frame[["text", "label"]],
        label_share=0.3,
        start=datetime.now(UTC),
        seed=seed,
    )


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from lifecycle.config.settings import load_settings
    from lifecycle.config.spec import load_specialists
    from lifecycle.store import TrafficStore
    from lifecycle.synthetic.scenarios import build_scenario
    from lifecycle.training.pipeline import train_and_register

    specialists_file = tmp_path / "specialists.yaml"
    specialists_file.write_text(yaml.safe_dump({"specialists": [SPEC]}))
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LIFECYCLE_SPECIALISTS_FILE", str(specialists_file))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LIFECYCLE_TRAFFIC_DB_URL", raising=False)
    settings = load_settings(progress=False)
    spec = load_specialists(specialists_file).get("router")
    trained = train_and_register(settings, spec)
    store = TrafficStore(settings.traffic_url)
    store.upgrade()
    stream = build_scenario("new_intent", n_reference=10, n_before=0, n_after=600, seed=5).stream

    class Env:
        pass

    out = Env()
    out.settings, out.spec, out.store, out.stream, out.trained = (  # type: ignore[attr-defined]
        settings,
        spec,
        store,
        stream,
        trained,
    )
    _record(out, stream.iloc[:300], 1, trained.result.host, trained.result.adapter_id, seed=1)
    yield out
    store.dispose()


def test_a_retrain_self_labels_unlabelled_traffic_and_never_replays_it(env: Any) -> None:
    from lifecycle.registry.models import Registry
    from lifecycle.steps import retrain_from_traffic
    from tests.conftest import mlflow_client

    window = env.store.window("router", with_embeddings=False)
    unlabelled = set(window.loc[window["true_label"].isna(), "text"])
    labelled = set(window.loc[window["true_label"].notna(), "text"])
    truth = dict(zip(env.stream["text"], env.stream["label"], strict=False))

    outcome = retrain_from_traffic(env.settings, env.spec, store=env.store, trigger="drift")
    assert outcome.status in {"registered", "rejected"}, outcome.reason
    assert "self-labelled of" in outcome.reason
    registry = Registry(env.settings)
    v2 = outcome.challenger_version
    trained_on = registry.training_set("router", v2)
    assert trained_on is not None and "source" in trained_on
    pseudo = trained_on[trained_on["source"] == "pseudo"]
    assert len(pseudo) > 50, len(pseudo)
    # Unlabelled traffic only, none of it a person's, none of it held out or validation.
    assert set(pseudo["text"]) <= unlabelled and not set(pseudo["text"]) & labelled
    reference = registry.reference_rows("router", v2)
    assert not set(pseudo["text"]) & set(reference["text"])
    right = sum(
        truth.get(t) == label for t, label in zip(pseudo["text"], pseudo["label"], strict=True)
    )
    assert right / len(pseudo) >= 0.8, right / len(pseudo)
    params = mlflow_client(registry).get_run(registry.get_version("router", v2).run_id).data.params
    assert int(params["self_training_rows"]) == len(pseudo)
    assert float(params["training.self_training_confidence"]) == 0.5

    # v2 becomes champion; the next retrain replays its training set without the pseudo rows.
    registry.set_alias("router", "champion", v2)
    registry.delete_alias("router", "challenger")
    host = env.trained.result.host
    adapter, _ = registry.load(host, "router", v2)
    _record(env, env.stream.iloc[300:], v2, host, adapter, seed=2)
    again = retrain_from_traffic(env.settings, env.spec, store=env.store, trigger="drift")
    assert again.status in {"registered", "rejected"}, again.reason
    v3_rows = registry.training_set("router", again.challenger_version)
    assert v3_rows is not None
    v3_own = v3_rows[v3_rows["source"] != "pseudo"] if "source" in v3_rows else v3_rows
    replayed_pseudo = set(pseudo["text"]) & set(v3_own["text"])
    # A text v2 self-labelled trains v3 only as a person's label or as v3's own pseudo row
    # (the generator repeats texts, so it may be unlabelled traffic since v2 too).
    window = env.store.window("router", with_embeddings=False)
    labelled_now = set(window.loc[window["true_label"].notna(), "text"])
    assert replayed_pseudo <= labelled_now, sorted(replayed_pseudo - labelled_now)[:5]
    assert json.loads(registry.get_version("router", again.challenger_version).lineage["labels"])
