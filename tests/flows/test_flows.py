"""The closed loop's flows as real Prefect flow runs, on the real registry and store.

A tiny specialist is trained once; each test sets the registry and the traffic up the
way the gateway would leave them (requests, shadow predictions, people's labels) and runs
the flows under ``prefect_test_harness`` (a temporary Prefect server).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from lifecycle.cli.main import app
from lifecycle.synthetic.scenarios import generate_tickets
from tests.conftest import mlflow_client
from tests.waits import wait_until

pytestmark = pytest.mark.slow

SPEC = {
    "name": "looped",
    "data": {"kind": "generator", "n": 360, "seed": 13},
    "training": {"epochs": 1, "batch_size": 16, "max_length": 32, "evals_per_epoch": 1},
    "monitoring": {"window_size": 150, "min_window": 50, "min_labels": 60},
    "promotion": {"min_samples": 60, "alpha": 0.05},
}


@pytest.fixture(scope="module")
def prefect() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def loop_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect: None) -> Iterator[Any]:
    """A home with the champion v1 of ``looped`` and an empty traffic store."""
    from lifecycle.config.settings import load_settings
    from lifecycle.config.spec import load_specialists
    from lifecycle.store import TrafficStore
    from lifecycle.training.pipeline import train_and_register

    specialists_file = tmp_path / "specialists.yaml"
    specialists_file.write_text(yaml.safe_dump({"specialists": [SPEC]}))
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LIFECYCLE_SPECIALISTS_FILE", str(specialists_file))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LIFECYCLE_TRAFFIC_DB_URL", raising=False)
    settings = load_settings()
    spec = load_specialists(specialists_file).get("looped")
    trained = train_and_register(settings, spec)
    store = TrafficStore(settings.traffic_url)
    store.upgrade()

    class Env:
        pass

    env = Env()
    env.settings, env.spec, env.store, env.trained = settings, spec, store, trained  # type: ignore[attr-defined]
    yield env
    store.dispose()


def _an_attempt_failed(since: datetime) -> bool:
    """Whether a task run created after ``since`` failed an attempt and waits for its retry:
    the moment an outage may end and still prove that the flow retried, however slowly the
    machine got there."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs()
    return any(
        r.created is not None
        and r.created >= since
        and r.state is not None
        and (r.state.name in ("AwaitingRetry", "Retrying") or r.run_count > 1)
        for r in runs
    )


def _check_attempts(result: Any) -> int:
    """How many times the monitor flow run ``result`` ran its check task (retries included)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs()
    checks = [
        r
        for r in runs
        if r.flow_run_id == result.state_details.flow_run_id and r.name.startswith("check")
    ]
    assert checks, "the flow run has no check task"
    return int(checks[0].run_count)


def _bad_challenger(env: Any) -> Any:
    """A challenger trained on shuffled labels: it answers at random."""
    from lifecycle.training.pipeline import load_training_data, train_and_register

    data = load_training_data(env.spec)
    data["label"] = data["label"].sample(frac=1.0, random_state=0).to_numpy()
    return train_and_register(env.settings, env.spec, data=data, alias="challenger")


def _traffic(
    env: Any, host: Any, adapter: str, version: int, n: int, *, seed: int, start: datetime
) -> Any:
    from lifecycle.synthetic.replay import record_traffic

    return record_traffic(
        env.store,
        host,
        adapter,
        specialist="looped",
        model_version=version,
        frame=generate_tickets(n, seed=seed),
        label_share=1.0,
        start=start,
    )


def test_a_bad_challenger_is_never_promoted(loop_env: Any) -> None:
    from flows.promote import promote_flow
    from lifecycle.registry.models import Registry
    from lifecycle.synthetic.replay import record_shadow

    env = loop_env
    bad = _bad_challenger(env)
    registry = Registry(env.settings)
    host = env.trained.result.host
    champion_id, _ = registry.load(host, "looped", "champion")
    challenger_id, _ = registry.load(host, "looped", "challenger")
    rows = generate_tickets(200, seed=41)
    rec = _traffic(
        env,
        host,
        champion_id,
        1,
        200,
        seed=41,
        start=datetime.now(UTC) - timedelta(hours=1),
    )
    record_shadow(
        env.store,
        host,
        challenger_id,
        specialist="looped",
        model_version=bad.version.version,
        request_ids=rec.request_ids,
        texts=rows["text"].tolist(),
    )
    # `lifecycle promote` without --force runs the gate once, as the promote flow.
    result = CliRunner().invoke(app, ["promote", "-s", "looped"])
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.output)
    assert outcome["action"] == "rejected", outcome
    aliases = registry.aliases("looped")
    assert aliases["champion"] == 1 and "challenger" not in aliases
    version = registry.get_version("looped", bad.version.version)
    assert "lifecycle.rejected" in version.tags
    alerts = env.store.alerts("looped")
    assert "REJECTED" in alerts["verdict"].tolist()
    # The alert's override names the version: the rejected one has no alias left.
    action = alerts.iloc[-1]["payload"]["actions"][0]
    assert f"--version {bad.version.version} --force" in action
    assert promote_flow("looped")["action"] == "none"  # nothing left to gate


def _copy_of_the_champion(env: Any, *, trained_labels: int, labels_until: datetime) -> int:
    """A challenger with the champion's weights (so no better), registered as if retrained
    from traffic on ``trained_labels`` people's labels read at ``labels_until``."""
    from lifecycle.registry.models import Registry
    from lifecycle.steps import LABELS_UNTIL_TAG, TRAINED_LABELS_TAG

    registry = Registry(env.settings)
    version = registry.log_training(
        env.spec,
        env.trained.result,
        trigger="drift",
        parent_version=1,
        extra_tags={
            TRAINED_LABELS_TAG: str(trained_labels),
            LABELS_UNTIL_TAG: labels_until.isoformat(),
        },
    ).version
    registry.set_alias("looped", "challenger", version)
    return version


