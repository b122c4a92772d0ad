"""An extraction specialist end to end through the gateway: a real uvicorn, a real MLflow
registry (sqlite, in a temporary home) and a real traffic store, beside a classifier.

One gateway serves, from one registry:

- ``tiny``: the session's classifier (champion v1);
- ``tickets``: a small trained extractor (champion v1, challenger v2 with the same weights),
  declared with its entity labels under ``labels_policy: closed``;
- ``tickets-strict``: the same adapter under a spec that requires a field it never finds
  (``tracking_number``) and escalates to the review queue; ``labels_policy: open``;
- ``mislabeled``: declared a classifier, while its registry version is an extractor.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from lifecycle.config.settings import Settings
from lifecycle.config.spec import SpecialistsFile
from lifecycle.extraction.spans import Entity, from_json, keys, summary, to_json
from lifecycle.synthetic.tickets import LABELS, generate_tickets
from tests.conftest import EXTRACTOR, TINY
from tests.gateway_harness import RunningGateway, SharedHost, running_gateway
from tests.waits import wait_until

TOKEN = "s3cret-admin-token-for-tests"
#: Tickets the extractor never saw (another seed), with their true spans.
TICKETS = generate_tickets(12, seed=11)
TEXTS = list(TICKETS["text"])


def _settings(home: Path) -> Settings:
    return Settings(
        home=home,
        admin_token=SecretStr(TOKEN),
        registry_poll_s=0,
        max_texts_per_request=64,
        max_text_chars=2000,
        max_body_bytes=2_000_000,
    )


def _specs() -> SpecialistsFile:
    return SpecialistsFile.model_validate(
        {
            "specialists": [
                TINY,
                {**EXTRACTOR, "entities": list(LABELS), "labels_policy": "closed"},
                {
                    **EXTRACTOR,
                    "name": "tickets-strict",
                    "required": ["tracking_number"],
                    "escalation": {"fallback": "review"},
                },
                {**TINY, "name": "mislabeled"},
            ]
        }
    )


@pytest.fixture(scope="module")
def extraction_home(
    tmp_path_factory: pytest.TempPathFactory, trained, tiny_spec, trained_extractor, extractor_spec
) -> Path:
    from lifecycle.registry.models import CHALLENGER, CHAMPION, Registry

    home = tmp_path_factory.mktemp("extraction") / "home"
    registry = Registry(Settings(home=home))
    tiny = registry.log_training(tiny_spec, trained, trigger="initial")
    registry.set_alias("tiny", CHAMPION, tiny.version)
    first = registry.log_training(extractor_spec, trained_extractor, trigger="initial")
    registry.set_alias("tickets", CHAMPION, first.version)
    second = registry.log_training(
        extractor_spec, trained_extractor, trigger="manual", parent_version=first.version
    )
    registry.set_alias("tickets", CHALLENGER, second.version)
    for name in ("tickets-strict", "mislabeled"):
        spec = extractor_spec.model_copy(update={"name": name})
        version = registry.log_training(spec, trained_extractor, trigger="initial")
        registry.set_alias(name, CHAMPION, version.version)
    return home


@pytest.fixture(scope="module")
def gateway(extraction_home: Path, host) -> Iterator[RunningGateway]:
    from lifecycle.serving.app import create_app

    with SharedHost(host) as shared:
        app = create_app(_settings(extraction_home), _specs(), host=shared)
        with running_gateway(app, token=TOKEN) as running:
            yield running


@pytest.fixture(scope="module")
def client(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with gateway.client() as c:
        yield c


def _predict(client: httpx.Client, name: str, texts: list[str]) -> list[dict[str, Any]]:
    response = client.post(f"/v1/specialists/{name}/predict", json={"texts": texts})
    assert response.status_code == 200, response.text
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def _window(gateway: RunningGateway, name: str) -> Any:
    gateway.gw.writer.flush(timeout=30)
    return gateway.gw.writer.store.window(name, with_embeddings=False).set_index("id")


def _feedback(client: httpx.Client, name: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(f"/v1/specialists/{name}/feedback", json=body)


def _true_spans(i: int) -> list[dict[str, Any]]:
    return [dict(e) for e in TICKETS["entities"][i]]


# -- predict --------------------------------------------------------------------------------


def test_predict_answers_spans_that_index_the_text(client: httpx.Client) -> None:
    preds = _predict(client, "tickets", TEXTS)
    found = 0
    for text, p in zip(TEXTS, preds, strict=True):
        assert len(p["request_id"]) == 32 and p["model_version"] == 1
        assert isinstance(p["entities"], list) and isinstance(p["fields"], dict)
        spans = [Entity(**e) for e in p["entities"]]
        for e in spans:
            assert text[e.start : e.end] == e.text and e.start < e.end
            assert e.label in LABELS and 0.0 <= (e.confidence or 0.0) <= 1.0
        assert p["label"] == summary(spans)
        assert 0.0 <= p["confidence"] <= 1.0
        # fields: per label, the text of its most confident span.
        assert set(p["fields"]) == {e.label for e in spans}
        for label, value in p["fields"].items():
            best = max((e for e in spans if e.label == label), key=lambda e: e.confidence or 0)
            assert value == best.text
        # No required field, threshold 0: an extractor's answer stands.
        assert p["escalated"] is False and p["source"] == "specialist"
        found += len(spans)
    assert found > 0  # a trained extractor finds something in a dozen tickets


def test_a_classifier_and_an_extractor_answer_side_by_side(client: httpx.Client) -> None:
    """Concurrent calls to both kinds share the model's batches; each answers in its kind."""

    def call(name: str) -> list[dict[str, Any]]:
        return _predict(client, name, TEXTS[:4])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(call, n) for n in ["tiny", "tickets"] * 4]
        answers = [(n, j.result()) for n, j in zip(["tiny", "tickets"] * 4, jobs, strict=True)]
    for name, preds in answers:
        for p in preds:
            if name == "tiny":
                assert p["entities"] is None and p["fields"] is None
                assert "+" not in p["label"] and p["label"] != "(none)"
            else:
                assert isinstance(p["entities"], list) and isinstance(p["fields"], dict)
    # Same texts, same adapter: the same spans whatever shared the batch.
    spans = [
        [keys(Entity(**e) for e in p["entities"]) for p in preds]
        for name, preds in answers
        if name == "tickets"
    ]
    assert all(s == spans[0] for s in spans)


