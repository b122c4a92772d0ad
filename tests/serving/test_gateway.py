"""The gateway against a real uvicorn on a free port, a real MLflow registry and a real store."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lifecycle.config.settings import Settings
from lifecycle.registry.models import CHALLENGER, CHAMPION, Registry
from tests.conftest import TINY
from tests.fakes.openai_server import FakeOpenAI
from tests.gateway_harness import (
    TOKEN,
    RunningGateway,
    SharedHost,
    gateway_settings,
    running_gateway,
    tiny_specs,
)
from tests.waits import wait_until

TEXTS = ["I lost my card at the station", "refund my last order please", "the app keeps crashing"]


@pytest.fixture(scope="module")
def gateway(served_home: Path, host) -> Iterator[RunningGateway]:  # type: ignore[no-untyped-def]
    from lifecycle.serving.app import create_app

    with SharedHost(host) as shared:
        app = create_app(gateway_settings(served_home), tiny_specs(), host=shared)
        with running_gateway(app, token=TOKEN) as running:
            yield running


@pytest.fixture
def own_gateway(served_home: Path, tmp_path: Path, shared_host) -> Iterator[RunningGateway]:  # type: ignore[no-untyped-def]
    """A gateway on a copy of the served home, for a test that moves aliases: the module's
    registry stays as every other test finds it, even when this test fails halfway."""
    from lifecycle.serving.app import create_app

    home = Path(shutil.copytree(served_home, tmp_path / "home"))
    app = create_app(gateway_settings(home), tiny_specs(), host=shared_host)
    with running_gateway(app, token=TOKEN) as running:
        yield running


def _registry(gw: RunningGateway) -> Registry:
    return Registry(Settings(home=gw.gw.settings.home))


def _flush(gw: RunningGateway) -> None:
    gw.gw.writer.flush(timeout=30)


def test_predict_one_and_many(gateway: RunningGateway) -> None:
    with gateway.client() as client:
        one = client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS[:1]})
        many = client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS})
    assert one.status_code == 200, one.text
    assert many.status_code == 200
    body = many.json()
    assert body["specialist"] == "tiny"
    preds = body["predictions"]
    assert len(preds) == len(TEXTS)
    labels = set(gateway.gw.engine.routes["tiny"].champion.labels)
    for p in preds:
        assert len(p["request_id"]) == 32
        assert p["label"] in labels
        assert 0 < p["confidence"] <= 1
        assert p["model_version"] == 1
        assert p["escalated"] is False and p["source"] == "specialist"
        assert p["out_of_scope"] in (True, False, None)  # None: a version without a detector
        assert p["ood_score"] is None or isinstance(p["ood_score"], float)
    assert len({p["request_id"] for p in preds}) == len(TEXTS)


def test_specialists_health_and_metrics(gateway: RunningGateway) -> None:
    with gateway.client() as client:
        listing = client.get("/v1/specialists").json()
        ready = client.get("/readyz")
        health = client.get("/healthz")
        client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS})
        metrics = client.get("/metrics").text
    entry = listing["specialists"][0]
    assert entry["name"] == "tiny" and entry["status"] == "serving"
    assert entry["champion"]["version"] == 1 and entry["challenger"]["version"] == 2
    assert entry["champion"]["adapter_id"] == "tiny@v1"
    assert listing["registry_up"] is True
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert health.json() == {"status": "ok"}
    for series in (
        'lifecycle_requests_total{specialist="tiny",version="1"}',
        "lifecycle_batch_size_bucket",
        "lifecycle_request_latency_seconds_bucket",
        'lifecycle_queue_depth{queue="shadow"}',
        "lifecycle_registry_up 1.0",
        'lifecycle_estimated_cost_per_1k_requests{kind="specialist",specialist="tiny"}',
    ):
        assert series in metrics, series


def test_shadow_predictions_are_stored_beside_requests(gateway: RunningGateway) -> None:
    engine = gateway.gw.engine
    queue_shadow = engine.shadow
    on_loop: list[bool] = []

    def watched(*args: Any, **kwargs: Any) -> bool:
        # The shadow queue is an asyncio.Queue: only the event loop's thread may touch it.
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return queue_shadow(*args, **kwargs)

    engine.shadow = watched
    try:
        with gateway.client() as client:
            ids = [
                p["request_id"]
                for p in client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS}).json()[
                    "predictions"
                ]
            ]
    finally:
        engine.shadow = queue_shadow

    def stored_pairs() -> Any:
        _flush(gateway)
        pairs = gateway.gw.writer.store.shadow_pairs("tiny", challenger_version=2)
        return pairs if set(ids) <= set(pairs["request_id"]) else None

    pairs = wait_until(stored_pairs, what="every shadow pair stored")
    rows = pairs[pairs["request_id"].isin(ids)]
    assert len(rows) == len(ids)
    # v2 holds the same weights as v1: the shadow must agree with the champion.
    assert (rows["challenger_label"] == rows["champion_label"]).all()
    assert on_loop == [True]  # queued once, from the event loop


class BrokenChallenger(SharedHost):
    """Fault injection: every forward pass that includes the challenger (v2) raises."""

    def predict(self, texts: Any, adapter_ids: Any, **kwargs: Any) -> Any:
        if any(a.endswith("tiny@v2") for a in adapter_ids):
            raise RuntimeError("challenger weights went missing")
        return super().predict(texts, adapter_ids, **kwargs)


@pytest.mark.parametrize("piggyback", [False, True], ids=["own-batches", "piggyback"])
def test_a_failing_shadow_costs_no_answer_and_is_stored_for_the_gate(
    served_home: Path, host: Any, piggyback: bool
) -> None:
    from lifecycle.serving.app import create_app

    settings = gateway_settings(served_home, shadow_piggyback=piggyback, shadow_max_delay_s=0.05)
    with BrokenChallenger(host) as broken:
        app = create_app(settings, tiny_specs(), host=broken)
        with running_gateway(app, token=TOKEN) as gw, gw.client() as client:
            store = gw.gw.writer.store
            store.upgrade()  # a reader may come before the gateway's first write
            before = store.shadow_failure_count("tiny", challenger_version=2)
            answers = [
                client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS}) for _ in range(6)
            ]

            def failures() -> int:
                gw.gw.writer.flush(timeout=30)
                return int(store.shadow_failure_count("tiny", challenger_version=2) - before)

            wait_until(lambda: failures() >= 6 * len(TEXTS), what="every shadow failure stored")
            failed = failures()
            metrics = client.get("/metrics").text
    assert [a.status_code for a in answers] == [200] * 6
    assert failed == 6 * len(TEXTS)
    assert 'lifecycle_shadow_errors_total{specialist="tiny",version="2"} 18.0' in metrics


def test_feedback(gateway: RunningGateway) -> None:
    with gateway.client() as client:
        pred = client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS[:1]}).json()
        request_id = pred["predictions"][0]["request_id"]
        labels = gateway.gw.engine.routes["tiny"].champion.labels
        first = client.post(
            "/v1/specialists/tiny/feedback", json={"request_id": request_id, "label": labels[0]}
        )
        again = client.post(
            "/v1/specialists/tiny/feedback", json={"request_id": request_id, "label": labels[1]}
        )
        unknown = client.post(
            "/v1/specialists/tiny/feedback", json={"request_id": "0" * 32, "label": labels[0]}
        )
        outside = client.post(
            "/v1/specialists/tiny/feedback", json={"request_id": request_id, "label": "not_a_label"}
        )
        empty = client.post("/v1/specialists/tiny/feedback", json={})
    assert first.status_code == 202 and first.json()["accepted"] == 1
    assert again.status_code == 202
    assert unknown.status_code == 404
    # labels_policy: open (the default): a label the champion does not know is proposed.
    # Closed sets and the cap are in test_labels_open.py.
    assert outside.status_code == 202 and outside.json()["proposed_labels"] == ["not_a_label"]
    assert empty.status_code == 422
    _flush(gateway)
    window = gateway.gw.writer.store.window("tiny", with_embeddings=False)
    row = window[window["id"] == request_id].iloc[0]
    assert row["true_label"] == "not_a_label"  # the last label wins


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"texts": [""]}, 422),
        ({"texts": ["   \n\t"]}, 422),
        ({"texts": []}, 422),
        ({"texts": "not a list"}, 422),
        ({"texts": [1, 2]}, 422),
        ({"text": ["wrong field"]}, 422),
        ({"texts": ["x" * 2001]}, 413),
        ({"texts": ["hi"] * 65}, 413),
    ],
)
def test_bad_predict_input_is_a_clear_4xx(
    gateway: RunningGateway, payload: Any, status: int
) -> None:
    with gateway.client() as client:
        response = client.post("/v1/specialists/tiny/predict", json=payload)
        still = client.post("/v1/specialists/tiny/predict", json={"texts": ["still serving?"]})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    assert "Traceback" not in response.text
    assert len(response.content) < 5000  # the input is never echoed back
    assert still.status_code == 200


def test_hostile_requests(gateway: RunningGateway) -> None:
    with gateway.client() as client:
        huge = client.post(
            "/v1/specialists/tiny/predict",
            content=b'{"texts": ["' + b"a" * 1_000_000 + b'"]}',
            headers={"content-type": "application/json"},
        )
        many = client.post("/v1/specialists/tiny/predict", json={"texts": ["hello"] * 10_000})
        bad_utf8 = client.post(
            "/v1/specialists/tiny/predict",
            content=b'{"texts": ["caf\xe9"]}',
            headers={"content-type": "application/json"},
        )
        lone_surrogate = client.post(
            "/v1/specialists/tiny/predict",
            content=b'{"texts": ["fine", "half an emoji \\ud83d here"]}',
            headers={"content-type": "application/json"},
        )
        not_json = client.post(
            "/v1/specialists/tiny/predict",
            content=b"{texts:",
            headers={"content-type": "application/json"},
        )
        unknown = client.post("/v1/specialists/nobody/predict", json={"texts": ["hi"]})
        traversal = client.post("/v1/specialists/..%2F..%2Fetc/predict", json={"texts": ["hi"]})
        upper = client.post("/v1/specialists/TINY/predict", json={"texts": ["hi"]})
        ok = client.post("/v1/specialists/tiny/predict", json={"texts": ["fine"]})
    assert huge.status_code == 413
    assert many.status_code == 413
    assert bad_utf8.status_code in (400, 422)
    assert lone_surrogate.status_code == 422
    assert "surrogates" in lone_surrogate.json()["detail"]
    assert not_json.status_code in (400, 422)
    assert unknown.status_code == 404 and "nobody" in unknown.json()["detail"]
    assert traversal.status_code in (404, 422)
    assert upper.status_code == 422
    for response in (huge, many, bad_utf8, lone_surrogate, not_json, unknown, traversal, upper):
        assert "Traceback" not in response.text
    assert ok.status_code == 200


def test_admin_routes_need_the_token(gateway: RunningGateway) -> None:
    with gateway.client() as client:
        missing = client.post("/v1/admin/reload")
        wrong = client.post("/v1/admin/reload", headers={"Authorization": "Bearer nope"})
        right = client.post("/v1/admin/reload", headers=gateway.admin_headers())
    assert missing.status_code == 401 and wrong.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200 and right.json()["ok"] is True


def test_gateway_refuses_to_start_without_a_token(served_home: Path) -> None:
    from lifecycle.config.errors import ConfigError
    from lifecycle.serving.app import create_app

    with pytest.raises(ConfigError, match="LIFECYCLE_ADMIN_TOKEN"):
        create_app(gateway_settings(served_home, admin_token=None), tiny_specs())
    create_app(gateway_settings(served_home, admin_token=None, insecure_dev=True), tiny_specs())


def test_hot_swap_under_load_fails_no_request(own_gateway: RunningGateway) -> None:
    gateway = own_gateway
    registry = _registry(gateway)
    statuses: list[int] = []
    versions: list[int] = []
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            while not stop.is_set():
                r = client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS[:2]})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.append(r.json()["predictions"][0]["model_version"])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client_loop) for _ in range(8)]

        def served_more(than: int) -> None:
            """Load keeps flowing across each step: 20 more answers than ``than``."""
            wait_until(lambda: len(statuses) >= than + 20, what="20 more answers under load")

        served_more(0)
        try:
            moved = registry.promote("tiny", reason="test swap")
            assert moved[CHAMPION] == 2
            with gateway.client() as admin:
                assert (
                    admin.post("/v1/admin/reload", headers=gateway.admin_headers()).status_code
                    == 200
                )
            served_more(len(statuses))
            registry.rollback("tiny", reason="test swap back")
            with gateway.client() as admin:
                assert (
                    admin.post("/v1/admin/reload", headers=gateway.admin_headers()).status_code
                    == 200
                )
            served_more(len(statuses))
        finally:
            stop.set()
            for f in futures:
                f.result()
    assert statuses and all(s == 200 for s in statuses), sorted(set(statuses))
    assert 2 in versions and versions[-1] == 1  # served v2 after the swap, v1 after the rollback


def test_registry_outage_keeps_serving(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = gateway.gw.sync
    good = sync._registry

    class Down:
        def has_model(self, name: str) -> bool:
            raise ConnectionError("registry unreachable (test)")

    sync._registry = Down()
    try:
        with gateway.client() as client:
            reload = client.post("/v1/admin/reload", headers=gateway.admin_headers())
            served = client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS})
            ready = client.get("/readyz").json()
            metrics = client.get("/metrics").text
        assert reload.json()["ok"] is False
        assert served.status_code == 200
        assert ready["registry_up"] is False and "unreachable" in ready["registry_error"]
        assert "lifecycle_registry_up 0.0" in metrics
    finally:
        sync._registry = good
        with gateway.client() as client:
            client.post("/v1/admin/reload", headers=gateway.admin_headers())
    assert gateway.gw.sync.state.registry_up is True


def test_escalation_to_an_openai_compatible_fallback(served_home: Path, shared_host) -> None:  # type: ignore[no-untyped-def]
    from lifecycle.serving.app import create_app
    from lifecycle.serving.fallback import OpenAIFallback

    with FakeOpenAI() as fake:
        fake.mode = "echo_label"
        fallback = OpenAIFallback(base_url=fake.base_url, model="big", timeout_s=2.0, max_retries=0)
        specs = tiny_specs(escalation={"confidence_threshold": 1.0, "fallback": "openai"})
        app = create_app(
            gateway_settings(served_home), specs, host=shared_host, fallbacks={"tiny": fallback}
        )
        with running_gateway(app, token=TOKEN) as gw, gw.client() as client:
            labels = gw.gw.engine.routes["tiny"].champion.labels
            text = f"this one is clearly about {labels[3]}"
            answered = client.post("/v1/specialists/tiny/predict", json={"texts": [text]}).json()
            fake.mode = "error500"
            failed = client.post("/v1/specialists/tiny/predict", json={"texts": [text]}).json()
            metrics = client.get("/metrics").text
            gw.gw.writer.flush(timeout=30)
            window = gw.gw.writer.store.window("tiny", with_embeddings=False)
        body = fake.requests[0].body
        assert body["model"] == "big"
        assert any(labels[3] in m["content"] for m in body["messages"])
    ok = answered["predictions"][0]
    assert ok["escalated"] is True and ok["source"] == "openai" and ok["label"] == labels[3]
    bad = failed["predictions"][0]
    assert bad["escalated"] is True and bad["flagged"] is True and bad["source"] == "specialist"
    assert 'outcome="ok"' in metrics and 'outcome="failed"' in metrics
    row = window[window["id"] == ok["request_id"]].iloc[0]
    assert row["fallback_label"] == labels[3] and row["fallback_source"] == "openai"
    assert row["true_label"] == labels[3] and row["true_label_source"] == "fallback"


def test_a_traffic_store_outage_is_a_503_not_a_client_error(
    served_home: Path,
    shared_host,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """A store that cannot be read, or a writer that refuses records, answers 503 with a plain
    message: the call was fine and may work later. Not 400, not a 500 with a traceback."""
    from lifecycle.serving.app import create_app

    # A database under a file, not a folder: no SQLite can open it, however it tries.
    (tmp_path / "a-file").write_text("not a folder")
    down = f"sqlite:///{tmp_path / 'a-file' / 'traffic.db'}"
    app = create_app(
        gateway_settings(served_home, traffic_db_url=down), tiny_specs(), host=shared_host
    )
    with running_gateway(app, token=TOKEN) as gw, gw.client() as client:
        h = gw.admin_headers()
        reads = [
            client.get("/v1/specialists/tiny/review", headers=h),
            client.get("/v1/specialists/tiny/label-requests", headers=h),
        ]
        gw.gw.writer.close()  # refuses records from now on, as at a shutdown
        refused = client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS[:1]})
        metrics = client.get("/metrics").text
    for response in [*reads, refused]:
        assert response.status_code == 503, response.text
        assert "traffic" in response.json()["detail"]
        assert "Traceback" not in response.text and "sqlite" not in response.text.lower()
    assert reads[0].json()["detail"] == "the traffic store cannot be read right now"
    assert "closed" in refused.json()["detail"]
    assert 'route="/v1/specialists/{name}/predict",status="503"' in metrics


@pytest.mark.parametrize("mode", ["hash", "none"])
def test_redacted_traffic_keeps_no_text(
    served_home: Path,
    shared_host,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    mode: str,
) -> None:
    """LIFECYCLE_STORE_TEXT=hash keeps a SHA-256 of each text, =none nothing; never the text."""
    import hashlib

    from lifecycle.serving.app import create_app

    db = tmp_path / "traffic.db"
    settings = gateway_settings(served_home, traffic_db_url=f"sqlite:///{db}", store_text=mode)
    secret = "my card number is 4111 1111 1111 1111"
    app = create_app(settings, tiny_specs(), host=shared_host)
    with running_gateway(app, token=TOKEN) as gw:
        with gw.client() as client:
            r = client.post("/v1/specialists/tiny/predict", json={"texts": [secret, TEXTS[0]]})
            assert r.status_code == 200
        assert gw.gw.writer.flush(timeout=30) == "database"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT text, text_sha256, label FROM requests").fetchall()
    assert len(rows) == 2 and all(label for _, _, label in rows)
    assert all(text is None for text, _, _ in rows)
    digests = {digest for _, digest, _ in rows}
    if mode == "hash":
        assert hashlib.sha256(secret.encode()).hexdigest() in digests
    else:
        assert digests == {None}
    assert b"4111" not in db.read_bytes()
    for journal_file in (served_home / "journal").rglob("*.jsonl"):
        assert "4111" not in journal_file.read_text()


def test_oversized_input_never_reaches_the_model(gateway: RunningGateway) -> None:
    def batches(client: httpx.Client) -> float:
        metrics = client.get("/metrics").text
        line = next(x for x in metrics.splitlines() if x.startswith("lifecycle_batch_size_count"))
        return float(line.split()[-1])

    with gateway.client() as client:
        before = batches(client)
        refused = [
            client.post("/v1/specialists/tiny/predict", json={"texts": ["x" * 3000]}),
            client.post("/v1/specialists/tiny/predict", json={"texts": ["hi"] * 65}),
            client.post(
                "/v1/specialists/tiny/predict",
                content=b'{"texts": ["' + b"a" * 300_000 + b'"]}',
                headers={"content-type": "application/json"},
            ),
        ]
        after = batches(client)
    assert [r.status_code for r in refused] == [413, 413, 413]
    assert after == before  # not one batch ran for them


@pytest.mark.parametrize("fault", ["corrupt", "missing"])
def test_a_challenger_that_cannot_be_loaded_costs_only_its_shadow(
    fault: str,
    tmp_path: Path,
    shared_host,  # type: ignore[no-untyped-def]
    trained,  # type: ignore[no-untyped-def]
    tiny_spec,  # type: ignore[no-untyped-def]
) -> None:
    from lifecycle.model.artifacts import ADAPTER_WEIGHTS
    from lifecycle.serving.app import create_app

    home = tmp_path / "home"
    registry = Registry(Settings(home=home))
    registry.set_alias("tiny", CHAMPION, registry.log_training(tiny_spec, trained).version)
    registry.set_alias("tiny", CHALLENGER, registry.log_training(tiny_spec, trained).version)
    _, folder = registry.download("tiny", 2)
    if fault == "corrupt":
        (folder / ADAPTER_WEIGHTS).write_bytes(b"\x00not safetensors at all")
    else:
        (folder / ADAPTER_WEIGHTS).unlink()

    app = create_app(gateway_settings(home), tiny_specs(), host=shared_host)
    with running_gateway(app, token=TOKEN) as gw, gw.client() as client:
        assert client.get("/readyz").status_code == 200
        answer = client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS})
        served = client.get("/v1/specialists").json()["specialists"][0]
        assert answer.status_code == 200
        assert {p["model_version"] for p in answer.json()["predictions"]} == {1}
        assert served["champion"]["version"] == 1 and served["challenger"] is None
        shutil.rmtree(folder.parent)  # the cache is fixed: the registry's copy is intact
        reloaded = client.post("/v1/admin/reload", headers=gw.admin_headers()).json()
        served = client.get("/v1/specialists").json()["specialists"][0]
    assert reloaded["ok"] is True and reloaded["detail"]["tiny"]["challenger"] == 2
    assert served["challenger"]["version"] == 2


def test_openapi_documents_every_route(gateway: RunningGateway) -> None:
    with gateway.client() as client:
        spec = client.get("/openapi.json").json()
    paths = set(spec["paths"])
    for path in (
        "/v1/specialists/{name}/predict",
        "/v1/specialists/{name}/feedback",
        "/v1/specialists",
        "/v1/admin/reload",
        "/v1/admin/specialists/{name}/promote",
        "/v1/admin/specialists/{name}/rollback",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path
    predict = spec["paths"]["/v1/specialists/{name}/predict"]["post"]
    assert "fallback" in predict["description"]
    assert json.dumps(spec)  # serialisable


def test_status_shows_traffic_and_cost(
    gateway: RunningGateway, served_home: Path, tmp_path: Path
) -> None:
    import yaml
    from typer.testing import CliRunner

    from lifecycle.cli.main import app

    with gateway.client() as client:
        client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS})
    _flush(gateway)
    spec_file = tmp_path / "specialists.yaml"
    spec_file.write_text(yaml.safe_dump({"specialists": [TINY]}))
    result = CliRunner().invoke(
        app, ["status", "-f", str(spec_file), "--json"], env={"LIFECYCLE_HOME": str(served_home)}
    )
    assert result.exit_code == 0, result.output
    traffic = json.loads(result.stdout)[0]["traffic"]
    assert traffic["requests"] >= len(TEXTS)
    assert traffic["cost_per_1k"] >= 0.002  # the specialist's own price, at least
    assert traffic["fallback_only_per_1k"] == 0.5


def test_simulate_replays_a_scenario_with_late_labels(gateway: RunningGateway) -> None:
    from lifecycle.synthetic.scenarios import NEW_INTENTS, build_scenario
    from lifecycle.synthetic.simulate import simulate

    scenario = build_scenario("new_intent", n_reference=40, n_before=30, n_after=60, seed=4)
    report = simulate(
        gateway.url,
        "tiny",
        scenario.stream,
        texts_per_request=3,
        feedback_share=1.0,
        feedback_delay=2,
    )
    assert report.sent == 30 and report.errors == 0
    assert report.phases["before"].requests == 30 and report.phases["after"].requests == 60
    assert report.versions == {1: 90}
    # Every text was labelled; labels of the new intent, unknown to the specialist, are
    # accepted as proposed labels (labels_policy: open, the default).
    new = int(scenario.stream["label"].isin(NEW_INTENTS).sum())
    assert new > 0
    assert report.feedback_refused == 0
    assert report.feedback_sent == 90
    assert sum(report.proposed.values()) == new and set(report.proposed) <= set(NEW_INTENTS)
    # The new intent cannot be right: accuracy after the onset drops.
    assert report.phases["after"].accuracy < report.phases["before"].accuracy


def test_review_queue_for_people(served_home: Path, shared_host) -> None:  # type: ignore[no-untyped-def]
    from lifecycle.serving.app import create_app

    specs = tiny_specs(escalation={"confidence_threshold": 1.0, "fallback": "review"})
    app = create_app(gateway_settings(served_home), specs, host=shared_host)
    with running_gateway(app, token=TOKEN) as gw, gw.client() as client:
        answered = client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS[:2]}).json()
        preds = answered["predictions"]
        assert all(
            p["escalated"] and not p["flagged"] and p["source"] == "specialist" for p in preds
        )
        gw.gw.writer.flush(timeout=30)
        assert client.get("/v1/specialists/tiny/review").status_code == 401
        queue = client.get("/v1/specialists/tiny/review", headers=gw.admin_headers()).json()
        waiting = {item["request_id"] for item in queue["items"]}
        assert {p["request_id"] for p in preds} <= waiting
        labels = gw.gw.engine.routes["tiny"].champion.labels
        done = preds[0]["request_id"]
        client.post("/v1/specialists/tiny/feedback", json={"request_id": done, "label": labels[0]})
        gw.gw.writer.flush(timeout=30)
        after = client.get("/v1/specialists/tiny/review", headers=gw.admin_headers()).json()
        assert done not in {item["request_id"] for item in after["items"]}
        assert preds[1]["request_id"] in {item["request_id"] for item in after["items"]}
        assert (
            client.get("/v1/specialists/ghost/review", headers=gw.admin_headers()).status_code
            == 404
        )


def test_serve_command_as_a_user_runs_it(served_home: Path, tmp_path: Path) -> None:
    """`lifecycle serve` in a subprocess: no token, no start; with one, it serves till SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    import yaml

    from tests.gateway_harness import free_port

    spec_file = tmp_path / "specialists.yaml"
    spec_file.write_text(yaml.safe_dump({"specialists": [TINY]}))
    exe = str(Path(sys.executable).with_name("lifecycle"))
    env = {
        **os.environ,
        "LIFECYCLE_HOME": str(served_home),
        "LIFECYCLE_SPECIALISTS_FILE": str(spec_file),
        "LIFECYCLE_REGISTRY_POLL_S": "0",
    }
    env.pop("LIFECYCLE_ADMIN_TOKEN", None)
    refused = subprocess.run([exe, "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "LIFECYCLE_ADMIN_TOKEN" in refused.stderr

    port = free_port()
    env.update({"LIFECYCLE_ADMIN_TOKEN": TOKEN, "LIFECYCLE_PORT": str(port)})
    proc = subprocess.Popen(
        [exe, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "gateway did not become ready"
            time.sleep(0.5)
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/specialists/tiny/predict", json={"texts": TEXTS}
        )
        assert r.status_code == 200 and len(r.json()["predictions"]) == len(TEXTS)
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    # uvicorn shuts down gracefully, then re-raises the signal it caught, as a service should.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert "Traceback" not in output


def test_admin_promote_and_rollback(own_gateway: RunningGateway) -> None:
    gateway = own_gateway
    with gateway.client() as client:
        h = gateway.admin_headers()
        assert client.post("/v1/admin/specialists/tiny/promote").status_code == 401
        promoted = client.post("/v1/admin/specialists/tiny/promote", headers=h)
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["detail"]["aliases"] == {"champion": 2, "previous": 1}
        served = client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS[:1]}).json()
        assert served["predictions"][0]["model_version"] == 2
        again = client.post("/v1/admin/specialists/tiny/promote", headers=h)
        assert again.status_code == 409 and "no challenger" in again.json()["detail"]
        rolled = client.post("/v1/admin/specialists/tiny/rollback", headers=h)
        assert rolled.json()["detail"]["aliases"] == {"champion": 1}
        served = client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS[:1]}).json()
        assert served["predictions"][0]["model_version"] == 1
        assert client.post("/v1/admin/specialists/ghost/rollback", headers=h).status_code == 404
    assert _registry(gateway).aliases("tiny") == {"champion": 1}


@pytest.mark.parametrize(
    ("workers", "shadow", "expected"),
    [(1, None, (0, 0)), (2, None, (1, 1)), (2, False, (1, 0)), (1, True, (0, 1))],
)
def test_model_workers_and_the_shadow_worker(
    served_home: Path, workers: int, shadow: bool | None, expected: tuple[int, int]
) -> None:
    """The shadow worker is on by default with several model workers, and can be set."""
    from lifecycle.serving.app import _model_workers

    settings = gateway_settings(
        served_home, model_workers=workers, shadow_worker=shadow, device="cpu"
    )
    host, replicas, shadow_hosts = _model_workers(settings, {"tiny": tiny_specs().get("tiny")})
    assert (len(replicas), len(shadow_hosts)) == expected
    assert len({id(h) for h in [host, *replicas, *shadow_hosts]}) == 1 + sum(expected)