def _load(env: Any, version: int) -> tuple[str, str]:
    """The champion's (v1) and ``version``'s adapter ids in the test's host, loaded once."""
    from lifecycle.registry.models import Registry

    registry = Registry(env.settings)
    host = env.trained.result.host
    return registry.load(host, "looped", 1)[0], registry.load(host, "looped", version)[0]


def _shadowed_labels(
    env: Any, adapters: tuple[str, str], version: int, n: int, *, seed: int, start: datetime
) -> None:
    """``n`` requests the champion answered, all labelled by people, shadowed by ``version``."""
    from lifecycle.synthetic.replay import record_shadow

    host = env.trained.result.host
    champion_id, challenger_id = adapters
    recorded = _traffic(env, host, champion_id, 1, n, seed=seed, start=start)
    record_shadow(
        env.store,
        host,
        challenger_id,
        specialist="looped",
        model_version=version,
        request_ids=recorded.request_ids,
        texts=generate_tickets(n, seed=seed)["text"].tolist(),
    )


def test_a_challenger_no_better_than_its_champion_is_rejected_within_2x_min_samples(
    loop_env: Any,
) -> None:
    """The gate never stalls: an undecided challenger is rejected at 2 x min_samples (120)
    labelled pairs, looked at by real promote flow runs every 40 labels."""
    from flows.promote import promote_flow
    from lifecycle.registry.models import Registry

    env = loop_env
    now = datetime.now(UTC)
    # Trained on many labels: only the gate's cap can retire it here, not superseding.
    version = _copy_of_the_champion(env, trained_labels=10_000, labels_until=now)
    min_samples = env.spec.promotion.min_samples
    adapters = _load(env, version)
    actions = []
    for step in range(3):
        start = now + timedelta(minutes=step)
        _shadowed_labels(env, adapters, version, 40, seed=300 + step, start=start)
        outcome = promote_flow("looped")
        actions.append((outcome["action"], outcome["decision"]["n_labelled"]))
    assert actions == [("waiting", 40), ("waiting", 80), ("rejected", 2 * min_samples)], actions
    assert "no evidence of improvement after 120" in outcome["decision"]["reasons"][-1]
    registry = Registry(env.settings)
    assert "challenger" not in registry.aliases("looped")
    assert env.store.alerts("looped")["verdict"].tolist() == ["REJECTED"]


