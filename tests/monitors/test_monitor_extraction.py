"""Monitoring an extraction specialist: answer signals, entity F1 and its label-free estimate.

No model: the champion's answers are simulated from the generated tickets' gold spans. Each
span the simulated model marks gets a confidence from a seeded rng and is exactly right with
that probability (else one character off: a wrong span standing for a missed gold one);
some gold spans it marks nowhere, and its request confidence is the calibrated chance of the
whole answer being right. Real Evidently on the frames, as in tests/monitors/test_monitors.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lifecycle.config.spec import SpecialistSpec
from lifecycle.extraction.metrics import evaluate_entities
from lifecycle.extraction.spans import keys, summary
from lifecycle.registry.models import VersionInfo
from lifecycle.synthetic.extraction_scenarios import NEW_FIELD, extraction_scenario
from monitors.check import Reference, assess
from monitors.descriptors import tokenizer_vocabulary
from monitors.drift import applicable
from monitors.entities import (
    answer_columns,
    extraction_reference_data,
    extraction_window_data,
    truth_columns,
)
from monitors.entity_quality import (
    estimate_entity_f1,
    fit_miss_model,
    measured_entity_quality,
    micro_f1_with_ci,
    reference_entity_quality,
)
from monitors.frames import MonitorData, reference_data
from monitors.kinds import monitor_kind
from monitors.message import alert_message
from monitors.policy import decide
from monitors.results import ANSWER_SIGNALS, Quality, Status
from monitors.thresholds import Thresholds, calibrate

Spans = list[dict[str, Any]]
SPEC = SpecialistSpec.model_validate(
    {
        "name": "tickets-extractor",
        "task": "extraction",
        "required": ["order_id"],
        "monitoring": {"window_size": 600, "min_window": 50, "min_labels": 30},
    }
)
ROWS = 600


# -- simulated answers ------------------------------------------------------------------------


def simulate(
    golds: Sequence[Spans],
    rng: np.random.Generator,
    *,
    unknown: Sequence[str] = (),
    sureness: tuple[float, float] = (8.0, 1.5),
    max_miss: float = 0.15,
) -> tuple[list[Spans], list[float]]:
    """A calibrated model's answers: spans, and each request's whole-answer confidence.

    Labels in ``unknown`` were never taught: the model marks them nowhere and doubts
    nothing there (so its answers are the gold spans minus those labels, noise aside).
    """
    answers, confidences = [], []
    for gold in golds:
        spans: Spans = []
        whole = 1.0
        for entity in gold:
            if entity["label"] in unknown:
                continue
            miss = rng.uniform(0.0, max_miss)  # chance it marks nothing here
            whole *= 1.0 - miss
            if rng.random() < miss:
                continue
            confidence = float(rng.beta(*sureness))
            whole *= confidence
            start, end = int(entity["start"]), int(entity["end"])
            if rng.random() >= confidence:  # wrong: one character off
                end = end - 1 if end - start > 1 else end + 1
            spans.append(
                {"label": entity["label"], "start": start, "end": end, "confidence": confidence}
            )
        answers.append(spans)
        confidences.append(whole)
    return answers, confidences


def reference_frame(golds: Sequence[Spans], texts: Sequence[str], seed: int) -> pd.DataFrame:
    """Shaped like the validation.parquet an extractor's training writes."""
    answers, confidences = simulate(golds, np.random.default_rng(seed))
    return pd.DataFrame(
        {
            "text": list(texts),
            "label": [summary(g) for g in golds],
            "prediction": [summary(a) for a in answers],
            "confidence": confidences,
            "entities": [json.dumps(a) for a in answers],
            "true_entities": [json.dumps(g) for g in golds],
        }
    )


def window_frame(
    golds: Sequence[Spans],
    texts: Sequence[str],
    seed: int,
    *,
    labelled: bool = False,
    **kw: Any,
) -> pd.DataFrame:
    """Shaped like TrafficStore.window for an extractor."""
    answers, confidences = simulate(golds, np.random.default_rng(seed), **kw)
    return pd.DataFrame(
        {
            "created_at": pd.date_range("2026-01-01", periods=len(golds), freq="min", tz="UTC"),
            "text": list(texts),
            "label": [summary(a) for a in answers],
            "confidence": confidences,
            "entities": [json.dumps(a) for a in answers],
            "true_label": np.nan,
            "true_entities": [json.dumps(g) if labelled else None for g in golds],
            "true_label_source": "human" if labelled else np.nan,
        }
    )