def test_listing_shows_each_task_and_refuses_a_version_of_the_other_kind(
    client: httpx.Client, trained_extractor: Any
) -> None:
    listing = {s["name"]: s for s in client.get("/v1/specialists").json()["specialists"]}
    assert listing["tiny"]["task"] == "classification"
    tickets = listing["tickets"]
    assert tickets["task"] == "extraction" and tickets["status"] == "serving"
    assert tickets["labels"] == list(trained_extractor.meta.labels)
    assert tickets["challenger"]["version"] == 2
    # An extraction version registered under a classifier's name is refused at load, and the
    # listing says why.
    refused = listing["mislabeled"]
    assert refused["task"] == "classification" and refused["champion"] is None
    assert "extraction" in refused["status"] and "task: classification" in refused["status"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"entities", "fields"} <= set(schema["PredictionOut"]["properties"])
    assert set(schema["EntityOut"]["properties"]) == {"label", "text", "start", "end", "confidence"}


def test_a_missing_required_field_escalates_to_the_review_queue(
    gateway: RunningGateway, client: httpx.Client
) -> None:
    preds = _predict(client, "tickets-strict", TEXTS[:3])
    # tracking_number is no label of the adapter: every answer misses it.
    assert all(
        p["escalated"]
        and not p["flagged"]
        and p["source"] == "specialist"
        and "tracking_number" not in p["fields"]
        for p in preds
    )
    stored = _window(gateway, "tickets-strict")
    for p in preds:
        row = stored.loc[p["request_id"]]
        assert bool(row["escalated"]) and row["fallback_source"] == "review"
        assert from_json(row["entities"]) == [Entity(**e) for e in p["entities"]]
    queue = client.get(
        "/v1/specialists/tickets-strict/review", headers=gateway.admin_headers()
    ).json()
    waiting = {item["request_id"]: item for item in queue["items"]}
    for p in preds:
        assert waiting[p["request_id"]]["entities"] == p["entities"]
    metrics = client.get("/metrics").text
    assert (
        'lifecycle_extraction_unsure_total{reason="missing_field",specialist="tickets-strict"}'
        in metrics
    )
    assert (
        'lifecycle_escalations_total{outcome="queued",source="review",specialist="tickets-strict"}'
        in metrics
    )


# -- feedback -------------------------------------------------------------------------------


