"""The sequential gate: valid at every look, powerful, quick to give up, and superseded.

Simulated shadow pairs go through ``gate(...)`` look after look, as the promote flow sees
them while labels arrive. The models' correctness is correlated (15% of pairs discordant,
as for two fine-tunes of one base): the accuracy difference is what varies.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lifecycle.config.spec import PromotionSpec
from lifecycle.promotion.gate import gate
from lifecycle.promotion.sequential import log_e_value, sequential_test
from tests.promotion.pairs import LABELS, pair_frame, wrong_labels

ALPHA = 0.05
POLICY = PromotionSpec(min_samples=100, alpha=ALPHA)  # cap: 200 labelled pairs
DISCORDANT = 0.15


def _outcomes(n: int, difference: float, rng: np.random.Generator) -> np.ndarray:
    """Per pair +1 (only the challenger right), -1 (only the champion), 0 (a tie); the
    champion right 80% of the time, the challenger ``difference`` more."""
    win, loss = (DISCORDANT + difference) / 2, (DISCORDANT - difference) / 2
    u = rng.random(n)
    return np.where(u < win, 1, np.where(u < win + loss, -1, 0))


def _sequence(n: int, difference: float, *, seed: int) -> pd.DataFrame:
    """Shadow pairs whose outcomes follow :func:`_outcomes`; ties split into both right
    (about 94%) and both wrong."""
    rng = np.random.default_rng(seed)
    x = _outcomes(n, difference, rng)
    both_right = rng.random(n) < 0.94
    champ_ok = np.where(x == 0, both_right, x == -1)
    chall_ok = np.where(x == 0, both_right, x == 1)
    truth = rng.choice(LABELS, size=n)
    champion = np.where(champ_ok, truth, wrong_labels(truth, rng))
    challenger = np.where(chall_ok, truth, wrong_labels(truth, rng))
    return pair_frame(truth, champion, challenger)


def _first_decision(pairs: pd.DataFrame, policy: PromotionSpec, *, every: int) -> tuple[str, int]:
    """The gate's first decision other than "wait", looking every ``every`` labelled pairs."""
    for n in range(every, len(pairs) + 1, every):
        decision = gate(pairs.iloc[:n], policy).decision
        if decision != "wait":
            return decision, n
    return "wait", len(pairs)


def _mc_limit(runs: int) -> float:
    """alpha plus three Monte-Carlo standard errors."""
    return ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs)


# --------------------------------------------------------------------------- type I error


def test_an_equal_challenger_is_promoted_at_most_alpha_of_the_time_at_every_look() -> None:
    # Through the gate itself, looking every 20 labelled pairs up to the cap.
    runs = 300
    decisions = [
        _first_decision(_sequence(POLICY.sample_cap, 0.0, seed=s), POLICY, every=20)[0]
        for s in range(runs)
    ]
    promoted = decisions.count("promote") / runs
    assert promoted <= _mc_limit(runs), promoted
    assert "wait" not in decisions  # every one decided by the cap: no stall


@pytest.mark.parametrize("margin", [0.0, 0.05])
def test_the_e_value_crosses_1_over_alpha_at_most_alpha_of_the_time_over_all_looks(
    margin: float,
) -> None:
    # The gate's arithmetic on many more sequences, looking after every single pair, at the
    # null's boundary: difference exactly -margin (the hardest null for the test).
    rng = np.random.default_rng(7)
    runs, n = 2000, 600
    x = _outcomes(runs * n, -margin, rng).reshape(runs, n)
    wins, losses = np.cumsum(x == 1, axis=1), np.cumsum(x == -1, axis=1)
    ties = np.arange(1, n + 1) - wins - losses
    crossed = np.zeros(runs, dtype=bool)
    for look in range(n):  # by look, to keep the quadrature's arrays small
        e = log_e_value(wins[:, look], losses[:, look], ties[:, look], margin=margin)
        crossed |= e >= math.log(1 / ALPHA)
    assert crossed.mean() <= _mc_limit(runs), crossed.mean()


def test_the_gate_reports_the_e_values_of_its_counts() -> None:
    pairs = _sequence(300, 0.05, seed=3)
    result = gate(pairs, POLICY)
    evidence = sequential_test(
        wins=result.challenger_only,
        losses=result.champion_only,
        ties=result.n_labelled - result.challenger_only - result.champion_only,
        alpha=ALPHA,
    )
    assert result.e_value == pytest.approx(evidence.e_better)
    assert result.e_value_worse == pytest.approx(evidence.e_worse)
    assert result.p_value == pytest.approx(min(1.0, 1 / evidence.e_better))


