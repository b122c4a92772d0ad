"""The extraction ticket generator and its drift scenarios (synthetic and SNIPS)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lifecycle.synthetic.extraction_scenarios import (
    EXTRACTION_SCENARIOS,
    HOLDOUT_SHARE,
    NEW_FIELD_SHARE,
    ExtractionScenario,
    extraction_scenario,
    snips_holdout_scenario,
)
from lifecycle.synthetic.tickets import (
    ALL_LABELS,
    LABELS,
    PLAIN_SHARE,
    PRODUCTS,
    TEMPLATES,
    generate_tickets,
    template_labels,
)

SMALL = {"n_reference": 800, "n_before": 400, "n_after": 800}
ORDER_DEFAULT = re.compile(r"ORD-\d{6}")
ORDER_V2 = re.compile(r"20\d\d-[A-Z]{2}-\d{4}-\d{4}")
DATE_US = re.compile(
    r"[a-z]+ \d{1,2}(, \d{4})?|\d{1,2}/\d{1,2}/\d{4}|\d{4}-\d{2}-\d{2}", re.IGNORECASE
)
DATE_EUROPEAN = re.compile(r"\d{2}\.\d{2}\.\d{4}|\d{1,2} [a-z]+( \d{4})?", re.IGNORECASE)


def _entities(frame: pd.DataFrame) -> Iterator[tuple[str, dict[str, Any]]]:
    for text, entities in zip(frame["text"], frame["entities"], strict=True):
        for entity in entities:
            yield text, entity


def _values(frame: pd.DataFrame, label: str) -> list[str]:
    return [str(e["text"]) for _, e in _entities(frame) if e["label"] == label]


def _label_counts(frame: pd.DataFrame) -> Counter[str]:
    return Counter(str(e["label"]) for _, e in _entities(frame))


def _phase(scenario: ExtractionScenario, phase: str) -> pd.DataFrame:
    return scenario.stream[scenario.stream["phase"] == phase]


@pytest.fixture(scope="module")
def tickets() -> pd.DataFrame:
    return generate_tickets(2000, seed=7)


@pytest.fixture(scope="module")
def scenarios() -> dict[str, ExtractionScenario]:
    return {name: extraction_scenario(name, seed=3, **SMALL) for name in EXTRACTION_SCENARIOS}


@pytest.fixture(scope="module")
def snips_dir() -> Path:
    here = Path(__file__).resolve().parents[3] / "shared" / "data" / "snips"
    for folder in (here, Path("/work/shared/data/snips")):
        if (folder / "train.jsonl").is_file() and (folder / "test.jsonl").is_file():
            return folder
    pytest.skip("SNIPS is absent (../shared/data/snips, /work/shared/data/snips)")


def test_template_and_product_tables() -> None:
    templates = [t for texts in TEMPLATES.values() for t in texts]
    assert len(templates) >= 40
    assert len(set(templates)) == len(templates)
    assert len(PRODUCTS) >= 55 and len(set(PRODUCTS)) == len(PRODUCTS)
    for template in templates:
        assert template_labels(template) <= set(ALL_LABELS)
        assert len(re.findall(r"\{\w+\}", template)) <= 3


def test_spans_are_exact_sorted_and_disjoint(tickets: pd.DataFrame) -> None:
    assert list(tickets.columns) == ["text", "entities", "template"]
    for text, entities in zip(tickets["text"], tickets["entities"], strict=True):
        assert text == text.strip() and text
        end = 0
        for entity in entities:
            assert set(entity) == {"label", "start", "end", "text"}
            assert entity["label"] in LABELS
            assert end <= entity["start"] < entity["end"] <= len(text)
            assert text[entity["start"] : entity["end"]] == entity["text"]
            end = entity["end"]


def test_row_count_is_exact_and_a_tenth_has_no_entity() -> None:
    for n in (0, 1, 37, 500):
        frame = generate_tickets(n, seed=n)
        assert len(frame) == n
        assert (frame["entities"].map(len) == 0).sum() == round(PLAIN_SHARE * n)


def test_variety(tickets: pd.DataFrame) -> None:
    assert tickets["template"].nunique() >= 40
    assert tickets["text"].nunique() > 0.95 * len(tickets)
    assert set(_label_counts(tickets)) == set(LABELS)
    assert (tickets["text"] == tickets["text"].str.lower()).mean() > 0.05  # some lowercase
    assert tickets["text"].str.contains("\n").any()
    assert len(set(_values(tickets, "product"))) >= 50


def test_relative_dates_are_not_entities(tickets: pd.DataFrame) -> None:
    for value in _values(tickets, "date"):
        assert re.search(r"\d", value), value
    assert tickets["text"].str.contains("yesterday").any()


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    a, b = generate_tickets(300, seed=11), generate_tickets(300, seed=11)
    pd.testing.assert_frame_equal(a, b)
    assert not a["text"].equals(generate_tickets(300, seed=12)["text"])


def test_labels_filter() -> None:
    only = generate_tickets(400, seed=1, labels=["email", "amount"])
    assert set(_label_counts(only)) == {"email", "amount"}
    for template in set(only["template"]):
        kind, i = template.split(".")
        assert template_labels(TEMPLATES[kind][int(i)]) <= {"email", "amount"}
    assert not set(_label_counts(generate_tickets(400, seed=1))) & {"tracking_number"}
    with_new = generate_tickets(400, seed=1, labels=ALL_LABELS)
    assert _label_counts(with_new)["tracking_number"] > 0
    assert (generate_tickets(20, labels=[])["entities"].str.len() == 0).all()
    required = generate_tickets(50, seed=2, labels=ALL_LABELS, require="tracking_number")
    assert all(any(e["label"] == "tracking_number" for e in es) for es in required["entities"])
    with pytest.raises(ValueError, match="unknown label"):
        generate_tickets(5, labels=["phone"])


def test_formats_change_the_form_of_values_only() -> None:
    default = generate_tickets(600, seed=4)
    changed = generate_tickets(600, seed=4, formats={"order_id": "v2", "date": "european"})
    assert default["template"].equals(changed["template"])
    assert all(ORDER_DEFAULT.fullmatch(v) for v in _values(default, "order_id"))
    assert all(ORDER_V2.fullmatch(v) for v in _values(changed, "order_id"))
    assert not any(ORDER_V2.fullmatch(v) for v in _values(default, "order_id"))
    assert all(DATE_US.fullmatch(v) for v in _values(default, "date"))
    assert all(DATE_EUROPEAN.fullmatch(v) for v in _values(changed, "date"))
    assert not any(DATE_EUROPEAN.fullmatch(v) for v in _values(default, "date"))
    legacy = _values(generate_tickets(200, seed=4, formats={"order_id": "legacy"}), "order_id")
    assert all(re.fullmatch(r"#[A-Z]\d{4}-\d{2}", v) for v in legacy)
    with pytest.raises(ValueError, match="unknown format"):
        generate_tickets(5, formats={"date": "klingon"})


def test_scenario_shape(scenarios: dict[str, ExtractionScenario]) -> None:
    for name, scenario in scenarios.items():
        stream = scenario.stream
        assert scenario.name == name and scenario.description
        assert len(scenario.reference) == SMALL["n_reference"]
        assert len(stream) == SMALL["n_before"] + SMALL["n_after"]
        assert scenario.onset == SMALL["n_before"]
        assert {"text", "entities", "phase", "template"} <= set(stream.columns)
        assert (stream["phase"].iloc[: scenario.onset] == "before").all()
        assert (stream["phase"].iloc[scenario.onset :] == "after").all()
        assert list(stream["step"]) == list(range(len(stream)))
        for text, entity in _entities(stream):
            assert text[entity["start"] : entity["end"]] == entity["text"]


def test_new_field_appears_only_after_onset(scenarios: dict[str, ExtractionScenario]) -> None:
    scenario = scenarios["new_field"]
    assert scenario.new_labels == ("tracking_number",)
    assert "tracking_number" not in _label_counts(scenario.reference)
    assert "tracking_number" not in _label_counts(_phase(scenario, "before"))
    after = _phase(scenario, "after")
    share = after["entities"].map(lambda es: any(e["label"] == "tracking_number" for e in es))
    assert share.mean() == pytest.approx(NEW_FIELD_SHARE, abs=0.01)
    for name in ("stationary", "order_id_format", "date_format"):
        assert scenarios[name].new_labels == ()


def test_format_scenarios_switch_at_onset(scenarios: dict[str, ExtractionScenario]) -> None:
    for name, label, old, new in (
        ("order_id_format", "order_id", ORDER_DEFAULT, ORDER_V2),
        ("date_format", "date", DATE_US, DATE_EUROPEAN),
    ):
        scenario = scenarios[name]
        for frame in (scenario.reference, _phase(scenario, "before")):
            assert all(old.fullmatch(v) for v in _values(frame, label))
        after = _values(_phase(scenario, "after"), label)
        assert after and all(new.fullmatch(v) and not old.fullmatch(v) for v in after)


def test_stationary_keeps_the_label_mix(scenarios: dict[str, ExtractionScenario]) -> None:
    scenario = scenarios["stationary"]
    ref, after = _label_counts(scenario.reference), _label_counts(_phase(scenario, "after"))
    assert set(ref) == set(after) == set(LABELS)
    for label in LABELS:
        share_ref = ref[label] / sum(ref.values())
        share_after = after[label] / sum(after.values())
        assert share_after == pytest.approx(share_ref, abs=0.05), label
    assert all(ORDER_DEFAULT.fullmatch(v) for v in _values(_phase(scenario, "after"), "order_id"))


def test_scenarios_are_seeded() -> None:
    a = extraction_scenario("new_field", n_reference=50, n_before=30, n_after=40, seed=5)
    b = extraction_scenario("new_field", n_reference=50, n_before=30, n_after=40, seed=5)
    pd.testing.assert_frame_equal(a.stream, b.stream)
    pd.testing.assert_frame_equal(a.reference, b.reference)


def test_unknown_scenario_raises_and_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="alien_invasion") as raised:
        extraction_scenario("alien_invasion")
    assert all(name in str(raised.value) for name in EXTRACTION_SCENARIOS)


def test_snips_holdout(snips_dir: Path) -> None:
    scenario = snips_holdout_scenario(snips_dir, n_before=300, n_after=500, seed=1)
    held = set(scenario.new_labels)
    assert held == {
        "condition_description",
        "condition_temperature",
        "current_location",
        "geographic_poi",
    }
    assert "GetWeather" not in set(scenario.reference["template"])
    assert not held & set(_label_counts(scenario.reference))
    before, after = _phase(scenario, "before"), _phase(scenario, "after")
    assert scenario.onset == len(before) == 300 and len(after) == 500
    assert not held & set(_label_counts(before))
    assert held <= set(_label_counts(after))
    weather = (after["template"] == "GetWeather").mean()
    assert weather == pytest.approx(HOLDOUT_SHARE, abs=0.01)
    for text, entity in _entities(scenario.stream):
        assert text[entity["start"] : entity["end"]] == entity["text"]
    with pytest.raises(ValueError, match="GetWeather"):
        snips_holdout_scenario(snips_dir, held_out_intent="OrderPizza")