def test_feedback_with_true_spans_is_stored_as_the_true_entities(
    gateway: RunningGateway, client: httpx.Client
) -> None:
    preds = _predict(client, "tickets", TEXTS[:3])
    ids = [p["request_id"] for p in preds]
    one = _feedback(client, "tickets", {"request_id": ids[0], "entities": _true_spans(0)})
    # Spans without their text: it is read from the stored request.
    bare = [{k: v for k, v in e.items() if k != "text"} for e in _true_spans(1)]
    many = _feedback(
        client,
        "tickets",
        {
            "items": [
                {"request_id": ids[1], "entities": bare},
                {"request_id": ids[2], "entities": []},
            ]
        },
    )
    assert one.status_code == 202 and one.json()["accepted"] == 1, one.text
    assert many.status_code == 202 and many.json()["accepted"] == 2, many.text
    window = _window(gateway, "tickets")
    for i, request_id in enumerate(ids[:2]):
        want = sorted(
            (Entity(e["label"], e["start"], e["end"], e["text"]) for e in _true_spans(i)),
            key=lambda e: (e.start, e.end),
        )
        row = window.loc[request_id]
        assert from_json(row["true_entities"]) == want
        assert row["true_label"] == summary(want) and row["true_label_source"] == "human"
    # An empty list is an answer too: the text holds no entity.
    assert window.loc[ids[2], "true_entities"] == "[]"
    assert window.loc[ids[2], "true_label"] == "(none)"


def _spans_with(i: int, **change: Any) -> list[dict[str, Any]]:
    spans = _true_spans(i)
    spans[0] = {**spans[0], **change}
    return spans


def _bad_bodies(text: str) -> dict[str, tuple[dict[str, Any], str]]:
    """Feedback bodies the gateway must refuse with a 422, with a word of each reason."""
    first = _true_spans(0)[0]
    return {
        "past the end": (
            {"entities": [{"label": "date", "start": len(text) - 2, "end": len(text) + 5}]},
            "past the end of the text",
        ),
        "start >= end": ({"entities": [{**first, "end": first["start"]}]}, "end > start"),
        "text differs": ({"entities": [{**first, "text": first["text"] + "x"}]}, "differs"),
        "overlap": (
            {
                "entities": [
                    first,
                    {"label": "amount", "start": first["start"] + 1, "end": first["end"]},
                ]
            },
            "overlap",
        ),
        "negative": ({"entities": [{"label": "date", "start": -1, "end": 2}]}, "greater than"),
        "closed set": (
            {"entities": [{"label": "tracking_number", "start": 0, "end": 1}]},
            "closed",
        ),
        "label to an extractor": ({"label": "order_id"}, "send entities"),
        "both": ({"label": "order_id", "entities": []}, "not both"),
        "plus in a label": ({"entities": [{"label": "a+b", "start": 0, "end": 1}]}, "'+'"),
        "huge list": (
            {"entities": [{"label": "date", "start": k, "end": k + 1} for k in range(10_000)]},
            "1000",
        ),
    }


def test_bad_spans_are_refused_with_the_reason(
    gateway: RunningGateway, client: httpx.Client
) -> None:
    (pred,) = _predict(client, "tickets", TEXTS[:1])
    request_id = pred["request_id"]
    for name, (body, word) in _bad_bodies(TEXTS[0]).items():
        response = _feedback(client, "tickets", {"request_id": request_id, **body})
        assert response.status_code == 422, (name, response.text)
        assert word in response.text, (name, response.text)
        assert "Traceback" not in response.text and len(response.content) < 5000
    # A batch with one bad item stores none of it.
    batch = _feedback(
        client,
        "tickets",
        {
            "items": [
                {"request_id": request_id, "entities": _true_spans(0)},
                {"request_id": request_id, "entities": _spans_with(0, end=len(TEXTS[0]) + 1)},
            ]
        },
    )
    assert batch.status_code == 422 and "past the end" in batch.text
    # Entities sent to a classifier.
    (tiny,) = _predict(client, "tiny", TEXTS[:1])
    wrong_kind = _feedback(client, "tiny", {"request_id": tiny["request_id"], "entities": []})
    assert wrong_kind.status_code == 422 and "send label" in wrong_kind.text
    unknown = _feedback(client, "tickets", {"request_id": "0" * 32, "entities": []})
    assert unknown.status_code == 404
    assert _window(gateway, "tickets").loc[request_id, "true_entities"] is None


def test_an_open_extractor_accepts_new_entity_labels_as_proposed(client: httpx.Client) -> None:
    (pred,) = _predict(client, "tickets-strict", TEXTS[:1])
    first = _true_spans(0)[0]
    response = _feedback(
        client,
        "tickets-strict",
        {
            "request_id": pred["request_id"],
            "entities": [{**first, "label": "tracking_number"}],
        },
    )
    assert response.status_code == 202, response.text
    assert response.json()["proposed_labels"] == ["tracking_number"]


# -- shadow ---------------------------------------------------------------------------------