def test_a_waiting_challenger_is_superseded_and_a_retrain_starts_with_all_labels(
    loop_env: Any,
) -> None:
    from flows.promote import promote_flow
    from flows.retrain import retrain_flow
    from lifecycle.registry.models import Registry
    from lifecycle.steps import SUPERSEDED_TAG, TRAINED_LABELS_TAG

    env = loop_env
    registry = Registry(env.settings)
    now = datetime.now(UTC)
    version = _copy_of_the_champion(env, trained_labels=30, labels_until=now)
    adapters = _load(env, version)
    # Labels from before its training do not count as new.
    host = env.trained.result.host
    _traffic(env, host, adapters[0], 1, 30, seed=400, start=now - timedelta(hours=1))
    # While the challenger waits, a retrain is refused: it would make a second one.
    assert retrain_flow("looped")["status"] == "skipped"

    _shadowed_labels(env, adapters, version, 40, seed=401, start=now + timedelta(minutes=1))
    assert promote_flow("looped")["action"] == "waiting"  # 40 new labels <= 2 x 30
    _shadowed_labels(env, adapters, version, 40, seed=402, start=now + timedelta(minutes=2))
    outcome = promote_flow("looped")  # 80 > 60: superseded, 80 labelled pairs < the cap
    assert outcome["action"] == "superseded", outcome
    d = outcome["decision"]
    assert (d["decision"], d["trained_labels"], d["new_labels"], d["n_labelled"]) == (
        "supersede",
        30,
        80,
        80,
    )
    assert "challenger" not in registry.aliases("looped")
    assert "80 people's labels" in registry.get_version("looped", version).tags[SUPERSEDED_TAG]
    alerts = env.store.alerts("looped")
    assert alerts["verdict"].tolist() == ["SUPERSEDED"]
    assert "lifecycle retrain -s looped" in alerts.iloc[-1]["payload"]["actions"][0]

    # The retrain runs and trains on every label; whether its candidate becomes challenger is
    # the candidate check's call on ~24 held-out rows, either way here.
    retrained = retrain_flow("looped", trigger="drift")
    assert retrained["status"] in ("registered", "rejected"), retrained
    new = registry.get_version("looped", retrained["challenger_version"])
    assert int(new.tags[TRAINED_LABELS_TAG]) == 110  # every person's label, old and new
    if retrained["status"] == "registered":
        assert registry.aliases("looped")["challenger"] == new.version
    else:
        assert "challenger" not in registry.aliases("looped")
    # The retrain's cool-down reads the tags from the registry's listing, not one call per
    # version: the listing must carry them.
    from lifecycle.steps.lineage import labels_since_training

    listed = next(v for v in registry.versions("looped") if v.version == new.version)
    assert labels_since_training(env.store, "looped", listed) == labels_since_training(
        env.store, "looped", new
    )
    assert labels_since_training(env.store, "looped", listed)[0] == 110


def test_a_promotion_that_hurts_is_rolled_back_by_the_monitor_flow(loop_env: Any) -> None:
    from flows.monitor import monitor_flow
    from lifecycle.registry.models import PROMOTED_AT, Registry

    env = loop_env
    bad = _bad_challenger(env)
    registry = Registry(env.settings)
    host = env.trained.result.host
    champion_id, _ = registry.load(host, "looped", 1)
    bad_id, _ = registry.load(host, "looped", bad.version.version)
    promoted_at = datetime.now(UTC) - timedelta(minutes=30)
    # Before the promotion the old champion answered; after it, the bad one (forced through).
    _traffic(env, host, champion_id, 1, 120, seed=51, start=promoted_at - timedelta(minutes=20))
    registry.promote("looped", reason="manual --force")
    mlflow_client(registry).set_model_version_tag(
        "looped", str(bad.version.version), PROMOTED_AT, promoted_at.isoformat()
    )
    _traffic(
        env,
        host,
        bad_id,
        bad.version.version,
        120,
        seed=52,
        start=promoted_at + timedelta(minutes=1),
    )

    result = monitor_flow("looped")
    assert result["guardrail"]["action"] == "rolled_back", result["guardrail"]
    aliases = registry.aliases("looped")
    assert aliases["champion"] == 1 and "previous" not in aliases
    assert "lifecycle.rolled_back" in registry.get_version("looped", bad.version.version).tags
    assert "ROLLED_BACK" in env.store.alerts("looped")["verdict"].tolist()


