"""The open-world accuracy estimate on simulated windows whose truth is known: calibrated
in-scope rows, out-of-scope rows that are always wrong, and labels on a random sample."""

from __future__ import annotations

import numpy as np
import pytest

from monitors.estimate import MIN_PPI_LABELS, estimate_accuracy, row_predictions

REFERENCE = np.random.default_rng(99).normal(size=4000)
THRESHOLD = float(np.quantile(REFERENCE, 0.95))


def _window(
    rng: np.random.Generator, *, n: int = 600, out_share: float = 0.0, shift: float = 4.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confidences, scores and correctness: in-scope rows are right with probability equal to
    their confidence and score like the reference; out-of-scope rows score ``shift`` higher
    and are wrong."""
    n_out = round(n * out_share)
    n_in = n - n_out
    conf_in = rng.beta(8, 1.2, n_in)
    right_in = (rng.random(n_in) < conf_in).astype(float)
    conf_out = rng.beta(4, 2, n_out)
    scores = np.concatenate([rng.normal(size=n_in), rng.normal(loc=shift, size=n_out)])
    return (
        np.concatenate([conf_in, conf_out]),
        scores,
        np.concatenate([right_in, np.zeros(n_out)]),
    )


@pytest.mark.parametrize("out_share", [0.0, 0.2, 0.4, 0.6])
def test_without_labels_the_estimate_follows_real_accuracy_as_new_traffic_arrives(
    out_share: float,
) -> None:
    rng = np.random.default_rng(int(out_share * 100))
    errors = []
    for _ in range(10):
        conf, scores, right = _window(rng, out_share=out_share)
        est = estimate_accuracy(
            confidence=conf, scores=scores, reference_scores=REFERENCE, threshold=THRESHOLD
        )
        assert est is not None and est.method == "label-free" and est.labels_used == 0
        errors.append(abs(est.accuracy - right.mean()))
        assert abs((1 - est.in_scope_share) - out_share) < 0.12
        assert est.interval[0] <= est.accuracy <= est.interval[1]
        assert est.assumptions
    assert np.mean(errors) < 0.03


def test_the_old_mean_confidence_would_have_been_far_off() -> None:
    conf, scores, right = _window(np.random.default_rng(1), out_share=0.4)
    est = estimate_accuracy(
        confidence=conf, scores=scores, reference_scores=REFERENCE, threshold=THRESHOLD
    )
    assert est is not None
    assert conf.mean() - right.mean() > 0.2  # CBPE alone: blind to the new traffic
    assert abs(est.accuracy - right.mean()) < 0.05


def test_with_labels_the_interval_covers_the_truth_even_when_the_label_free_part_is_wrong() -> None:
    """Out-of-scope rows that score like in-scope ones fool the label-free part; labels on a
    random 20% of rows correct it (prediction-powered inference), with valid intervals."""
    rng = np.random.default_rng(5)
    covered, errors_lf, errors = 0, [], []
    for _ in range(60):
        conf, scores, right = _window(rng, out_share=0.3, shift=0.0)  # invisible to the detector
        labels = np.where(rng.random(len(right)) < 0.2, right, np.nan)
        est = estimate_accuracy(
            confidence=conf,
            scores=scores,
            reference_scores=REFERENCE,
            threshold=THRESHOLD,
            correct=labels,
        )
        assert est is not None and est.method == "prediction-powered"
        assert est.labels_used == int(np.isfinite(labels).sum())
        covered += est.interval[0] <= right.mean() <= est.interval[1]
        errors.append(abs(est.accuracy - right.mean()))
        errors_lf.append(abs(est.label_free - right.mean()))
    assert covered / 60 >= 0.88
    assert np.mean(errors) < np.mean(errors_lf) / 2


def test_too_few_labels_leave_the_estimate_label_free() -> None:
    conf, scores, right = _window(np.random.default_rng(3))
    labels = np.full(len(right), np.nan)
    labels[: MIN_PPI_LABELS - 1] = right[: MIN_PPI_LABELS - 1]
    est = estimate_accuracy(
        confidence=conf,
        scores=scores,
        reference_scores=REFERENCE,
        threshold=THRESHOLD,
        correct=labels,
    )
    assert est is not None and est.method == "label-free"
    assert est.labels_used == MIN_PPI_LABELS - 1


def test_edge_windows_give_clear_results() -> None:
    empty = np.zeros(0)
    assert (
        estimate_accuracy(
            confidence=empty, scores=empty, reference_scores=REFERENCE, threshold=THRESHOLD
        )
        is None
    )
    # Only out-of-scope rows: the estimate is near zero, not a crash.
    conf, scores, _ = _window(np.random.default_rng(4), out_share=1.0)
    est = estimate_accuracy(
        confidence=conf, scores=scores, reference_scores=REFERENCE, threshold=THRESHOLD
    )
    assert est is not None and est.accuracy < 0.1 and est.flagged_share > 0.9
    # No scores at all (no embeddings stored): plain calibrated confidence.
    conf, _, _ = _window(np.random.default_rng(6))
    est = estimate_accuracy(
        confidence=conf,
        scores=np.full(len(conf), np.nan),
        reference_scores=REFERENCE,
        threshold=THRESHOLD,
    )
    assert est is not None and est.accuracy == pytest.approx(conf.mean())
    assert est.scored_rows == 0 and est.in_scope_share == 1.0


def test_rows_the_model_itself_calls_out_of_scope_count_by_their_confidence() -> None:
    conf = np.array([0.9, 0.8])
    scores = np.array([10.0, 10.0])  # both far outside
    f, _ = row_predictions(
        confidence=conf,
        scores=scores,
        reference_scores=REFERENCE,
        predicted_out_of_scope=np.array([True, False]),
    )
    assert f[0] == pytest.approx(0.9)


def test_a_specialist_that_says_not_mine_is_right_on_out_of_scope_traffic() -> None:
    """Through the check's open-world part: far-away rows the model answered with its
    out-of-scope label count by their confidence, the others as wrong."""
    import pandas as pd

    from monitors.frames import reference_data, window_data
    from monitors.openworld import estimate, prepare

    rng = np.random.default_rng(8)
    centres = rng.normal(size=(3, 16))

    def rows(n: int, centre: np.ndarray) -> np.ndarray:
        x = centre + 0.3 * rng.normal(size=(n, 16))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    ref_emb = np.concatenate([rows(100, centres[0]), rows(100, centres[1])])
    reference = reference_data(
        pd.DataFrame(
            {
                "text": ["t"] * 200,
                "label": ["a"] * 100 + ["b"] * 100,
                "prediction": ["a"] * 100 + ["b"] * 100,
                "confidence": 0.95,
            }
        ),
        ref_emb,
        vocabulary=(),
        escalation_threshold=0.0,
    )
    world = prepare(reference, None, target_rate=0.05)
    assert world is not None
    emb = np.concatenate([rows(150, centres[0]), rows(150, centres[2])])
    window = window_data(
        pd.DataFrame(
            {
                "text": ["t"] * 300,
                "label": ["a"] * 150 + ["none_of_these"] * 150,
                "confidence": 0.95,
                "embedding": list(emb),
            }
        ),
        vocabulary=(),
        escalation_threshold=0.0,
    )
    plain, _ = estimate(world, window)
    aware, _ = estimate(world, window, out_of_scope_label="none_of_these")
    assert plain is not None and aware is not None
    assert plain.accuracy < 0.6  # the far half counted wrong
    assert aware.accuracy > 0.85  # ... unless the model said "not mine"
