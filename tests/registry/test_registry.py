"""The real MLflow registry on a temporary sqlite store with the real MiniLM weights."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from lifecycle.config.errors import RegistryError
from lifecycle.config.settings import load_settings
from lifecycle.model.host import AdapterHost
from lifecycle.registry.models import CHALLENGER, CHAMPION, PREVIOUS, TAG, Registry
from tests.conftest import mlflow_client

TEXTS = ["my card was stolen at the station", "I want my money back for order 1234", "hello?"]


def test_round_trip_train_register_reload_by_alias_predict(  # type: ignore[no-untyped-def]
    home: Path, trained, tiny_spec, host: AdapterHost
) -> None:
    registry = Registry(load_settings())
    info = registry.log_training(
        tiny_spec, trained, trigger="initial", data_window="2026-11-01/2026-11-02"
    )
    registry.set_alias("tiny", CHAMPION, info.version)
    assert info.version == 1
    assert registry.aliases("tiny") == {CHAMPION: 1}

    # Lineage, as a person sees it in the MLflow UI.
    lineage = registry.get_version("tiny", 1).lineage
    assert lineage["trigger"] == "initial"
    assert lineage["parent_version"] == ""
    assert lineage["data_window"] == "2026-11-01/2026-11-02"
    assert lineage["training_set_hash"] == trained.dataset_hash
    assert lineage["base_model"] == "minilm"
    assert json.loads(lineage["labels"]) == list(trained.meta.labels)

    # The run holds metrics, the confusion matrix, the reference and the adapter as safetensors.
    metrics = registry.run_metrics(info.run_id)
    assert metrics["val.accuracy"] == pytest.approx(trained.evaluation.accuracy)
    assert any(k.startswith("val.recall.") for k in metrics)
    artifacts = {a.path for a in mlflow_client(registry).list_artifacts(info.run_id)}
    assert {"specialist", "reference", "evaluation"} <= artifacts
    names = {
        Path(a.path).name for a in mlflow_client(registry).list_artifacts(info.run_id, "specialist")
    }
    assert "adapter_model.safetensors" in names and not any(n.endswith(".bin") for n in names)
    figures = {
        Path(a.path).name for a in mlflow_client(registry).list_artifacts(info.run_id, "evaluation")
    }
    assert "confusion_matrix.png" in figures

    # Reloaded from the registry by alias, predictions equal the in-memory ones.
    adapter_id, loaded = registry.load(host, "tiny", CHAMPION)
    try:
        assert adapter_id == "tiny@v1" and loaded.version == 1
        expected = trained.host.predict(TEXTS, trained.adapter_id)
        got = host.predict(TEXTS, adapter_id)
        for a, b in zip(expected, got, strict=True):
            assert a.label == b.label
            np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
            np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)
    finally:
        host.remove_adapter(adapter_id)

    # The monitoring reference comes back with the champion's own view of it.
    frame, embeddings = registry.reference("tiny", CHAMPION)
    assert len(frame) == len(trained.validation) == len(embeddings)
    assert {"text", "label", "prediction", "confidence"} <= set(frame.columns)
    assert embeddings.shape[1] == host.hidden_size
    # Readers that need no embeddings (probes, surge baselines) get the same rows without them.
    rows = registry.reference_rows("tiny", CHAMPION)
    assert rows.equals(frame)


def test_aliases_move_and_missing_ones_say_so(home: Path, trained, tiny_spec) -> None:  # type: ignore[no-untyped-def]
    registry = Registry(load_settings())
    first = registry.log_training(tiny_spec, trained, trigger="initial")
    second = registry.log_training(
        tiny_spec, trained, trigger="drift", parent_version=first.version
    )
    registry.set_alias("tiny", CHAMPION, first.version)
    registry.set_alias("tiny", CHALLENGER, second.version)
    assert registry.resolve("tiny", CHALLENGER).version == 2
    assert registry.resolve("tiny", "latest").version == 2
    assert registry.resolve("tiny", "1").version == 1
    assert registry.get_version("tiny", 2).lineage["parent_version"] == "1"
    # Promotion as alias moves: champion -> previous, challenger -> champion.
    registry.set_alias("tiny", PREVIOUS, first.version)
    registry.set_alias("tiny", CHAMPION, second.version)
    registry.delete_alias("tiny", CHALLENGER)
    assert registry.aliases("tiny") == {CHAMPION: 2, PREVIOUS: 1}
    assert [v.aliases for v in registry.versions("tiny")] == [(PREVIOUS,), (CHAMPION,)]
    # The registry's own promote and rollback move the same aliases, and tag the versions.
    registry.set_alias("tiny", CHALLENGER, first.version)
    assert registry.promote("tiny", reason="test") == {CHAMPION: 1, PREVIOUS: 2}
    assert registry.get_version("tiny", 1).lineage["promoted"] == "test"
    assert registry.rollback("tiny", reason="hurt") == {CHAMPION: 2}
    assert registry.get_version("tiny", 1).lineage["rolled_back"] == "hurt"
    with pytest.raises(RegistryError, match="no challenger"):
        registry.promote("tiny")
    with pytest.raises(RegistryError, match="no previous"):
        registry.rollback("tiny")
    # A forced promotion of a named version (one the gate rejected has no alias left); the
    # stamp is what the guardrail watches from.
    assert registry.promote("tiny", version=1, reason="forced") == {CHAMPION: 1, PREVIOUS: 2}
    stamped = registry.get_version("tiny", 1).tags[f"{TAG}promoted_at"]
    assert datetime.fromisoformat(stamped).tzinfo is not None
    with pytest.raises(RegistryError, match="champion already"):
        registry.promote("tiny", version=1)
    with pytest.raises(RegistryError):
        registry.promote("tiny", version=99)
    assert registry.aliases("tiny") == {CHAMPION: 1, PREVIOUS: 2}
    registry.rollback("tiny", reason="back")

    with pytest.raises(RegistryError, match="no version with alias 'challenger'"):
        registry.resolve("tiny", CHALLENGER)
    with pytest.raises(RegistryError, match="no version 9"):
        registry.resolve("tiny", 9)
    with pytest.raises(RegistryError, match="alias must be one of"):
        registry.set_alias("tiny", "production", 1)
    with pytest.raises(RegistryError, match="train it first"):
        registry.resolve("nobody", CHAMPION)
    with pytest.raises(ValueError, match="trigger"):
        registry.log_training(tiny_spec, trained, trigger="whim")


def test_artifacts_stay_under_home(home: Path, trained, tiny_spec) -> None:  # type: ignore[no-untyped-def]
    registry = Registry(load_settings())
    info = registry.log_training(tiny_spec, trained, trigger="initial")
    run = mlflow_client(registry).get_run(info.run_id)
    assert run.info.artifact_uri.startswith((home / "mlartifacts").resolve().as_uri())
    assert not (Path.cwd() / "mlruns").exists()


def test_opening_a_registry_leaves_mlflow_tracking_uri_in_the_environment_alone(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from lifecycle.config.settings import load_settings
    from lifecycle.registry.models import Registry

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    Registry(load_settings())
    assert "MLFLOW_TRACKING_URI" not in os.environ  # later settings keep their own home
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    Registry(load_settings(mlflow_tracking_uri=f"sqlite:///{home / 'other.db'}"))
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////elsewhere/mlflow.db"