def test_a_duplicate_trigger_starts_one_retrain(loop_env: Any) -> None:
    from flows.retrain import retrain_flow
    from lifecycle.registry.models import Registry

    env = loop_env
    registry = Registry(env.settings)
    host = env.trained.result.host
    champion_id, _ = registry.load(host, "looped", "champion")
    _traffic(
        env,
        host,
        champion_id,
        1,
        160,
        seed=61,
        start=datetime.now(UTC) - timedelta(hours=1),
    )

    # Two triggers for the same drift at the same moment: the one-slot concurrency limit
    # lets one train; the other gives up instead of queueing a second retrain. On a busy
    # server its slot request can land after the first run finished: then the challenger
    # the first one trained from v1 stops it. Either way exactly one retrain trains.
    gate = threading.Barrier(2)

    def trigger() -> dict[str, Any]:
        gate.wait()
        return retrain_flow("looped", trigger="drift")

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = [f.result() for f in [pool.submit(trigger), pool.submit(trigger)]]
    first = next(r for r in runs if r["status"] == "registered")
    raced = next(r for r in runs if r is not first)
    assert raced["status"] == "skipped", raced
    assert "another retrain" in raced["reason"] or "already trained" in raced["reason"], raced
    # A later trigger for the same drift finds the challenger already trained from v1.
    later = retrain_flow("looped", trigger="drift")
    assert later["status"] == "skipped" and "already trained" in later["reason"]
    versions = registry.versions("looped")
    assert [v.version for v in versions] == [1, 2]
    assert registry.aliases("looped")["challenger"] == 2
    lineage = versions[1].lineage
    assert lineage["trigger"] == "drift" and lineage["parent_version"] == "1"
    assert first["evaluation"]["holdout_new.challenger_accuracy"] > 0.5


def test_too_few_labels_start_no_training_and_say_how_many_are_missing(loop_env: Any) -> None:
    from flows.retrain import retrain_flow
    from lifecycle.registry.models import Registry

    env = loop_env
    registry = Registry(env.settings)
    host = env.trained.result.host
    champion_id, _ = registry.load(host, "looped", "champion")
    _traffic(
        env,
        host,
        champion_id,
        1,
        20,
        seed=71,
        start=datetime.now(UTC) - timedelta(hours=1),
    )
    outcome = retrain_flow("looped")
    assert outcome["status"] == "needs_labels" and outcome["missing"] == 40
    assert [v.version for v in registry.versions("looped")] == [1]
    alerts = env.store.alerts("looped")
    assert alerts["verdict"].tolist() == ["NEEDS_LABELS"]
    assert "40 more labels" in alerts["payload"].iloc[0]["summary"]
    assert os.environ["LIFECYCLE_HOME"]  # the flow read the same environment as the test


