"""The simulated clients and person on an extraction stream, against a stand-in gateway:
answers scored by entity F1 on exact spans, corrections sent as the feedback's entities."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from lifecycle.synthetic.simulate import Labeller, PhaseStats, simulate


class Answer:
    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        self.status_code, self._body, self.text = status_code, body, str(body)

    def json(self) -> dict[str, Any]:
        return self._body


class FakeGateway:
    """Answers every text with an order id at its first 10 characters; records feedback."""

    def __init__(self, *, new_labels: frozenset[str] = frozenset({"tracking_number"})) -> None:
        self.feedback: list[dict[str, Any]] = []
        self.new_labels = new_labels
        self.served = 0

    def post(self, path: str, json: dict[str, Any], headers: Any = None) -> Answer:
        if path.endswith("/predict"):
            predictions = []
            for text in json["texts"]:
                self.served += 1
                span = {"label": "order_id", "start": 0, "end": 10, "text": text[:10]}
                predictions.append(
                    {
                        "request_id": f"{self.served:032x}",
                        "label": "order_id",
                        "confidence": 0.9,
                        "model_version": 1,
                        "escalated": False,
                        "entities": [span | {"confidence": 0.9}],
                    }
                )
            return Answer(200, {"predictions": predictions})
        self.feedback.append(json)
        labels = {e["label"] for e in json.get("entities") or ()}
        return Answer(202, {"proposed_labels": sorted(labels & self.new_labels)})

    def get(self, path: str, params: Any = None, headers: Any = None) -> Answer:
        return Answer(200, {"items": []})


def _stream() -> pd.DataFrame:
    order = {"label": "order_id", "start": 0, "end": 10, "text": "ORD-123456"}
    tracking = {"label": "tracking_number", "start": 11, "end": 21, "text": "1Z12345678"}
    return pd.DataFrame(
        {
            "text": ["ORD-123456 1Z12345678", "ORD-654321 hello", "nothing to see here"],
            "entities": [[order, tracking], [order | {"text": "ORD-654321"}], []],
            "phase": ["after", "after", "before"],
        }
    )


def test_an_extraction_stream_is_scored_by_entity_f1_and_exact_match() -> None:
    gateway = FakeGateway()
    report = simulate("http://fake", "fields", _stream(), feedback_share=1.0, client=gateway)
    after, before = report.phases["after"], report.phases["before"]
    # After: 2 spans right of 2 predicted and 3 gold; one request exactly right.
    assert (after.true_spans, after.predicted_spans, after.gold_spans) == (2, 2, 3)
    assert after.correct == 1 and after.f1 == 2 * 2 / 5
    # Before: an invented span where there was nothing to find.
    assert (before.true_spans, before.predicted_spans, before.gold_spans) == (0, 1, 0)
    assert before.f1 == 0.0 and before.accuracy == 0.0
    assert math.isnan(PhaseStats().f1) and PhaseStats(requests=1).f1 == 1.0
    assert report.as_dict()["phases"]["after"]["f1"] == after.f1
    # Every request's gold spans went back as its corrected entities (label, start, end).
    assert gateway.feedback[0] == {
        "request_id": f"{1:032x}",
        "entities": [
            {"label": "order_id", "start": 0, "end": 10},
            {"label": "tracking_number", "start": 11, "end": 21},
        ],
    }
    assert gateway.feedback[2]["entities"] == [] and "label" not in gateway.feedback[2]
    assert report.proposed == {"tracking_number": 1}


def test_a_person_corrects_spans_of_an_extractors_requests() -> None:
    gateway = FakeGateway()
    report = simulate("http://fake", "fields", _stream(), feedback_share=0.0, client=gateway)
    assert gateway.feedback == [] and len(report.answered) == 3
    person = Labeller(share=1.0, source="queue", seed=0)
    person.saw(report)
    sent = person.label(gateway, "fields", token="t")
    assert sent == {"queue": 0, "random": 3} and person.refused == 0
    assert {f["request_id"] for f in gateway.feedback} == {rid for rid, _ in report.answered}
    assert all("entities" in f and "label" not in f for f in gateway.feedback)
    assert person.proposed == {"tracking_number": 1}
