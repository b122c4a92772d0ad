"""The pure parts of monitoring: descriptors, drift scores, thresholds, quality, policy.

Real Evidently on generated tickets and synthetic embeddings; no model, no store.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from lifecycle.synthetic.scenarios import generate_tickets
from monitors.descriptors import describe, oov_share, tokenizer_vocabulary
from monitors.drift import drift_scores
from monitors.frames import MonitorData, reference_data, window_data
from monitors.policy import decide
from monitors.quality import estimated_quality, measured_quality
from monitors.results import Estimate, Quality, SignalResult, Status
from monitors.thresholds import Thresholds, calibrate, support_similarity

VOCAB = frozenset({"my", "card", "was", "charged", "twice", "refund", "please"})


@pytest.fixture(scope="module")
def vocabulary() -> frozenset[str]:
    return tokenizer_vocabulary("minilm")


def _embeddings(n: int, *, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 16)).astype(np.float32)
    emb[:, 0] += shift
    return emb


def _window(frame: pd.DataFrame, emb: np.ndarray | None, *, labelled: bool = False) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": frame["text"],
            "label": frame["label"],
            "confidence": np.full(len(frame), 0.97),
            "embedding": list(emb) if emb is not None else [None] * len(frame),
            "true_label": frame["label"] if labelled else np.nan,
            "true_label_source": "human" if labelled else np.nan,
        }
    )


def _reference(n: int, vocabulary: frozenset[str], *, seed: int = 1) -> MonitorData:
    frame = generate_tickets(n, seed=seed)
    ref = frame.assign(prediction=frame["label"], confidence=0.97)
    return reference_data(
        ref, _embeddings(n, seed=seed), vocabulary=vocabulary, escalation_threshold=0.5
    )


# -- descriptors ------------------------------------------------------------------------------


def test_oov_share_counts_words_outside_the_vocabulary() -> None:
    assert oov_share("My card was charged twice", VOCAB) == 0.0
    assert oov_share("My card got zapped twice!!", VOCAB) == pytest.approx(2 / 5)
    assert oov_share("", VOCAB) == 0.0
    assert oov_share("?!?", VOCAB) == 0.0


def test_describe_gives_nan_for_missing_texts_not_zero() -> None:
    out = describe(["refund please", None, float("nan")], VOCAB)
    assert out.loc[0].tolist() == [13.0, 2.0, 0.0]
    assert out.loc[1:].isna().all().all()


def test_the_model_tokenizer_knows_common_words_and_not_slang(vocabulary: frozenset[str]) -> None:
    assert {"card", "money", "account"} <= vocabulary
    assert oov_share("my kard got zapped", vocabulary) == 0.5


# -- drift ------------------------------------------------------------------------------------


def test_shifted_vocabulary_scores_higher_than_the_same_distribution(
    vocabulary: frozenset[str],
) -> None:
    ref = _reference(300, vocabulary)
    same = window_data(
        _window(generate_tickets(300, seed=2), _embeddings(300, seed=2)),
        vocabulary=vocabulary,
        escalation_threshold=0.5,
    )
    shifted = window_data(
        _window(
            generate_tickets(300, seed=3, vocabulary="shifted"), _embeddings(300, seed=3, shift=1)
        ),
        vocabulary=vocabulary,
        escalation_threshold=0.5,
    )
    calm, moved = drift_scores(ref, same), drift_scores(ref, shifted)
    assert not calm.skipped and not moved.skipped
    for signal in ("text", "oov_share", "embeddings"):
        assert moved.values[signal] > calm.values[signal] + 0.05, signal
    assert calm.sizes["text"] == (300, 300)


def test_bad_windows_skip_signals_with_reasons_instead_of_crashing(
    vocabulary: frozenset[str],
) -> None:
    ref = _reference(200, vocabulary)
    tickets = generate_tickets(200, seed=4)
    # Every text missing or blank, one predicted class, no embeddings, a NaN confidence.
    tickets["text"] = [None, "", "   ", float("nan")] * 50
    tickets["label"] = "refund_request"
    raw = _window(tickets, None)
    raw.loc[0, "confidence"] = np.nan
    data = window_data(raw, vocabulary=vocabulary, escalation_threshold=0.5)
    scores = drift_scores(ref, data)
    assert set(scores.skipped) >= {"text", "text_length", "word_count", "oov_share", "embeddings"}
    assert "too few usable rows" in scores.skipped["text"]
    assert "prediction" in scores.values  # one class against twelve: a large distance
    assert scores.values["prediction"] > 0.5


def test_an_empty_window_computes_nothing_and_says_why(vocabulary: frozenset[str]) -> None:
    ref = _reference(100, vocabulary)
    empty = window_data(
        _window(generate_tickets(0, seed=1), None), vocabulary=vocabulary, escalation_threshold=0
    )
    scores = drift_scores(ref, empty)
    assert scores.values == {}
    assert len(scores.skipped) == 8


def test_report_html_is_written(tmp_path, vocabulary: frozenset[str]) -> None:  # type: ignore[no-untyped-def]
    ref = _reference(100, vocabulary)
    cur = window_data(
        _window(generate_tickets(100, seed=9), _embeddings(100, seed=9)),
        vocabulary=vocabulary,
        escalation_threshold=0.5,
    )
    scores = drift_scores(ref, cur, html=tmp_path / "r.html")
    assert scores.reports == (tmp_path / "r.html", tmp_path / "r-embeddings.html")
    for path in scores.reports:
        assert "<html" in path.read_text()[:2000].lower()
    assert "sample_of_100_rows_per_side" in scores.reports[1].read_text()
    # Without a report, Evidently's stattests run directly: the same scores, no figures.
    direct = drift_scores(ref, cur)
    assert direct.reports == ()
    assert direct.values == pytest.approx(scores.values)
    assert direct.sizes == scores.sizes


# -- thresholds -------------------------------------------------------------------------------


def test_calibration_is_stored_as_json_and_scales_with_window_size(
    vocabulary: frozenset[str],
) -> None:
    ref = _reference(160, vocabulary)
    th = calibrate(ref, false_alarm_rate=0.01, rounds=10)
    assert set(th.z) >= {"text", "embeddings", "prediction", "confidence", "text_length"}
    assert Thresholds.from_json(th.to_json()) == th
    # Larger windows: a tighter threshold, down to Evidently's default as the floor.
    small, big = th.threshold("text", (160, 100)), th.threshold("text", (160, 10_000))
    assert small is not None and big is not None and small >= big >= 0.55
    assert th.threshold("nonexistent", (1, 1)) is None
    assert th.reference_accuracy == 1.0 and th.reference_confidence == pytest.approx(0.97)
    # Every calibrated threshold lies above everything the null produced.
    for name, z in th.z.items():
        assert z >= th.null_max[name]


def test_calibration_rejects_a_bad_rate_and_a_tiny_reference(vocabulary: frozenset[str]) -> None:
    ref = _reference(50, vocabulary)
    with pytest.raises(ValueError, match="false_alarm_rate"):
        calibrate(ref, false_alarm_rate=0.0)
    with pytest.raises(ValueError, match="cannot be split"):
        calibrate(ref.take(np.arange(3)), false_alarm_rate=0.01)
    with pytest.raises(ValueError, match="format"):
        Thresholds.from_json(json.dumps({"format": 99}))


def test_support_similarity_is_a_low_quantile_of_nearest_neighbours() -> None:
    emb = _embeddings(200, seed=0)
    value = support_similarity(emb)
    assert value is not None and -1.0 <= value <= 1.0
    assert support_similarity(None) is None
    assert support_similarity(emb[:5]) is None


# -- quality ----------------------------------------------------------------------------------


def _labelled(truth: list[str], pred: list[str]) -> MonitorData:
    frame = pd.DataFrame({"prediction": pred, "true_label": truth, "confidence": 0.9, "text": "x"})
    return MonitorData(frame, None)


def test_measured_quality_matches_sklearn_with_intervals() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    truth = rng.choice(list("abcd"), 400).tolist()
    pred = [t if rng.random() < 0.8 else "a" for t in truth]
    q = measured_quality(_labelled(truth, pred), min_labels=50)
    assert q.labelled == 400
    assert q.accuracy == pytest.approx(np.mean(np.array(truth) == np.array(pred)))
    assert q.macro_f1 == pytest.approx(f1_score(truth, pred, average="macro"))
    assert q.accuracy_ci is not None and q.accuracy_ci[0] < q.accuracy < q.accuracy_ci[1]
    assert q.macro_f1_ci is not None and q.macro_f1_ci[0] <= q.macro_f1 <= q.macro_f1_ci[1]


def test_too_few_labels_measure_nothing() -> None:
    q = measured_quality(_labelled(["a"] * 5, ["a"] * 5), min_labels=50)
    assert q == Quality(labelled=5)


def test_estimate_is_mean_confidence_and_the_bound_drops_rows_outside_support() -> None:
    # Reference rows cluster around one direction; the outside rows point elsewhere.
    ref = _embeddings(300, seed=0) * 0.1
    ref[:, 0] += 1.0
    ref[:, 15] = 0.0
    inside = ref[:80] + 0.01
    outside = np.zeros((20, 16), dtype=np.float32)
    outside[:, 15] = 1.0
    frame = pd.DataFrame({"confidence": [0.9] * 100, "prediction": "a", "true_label": np.nan})
    data = MonitorData(frame, np.vstack([inside, outside]).astype(np.float32))
    est = estimated_quality(
        data, reference_embeddings=ref, support_similarity=support_similarity(ref)
    )
    assert est is not None
    assert est.accuracy == pytest.approx(0.9)
    assert est.out_of_support == pytest.approx(0.2)
    assert est.accuracy_low == pytest.approx(0.9 * 0.8)


def test_no_confidences_no_estimate() -> None:
    frame = pd.DataFrame({"confidence": [np.nan] * 3, "prediction": "a", "true_label": np.nan})
    assert (
        estimated_quality(
            MonitorData(frame, None), reference_embeddings=None, support_similarity=None
        )
        is None
    )


# -- policy -----------------------------------------------------------------------------------

DRIFTED = SignalResult("prediction", "jensenshannon", 0.4, 0.15, True)
CALM = SignalResult("text", "abs_text_content_drift", 0.52, 0.57, False)
GOOD = Estimate(accuracy=0.99, accuracy_low=0.98, out_of_support=0.01)


def _decide(**kw):  # type: ignore[no-untyped-def]
    args = {
        "specialist": "s",
        "champion_version": 1,
        "window": {"rows": 500},
        "signals": [CALM],
        "quality": Quality(labelled=0),
        "estimate": GOOD,
        "reference_accuracy": 0.99,
        "reference_confidence": 0.99,
        "quality_drop": 0.05,
        "min_window": 100,
        "min_labels": 100,
    }
    args.update(kw)
    return decide(**args)


def test_policy_ok_when_nothing_moved() -> None:
    v = _decide()
    assert v.status is Status.OK and not v.retrain and v.reasons == ()


def test_policy_needs_data_for_a_short_window() -> None:
    v = _decide(window={"rows": 12})
    assert v.status is Status.NEEDS_DATA
    assert v.reasons[0].value == 12 and v.reasons[0].threshold == 100


def test_policy_measured_quality_drop_asks_for_retraining() -> None:
    q = Quality(
        labelled=200, accuracy=0.80, accuracy_ci=(0.74, 0.85), macro_f1=0.8, macro_f1_ci=(0.7, 0.9)
    )
    v = _decide(quality=q, signals=[DRIFTED])
    assert v.status is Status.QUALITY_DROP and v.retrain
    assert [r.signal for r in v.reasons] == ["accuracy", "prediction"]
    assert v.reasons[0].threshold == pytest.approx(0.94)


def test_policy_a_drop_inside_the_interval_is_not_significant() -> None:
    q = Quality(
        labelled=100, accuracy=0.93, accuracy_ci=(0.86, 0.995), macro_f1=0.9, macro_f1_ci=(0.8, 1)
    )
    assert _decide(quality=q).status is Status.OK


def test_policy_prior_shift_with_quality_intact_never_retrains() -> None:
    q = Quality(
        labelled=150, accuracy=0.99, accuracy_ci=(0.96, 1.0), macro_f1=0.99, macro_f1_ci=(0.95, 1)
    )
    with_labels = _decide(quality=q, signals=[DRIFTED])
    without = _decide(signals=[DRIFTED])
    assert with_labels.status is Status.WARN and not with_labels.retrain
    assert without.status is Status.DRIFT and not without.retrain
    assert without.drifted == ("prediction",)


def test_policy_estimated_drop_asks_for_retraining_without_labels() -> None:
    v = _decide(estimate=Estimate(0.85, 0.70, 0.2))
    assert v.status is Status.QUALITY_DROP
    assert v.reasons[0].signal == "estimated_accuracy"


def test_policy_needs_labels_when_traffic_leaves_the_support() -> None:
    v = _decide(estimate=Estimate(0.97, 0.80, 0.18), signals=[DRIFTED])
    assert v.status is Status.NEEDS_LABELS
    assert "100 more labels" in v.reasons[0].detail


def test_verdict_metrics_and_json_are_finite_and_serialisable() -> None:
    v = _decide(signals=[DRIFTED, CALM])
    metrics = v.metrics()
    assert metrics["drift_prediction"] == 0.4 and metrics["threshold_text"] == 0.57
    assert all(math.isfinite(x) for x in metrics.values())
    payload = json.loads(json.dumps(v.as_dict()))
    assert payload["status"] == "DRIFT" and payload["drifted"] == ["prediction"]