def test_a_free_slot_granted_late_is_waited_for_not_taken_for_another_retrain(
    loop_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a busy machine the server may answer the one-second try for the slot too late,
    # though no retrain holds it. The trigger must then wait and train, not skip as if
    # another retrain were running (the bench's loop lost a retrain to that). The first try
    # is made to time out; the server, the limit and the second try are real.
    import prefect.concurrency.sync as prefect_sync

    from flows.retrain import SLOW_SERVER_TRY_S, retrain_flow

    real = prefect_sync.concurrency
    waits: list[float] = []

    def granted_late(*args: Any, **kwargs: Any) -> Any:
        waits.append(kwargs["timeout_seconds"])
        if len(waits) == 1:
            raise TimeoutError("the slot was granted after the timeout")
        return real(*args, **kwargs)

    monkeypatch.setattr(prefect_sync, "concurrency", granted_late)
    outcome = retrain_flow("looped")
    # The wait is made of short tries, so that a retrain taking the slot meanwhile is seen.
    assert waits == [1.0, SLOW_SERVER_TRY_S]
    assert outcome["status"] == "needs_labels", outcome  # it ran: no traffic, no labels
    assert loop_env.store.alerts("looped")["verdict"].tolist() == ["NEEDS_LABELS"]


def test_a_slot_taken_while_waiting_for_a_slow_grant_skips(
    loop_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race CI once lost: the first look found the slot free, and the other trigger took
    # it a moment later. The waiting trigger must see that and skip, not queue a retrain.
    import contextlib

    import prefect.concurrency.sync as prefect_sync

    from flows.retrain import SLOW_SERVER_TRY_S, retrain_flow, retrain_limit

    real = prefect_sync.concurrency
    waits: list[float] = []
    held = contextlib.ExitStack()

    def taken_meanwhile(*args: Any, **kwargs: Any) -> Any:
        waits.append(kwargs["timeout_seconds"])
        if len(waits) == 1:
            raise TimeoutError("the slot was granted after the timeout")
        if len(waits) == 2:
            # Another retrain takes the slot for real before this try reaches the server.
            held.enter_context(
                real(retrain_limit("looped"), occupy=1, strict=True, lease_duration=60.0)
            )
        return real(*args, **kwargs)

    monkeypatch.setattr(prefect_sync, "concurrency", taken_meanwhile)
    with held:
        outcome = retrain_flow("looped")
    assert waits == [1.0, SLOW_SERVER_TRY_S]
    assert outcome["status"] == "skipped" and "another retrain" in outcome["reason"], outcome
    assert loop_env.store.alerts("looped").empty  # nothing ran, nothing to say


def test_deploy_registers_schedules_and_event_triggers(prefect: None) -> None:
    from prefect.client.orchestration import get_client

    from flows.deploy import build_deployments
    from lifecycle.config.spec import SpecialistsFile

    specs = SpecialistsFile.model_validate({"specialists": [SPEC]})
    deployments = build_deployments(specs)
    assert [d.name for d in deployments] == ["monitor-looped", "retrain-looped", "promote-looped"]
    ids = [d.apply() for d in deployments]
    with get_client(sync_client=True) as client:
        monitor = client.read_deployment(ids[0])
        assert [s.schedule.cron for s in monitor.schedules] == ["*/10 * * * *"]
        retrain = client.read_deployment(ids[1])
        assert retrain.schedules == [] and retrain.parameters["specialist"] == "looped"
        automations = {a.name: a for a in client.read_automations()}
    drift = automations["lifecycle.drift.detected -> looped"]
    assert drift.trigger.expect == {"lifecycle.drift.detected"}
    assert drift.actions[0].deployment_id == ids[1]
    assert drift.actions[0].parameters == {"specialist": "looped", "trigger": "drift"}
    assert "lifecycle.candidate.registered -> looped" in automations


def test_a_retrain_that_dies_midway_leaves_aliases_and_alerts(
    loop_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lifecycle.training.train
    from flows.retrain import retrain_flow
    from lifecycle.registry.models import Registry

    env = loop_env
    registry = Registry(env.settings)
    host = env.trained.result.host
    champion_id, _ = registry.load(host, "looped", "champion")
    _traffic(
        env,
        host,
        champion_id,
        1,
        160,
        seed=81,
        start=datetime.now(UTC) - timedelta(hours=1),
    )

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("worker lost mid-training (out of memory)")

    monkeypatch.setattr(lifecycle.training.train, "train_specialist", killed)
    with pytest.raises(RuntimeError, match="worker lost"):
        retrain_flow("looped")
    assert registry.aliases("looped") == {"champion": 1}
    assert [v.version for v in registry.versions("looped")] == [1]
    alerts = env.store.alerts("looped")
    assert alerts["verdict"].tolist() == ["RETRAIN_FAILED"]
    assert "worker lost" in alerts["payload"].iloc[0]["summary"]


KILLED_RETRAIN = "from flows.retrain import retrain_flow; retrain_flow('looped', trigger='drift')"


def test_a_retrain_killed_mid_training_changes_nothing_and_the_next_run_succeeds(
    loop_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL of the process running the retrain flow while its training task runs.

    The temporary Prefect server frees no expired lease (its repossessor does not run), so
    the slot comes back only through the dead holder's stale heartbeat.
    """
    import signal
    import subprocess
    import sys
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName
    from prefect.settings import PREFECT_API_URL

    from flows.retrain import retrain_flow
    from lifecycle.registry.models import Registry

    env = loop_env
    registry = Registry(env.settings)
    host = env.trained.result.host
    champion_id, _ = registry.load(host, "looped", "champion")
    _traffic(
        env,
        host,
        champion_id,
        1,
        160,
        seed=91,
        start=datetime.now(UTC) - timedelta(hours=1),
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RETRAIN],
        env={**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    name_filter = TaskRunFilter(name=TaskRunFilterName(like_="train_challenger"))
    try:
        deadline = time.monotonic() + 180
        with get_client(sync_client=True) as client:
            while True:
                assert proc.poll() is None, "the retrain ended before it could be killed"
                runs = client.read_task_runs(task_run_filter=name_filter)
                if any(r.state and r.state.is_running() for r in runs):
                    break
                assert time.monotonic() < deadline, "training never started"
                time.sleep(0.2)
        time.sleep(1.0)  # well inside training: data is loaded, the model is learning
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # Registration is the retrain's last write: nothing of the killed run is visible.
    assert registry.aliases("looped") == {"champion": 1}
    assert [v.version for v in registry.versions("looped")] == [1]

    # Until the dead holder's heartbeat is a lease old, a trigger is skipped, never queued;
    # then the next run frees the slot, trains and registers. (A shorter lease for the test.)
    monkeypatch.setattr("flows.retrain.HEARTBEAT_STALE_S", 8.0)
    skipped = 0
    deadline = time.monotonic() + 180
    while True:
        outcome = retrain_flow("looped", trigger="drift")
        if outcome["status"] != "skipped":
            break
        assert "another retrain" in outcome["reason"], outcome
        assert time.monotonic() < deadline, "the killed run's slot was never freed"
        skipped += 1
        time.sleep(2)
    # It trained and recorded v2; the candidate check on the few held-out rows of this
    # stationary traffic decides whether v2 is shadowed, either way here.
    assert outcome["status"] in ("registered", "rejected"), outcome
    assert [v.version for v in registry.versions("looped")] == [1, 2]
    expected = {"champion": 1} | ({"challenger": 2} if outcome["status"] == "registered" else {})
    assert registry.aliases("looped") == expected
    assert skipped >= 1  # the slot really was held by the dead run at first


@pytest.mark.integration
def test_a_brief_store_outage_makes_the_monitor_retry_not_give_up(
    loop_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The traffic store on the real PostgreSQL refuses connections for a few seconds."""
    import threading
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from flows.monitor import monitor_flow
    from lifecycle.registry.models import Registry
    from lifecycle.store import TrafficStore
    from tests.store_harness import ADMIN_URL, refused_connections

    env = loop_env
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"lifecycle_flows_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        store = TrafficStore(url)
        store.upgrade()
        env.store = store
        registry = Registry(env.settings)
        host = env.trained.result.host
        champion_id, _ = registry.load(host, "looped", "champion")
        from lifecycle.synthetic.replay import record_traffic

        record_traffic(
            store,
            host,
            champion_id,
            specialist="looped",
            model_version=1,
            frame=generate_tickets(150, seed=91),
            start=datetime.now(UTC) - timedelta(hours=1),
        )
        store.dispose()
        monkeypatch.setenv("LIFECYCLE_TRAFFIC_DB_URL", url)
        with refused_connections(admin, name):
            # The outage ends while the flow waits to retry its first failed attempt.
            def end_outage() -> None:
                try:
                    wait_until(lambda: _an_attempt_failed(started), timeout=120, every=0.5)
                finally:
                    with admin.connect() as conn:
                        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))

            started = datetime.now(UTC)
            threading.Thread(target=end_outage, daemon=True).start()
            result = monitor_flow("looped", return_state=True)
        assert result.is_completed(), result
        verdict = result.result()["verdict"]
        assert verdict["status"] == "OK" and verdict["window"]["rows"] == 150
        assert _check_attempts(result) >= 2  # failed while refused, then succeeded
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.integration
def test_a_registry_outage_makes_the_monitor_retry_not_give_up(
    loop_env: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """MLflow as a real `mlflow server` that is down when the flow starts and comes up later."""
    import subprocess
    import sys

    import httpx

    from flows.monitor import monitor_flow
    from lifecycle.registry.models import Registry
    from tests.gateway_harness import free_port

    env = loop_env
    registry = Registry(env.settings)
    host = env.trained.result.host
    champion_id, _ = registry.load(host, "looped", "champion")
    _traffic(
        env,
        host,
        champion_id,
        1,
        150,
        seed=93,
        start=datetime.now(UTC) - timedelta(hours=1),
    )
    port = free_port()
    # The flow reads the registry through the server (the same database behind it).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    server: list[subprocess.Popen[bytes]] = []

    def registry_comes_back() -> None:
        wait_until(lambda: _an_attempt_failed(started), timeout=120, every=0.5)
        server.append(
            subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("mlflow")),
                    "server",
                    "--backend-store-uri",
                    env.settings.tracking_uri,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                ],
                stdout=open(tmp_path / "mlflow.log", "wb"),  # noqa: SIM115 - closed with the process
                stderr=subprocess.STDOUT,
            )
        )

    try:
        with httpx.Client() as probe, pytest.raises(httpx.ConnectError):
            probe.get(f"http://127.0.0.1:{port}/health")  # down when the flow starts
        started = datetime.now(UTC)
        threading.Thread(target=registry_comes_back, daemon=True).start()
        result = monitor_flow("looped", return_state=True)
    finally:
        for proc in server:
            proc.terminate()
            proc.wait(timeout=30)
    assert result.is_completed(), (result, (tmp_path / "mlflow.log").read_text()[-2000:])
    verdict = result.result()["verdict"]
    assert verdict["status"] == "OK" and verdict["window"]["rows"] == 150
    assert verdict["champion_version"] == 1
    assert _check_attempts(result) >= 2  # failed while the registry was down
    assert registry.aliases("looped") == {"champion": 1}


