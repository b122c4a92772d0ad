"""Extraction specialists in the model layer: spans to tags and back, training, artifacts,
and answers that do not change when an extractor's texts share a pass with a classifier's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from lifecycle.config.errors import DataError
from lifecycle.config.spec import SpecialistSpec
from lifecycle.extraction.spans import (
    IGNORE,
    Entity,
    align,
    decode,
    fields,
    from_json,
    keys,
    labels_of,
    summary,
    tags_for,
    to_json,
)
from lifecycle.model.host import AdapterHost

TEXT = "refund order ORD-123456 of $49.99 please"
#: Word pieces of TEXT as a tokenizer would give them, with [CLS] and [SEP] at (0, 0).
OFFSETS = [(0, 0), (0, 6), (7, 12), (13, 16), (16, 17), (17, 23), (24, 26), (27, 28), (28, 33)]
OFFSETS += [(34, 40), (0, 0)]
SPANS = [
    {"label": "order_id", "start": 13, "end": 23},
    {"label": "amount", "start": 27, "end": 33},
]


def test_tags_keep_their_rows_when_the_label_set_grows() -> None:
    tags = tags_for(["order_id", "amount"])
    assert tags == ("O", "B-order_id", "I-order_id", "B-amount", "I-amount")
    assert tags_for(["order_id", "amount", "email"])[: len(tags)] == tags
    assert labels_of(tags) == ("order_id", "amount")


def test_spans_become_tags_and_tags_become_the_same_spans() -> None:
    tags = tags_for(["order_id", "amount"])
    index = {t: i for i, t in enumerate(tags)}
    targets = align(OFFSETS, SPANS, index)
    assert targets[0] == IGNORE and targets[-1] == IGNORE
    assert [tags[t] for t in targets[1:-1]] == [
        "O", "O", "B-order_id", "I-order_id", "I-order_id", "O", "B-amount", "I-amount", "O",
    ]  # fmt: skip
    ids = [0 if t == IGNORE else t for t in targets]
    entities = decode(TEXT, OFFSETS, ids, [0.9] * len(ids), tags)
    assert keys(entities) == [("order_id", 13, 23), ("amount", 27, 33)]
    assert [e.text for e in entities] == ["ORD-123456", "$49.99"]
    # Three pieces at 0.9 and the next piece's "not I-" at 0.9.
    assert entities[0].confidence == pytest.approx(0.9**4)


def test_a_stray_inside_tag_starts_a_span_and_a_label_change_ends_one() -> None:
    tags = tags_for(["a", "b"])
    ids = [0, tags.index("I-a"), tags.index("I-a"), tags.index("I-b"), 0, 0]
    offsets = [(0, 0), (0, 3), (4, 7), (8, 11), (12, 15), (0, 0)]
    entities = decode("abc def ghi jkl", offsets, ids, [1.0] * 6, tags)
    assert keys(entities) == [("a", 0, 7), ("b", 8, 11)]


def test_the_best_valid_tag_path_never_opens_a_span_with_inside() -> None:
    from lifecycle.extraction.spans import allowed_transitions, best_tags

    tags = tags_for(["a", "b"])  # O, B-a, I-a, B-b, I-b
    allowed = allowed_transitions(tags)
    # Alone, each piece's best tag is O then I-a: an inside tag with nothing to continue.
    probs = [[0.6, 0.3, 0.05, 0.03, 0.02], [0.1, 0.05, 0.8, 0.03, 0.02]]
    assert best_tags(probs, allowed) == [1, 2]  # B-a I-a: the best valid reading
    # I-b after B-a is not valid either; the path keeps one label through a span.
    probs = [[0.05, 0.9, 0.01, 0.02, 0.02], [0.1, 0.02, 0.3, 0.08, 0.5]]
    assert best_tags(probs, allowed) == [1, 2]
    assert best_tags([[0.1, 0.15, 0.6, 0.1, 0.05]], allowed) == [1]  # no I- at the start
    assert best_tags([], allowed) == []


def test_summary_fields_and_json_round_trip() -> None:
    entities = [
        Entity("date", 0, 5, "March", 0.4),
        Entity("order_id", 6, 9, "A-1", 0.9),
        Entity("date", 10, 15, "April", 0.8),
    ]
    assert summary(entities) == "date+order_id"
    assert summary([]) == "(none)"
    assert fields(entities) == {"date": "April", "order_id": "A-1"}
    assert from_json(to_json(entities)) == entities
    assert from_json(None) == []


def test_the_spec_keeps_each_field_to_its_task() -> None:
    spec = SpecialistSpec(
        name="x", task="extraction", entities=("order_id",), required=("order_id",)
    )
    assert spec.label_set == ("order_id",)
    problems = [
        {"name": "x", "task": "extraction", "labels": ["a", "b"]},
        {"name": "x", "entities": ["order_id"]},
        {"name": "x", "task": "extraction", "entities": ["a"], "required": ["b"]},
        {"name": "x", "task": "extraction", "escalation": {"fallback": "openai"}},
        {"name": "x", "task": "extraction", "entities": ["a+b"]},
        {"name": "x", "task": "summarise"},
    ]
    for raw in problems:
        with pytest.raises(ValidationError):
            SpecialistSpec.model_validate(raw)


# -- trained ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tickets() -> pd.DataFrame:
    from lifecycle.synthetic.tickets import generate_tickets

    return generate_tickets(500, seed=3)[["text", "entities"]]


@pytest.fixture(scope="module")
def extractor(tickets: pd.DataFrame) -> object:
    from lifecycle.training.train import train_specialist

    spec = SpecialistSpec(
        name="tickets", task="extraction", training={"epochs": 4, "batch_size": 16}
    )
    return train_specialist(spec, tickets, progress=False)


def test_an_extractor_learns_generated_tickets(extractor: object) -> None:
    from lifecycle.extraction.metrics import ExtractionEvaluation

    ev = extractor.evaluation  # type: ignore[attr-defined]
    assert isinstance(ev, ExtractionEvaluation)
    assert extractor.meta.task == "extraction"  # type: ignore[attr-defined]
    assert set(extractor.meta.labels) >= {"order_id", "amount", "email"}  # type: ignore[attr-defined]
    # Regular fields in templated text: a trained extractor gets most spans exactly right.
    assert ev.micro_f1 > 0.8
    reference = extractor.validation_predictions  # type: ignore[attr-defined]
    assert {"text", "label", "prediction", "confidence", "entities", "true_entities"} <= set(
        reference.columns
    )


def test_answers_are_spans_of_the_callers_text(extractor: object) -> None:
    host: AdapterHost = extractor.host  # type: ignore[attr-defined]
    texts = [
        "Hi, my order ORD-555123 never arrived, I paid $35.00. Email me at ann@example.com",
        "",
        "thanks!",
        "x" * 5000,  # truncated to the max length: no crash, spans within the text
    ]
    for text, pred in zip(texts, host.predict(texts, "candidate"), strict=True):
        assert pred.entities is not None
        assert pred.label == summary(pred.entities)
        assert 0.0 <= pred.confidence <= 1.0
        for entity in pred.entities:
            assert text[entity.start : entity.end] == entity.text
            assert 0.0 <= (entity.confidence or 0.0) <= 1.0
    first = host.predict(texts[:1], "candidate")[0]
    assert "order_id" in fields(first.entities or ())


def test_an_extractor_round_trips_through_its_artifact(extractor: object, tmp_path: Path) -> None:
    host: AdapterHost = extractor.host  # type: ignore[attr-defined]
    folder = host.save_adapter("candidate", tmp_path / "adapter")
    fresh = AdapterHost()
    meta = fresh.load_adapter("loaded", folder)
    assert meta.task == "extraction" and meta.head_rows == tags_for(meta.labels)
    texts = ["order ORD-100200 was charged $12.50 twice on March 3, 2026", "hello there"]
    before = host.predict(texts, "candidate")
    after = fresh.predict(texts, "loaded")
    for a, b in zip(before, after, strict=True):
        assert keys(a.entities or ()) == keys(b.entities or ())
        assert a.confidence == pytest.approx(b.confidence, abs=1e-4)


@pytest.fixture(scope="module")
def trained_folder(trained: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny classifier, as an artifact folder."""
    folder = tmp_path_factory.mktemp("classifier") / "adapter"
    return trained.host.save_adapter(trained.adapter_id, folder)  # type: ignore[attr-defined,no-any-return]


