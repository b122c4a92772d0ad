"""A monitoring check end to end: real MiniLM specialist, real MLflow, real traffic store,
real Evidently, alerts over real HTTP to a fake Slack webhook, and the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from lifecycle.synthetic.scenarios import build_scenario, generate_tickets
from monitors.results import Status
from tests.conftest import mlflow_client
from tests.fakes.slack_server import FakeSlack

SPEC = {
    "name": "watched",
    "data": {"kind": "generator", "n": 600, "seed": 11},
    "training": {
        "epochs": 1,
        "batch_size": 16,
        "max_length": 32,
        "evals_per_epoch": 1,
        "validation_fraction": 0.25,
    },
    "monitoring": {"window_size": 200, "min_window": 50, "min_labels": 30},
    "escalation": {"confidence_threshold": 0.5},
}


@dataclass
class Env:
    home: Path
    spec: Any
    host: Any
    adapter_id: str
    version: int
    specialists_file: Path

    def settings(self, tmp: Path, **overrides: Any) -> Any:
        from lifecycle.config.settings import load_settings

        return load_settings(
            home=self.home,
            specialists_file=self.specialists_file,
            traffic_db_url=f"sqlite:///{tmp / 'traffic.db'}",
            calibration_rounds=10,
            **overrides,
        )

    def record(self, store: Any, frame: Any, *, label_share: float = 0.0, start: datetime) -> Any:
        from lifecycle.synthetic.replay import record_traffic

        return record_traffic(
            store,
            self.host,
            self.adapter_id,
            specialist=self.spec.name,
            model_version=self.version,
            frame=frame,
            label_share=label_share,
            start=start,
            escalation_threshold=0.5,
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    from lifecycle.config.settings import load_settings
    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.registry.models import Registry
    from lifecycle.training.pipeline import load_training_data
    from lifecycle.training.train import train_specialist

    home = tmp_path_factory.mktemp("monitor-home")
    specialists_file = home / "specialists.yaml"
    specialists_file.write_text(yaml.safe_dump({"specialists": [SPEC]}))
    spec = SpecialistSpec.model_validate(SPEC)
    settings = load_settings(home=home)
    result = train_specialist(spec, load_training_data(spec), device="cpu", progress=False)
    registry = Registry(settings)
    info = registry.log_training(spec, result, trigger="initial")
    registry.set_alias(spec.name, "champion", info.version)
    adapter_id, _ = registry.load(result.host, spec.name, "champion")
    yield Env(home, spec, result.host, adapter_id, info.version, specialists_file)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    from lifecycle.store import TrafficStore

    s = TrafficStore(f"sqlite:///{tmp_path / 'traffic.db'}")
    s.upgrade()
    yield s
    s.dispose()


T0 = datetime(2026, 11, 1, tzinfo=UTC)


def test_a_new_intent_is_a_quality_drop_then_calm_traffic_resolves_the_alert(
    env: Env, store: Any, tmp_path: Path
) -> None:
    from lifecycle.registry.models import Registry
    from monitors.check import THRESHOLDS_PATH, run_check

    drift = build_scenario("new_intent", n_before=0, n_after=200, seed=21).stream
    env.record(store, drift, label_share=0.5, start=T0)
    calm = generate_tickets(200, seed=22)
    env.record(store, calm, start=T0 + timedelta(hours=1))

    with FakeSlack() as slack:
        settings = env.settings(tmp_path, alert_webhooks=[slack.url])
        first = run_check(
            settings, env.spec, store=store, since=T0, until=T0 + timedelta(minutes=30), now=T0
        )
        v = first.verdict
        assert v.status is Status.QUALITY_DROP and v.retrain
        assert v.quality is not None and v.quality.labelled >= 80
        assert v.quality.accuracy is not None and v.quality.accuracy < 0.9
        assert v.reasons[0].signal == "accuracy"
        assert v.estimate is not None and v.estimate.accuracy < v.reference["confidence"]
        assert v.drifted  # the monitor saw it move, not only the labels
        assert first.alert is not None and first.alert.status == "sent"

        second = run_check(
            settings,
            env.spec,
            store=store,
            since=T0 + timedelta(minutes=30),
            now=T0 + timedelta(hours=2),
        )
        assert second.verdict.status is Status.OK, second.verdict.reasons
        assert second.alert is not None and second.alert.status == "sent"

        bodies = [r.body for r in slack.requests]
    assert len(bodies) == 2
    text = str(bodies[0])
    for needle in ("QUALITY_DROP", "watched", "accuracy", "lifecycle retrain --specialist watched"):
        assert needle in text, needle
    assert "report.html" in text  # where the Evidently report is
    assert "RESOLVED" in str(bodies[1])
    stored = store.alerts("watched")
    assert stored["verdict"].tolist() == ["QUALITY_DROP", "RESOLVED"]

    # MLflow: one monitoring run with a point per check, the reports, and thresholds on the
    # champion's own training run.
    registry = Registry(settings)
    run_id = v.run_id
    assert run_id is not None and second.verdict.run_id == run_id
    history = mlflow_client(registry).get_metric_history(run_id, "drift_confidence")
    assert len(history) == 2
    assert [m.step for m in history] == sorted(m.step for m in history)
    files = [f.path for f in mlflow_client(registry).list_artifacts(run_id, "checks")]
    assert len(files) == 2
    inside = [f.path for f in mlflow_client(registry).list_artifacts(run_id, files[0])]
    assert any(p.endswith("report.html") for p in inside)
    assert any(p.endswith("verdict.json") for p in inside)
    version = registry.resolve("watched", "champion")
    stored_thresholds = mlflow_client(registry).list_artifacts(version.run_id, "monitoring")
    assert [f.path for f in stored_thresholds] == [THRESHOLDS_PATH]


def test_short_windows_and_missing_champions_need_data(
    env: Env, store: Any, tmp_path: Path
) -> None:
    from lifecycle.config.spec import SpecialistSpec
    from monitors.check import run_check

    env.record(store, generate_tickets(20, seed=3), start=T0)
    settings = env.settings(tmp_path)
    short = run_check(settings, env.spec, store=store, alert=True).verdict
    assert short.status is Status.NEEDS_DATA
    assert short.reasons[0].signal == "window_rows" and short.reasons[0].value == 20

    empty = run_check(settings, env.spec, store=store, since=T0 + timedelta(days=1)).verdict
    assert empty.status is Status.NEEDS_DATA and empty.window["rows"] == 0

    stranger = SpecialistSpec.model_validate({"name": "never-trained"})
    unknown = run_check(settings, stranger, store=store, log=False).verdict
    assert unknown.status is Status.NEEDS_DATA
    assert "no champion" in unknown.reasons[0].detail
    assert store.alerts().empty  # nothing worth waking anyone for


def test_hash_only_traffic_is_still_checked_on_embeddings_and_outputs(
    env: Env, store: Any, tmp_path: Path
) -> None:
    from lifecycle.store import RequestRecord
    from monitors.check import run_check

    rows = generate_tickets(120, seed=8)
    preds = env.host.predict(rows["text"].tolist(), env.adapter_id)
    store.write(
        [
            RequestRecord(
                specialist="watched",
                model_version=env.version,
                text=None,  # LIFECYCLE_STORE_TEXT=hash: no text to compare
                text_sha256="0" * 64,
                label=p.label,
                confidence=p.confidence,
                embedding=p.embedding,
                latency_ms=1.0,
                created_at=T0 + timedelta(seconds=i),
            )
            for i, p in enumerate(preds)
        ]
    )
    v = run_check(env.settings(tmp_path), env.spec, store=store, log=False, alert=False).verdict
    assert v.status is Status.OK
    names = {s.name for s in v.signals}
    assert {"embeddings", "prediction", "confidence"} <= names
    assert "text" not in names and "text" in v.window["skipped_signals"]
    assert any("not checked" in r.detail for r in v.reasons)


def test_cli_monitor_prints_the_verdict_table(
    env: Env, store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lifecycle.cli.main import app

    env.record(store, generate_tickets(150, seed=31), start=T0)
    monkeypatch.setenv("LIFECYCLE_HOME", str(env.home))
    monkeypatch.setenv("LIFECYCLE_TRAFFIC_DB_URL", f"sqlite:///{tmp_path / 'traffic.db'}")
    monkeypatch.setenv("LIFECYCLE_CALIBRATION_ROUNDS", "10")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runner = CliRunner()
    args = ["monitor", "-s", "watched", "-f", str(env.specialists_file), "--no-alert"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "watched  v1  verdict: OK" in out.output
    assert "embeddings" in out.output and "estimated accuracy" in out.output
    assert "report: " in out.output

    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0
    assert '"status": "OK"' in as_json.output

    bad = runner.invoke(app, [*args, "--since", "yesterday"])
    assert bad.exit_code == 2 and "not an ISO time" in bad.output
    unknown = runner.invoke(app, ["monitor", "-s", "nope", "-f", str(env.specialists_file)])
    assert unknown.exit_code == 1 and "nope" in unknown.output
