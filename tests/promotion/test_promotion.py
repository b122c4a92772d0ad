"""The promotion gate on shadow pairs and the guardrail after a promotion."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from lifecycle.config.spec import PromotionSpec
from lifecycle.promotion.gate import gate
from lifecycle.promotion.guardrail import guardrail
from lifecycle.promotion.statistics import (
    _restricted_mle,
    drop_p_value,
    newcombe_paired_interval,
    paired_comparison,
)
from tests.promotion.pairs import LABELS, pair_frame, wrong_labels


def _pairs(n: int, champion_acc: float, challenger_acc: float, *, seed: int) -> pd.DataFrame:
    """Independent errors: each model right with its own probability."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(LABELS, size=n)
    champion = np.where(rng.random(n) < champion_acc, truth, wrong_labels(truth, rng))
    challenger = np.where(rng.random(n) < challenger_acc, truth, wrong_labels(truth, rng))
    return pair_frame(truth, champion, challenger)


def _counts(
    both: int, champ_only: int, chall_only: int, neither: int, *, seed: int
) -> pd.DataFrame:
    """Exactly these counts of (champion right, challenger right), shuffled."""
    rng = np.random.default_rng(seed)
    champ_ok = np.array([True] * both + [True] * champ_only + [False] * (chall_only + neither))
    chall_ok = np.array(
        [True] * both + [False] * champ_only + [True] * chall_only + [False] * neither
    )
    order = rng.permutation(len(champ_ok))
    champ_ok, chall_ok = champ_ok[order], chall_ok[order]
    truth = rng.choice(LABELS, size=len(champ_ok))
    champion = np.where(champ_ok, truth, wrong_labels(truth, rng))
    challenger = np.where(chall_ok, truth, wrong_labels(truth, rng))
    return pair_frame(truth, champion, challenger)


POLICY = PromotionSpec(min_samples=200, alpha=0.05, margin=0.0)


# --------------------------------------------------------------------------- gate


def test_clearly_better_challenger_is_promoted() -> None:
    result = gate(_pairs(400, 0.75, 0.90, seed=1), POLICY)
    assert result.decision == "promote"
    assert result.promote
    assert result.n_labelled == 400
    assert result.difference is not None and result.difference > 0.08
    assert result.ci is not None and result.ci[0] > 0
    assert result.p_value is not None and result.p_value < 0.001
    assert result.challenger_only > result.champion_only
    assert any("better" in r for r in result.reasons)


def test_random_label_challenger_is_rejected() -> None:
    pairs = _pairs(300, 0.85, 0.85, seed=2)
    rng = np.random.default_rng(3)
    pairs["challenger_label"] = rng.choice(LABELS, size=len(pairs))
    result = gate(pairs, POLICY)
    assert result.decision == "reject"
    assert result.p_value_worse is not None and result.p_value_worse < 1e-6
    assert result.ci is not None and result.ci[1] < 0
    assert result.agreement is not None and result.agreement < 0.5
    assert any("worse" in r for r in result.reasons)


def test_identical_models_are_not_promoted_and_eventually_rejected() -> None:
    pairs = _pairs(300, 0.85, 0.85, seed=4)
    pairs["challenger_label"] = pairs["champion_label"]
    result = gate(pairs, POLICY)
    assert result.decision == "wait"  # inconclusive, below the cap
    assert result.agreement == 1.0
    assert (result.champion_only, result.challenger_only) == (0, 0)
    assert result.p_value == 1.0
    assert result.difference == 0.0
    assert result.ci is not None and result.ci[0] <= 0 <= result.ci[1]

    many = _pairs(POLICY.sample_cap, 0.85, 0.85, seed=5)
    many["challenger_label"] = many["champion_label"]
    late = gate(many, POLICY)
    assert late.decision == "reject"
    assert any("no evidence of improvement" in r for r in late.reasons)


def test_equally_good_independent_models_are_not_promoted() -> None:
    for seed in range(5):
        result = gate(_pairs(600, 0.85, 0.85, seed=10 + seed), POLICY)
        assert result.decision != "promote", result.reasons


def test_a_large_difference_is_promoted_before_min_samples() -> None:
    # The sequential test is valid at every look: min_samples holds nothing back.
    result = gate(_pairs(100, 0.6, 0.95, seed=6), POLICY)
    assert result.decision == "promote"
    assert result.n_labelled == 100
    assert result.challenger_accuracy is not None and result.challenger_accuracy > 0.85
    assert result.e_value is not None and result.e_value >= 1 / POLICY.alpha
    # Few pairs, even all won, are not enough evidence: 5 wins give an e-value under 20.
    early = gate(_counts(3, 0, 5, 0, seed=6), POLICY)
    assert early.decision == "wait"
    assert any("rejecting at 400 labelled pairs" in r for r in early.reasons)