# --------------------------------------------------------------------------- power, futility


def test_a_clearly_better_challenger_is_promoted_early() -> None:
    runs = 60
    outcomes = [
        _first_decision(_sequence(POLICY.sample_cap, 0.10, seed=100 + s), POLICY, every=10)
        for s in range(runs)
    ]
    promoted = [n for decision, n in outcomes if decision == "promote"]
    assert len(promoted) >= 0.9 * runs
    assert np.median(promoted) <= 150


def test_a_clearly_worse_challenger_is_rejected_as_worse_before_the_cap() -> None:
    runs, early = 60, 0
    for s in range(runs):
        pairs = _sequence(POLICY.sample_cap, -0.10, seed=200 + s)
        decision, n = _first_decision(pairs, POLICY, every=10)
        assert decision == "reject", (s, decision)
        if n < POLICY.sample_cap:
            early += 1
            assert any("challenger is worse" in r for r in gate(pairs.iloc[:n], POLICY).reasons)
    assert early >= 0.9 * runs  # futility, not the cap, for nearly all of them


def test_an_equal_challenger_is_rejected_at_the_cap_without_evidence() -> None:
    pairs = _sequence(POLICY.sample_cap, 0.0, seed=11)
    pairs["challenger_label"] = pairs["champion_label"]  # identical: no discordant pair
    before = gate(pairs.iloc[: POLICY.sample_cap - 1], POLICY)
    assert before.decision == "wait" and before.e_value == 1.0
    at_cap = gate(pairs, POLICY)
    assert at_cap.decision == "reject"
    assert any("no evidence of improvement after 200 labelled pairs" in r for r in at_cap.reasons)


def test_the_margin_lets_an_identical_challenger_through_as_non_inferior() -> None:
    pairs = _sequence(150, 0.0, seed=12)
    pairs["challenger_label"] = pairs["champion_label"]
    policy = POLICY.model_copy(update={"margin": 0.05})
    result = gate(pairs, policy)
    assert result.decision == "promote"
    assert any("non-inferior" in r for r in result.reasons)
    assert gate(pairs.iloc[:60], policy).decision == "wait"  # 60 ties: not enough yet


def test_max_samples_sets_the_cap() -> None:
    assert PromotionSpec(min_samples=100).sample_cap == 200
    assert PromotionSpec(min_samples=100, max_samples=500).sample_cap == 500
    with pytest.raises(ValueError, match="max_samples"):
        PromotionSpec(min_samples=100, max_samples=50)


# --------------------------------------------------------------------------- supersede


def test_a_waiting_challenger_is_superseded_when_new_labels_outgrow_its_training() -> None:
    pairs = _sequence(80, 0.0, seed=13)
    pairs["challenger_label"] = pairs["champion_label"]  # undecided
    assert gate(pairs, POLICY, trained_labels=60, new_labels=120).decision == "wait"
    stale = gate(pairs, POLICY, trained_labels=60, new_labels=121)
    assert stale.decision == "supersede"
    assert (stale.trained_labels, stale.new_labels) == (60, 121)
    assert any("superseded: 121 people's labels" in r for r in stale.reasons)
    factor = POLICY.model_copy(update={"supersede_factor": 3.0})
    assert gate(pairs, factor, trained_labels=60, new_labels=121).decision == "wait"
    # Unknown training labels (a version not trained from traffic): the rule does not apply.
    assert gate(pairs, POLICY, new_labels=10_000).decision == "wait"
    # Before any labelled pair too.
    unlabelled = pairs.assign(true_label=np.nan, true_label_source=np.nan)
    assert gate(unlabelled, POLICY, trained_labels=60, new_labels=500).decision == "supersede"


def test_evidence_and_health_come_before_superseding() -> None:
    better = _sequence(200, 0.10, seed=14)
    assert gate(better, POLICY, trained_labels=10, new_labels=500).decision == "promote"
    worse = _sequence(200, -0.10, seed=15)
    assert gate(worse, POLICY, trained_labels=10, new_labels=500).decision == "reject"
    undecided = _sequence(120, 0.0, seed=16)
    undecided["challenger_label"] = undecided["champion_label"]
    broken = gate(undecided, POLICY, shadow_errors=50, trained_labels=10, new_labels=500)
    assert broken.decision == "reject"
    assert any("shadow calls failed" in r for r in broken.reasons)