@pytest.fixture(scope="module")
def vocabulary() -> frozenset[str]:
    return tokenizer_vocabulary(SPEC.base_model)


@pytest.fixture(scope="module")
def scenarios() -> dict[str, Any]:
    return {
        name: extraction_scenario(name, n_reference=ROWS, n_before=0, n_after=ROWS, seed=0)
        for name in ("stationary", "new_field")
    }


@pytest.fixture(scope="module")
def reference(scenarios: dict[str, Any], vocabulary: frozenset[str]) -> Reference:
    """The stationary reference with thresholds calibrated as a check would."""
    ref = scenarios["stationary"].reference
    frame = reference_frame(ref["entities"], ref["text"], seed=1)
    kind = monitor_kind(SPEC.task)
    data = kind.reference_data(frame, None, spec=SPEC, vocabulary=vocabulary)
    thresholds = calibrate(
        data,
        false_alarm_rate=SPEC.monitoring.false_alarm_rate,
        rounds=20,
        metric=kind.metric,
        quality=kind.reference_quality(data),
    )
    version = VersionInfo(name=SPEC.name, version=1, run_id="r", source="", aliases=("champion",))
    return Reference(version, data, thresholds)


def _window(scenarios: dict[str, Any], name: str, seed: int, **kw: Any) -> pd.DataFrame:
    after = scenarios[name].stream
    after = after[after["phase"] == "after"]
    unknown = scenarios[name].new_labels
    return window_frame(after["entities"], after["text"], seed, unknown=unknown, **kw)


# -- answer signals on hand-made rows ---------------------------------------------------------

HAND = [
    json.dumps(
        [
            {"label": "order_id", "start": 0, "end": 10, "text": "", "confidence": 0.9},
            {"label": "date", "start": 20, "end": 24, "text": "", "confidence": 0.5},
        ]
    ),
    "[]",
    json.dumps([{"label": "date", "start": 3, "end": 9, "text": "", "confidence": 0.8}]),
    None,
]


def test_answer_columns_count_spans_confidence_length_and_missing_fields() -> None:
    cols = answer_columns(HAND, [0.36, 0.7, 0.8, 0.9], required=("order_id",))
    assert cols["n_entities"].tolist()[:3] == [2.0, 0.0, 1.0]
    assert cols["entity_confidence"].iloc[0] == pytest.approx(0.7)
    assert cols["span_length"].iloc[0] == pytest.approx(7.0)  # (10 + 4) / 2
    assert cols["span_length"].iloc[2] == pytest.approx(6.0)
    # No span: nothing to average, said by no_entity instead of a zero in the means.
    assert math.isnan(cols["entity_confidence"].iloc[1]) and math.isnan(cols["span_length"].iloc[1])
    assert cols["no_entity"].tolist()[:3] == ["no", "yes", "no"]
    assert cols["missing_required"].tolist()[:3] == ["no", "yes", "yes"]
    assert cols["confidence_sum"].iloc[0] == pytest.approx(1.4)
    # The answer (0.36) is less sure than its spans (0.45): the rest is doubt outside them.
    assert cols["outside_error"].iloc[0] == pytest.approx(1 - 0.36 / 0.45)
    assert cols["outside_error"].iloc[1] == pytest.approx(0.3)
    assert cols["outside_error"].iloc[2] == pytest.approx(0.0)
    # Unknown answer (no JSON): unknown everywhere, not "nothing found".
    assert cols.iloc[3].isna().all()
    # Without required fields there is no column, hence no signal that cannot move.
    assert "missing_required" not in answer_columns(HAND, [0.5] * 4).columns


def test_truth_columns_score_exact_spans_and_tell_boundary_from_unmarked_misses() -> None:
    gold = json.dumps(
        [
            {"label": "order_id", "start": 0, "end": 11},  # predicted one short: boundary
            {"label": "date", "start": 20, "end": 24},  # exact
            {"label": "email", "start": 30, "end": 40},  # marked nowhere
        ]
    )
    out = truth_columns([HAND[0], HAND[1], HAND[3]], [gold, "[]", gold])
    assert out.iloc[0].tolist() == [3.0, 1.0, 0.0, 1.0]
    assert out.iloc[1].tolist() == [0.0, 0.0, 1.0, 0.0]  # nothing there, nothing said
    assert out.iloc[2].isna().all()