def test_non_inferiority_promotes_a_slightly_worse_challenger_within_margin() -> None:
    # 1000 pairs, 89.0% vs 90.0%: 1 point worse, correlated errors make the interval narrow.
    pairs = _counts(860, 40, 30, 70, seed=7)
    within = gate(pairs, PromotionSpec(min_samples=200, margin=0.05, alpha=0.05))
    assert within.decision == "promote"
    assert within.difference == pytest.approx(-0.01)
    assert within.ci is not None and -0.05 < within.ci[0] < -0.01 < within.ci[1]
    assert any("non-inferior" in r for r in within.reasons)

    # The same data without a margin: no evidence the challenger is better (past the cap).
    strict = gate(pairs, POLICY)
    assert strict.decision == "reject"

    # A margin smaller than what the data can exclude is not enough.
    tight = gate(pairs, PromotionSpec(min_samples=200, margin=0.005, alpha=0.05))
    assert tight.decision != "promote"


def test_worse_than_margin_is_rejected() -> None:
    pairs = _counts(700, 150, 30, 120, seed=8)  # 85% vs 73%
    result = gate(pairs, PromotionSpec(min_samples=200, margin=0.05))
    assert result.decision == "reject"
    assert result.ci is not None and result.ci[1] < -0.05


@pytest.mark.parametrize(
    "pairs",
    [
        pd.DataFrame(),
        _pairs(50, 0.8, 0.9, seed=9).iloc[0:0],
        _pairs(1, 0.8, 0.9, seed=9),
        _pairs(250, 0.8, 0.9, seed=9).assign(true_label=np.nan, true_label_source=np.nan),
    ],
    ids=["no-columns", "empty", "one-row", "no-labels"],
)
def test_degenerate_inputs_wait(pairs: pd.DataFrame) -> None:
    result = gate(pairs, POLICY)
    assert result.decision == "wait"
    assert result.n_pairs == len(pairs)
    assert result.reasons
    json.dumps(result.as_dict())  # JSON-ready, whatever is missing
    if result.n_labelled == 0:
        assert result.ci is None and result.champion_accuracy is None


def test_fallback_labels_are_left_out_and_counted() -> None:
    pairs = _pairs(300, 0.75, 0.95, seed=11)
    pairs.loc[pairs.index[:150], "true_label_source"] = "fallback"
    result = gate(pairs, POLICY)
    assert result.n_labelled == 150
    assert result.fallback_labelled == 150
    assert result.decision == "promote"  # on the 150 people's labels alone
    assert any("fallback" in r for r in result.reasons)


def test_health_vetoes_turn_a_promotion_into_a_rejection() -> None:
    pairs = _pairs(400, 0.75, 0.90, seed=1)
    slow = gate(pairs, POLICY, latency_ms=(10.0, 30.0))
    assert slow.decision == "reject"
    assert any("latency" in r for r in slow.reasons)
    failing = gate(pairs, POLICY, shadow_errors=40)
    assert failing.decision == "reject"
    fine = gate(pairs, POLICY, latency_ms=(10.0, 11.0), shadow_errors=1)
    assert fine.decision == "promote"
    assert any(r.startswith("latency:") for r in fine.reasons)
    assert (fine.champion_latency_ms, fine.challenger_latency_ms, fine.shadow_errors) == (
        10.0,
        11.0,
        1,
    )
    metrics = fine.metrics()
    assert metrics["gate_challenger_latency_ms"] == 11.0 and metrics["gate_shadow_errors"] == 1


def test_the_policy_sets_the_health_limits() -> None:
    pairs = _pairs(400, 0.75, 0.90, seed=1)
    lenient = POLICY.model_copy(update={"max_latency_ratio": 4.0, "max_error_rate": 0.2})
    assert gate(pairs, lenient, latency_ms=(10.0, 30.0), shadow_errors=40).decision == "promote"
    with pytest.raises(ValueError):
        PromotionSpec(max_latency_ratio=0.5)


def test_a_challenger_that_keeps_failing_is_rejected_without_waiting_for_labels() -> None:
    unlabelled = _pairs(300, 0.75, 0.90, seed=2).assign(true_label=None, true_label_source=None)
    broken = gate(unlabelled, POLICY, shadow_errors=100)
    assert broken.decision == "reject"
    assert any("shadow calls failed" in r for r in broken.reasons)
    # A few early failures are not a verdict: fewer calls than min_samples.
    early = gate(unlabelled.head(20), POLICY, shadow_errors=5)
    assert early.decision == "wait"
    # Labelled but still inconclusive, and failing: rejected too.
    few = _pairs(120, 0.80, 0.82, seed=3)
    assert gate(few, POLICY, shadow_errors=100).decision == "reject"


def test_as_dict_and_metrics() -> None:
    result = gate(_pairs(400, 0.75, 0.90, seed=1), POLICY)
    data = json.loads(json.dumps(result.as_dict()))
    assert data["decision"] == "promote"
    assert data["ci"] == list(result.ci or ())
    metrics = result.metrics()
    assert metrics["gate_labelled"] == 400.0
    assert all(math.isfinite(v) for v in metrics.values())


