"""Exact-span extraction scores: micro, per label, macro, exact match, per request."""

from __future__ import annotations

import pytest

from lifecycle.extraction.metrics import (
    ExtractionEvaluation,
    LabelScore,
    evaluate_entities,
    request_exact,
    request_f1,
)

# Two requests. Gold: 3 city + 1 date. Predicted: 2 cities right, 1 city off by one, the date
# right, plus an invented date.
GOLD = [
    [("city", 0, 5), ("date", 10, 15)],
    [("city", 0, 4), ("city", 8, 12)],
]
PRED = [
    [("city", 0, 5), ("date", 10, 15), ("date", 20, 25)],
    [("city", 0, 4), ("city", 8, 13)],
]


def test_micro_scores_by_hand() -> None:
    result = evaluate_entities(GOLD, PRED)
    # TP 3 (city 0:5, date 10:15, city 0:4); predicted 5; gold 4.
    assert result.n == 2
    assert result.micro_precision == pytest.approx(3 / 5)
    assert result.micro_recall == pytest.approx(3 / 4)
    assert result.micro_f1 == pytest.approx(2 * 3 / (5 + 4))
    assert result.exact_match == 0.0


def test_per_label_and_macro_by_hand() -> None:
    result = evaluate_entities(GOLD, PRED)
    city, date = result.per_label["city"], result.per_label["date"]
    # city: TP 2 of 3 predicted, 3 gold.
    assert (city.precision, city.recall, city.support) == (2 / 3, 2 / 3, 3)
    assert city.f1 == pytest.approx(2 / 3)
    # date: TP 1 of 2 predicted, 1 gold.
    assert (date.precision, date.recall, date.support) == (0.5, 1.0, 1)
    assert date.f1 == pytest.approx(2 / 3)
    assert result.macro_f1 == pytest.approx((city.f1 + date.f1) / 2)


def test_macro_over_declared_labels_counts_absent_ones_as_zero() -> None:
    gold = [[("city", 0, 5)]]
    pred = [[("city", 0, 5)]]
    assert evaluate_entities(gold, pred).macro_f1 == 1.0
    declared = evaluate_entities(gold, pred, labels=["city", "date"])
    assert declared.macro_f1 == pytest.approx(0.5)
    assert declared.per_label["date"] == LabelScore(precision=0.0, recall=0.0, f1=0.0, support=0)


def test_label_only_in_predictions_scores_zero_and_enters_macro() -> None:
    result = evaluate_entities([[("city", 0, 5)]], [[("city", 0, 5), ("date", 6, 9)]])
    assert result.per_label["date"] == LabelScore(precision=0.0, recall=0.0, f1=0.0, support=0)
    assert result.macro_f1 == pytest.approx(0.5)
    assert result.micro_precision == 0.5
    assert result.micro_recall == 1.0


def test_wrong_label_on_the_right_offsets_is_a_miss_and_a_false_positive() -> None:
    result = evaluate_entities([[("city", 0, 5)]], [[("country", 0, 5)]])
    assert result.micro_f1 == 0.0
    assert result.per_label["city"].recall == 0.0
    assert result.per_label["country"].precision == 0.0


def test_exact_match_share_and_empty_requests() -> None:
    gold = [[("a", 0, 1)], [], [], [("b", 2, 3)]]
    pred = [[("a", 0, 1)], [], [("a", 0, 1)], []]
    result = evaluate_entities(gold, pred)
    # Request 1 right, request 2 (nothing, nothing) right, 3 invents, 4 misses.
    assert result.exact_match == 0.5
    assert result.micro_precision == 0.5
    assert result.micro_recall == 0.5


def test_order_within_a_request_does_not_matter() -> None:
    gold = [[("a", 0, 1), ("b", 2, 3)]]
    pred = [[("b", 2, 3), ("a", 0, 1)]]
    result = evaluate_entities(gold, pred)
    assert result.exact_match == 1.0
    assert result.micro_f1 == 1.0