def test_only_peoples_corrections_label_a_window_and_classifiers_are_unchanged(
    vocabulary: frozenset[str],
) -> None:
    gold = json.dumps([{"label": "date", "start": 3, "end": 9}])
    raw = pd.DataFrame(
        {
            "text": ["order 1", "order 2", "order 3"],
            "label": ["order_id+date", "(none)", "date"],
            "confidence": [0.36, 0.7, 0.8],
            "entities": HAND[:3],
            "true_entities": [None, gold, gold],
            "true_label_source": [np.nan, "fallback", "human"],
        }
    )
    data = extraction_window_data(raw, vocabulary=vocabulary, escalation_threshold=0.5)
    assert data.frame["true_label"].tolist() == [None, None, "date"]
    assert len(data.labelled) == 1
    assert data.frame["exact"].iloc[2] == 1.0 and math.isnan(data.frame["exact"].iloc[1])
    assert set(ANSWER_SIGNALS) - {"missing_required"} <= set(applicable(data))
    # A classifier's frames have none of these columns: its signals are the same eight.
    classifier = reference_data(
        raw.assign(prediction=raw["label"]), None, vocabulary=vocabulary, escalation_threshold=0.5
    )
    assert applicable(classifier) == (
        "text",
        "text_length",
        "word_count",
        "oov_share",
        "embeddings",
        "prediction",
        "confidence",
        "escalation_rate",
    )


# -- measured F1 ------------------------------------------------------------------------------


def _labelled_data(pred: Sequence[Spans], gold: Sequence[Spans]) -> MonitorData:
    frame = pd.DataFrame(
        {
            "text": ["t"] * len(pred),
            "label": [summary(g) for g in gold],
            "prediction": [summary(p) for p in pred],
            "confidence": [0.9] * len(pred),
            "entities": [json.dumps(p) for p in pred],
            "true_entities": [json.dumps(g) for g in gold],
        }
    )
    return extraction_reference_data(frame, None, vocabulary=(), escalation_threshold=0.0)


def _span(label: str, start: int, end: int, confidence: float = 0.9) -> dict[str, Any]:
    return {"label": label, "start": start, "end": end, "confidence": confidence}


def test_entity_f1_and_exact_match_on_a_hand_case() -> None:
    gold = [
        [_span("a", 0, 5), _span("b", 10, 15)],
        [_span("a", 0, 5)],
        [],
        [_span("b", 2, 4)],
    ]
    pred = [
        [_span("a", 0, 5), _span("b", 10, 14)],  # 1 right, 1 wrong (one short)
        [_span("a", 0, 5)],  # right
        [_span("c", 1, 3)],  # invented
        [],  # missed
    ]
    # TP 2, predicted 4, gold 4: F1 = 2 * 2 / (4 + 4) = 0.5; exact: request 2 only.
    q = measured_entity_quality(_labelled_data(pred, gold), min_labels=1)
    assert q.metric == "entity_f1" and q.labelled == 4
    assert q.entity_f1 == pytest.approx(0.5) and q.value == pytest.approx(0.5)
    assert q.exact_match == pytest.approx(0.25)
    reference = evaluate_entities([keys(g) for g in gold], [keys(p) for p in pred])
    assert q.entity_f1 == pytest.approx(reference.micro_f1)
    assert q.exact_match == pytest.approx(reference.exact_match)
    assert q.entity_f1_ci is not None and q.exact_match_ci is not None
    assert q.entity_f1_ci[0] <= 0.5 <= q.entity_f1_ci[1]
    assert q.interval == q.entity_f1_ci
    # Too few corrections: nothing measured.
    assert measured_entity_quality(_labelled_data(pred, gold), min_labels=5).entity_f1 is None


def test_the_f1_interval_resamples_requests() -> None:
    # The same request over and over: every resample is the sample, the interval a point.
    one = np.ones(50)
    f1, ci = micro_f1_with_ci(one * 2, one * 3, one * 4)
    assert f1 == pytest.approx(4 / 7) and ci == pytest.approx((4 / 7, 4 / 7))
    # Requests that differ: the interval holds the point, and narrows like 1/sqrt(requests).
    correct, predicted, gold = (
        np.array([0.0, 1, 2, 3]),
        np.array([1.0, 1, 3, 3]),
        np.array([2.0, 1, 2, 4]),
    )
    point, (lo, hi) = micro_f1_with_ci(correct, predicted, gold)
    assert point == pytest.approx(2 * 6 / (8 + 9))
    assert lo < point < hi
    _, (lo4, hi4) = micro_f1_with_ci(
        np.tile(correct, 16), np.tile(predicted, 16), np.tile(gold, 16)
    )
    assert (hi4 - lo4) == pytest.approx((hi - lo) / 4, rel=0.4)


