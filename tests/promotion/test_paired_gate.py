"""The extraction gate's statistics on arrays: sequential e-values on paired per-request F1
decide, the bootstrap interval, Wilcoxon and McNemar are figures (McNemar also a veto).
``tests/promotion/test_extraction_gate.py`` checks validity at every look and the gate on frames.

Simulated shadow requests mimic two fine-tunes of one base: the champion's per-request F1 is
1.0 on 80% of requests, and the challenger answers differently on about 12% of them (drawn
from the same distribution, so the two are exchangeable); a better challenger also fixes a
share of the requests it gets wrong.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pytest

from lifecycle.promotion.paired import (
    PairedScores,
    compare_paired,
    decide_with_reason,
    extraction_gate_decision,
    mcnemar_p,
)
from lifecycle.promotion.sequential import bounded_sequential_test

ALPHA = 0.05
VALUES = [0.0, 0.5, 2 / 3, 1.0]
WEIGHTS = [0.05, 0.07, 0.08, 0.80]


def _requests(
    n: int, *, gain: float = 0.0, loss: float = 0.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(champion F1, challenger F1) per request; ``gain`` is the share of imperfect answers
    the challenger fixes, ``loss`` the share of perfect ones it breaks (to F1 0)."""
    rng = np.random.default_rng(seed)
    champion = rng.choice(VALUES, size=n, p=WEIGHTS)
    challenger = champion.copy()
    changed = rng.random(n) < 0.12
    challenger[changed] = rng.choice(VALUES, size=int(changed.sum()), p=WEIGHTS)
    challenger[(rng.random(n) < gain) & (challenger < 1)] = 1.0
    challenger[(rng.random(n) < loss) & (challenger == 1)] = 0.0
    return champion, challenger


def _scores(
    champion: np.ndarray,
    challenger: np.ndarray,
    *,
    margin: float = 0.0,
    seed: int = 0,
    resamples: int = 500,
    zero_method: Literal["zsplit", "wilcox", "pratt"] = "wilcox",
) -> PairedScores:
    return compare_paired(
        champion,
        challenger,
        champion == 1,
        challenger == 1,
        alpha=ALPHA,
        margin=margin,
        seed=seed,
        resamples=resamples,
        zero_method=zero_method,
    )


def _decide(scores: PairedScores, *, min_samples: int = 100, cap: int = 400) -> str:
    return extraction_gate_decision(scores, alpha=ALPHA, min_samples=min_samples, cap=cap)


def test_clearly_better_challenger_promotes() -> None:
    champion, challenger = _requests(300, gain=0.7, seed=1)
    scores = _scores(champion, challenger)
    assert scores.difference > 0.05
    assert scores.e_better >= 1 / ALPHA
    assert scores.p_value_better == pytest.approx(1 / scores.e_better)
    assert scores.ci_low > 0
    assert scores.wilcoxon_p is not None and scores.wilcoxon_p < ALPHA
    assert scores.exact_challenger > scores.exact_champion
    assert _decide(scores) == "promote"
    # The e-values are those of the differences, in any order.
    evidence = bounded_sequential_test(challenger - champion, alpha=ALPHA)
    assert (scores.e_better, scores.e_worse) == (evidence.e_better, evidence.e_worse)
    assert (scores.challenger_higher, scores.champion_higher) == (evidence.wins, evidence.losses)
    order = np.random.default_rng(0).permutation(len(champion))
    shuffled = _scores(champion[order], challenger[order])
    assert (shuffled.e_better, shuffled.e_worse) == (scores.e_better, scores.e_worse)


def test_clearly_worse_challenger_rejects_before_the_cap() -> None:
    champion, challenger = _requests(200, loss=0.3, seed=2)
    scores = _scores(champion, challenger)
    assert scores.ci_high < 0
    assert scores.e_worse >= 1 / ALPHA and scores.p_value_worse < ALPHA
    assert _decide(scores, cap=1000) == "reject"


def test_below_min_samples_waits_even_when_clearly_better() -> None:
    champion, challenger = _requests(80, gain=0.9, seed=3)
    scores = _scores(champion, challenger)
    assert _decide(scores, min_samples=100, cap=400) == "wait"