def test_duplicate_prediction_is_one_hit_and_one_false_positive() -> None:
    result = evaluate_entities([[("a", 0, 1)]], [[("a", 0, 1), ("a", 0, 1)]])
    assert result.micro_precision == 0.5
    assert result.micro_recall == 1.0
    assert result.exact_match == 0.0


def test_all_empty_is_perfect() -> None:
    result = evaluate_entities([[], []], [[], []])
    assert result.micro_f1 == 1.0
    assert result.micro_precision == result.micro_recall == 1.0
    assert result.exact_match == 1.0
    assert result.per_label == {}


def test_no_prediction_scores_zero() -> None:
    result = evaluate_entities([[("a", 0, 1)]], [[]])
    assert (result.micro_precision, result.micro_recall, result.micro_f1) == (0.0, 0.0, 0.0)
    assert result.macro_f1 == 0.0
    assert result.exact_match == 0.0


def test_lists_from_json_are_accepted() -> None:
    result = evaluate_entities([[["a", 0, 1]]], [[("a", 0, 1)]])  # type: ignore[list-item]
    assert result.micro_f1 == 1.0


def test_length_mismatch_and_no_request_raise() -> None:
    with pytest.raises(ValueError, match="gold has 2 requests but predicted has 1"):
        evaluate_entities([[], []], [[]])
    with pytest.raises(ValueError, match="no request"):
        evaluate_entities([], [])


def test_metrics_are_flat_and_mlflow_safe() -> None:
    gold = [[("city", 0, 5), ("time:range", 6, 8), ("time;range", 9, 10)]]
    result = evaluate_entities(gold, gold)
    metrics = result.metrics(prefix="test_")
    assert metrics["test_micro_f1"] == 1.0
    assert metrics["test_macro_f1"] == 1.0
    assert metrics["test_exact_match"] == 1.0
    assert metrics["test_f1.city"] == 1.0
    # Both labels sanitise to time_range: the second one gets a suffix, none is lost.
    assert {"test_f1.time_range", "test_f1.time_range_2"} <= set(metrics)
    assert all(isinstance(v, float) for v in metrics.values())
    assert "micro_f1" in result.metrics()


def test_table_rows_by_support() -> None:
    table = evaluate_entities(GOLD, PRED).table()
    assert [row["label"] for row in table] == ["city", "date"]
    assert table[0] == {
        "label": "city",
        "precision": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(2 / 3),
        "support": 3,
    }


def test_evaluation_is_frozen() -> None:
    result = evaluate_entities(GOLD, PRED)
    assert isinstance(result, ExtractionEvaluation)
    with pytest.raises(AttributeError):
        result.micro_f1 = 0.0  # type: ignore[misc]


def test_request_f1_and_exact() -> None:
    assert request_f1([], []) == 1.0
    assert request_f1([("a", 0, 1)], []) == 0.0
    assert request_f1([], [("a", 0, 1)]) == 0.0
    # 1 of 2 predicted right, 1 of 3 gold found: F1 = 2 / 5.
    gold = [("a", 0, 1), ("b", 2, 3), ("c", 4, 5)]
    pred = [("a", 0, 1), ("b", 2, 4)]
    assert request_f1(gold, pred) == pytest.approx(0.4)
    assert request_exact([], [])
    assert request_exact(gold, list(reversed(gold)))
    assert not request_exact(gold, pred)


def test_micro_f1_agrees_with_per_request_f1_on_one_request() -> None:
    gold = [("a", 0, 1), ("b", 2, 3), ("c", 4, 5)]
    pred = [("a", 0, 1), ("b", 2, 4)]
    assert evaluate_entities([gold], [pred]).micro_f1 == pytest.approx(request_f1(gold, pred))


def test_malformed_span_raises() -> None:
    with pytest.raises(ValueError, match="label, start, end"):
        request_f1([("a", 0)], [])  # type: ignore[list-item]
