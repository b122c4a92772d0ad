"""Property-based tests (hypothesis): the specialists-file parser and the traffic store's formats.

The parser must turn any input into a valid spec or a ``ConfigError`` naming the problem;
records must come back from the journal format and from the database exactly as written.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.config.errors import ConfigError
from lifecycle.config.spec import SpecialistsFile, load_specialists
from lifecycle.store import FeedbackRecord, RequestRecord, TrafficStore
from lifecycle.store.records import record_from_json, record_to_json

PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Text as a store holds it: any Unicode scalar values (no lone surrogates: the gateway refuses
# those, see test_gateway), including NUL, control characters, emoji and RTL marks.
store_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=300)
names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)
labels = st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)
finite = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@st.composite
def request_records(draw: st.DrawFn) -> RequestRecord:
    embedding = draw(
        st.none()
        | st.lists(
            st.floats(min_value=-60000, max_value=60000, allow_nan=False, width=16),
            min_size=1,
            max_size=16,
        )
    )
    escalated = draw(st.booleans())
    return RequestRecord(
        specialist=draw(names),
        model_version=draw(st.integers(min_value=1, max_value=2**31 - 1)),
        text=draw(st.none() | store_text),
        label=draw(labels),
        confidence=draw(st.floats(min_value=0, max_value=1)),
        embedding=embedding,
        latency_ms=draw(finite),
        escalated=escalated,
        fallback_label=draw(labels) if escalated else None,
        fallback_source="openai" if escalated else None,
        fallback_latency_ms=draw(finite) if escalated else None,
        flagged=draw(st.booleans()),
        created_at=draw(moments),
        ood_score=draw(st.none() | st.floats(allow_nan=False, allow_infinity=False)),
        out_of_scope=draw(st.none() | st.booleans()),
    )


@PROPERTY
@given(record=request_records())
def test_request_records_survive_the_journal_format(record: RequestRecord) -> None:
    line = json.dumps(record_to_json(record), separators=(",", ":"))
    assert "\n" not in line  # one record per line, whatever the text holds
    assert record_from_json(json.loads(line)) == record


@PROPERTY
@given(
    request_id=st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    label=labels,
    source=st.sampled_from(["human", "fallback"]),
    created_at=moments,
)
def test_feedback_records_survive_the_journal_format(
    request_id: str, label: str, source: str, created_at: datetime
) -> None:
    record = FeedbackRecord(
        request_id=request_id, specialist="s", label=label, source=source, created_at=created_at
    )
    assert record_from_json(json.loads(json.dumps(record_to_json(record)))) == record


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> TrafficStore:
    store = TrafficStore(f"sqlite:///{tmp_path_factory.mktemp('prop') / 'traffic.db'}")
    store.upgrade()
    return store


@PROPERTY
@given(records=st.lists(request_records(), min_size=1, max_size=5))
def test_request_records_come_back_from_the_database_as_written(
    sqlite_store: TrafficStore, records: list[RequestRecord]
) -> None:
    sqlite_store.write(records)
    sqlite_store.write(records)  # idempotent: a replayed journal doubles nothing
    by_id: dict[str, Any] = {}
    for name in {r.specialist for r in records}:
        frame = sqlite_store.window(name, with_embeddings=True)
        by_id.update({row["id"]: row for row in frame.to_dict("records")})
    for record in records:
        row = by_id[record.id]
        assert row["text"] == record.text or (record.text is None and row["text"] is None)
        assert row["label"] == record.label
        assert row["model_version"] == record.model_version
        assert math.isclose(row["confidence"], record.confidence, rel_tol=1e-12, abs_tol=1e-300)
        assert row["escalated"] == record.escalated
        if record.ood_score is None:
            assert math.isnan(row["ood_score"])
        else:
            assert row["ood_score"] == record.ood_score
        assert bool(pd.isna(row["out_of_scope"])) == (record.out_of_scope is None)
        if record.out_of_scope is not None:
            assert row["out_of_scope"] == record.out_of_scope
        if record.embedding is None:
            assert row["embedding"] is None or (
                isinstance(row["embedding"], float) and math.isnan(row["embedding"])
            )
        else:
            assert bytes(row["embedding"].astype("<f2").tobytes()) == record.embedding


# -- the specialists file ----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)
spec_keys = st.sampled_from(
    ["name", "labels", "data", "lora", "training", "monitoring", "escalation", "promotion", "x"]
)


@PROPERTY
@given(
    document=st.dictionaries(
        st.just("specialists"),
        st.lists(st.dictionaries(spec_keys, json_values, max_size=5), max_size=3) | json_values,
    )
    | json_values
)
def test_any_document_is_a_spec_or_a_config_error(tmp_path: Path, document: Any) -> None:
    path = tmp_path / "specialists.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    try:
        parsed = load_specialists(path)
    except ConfigError as exc:
        assert str(exc).startswith(str(path))  # says which file, then what is wrong
        assert "Traceback" not in str(exc)
    else:
        assert isinstance(parsed, SpecialistsFile) and parsed.specialists


@PROPERTY
@given(raw=st.binary(max_size=400))
def test_any_bytes_are_a_spec_or_a_config_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "specialists.yaml"
    path.write_bytes(raw)
    try:
        load_specialists(path)
    except ConfigError as exc:
        assert str(path) in str(exc)


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    # Printable labels: PyYAML reads NEL and other line breaks in plain scalars as spaces.
    printable = st.text(
        alphabet=st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=40
    )
    label_set = draw(st.lists(printable.filter(str.strip), min_size=2, max_size=6, unique=True))
    return {
        "name": draw(names),
        "labels": label_set,
        "data": {
            "kind": "generator",
            "n": draw(st.integers(20, 5000)),
            "seed": draw(st.integers(0, 99)),
        },
        "lora": {"r": draw(st.integers(1, 256)), "alpha": draw(st.integers(1, 512))},
        "training": {
            "epochs": draw(st.integers(1, 100)),
            "learning_rate": draw(st.floats(1e-6, 0.5)),
            "max_length": draw(st.integers(8, 512)),
        },
    }


@PROPERTY
@given(specs=st.lists(valid_specs(), min_size=1, max_size=3, unique_by=lambda s: s["name"]))
def test_valid_specs_round_trip_through_yaml(tmp_path: Path, specs: list[dict[str, Any]]) -> None:
    path = tmp_path / "specialists.yaml"
    path.write_text(yaml.safe_dump({"specialists": specs}, allow_unicode=True), encoding="utf-8")
    parsed = load_specialists(path)
    assert [s.name for s in parsed.specialists] == [s["name"] for s in specs]
    assert [list(s.labels or ()) for s in parsed.specialists] == [s["labels"] for s in specs]
    dumped = parsed.model_dump(mode="json")
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(dumped, allow_unicode=True), encoding="utf-8")
    assert load_specialists(again) == parsed