def test_undecided_before_the_cap_waits() -> None:
    champion, challenger = _requests(150, seed=4)
    scores = _scores(champion, challenger)
    assert _decide(scores, min_samples=100, cap=400) == "wait"


def test_equal_models_at_the_cap_reject() -> None:
    champion, challenger = _requests(400, seed=5)
    assert _decide(_scores(champion, challenger), cap=400) == "reject"
    # Identical answers: no spread at all, and still a decision.
    same = _scores(champion, champion.copy())
    assert (same.ci_low, same.ci_high, same.difference) == (0.0, 0.0, 0.0)
    assert same.wilcoxon_p is None and same.mcnemar_p is None
    assert same.e_better == pytest.approx(1.0) and same.e_worse == pytest.approx(1.0)
    assert _decide(same, cap=400) == "reject"


@pytest.mark.parametrize("gain", [0.0, 0.2, 0.5])
@pytest.mark.parametrize("loss", [0.0, 0.1])
def test_never_waits_at_the_cap(gain: float, loss: float) -> None:
    champion, challenger = _requests(120, gain=gain, loss=loss, seed=6)
    scores = _scores(champion, challenger)
    # The cap decides even below min_samples: a misconfigured policy cannot stall the gate.
    assert _decide(scores, min_samples=100, cap=120) in ("promote", "reject")
    assert _decide(scores, min_samples=500, cap=100) in ("promote", "reject")


def test_the_rank_test_and_the_interval_do_not_decide() -> None:
    # The same differences read with either Wilcoxon treatment of ties, and with a bootstrap
    # of a different seed: the decision is the e-values'.
    champion, challenger = _requests(250, gain=0.4, seed=10)
    wilcox = _scores(champion, challenger)
    zsplit = _scores(champion, challenger, zero_method="zsplit", seed=5)
    assert wilcox.wilcoxon_p is not None and zsplit.wilcoxon_p is not None
    assert zsplit.wilcoxon_p > wilcox.wilcoxon_p  # zsplit: ties dilute the ranks
    assert (zsplit.e_better, zsplit.e_worse) == (wilcox.e_better, wilcox.e_worse)
    for cap in (250, 1000):
        assert _decide(zsplit, cap=cap) == _decide(wilcox, cap=cap)


def test_wilcoxon_drops_tied_requests_by_default() -> None:
    from scipy.stats import wilcoxon

    champion, challenger = _requests(200, gain=0.2, seed=11)
    d = challenger - champion
    expected = wilcoxon(d[d != 0], alternative="greater").pvalue
    assert compare_paired(
        champion, challenger, champion == 1, challenger == 1, alpha=ALPHA, resamples=50
    ).wilcoxon_p == pytest.approx(expected)


def test_an_equal_challenger_is_promoted_at_most_alpha_of_the_time_at_one_look() -> None:
    trials = 200
    promoted = 0
    for trial in range(trials):
        champion, challenger = _requests(150, seed=1000 + trial)
        scores = _scores(champion, challenger, seed=trial, resamples=50)
        promoted += _decide(scores, min_samples=100, cap=150) == "promote"
    assert promoted / trials <= 0.08


def test_margin_lets_an_equal_challenger_through() -> None:
    champion, challenger = _requests(300, seed=7)
    strict = _scores(champion, challenger)
    lenient = _scores(champion, challenger, margin=0.05)
    assert _decide(strict, cap=300) == "reject"
    assert lenient.margin == 0.05
    assert lenient.ci_low > -0.05
    assert lenient.e_better >= 1 / ALPHA and lenient.p_value_better < ALPHA
    assert _decide(lenient, cap=1000) == "promote"
    assert (
        "not 0.050 worse in F1"
        in decide_with_reason(lenient, alpha=ALPHA, min_samples=100, cap=1000)[1]
    )