def test_the_challengers_spans_are_stored_in_shadow(
    gateway: RunningGateway, client: httpx.Client
) -> None:
    preds = _predict(client, "tickets", TEXTS[4:8])
    ids = [p["request_id"] for p in preds]

    def stored_pairs() -> Any:
        gateway.gw.writer.flush(timeout=30)
        pairs = gateway.gw.writer.store.shadow_pairs("tickets", challenger_version=2)
        return pairs if set(ids) <= set(pairs["request_id"]) else None

    pairs = wait_until(stored_pairs, what="every shadow pair stored")
    rows = pairs.set_index("request_id").loc[ids]
    for request_id, p in zip(ids, preds, strict=True):
        row = rows.loc[request_id]
        assert row["champion_entities"] is not None and row["challenger_entities"] is not None
        # v2 holds v1's weights: the same spans, so the same label.
        champion = keys(Entity(**e) for e in p["entities"])
        assert keys(from_json(row["challenger_entities"])) == champion
        assert row["challenger_label"] == p["label"]
    agreement = 'lifecycle_shadow_agreement_total{specialist="tickets",version="2"}'
    assert agreement in client.get("/metrics").text


# -- the pure parts -------------------------------------------------------------------------


def test_an_extractors_doubts_and_agreement() -> None:
    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.model.artifacts import Prediction
    from lifecycle.serving.predict import _agrees, _unsure

    spec = SpecialistSpec.model_validate(
        {**EXTRACTOR, "required": ["order_id"], "escalation": {"confidence_threshold": 0.5}}
    )
    order = Entity("order_id", 0, 3, "ORD", 0.9)
    unsure_date = Entity("date", 4, 8, "2026", 0.3)

    def pred(*spans: Entity) -> Prediction:
        return Prediction(label=summary(spans), confidence=0.5, embedding=None, entities=spans)

    assert _unsure(spec, pred(order)) == []
    assert _unsure(spec, pred(order, unsure_date)) == ["low_confidence"]
    assert _unsure(spec, pred()) == ["missing_field"]
    assert _unsure(spec, pred(unsure_date)) == ["low_confidence", "missing_field"]
    classifier = Prediction(label="refund", confidence=0.1, embedding=None)
    assert _unsure(spec, classifier) == []
    assert _agrees(pred(order), pred(Entity("order_id", 0, 3, "ORD", 0.2)))
    assert not _agrees(pred(order), pred(order, unsure_date))
    assert _agrees(classifier, classifier)
    assert to_json(pred(order).entities or ()) == to_json([order])


def test_a_label_file_for_an_extractor_is_refused_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from lifecycle.cli.main import app

    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path / "home"))
    specs = tmp_path / "specialists.yaml"
    specs.write_text(json.dumps({"specialists": [EXTRACTOR]}))  # JSON is YAML
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,label\n" + "a" * 32 + ",order_id\n")
    result = CliRunner().invoke(
        app,
        ["feedback", "-s", "tickets", "--file", str(labels), "--specialists-file", str(specs)],
    )
    assert result.exit_code == 1
    assert "extraction specialist" in result.output and "entities" in result.output


def test_entity_feedback_checks_without_the_text_and_caps_new_labels() -> None:
    """Where the store keeps no text (LIFECYCLE_STORE_TEXT hash or none), spans are checked
    for what needs no text; new entity labels count against the cap on proposed labels."""
    from lifecycle.labels.feedback import LabelSet, check_entity_feedback, refusal

    rid = "a" * 32
    labels = LabelSet(specialist="tickets", known=frozenset({"date"}), open=True, max_proposed=1)
    owners = {rid: "tickets"}
    ok, overlap, reversed_, novel, too_many = check_entity_feedback(
        [
            (rid, [{"label": "date", "start": 5, "end": 9, "text": "2026"}]),
            (
                rid,
                [{"label": "date", "start": 0, "end": 4}, {"label": "date", "start": 3, "end": 6}],
            ),
            (rid, [{"label": "date", "start": 4, "end": 4}]),
            (rid, [{"label": "sku", "start": 0, "end": 2}]),
            (rid, [{"label": "colour", "start": 0, "end": 2}]),
        ],
        labels=labels,
        owners=owners,
        texts={},
    )
    assert ok.accepted and ok.label == "date" and ok.entities is not None
    assert ok.entities[0].text == "2026" and not ok.proposed
    assert overlap.status == 422 and "overlap" in (overlap.reason or "")
    assert reversed_.status == 422 and "end > start" in (reversed_.reason or "")
    assert novel.accepted and novel.new_labels == ("sku",) and novel.label == "sku"
    assert too_many.status == 429 and "colour" in (too_many.reason or "")
    assert refusal([ok, novel]) is None
    closed = LabelSet(specialist="tickets", known=frozenset({"date"}), open=False)
    (refused,) = check_entity_feedback(
        [(rid, [{"label": "sku", "start": 0, "end": 2}])], labels=closed, owners=owners, texts={}
    )
    assert refused.status == 422 and "closed" in (refused.reason or "")