# --------------------------------------------------------------------------- statistics


def test_paired_comparison_counts_and_interval() -> None:
    champ = np.array([True] * 80 + [True] * 5 + [False] * 12 + [False] * 3)
    chall = np.array([True] * 80 + [False] * 5 + [True] * 12 + [False] * 3)
    stats = paired_comparison(champ, chall, alpha=0.025)
    assert (stats.champion_only, stats.challenger_only) == (5, 12)
    assert stats.difference == pytest.approx(0.07)
    assert stats.champion_accuracy == pytest.approx(0.85)
    assert stats.ci[0] < 0.07 < stats.ci[1]
    with pytest.raises(ValueError):
        paired_comparison([], [], alpha=0.05)


def test_newcombe_interval_covers_the_truth_at_its_level() -> None:
    # Simulated paired data with a known difference: a 90% interval should cover it about
    # 90% of the time; a wrong phi or a swapped bound shows up as far too low a coverage.
    rng = np.random.default_rng(12)
    probabilities = np.array([0.86, 0.03, 0.06, 0.05])  # both, first only, second only, neither
    true_difference = probabilities[1] - probabilities[2]
    covered = 0
    runs = 1000
    for _ in range(runs):
        counts = rng.multinomial(150, probabilities)
        low, high = newcombe_paired_interval(*counts.tolist(), alpha=0.05)
        covered += low <= true_difference <= high
    assert 0.86 <= covered / runs <= 0.96


def test_drop_p_value_matches_the_pooled_z_test_without_margin() -> None:
    from scipy.stats import norm

    x1, n1, x2, n2 = 270, 300, 240, 300
    pooled = (x1 + x2) / (n1 + n2)
    z = (x1 / n1 - x2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert drop_p_value(x1, n1, x2, n2) == pytest.approx(norm.sf(z))


@pytest.mark.parametrize(
    "case", [(90, 100, 80, 120, 0.03), (50, 50, 45, 60, 0.05), (10, 50, 5, 70, 0.1)]
)
def test_restricted_mle_maximises_the_constrained_likelihood(
    case: tuple[int, int, int, int, float],
) -> None:
    from scipy.optimize import minimize_scalar
    from scipy.special import xlogy

    x1, n1, x2, n2, delta = case

    def negative_log_likelihood(r1: float) -> float:
        r2 = r1 - delta
        return -float(
            xlogy(x1, r1) + xlogy(n1 - x1, 1 - r1) + xlogy(x2, r2) + xlogy(n2 - x2, 1 - r2)
        )

    numeric = minimize_scalar(
        negative_log_likelihood,
        bounds=(delta + 1e-9, 1 - 1e-9),
        method="bounded",
        options={"xatol": 1e-12},
    )
    r1, r2 = _restricted_mle(x1 / n1, n1, x2 / n2, n2, delta)
    assert r1 == pytest.approx(numeric.x, abs=1e-6)
    assert r1 - r2 == pytest.approx(delta)


# --------------------------------------------------------------------------- guardrail


def _outcomes(n: int, accuracy: float, *, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random(n) < accuracy


def test_guardrail_rolls_back_a_significant_drop() -> None:
    result = guardrail(_outcomes(300, 0.90, seed=1), _outcomes(300, 0.75, seed=2))
    assert result.action == "rollback"
    assert result.rollback
    assert result.p_value is not None and result.p_value < 0.001
    assert result.difference is not None and result.difference < -0.1
    json.dumps(result.as_dict())


def test_guardrail_keeps_a_tiny_drop() -> None:
    before = np.array([True] * 270 + [False] * 30)  # 90%
    after = np.array([True] * 267 + [False] * 33)  # 89%
    result = guardrail(before, after)
    assert result.action == "keep"
    assert not result.rollback
    assert result.p_value is not None and result.p_value > 0.05


def test_guardrail_margin_tolerates_a_drop_within_it() -> None:
    before = np.array([True] * 900 + [False] * 100)  # 90%
    after = np.array([True] * 860 + [False] * 140)  # 86%
    assert guardrail(before, after, margin=0.0).action == "rollback"
    assert guardrail(before, after, margin=0.05).action == "keep"


def test_guardrail_waits_for_enough_rows_and_ignores_missing_labels() -> None:
    before = pd.Series([True] * 40 + [np.nan] * 100, dtype=object)
    after = pd.Series([False] * 60)
    result = guardrail(before, after)
    assert result.action == "wait"
    assert (result.n_before, result.n_after) == (40, 60)
    assert result.before_accuracy == 1.0 and result.after_accuracy == 0.0
    assert guardrail(before, after, min_samples=30).action == "rollback"
    empty = guardrail([], [])
    assert empty.action == "wait" and empty.difference is None