def test_significantly_worse_exact_match_blocks_promotion() -> None:
    # The challenger gets every request partly right (F1 0.8), the champion half of them
    # exactly and the other half not at all: better mean F1, far fewer exact matches.
    n = 200
    champion = np.tile([1.0, 0.0], n // 2)
    challenger = np.full(n, 0.8)
    scores = _scores(champion, challenger)
    assert scores.e_better >= 1 / ALPHA  # F1 alone would promote
    assert scores.ci_low > 0
    assert scores.mcnemar_p is not None and scores.mcnemar_p < ALPHA
    assert scores.exact_challenger < scores.exact_champion and scores.exact_worse
    assert _decide(scores, cap=1000) == "wait"
    _, why = decide_with_reason(scores, alpha=ALPHA, min_samples=100, cap=1000)
    assert "exact match significantly lower" in why
    assert _decide(scores, cap=200) == "reject"


def test_mcnemar_by_hand() -> None:
    # 1 request only the champion matched exactly, 9 only the challenger: a two-sided exact
    # binomial test of 9 of 10 against 1/2 gives 2 * (1 + 10) / 2**10.
    assert mcnemar_p(champion_only=1, challenger_only=9) == pytest.approx(22 / 1024)
    assert mcnemar_p(champion_only=9, challenger_only=1) == pytest.approx(22 / 1024)
    assert mcnemar_p(champion_only=3, challenger_only=3) == pytest.approx(1.0)
    assert mcnemar_p(champion_only=0, challenger_only=0) is None

    champion_exact = [True] * 5 + [False] * 9 + [True] + [False] * 5
    challenger_exact = [True] * 5 + [True] * 9 + [False] + [False] * 5
    f1 = [float(e) for e in champion_exact]
    scores = compare_paired(
        f1, [float(e) for e in challenger_exact], champion_exact, challenger_exact, alpha=ALPHA
    )
    assert (scores.champion_only_exact, scores.challenger_only_exact) == (1, 9)
    assert scores.mcnemar_p == pytest.approx(22 / 1024)
    assert scores.exact_champion == pytest.approx(6 / 20)
    assert scores.exact_challenger == pytest.approx(14 / 20)


def test_same_seed_same_numbers() -> None:
    champion, challenger = _requests(100, gain=0.3, seed=8)
    assert _scores(champion, challenger, seed=3) == _scores(champion, challenger, seed=3)


def test_one_request_and_constant_shift() -> None:
    one = compare_paired([0.5], [1.0], [False], [True], alpha=ALPHA, resamples=50)
    assert (one.n, one.difference, one.ci_low, one.ci_high) == (1, 0.5, 0.5, 0.5)
    assert _decide(one, min_samples=10, cap=20) == "wait"
    shift = compare_paired([0.5] * 30, [1.0] * 30, [False] * 30, [True] * 30, alpha=ALPHA)
    assert (shift.ci_low, shift.ci_high) == (0.5, 0.5)
    assert shift.e_better >= 1 / ALPHA
    assert _decide(shift, min_samples=10, cap=100) == "promote"
    # Too few requests for 1/alpha, even when all of them are better.
    few = compare_paired([0.5] * 4, [1.0] * 4, [False] * 4, [True] * 4, alpha=ALPHA)
    assert few.e_better < 1 / ALPHA
    assert _decide(few, min_samples=1, cap=100) == "wait"


def test_metrics_are_finite_and_named() -> None:
    champion, challenger = _requests(100, seed=9)
    metrics = _scores(champion, champion.copy()).metrics()
    assert "gate_mcnemar_p" not in metrics  # None is left out
    assert metrics["gate_pairs"] == 100.0
    assert metrics["gate_e_value"] == pytest.approx(1.0)
    assert all(math.isfinite(v) for v in metrics.values())
    named = _scores(champion, challenger).metrics(prefix="x_")
    assert {"x_f1_ci_low", "x_champion_f1", "x_f1_difference", "x_p_value"} <= set(named)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="at least one"):
        compare_paired([], [], [], [], alpha=ALPHA)
    with pytest.raises(ValueError, match="equally long"):
        compare_paired([1.0], [1.0, 0.0], [True], [True], alpha=ALPHA)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        compare_paired([1.5], [1.0], [True], [True], alpha=ALPHA)
    with pytest.raises(ValueError, match="alpha"):
        compare_paired([1.0], [1.0], [True], [True], alpha=0.7)
    scores = compare_paired([1.0], [1.0], [True], [True], alpha=ALPHA)
    with pytest.raises(ValueError, match=r"alpha 0\.1 differs"):
        extraction_gate_decision(scores, alpha=0.1, min_samples=1, cap=2)