def test_an_extractor_and_a_classifier_share_a_pass_with_unchanged_answers(
    extractor: object, trained_folder: Path
) -> None:
    """Texts of both kinds in one call run one encoder pass (mixed rows on a CPU): each text
    must get the answer it gets alone."""
    host: AdapterHost = extractor.host  # type: ignore[attr-defined]
    if "classifier" not in host.adapter_ids:
        host.load_adapter("classifier", trained_folder)
    texts = [
        "refund order ORD-777111 please",
        "my card was declined at the shop",
        "send the invoice to bob@example.org",
        "I want my money back",
    ] * 3
    ids = ["candidate", "classifier"] * 6
    mixed = host.predict(texts, ids)
    alone_ex = host.predict(texts[0::2], "candidate")
    alone_cl = host.predict(texts[1::2], "classifier")
    for pred, ref in zip(mixed[0::2], alone_ex, strict=True):
        assert keys(pred.entities or ()) == keys(ref.entities or ())
        assert pred.confidence == pytest.approx(ref.confidence, abs=1e-4)
    for pred, ref in zip(mixed[1::2], alone_cl, strict=True):
        assert pred.entities is None
        assert pred.label == ref.label
        assert pred.confidence == pytest.approx(ref.confidence, abs=1e-4)


def test_bad_spans_in_training_data_name_the_row() -> None:
    from lifecycle.training.train import train_specialist

    spec = SpecialistSpec(name="bad", task="extraction")
    frame = pd.DataFrame(
        {
            "text": ["order A-1 now", "refund B-2"],
            "entities": [
                [{"label": "order_id", "start": 6, "end": 9}],
                [{"label": "order_id", "start": 7, "end": 40}],
            ],
        }
    )
    with pytest.raises(DataError, match="row 2"):
        train_specialist(spec, frame, progress=False)
    frame.at[1, "entities"] = [
        {"label": "order_id", "start": 7, "end": 10},
        {"label": "amount", "start": 8, "end": 10},
    ]
    with pytest.raises(DataError, match="row 2"):
        train_specialist(spec, frame, progress=False)