# -- label-free estimate ----------------------------------------------------------------------


def test_the_estimate_reads_its_ratios_off_the_reference_on_a_hand_case() -> None:
    gold = [[_span("a", 0, 5), _span("b", 10, 15), _span("c", 20, 22)], [_span("a", 0, 5)]]
    pred = [[_span("a", 0, 5, 0.9), _span("b", 10, 14, 0.6)], [_span("a", 0, 5, 0.8)]]
    data = _labelled_data(pred, gold)
    # Whole-answer confidences: request 1 leaves 0.5 of doubt outside its spans, request 2 none.
    data.frame["outside_error"] = [0.5, 0.0]
    model = fit_miss_model(data)
    # One wrong span (b, one short) over one gold span missed under it: a = 1; the unmarked
    # miss (c) per unit of outside doubt: 1 / 0.5 = 2; per request 1 / 2.
    assert model.boundary_share == pytest.approx(1.0)
    assert model.per_outside_error == pytest.approx(2.0)
    assert model.per_request == pytest.approx(0.5)
    # One wrong span for 0.7 of doubt (3 spans, 2.3 of confidence): doubt scaled by 1 / 0.7.
    assert model.wrong_per_doubt == pytest.approx(1 / 0.7)
    est = estimate_entity_f1(data, model, min_labels=1)
    assert est is not None and est.metric == "entity_f1"
    # E[TP] 2, predicted 3, E[gold] 2 + 1 * 1 + 2 * 0.5 = 4: F1 = 4 / 7, the measured one.
    assert est.accuracy == pytest.approx(4 / 7)
    assert est.measured == pytest.approx(2 * 2 / (3 + 4))
    assert est.error == pytest.approx(0.0)
    assert est.accuracy_low is not None and est.accuracy_high is not None
    assert est.accuracy_low <= est.accuracy <= est.accuracy_high


@pytest.mark.parametrize(
    ("case", "kw"),
    [
        ("like the reference", {}),
        ("harder traffic", {"sureness": (3.0, 1.5), "max_miss": 0.4}),
        ("easier traffic", {"sureness": (20.0, 1.0), "max_miss": 0.05}),
    ],
)
def test_calibrated_confidences_estimate_f1_within_five_points(
    scenarios: dict[str, Any], reference: Reference, case: str, kw: dict[str, Any]
) -> None:
    window = extraction_window_data(
        _window(scenarios, "stationary", seed=7, labelled=True, **kw),
        vocabulary=(),
        escalation_threshold=0.0,
        required=SPEC.required,
    )
    real = measured_entity_quality(window, min_labels=1).entity_f1
    est = estimate_entity_f1(window, fit_miss_model(reference.data), min_labels=30)
    assert real is not None and est is not None
    assert abs(est.accuracy - real) < 0.05, (case, est.accuracy, real)
    # The check reports the real F1 beside it, and the error, where labels exist.
    assert est.measured == pytest.approx(real)
    assert est.error == pytest.approx(est.accuracy - real)
    # On the reference the two agree by construction, up to miscalibration.
    measured, estimated = reference_entity_quality(reference.data)
    assert abs(measured - estimated) < 0.02
    assert reference.thresholds.reference_accuracy == pytest.approx(measured)


def test_a_steady_miscalibration_of_span_confidences_is_read_off_the_reference(
    scenarios: dict[str, Any], reference: Reference
) -> None:
    """Spans that doubt themselves twice as much as they should (as a per-piece temperature
    can leave them) would put the estimate far below the real F1; the reference's wrong spans
    per unit of doubt scale it back, for the reference and for a window alike."""

    def shy(data: MonitorData) -> MonitorData:
        frame = data.frame.copy()
        doubt = frame["n_entities"] - frame["confidence_sum"]
        frame["confidence_sum"] = frame["n_entities"] - 2 * doubt
        return MonitorData(frame, data.embeddings)

    window = extraction_window_data(
        _window(scenarios, "stationary", seed=7, labelled=True),
        vocabulary=(),
        escalation_threshold=0.0,
        required=SPEC.required,
    )
    real = measured_entity_quality(window, min_labels=1).entity_f1
    model = fit_miss_model(shy(reference.data))
    assert model.wrong_per_doubt == pytest.approx(
        fit_miss_model(reference.data).wrong_per_doubt / 2
    )
    est = estimate_entity_f1(shy(window), model, min_labels=30)
    assert real is not None and est is not None
    assert abs(est.accuracy - real) < 0.05, (est.accuracy, real)
    measured, estimated = reference_entity_quality(shy(reference.data))
    assert abs(measured - estimated) < 0.02


