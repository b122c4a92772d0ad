"""The monitoring run's history: checks numbered 1, 2, 3..., and one figure per check with the
champion's promotions and rollbacks marked. Real MLflow (sqlite), verdicts built by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitors.history import Marker, champion_changes, history_figure, recent
from monitors.results import Estimate, Quality, SignalResult, Status, Verdict
from tests.conftest import mlflow_client

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _verdict(i: int, *, champion: int) -> Verdict:
    return Verdict(
        specialist="hist",
        status=Status.OK if i % 2 else Status.DRIFT,
        reasons=(),
        champion_version=champion,
        window={"rows": 200, "escalation_rate": 0.1, "mean_confidence": 0.8},
        signals=tuple(
            SignalResult(name=n, method="m", score=0.1 * i, threshold=0.25, drifted=0.1 * i > 0.25)
            for n in ("embeddings", "confidence")
        ),
        quality=Quality(labelled=40, accuracy=0.9 - 0.01 * i),
        estimate=Estimate(accuracy=0.88, accuracy_low=0.8, out_of_support=0.02),
    )


def _registry(home: Path) -> Any:
    from lifecycle.config.settings import Settings
    from lifecycle.registry.models import Registry

    return Registry(Settings(home=home))


def _spec() -> Any:
    from lifecycle.config.spec import SpecialistSpec

    return SpecialistSpec.model_validate({"name": "hist"})


def test_promotions_and_rollbacks_are_read_off_the_champion_series() -> None:
    series = [(1, 1.0), (2, 1.0), (3, 2.0), (4, 2.0), (5, 1.0), (6, 3.0), (7, 2.0)]
    # Without the registry's tags every move down is a rollback.
    assert champion_changes(series) == [
        Marker(3, "promotion", 1, 2),
        Marker(5, "rollback", 2, 1),
        Marker(6, "promotion", 1, 3),
        Marker(7, "rollback", 3, 2),
    ]
    # With them, a move down from a version never rolled back is a forced promotion.
    kinds = [m.kind for m in champion_changes(series, rolled_back={2})]
    assert kinds == ["promotion", "rollback", "promotion", "promotion"]
    assert champion_changes([]) == [] and champion_changes([(1, 4.0)]) == []
    assert Marker(3, "promotion", 1, 2).label == "promotion v1\u2192v2"


def test_recent_keeps_the_last_checks_and_drops_timestamp_steps() -> None:
    points = [(1_795_987_000, 0.5), *[(s, float(s)) for s in range(1, 61)]]
    kept = recent(points, last=60, count=50)
    assert [s for s, _ in kept] == list(range(11, 61))


def test_the_figure_has_a_panel_per_signal_and_one_for_accuracy() -> None:
    series = {
        "drift_text": [(1, 0.5), (2, 0.7)],
        "threshold_text": [(1, 0.6), (2, 0.6)],
        "drift_confidence": [(1, 0.01), (2, 0.02)],
        "threshold_confidence": [(1, 0.05), (2, 0.05)],
        "estimated_accuracy": [(1, 0.9), (2, 0.85)],
        "accuracy": [(2, 0.8)],
    }
    fig = history_figure(series, specialist="s", markers=[Marker(2, "promotion", 1, 2)])
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["text", "confidence", "accuracy"]
    # A vertical line per marker on every panel, between the two checks.
    for ax in fig.axes:
        if ax.get_visible():
            assert any(list(line.get_xdata()) == [1.5, 1.5] for line in ax.get_lines())


def test_checks_are_numbered_and_each_draws_the_history(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitors.check import _log
    from monitors.history import CHECKS_TAG

    registry = _registry(home)
    spec = _spec()
    logged = [
        _log(registry, spec, _verdict(i, champion=v), now=T0 + timedelta(minutes=10 * i))
        for i, v in enumerate((1, 1, 2), start=1)
    ]
    run_id = logged[0].run_id
    assert run_id is not None and {v.run_id for v in logged} == {run_id}
    history = mlflow_client(registry).get_metric_history(run_id, "status_level")
    assert sorted(m.step for m in history) == [1, 2, 3]
    # The time is still the check's own: the UI can plot against it too.
    assert sorted(m.timestamp for m in history)[0] == int(
        (T0 + timedelta(minutes=10)).timestamp() * 1000
    )
    assert registry.run_tags(run_id)[CHECKS_TAG] == "3"
    folders = sorted(f.path for f in mlflow_client(registry).list_artifacts(run_id, "checks"))
    assert len(folders) == 3
    for folder in folders:
        inside = {
            f.path.rsplit("/", 1)[-1]
            for f in mlflow_client(registry).list_artifacts(run_id, folder)
        }
        assert {"signals.png", "verdict.json"} <= inside, inside
    # The last figure marks the promotion at check 3 (what was drawn, seen through the seam).
    drawn: list[Any] = []
    import monitors.history as history_module

    real = history_module.history_figure

    def spy(series: Any, **kwargs: Any) -> Any:
        drawn.append((series, kwargs))
        return real(series, **kwargs)

    monkeypatch.setattr(history_module, "history_figure", spy)
    _log(registry, spec, _verdict(4, champion=1), now=T0 + timedelta(minutes=40))
    series, kwargs = drawn[-1]
    assert [(m.step, m.kind) for m in kwargs["markers"]] == [(3, "promotion"), (4, "rollback")]
    assert [s for s, _ in series["drift_embeddings"]] == [1, 2, 3, 4]
    assert [s for s, _ in series["accuracy"]] == [1, 2, 3, 4]


def test_a_run_with_timestamp_steps_continues_at_its_count(home: Path) -> None:
    from mlflow.entities import Metric

    from monitors.check import _log, monitoring_run_id

    registry = _registry(home)
    run_id = monitoring_run_id(registry, "hist")
    old = [int((T0 - timedelta(hours=h)).timestamp()) for h in (2, 1)]
    mlflow_client(registry).log_batch(
        run_id, metrics=[Metric("status_level", 0.0, step * 1000, step) for step in old]
    )
    _log(registry, _spec(), _verdict(1, champion=1), now=T0)
    steps = sorted(
        m.step for m in mlflow_client(registry).get_metric_history(run_id, "status_level")
    )
    assert steps == [3, *old]
    figures = [
        f.path
        for folder in mlflow_client(registry).list_artifacts(run_id, "checks")
        for f in mlflow_client(registry).list_artifacts(run_id, folder.path)
    ]
    assert any(p.endswith("signals.png") for p in figures)