def test_a_candidate_no_better_than_the_champion_is_recorded_but_not_challenger(
    loop_env: Any,
) -> None:
    """Labels that agree with the champion everywhere: it scores 1.0 on the held-out drifted
    rows, no candidate can beat that, so the version is kept without the challenger alias."""
    from flows.retrain import retrain_flow
    from lifecycle.registry.models import Registry
    from lifecycle.steps import CANDIDATE_CHECK_TAG, REJECTED_REASON_TAG
    from lifecycle.synthetic.replay import record_traffic

    env = loop_env
    registry = Registry(env.settings)
    training_set = registry.training_set("looped", 1)
    assert training_set is not None and list(training_set.columns) == ["text", "label"]
    assert len(training_set) == env.trained.result.params["n_train"]

    host = env.trained.result.host
    champion_id, _ = registry.load(host, "looped", "champion")
    frame = generate_tickets(160, seed=81)
    frame["label"] = [p.label for p in host.predict(frame["text"].tolist(), champion_id)]
    record_traffic(
        env.store,
        host,
        champion_id,
        specialist="looped",
        model_version=1,
        frame=frame,
        label_share=1.0,
        start=datetime.now(UTC) - timedelta(hours=1),
    )
    outcome = retrain_flow("looped", trigger="drift")
    assert outcome["status"] == "rejected", outcome
    assert outcome["evaluation"]["holdout_new.champion_accuracy"] == 1.0
    version = registry.get_version("looped", outcome["challenger_version"])
    assert "challenger" not in registry.aliases("looped")
    reason = version.tags[REJECTED_REASON_TAG]
    assert "<= champion 1.000 on " in reason and version.tags[CANDIDATE_CHECK_TAG] == reason
    alerts = env.store.alerts("looped")
    assert alerts["verdict"].tolist() == ["REJECTED_CANDIDATE"]

    # The same labels would train the same model: an automatic retrain now waits for
    # monitoring.min_labels new labels; a person's manual one does not.
    again = retrain_flow("looped", trigger="schedule")
    assert again["status"] == "skipped", again
    assert f"candidate v{version.version}" in again["reason"] and "not promoted" in again["reason"]
    assert len(registry.versions("looped")) == version.version
    manual = retrain_flow("looped", trigger="manual")
    assert manual["status"] in ("rejected", "registered"), manual
    assert manual["challenger_version"] == version.version + 1