# -- the check --------------------------------------------------------------------------------


def test_calibration_covers_the_answer_signals_in_one_budget(reference: Reference) -> None:
    t = reference.thresholds
    assert t.metric == "entity_f1"
    assert set(ANSWER_SIGNALS) <= set(t.z)
    back = Thresholds.from_json(t.to_json())
    assert back == t
    # The threshold of a distance for a 600-row window is above Evidently's floor and finite.
    assert all(math.isfinite(t.threshold(s, (ROWS, ROWS)) or math.nan) for s in ANSWER_SIGNALS)


def test_a_new_field_drifts_and_a_stationary_window_does_not(
    scenarios: dict[str, Any], reference: Reference
) -> None:
    calm = assess(SPEC, reference, _window(scenarios, "stationary", seed=3), report=False)
    assert calm.status is Status.OK, calm.reasons
    assert calm.drifted == ()
    assert {s.name for s in calm.signals} >= set(ANSWER_SIGNALS)
    assert calm.estimate is not None and calm.estimate.metric == "entity_f1"
    assert abs(calm.estimate.accuracy - reference.thresholds.reference_confidence) < 0.03

    raw = _window(scenarios, "new_field", seed=3)
    assert NEW_FIELD not in "".join(raw["label"])  # the champion never says tracking_number
    drifted = assess(SPEC, reference, raw, report=False)
    assert drifted.status is Status.DRIFT, drifted.reasons
    assert {"text", "n_entities"} <= set(drifted.drifted)
    # Label-free, the estimate is blind to a field never taught: it holds, as documented.
    assert drifted.estimate is not None
    assert drifted.estimate.accuracy > reference.thresholds.reference_confidence - 0.05
    assert drifted.window["label_share"]["order_id"] > 0
    assert 0.0 <= drifted.window["missing_required_rate"] <= 1.0


def test_with_corrections_the_new_field_is_a_quality_drop_in_f1(
    scenarios: dict[str, Any], reference: Reference
) -> None:
    raw = _window(scenarios, "new_field", seed=3, labelled=True)
    verdict = assess(SPEC, reference, raw, report=False)
    assert verdict.status is Status.QUALITY_DROP
    assert verdict.reasons[0].signal == "entity_f1"
    assert verdict.quality is not None and verdict.quality.entity_f1 is not None
    assert verdict.quality.accuracy is None
    assert verdict.reference == {
        "entity_f1": reference.thresholds.reference_accuracy,
        "estimated_entity_f1": reference.thresholds.reference_confidence,
    }
    # The estimate is reported beside the real F1, with its error (here: the unseen field).
    assert verdict.estimate is not None and verdict.estimate.error is not None
    assert verdict.estimate.measured == pytest.approx(verdict.quality.entity_f1)
    assert verdict.estimate.error > 0.05
    metrics = verdict.metrics()
    assert {"entity_f1", "exact_match", "estimated_entity_f1", "estimate_error"} <= set(metrics)
    assert not {"accuracy", "estimated_accuracy"} & set(metrics)
    json.dumps(verdict.as_dict(), default=str)
    summary_text = alert_message(SPEC, verdict).summary
    assert "entity F1" in summary_text and "accuracy" not in summary_text


def test_the_policy_applies_quality_drop_to_f1() -> None:
    common: dict[str, Any] = {
        "specialist": "x",
        "champion_version": 1,
        "window": {"rows": 500},
        "signals": (),
        "estimate": None,
        "reference_accuracy": 0.9,
        "reference_confidence": 0.88,
        "quality_drop": 0.05,
        "min_window": 100,
        "min_labels": 50,
    }
    low = Quality(labelled=200, entity_f1=0.8, entity_f1_ci=(0.76, 0.84), metric="entity_f1")
    assert decide(quality=low, **common).status is Status.QUALITY_DROP
    # Its accuracy fields are not read for an extractor.
    fine = Quality(
        labelled=200,
        accuracy=0.1,
        accuracy_ci=(0.05, 0.15),
        entity_f1=0.89,
        entity_f1_ci=(0.86, 0.92),
        metric="entity_f1",
    )
    assert decide(quality=fine, **common).status is Status.OK
