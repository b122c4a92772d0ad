"""The extraction gate, sequential: bounded e-values on per-request F1, through ``gate(...)``.

Simulated shadow requests mimic two fine-tunes of one base extractor: each request has three
gold spans, a model finds the first ``k`` of them (per-request F1 ``2k / (k + 3)``: 0, 0.5,
0.8 or 1), the champion all three on 80% of requests; the challenger answers differently on
about 12% of them, drawn from the same distribution (an equal challenger) or a better or
worse one. Hand-made frames check the figures to the digit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lifecycle.config.spec import PromotionSpec, SpecialistSpec
from lifecycle.promotion.gate import gate
from lifecycle.promotion.paired import compare_paired, extraction_gate_decision
from lifecycle.promotion.sequential import (
    bounded_sequential_test,
    log_e_value,
    log_e_value_bounded,
    sequential_test,
)

ALPHA = 0.05
POLICY = PromotionSpec(min_samples=100, alpha=ALPHA)  # cap: 200 labelled pairs
GOLD = [("amount", 0, 5), ("date", 10, 15), ("order_id", 20, 25)]
#: Spans found (the first k gold spans) and their probabilities, for the champion.
FOUND = np.array([0, 1, 2, 3])
CHAMPION_P = np.array([0.05, 0.05, 0.10, 0.80])
CHANGED = 0.12


def _mc_limit(runs: int) -> float:
    """alpha plus three Monte-Carlo standard errors."""
    return ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs)


def _found(
    runs: int, n: int, *, gain: float = 0.0, loss: float = 0.0, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Spans found per request by the champion and the challenger, shape (runs, n).

    The challenger re-draws ``CHANGED`` of the answers from the champion's distribution (so
    the two are exchangeable), then finds all spans on ``gain`` of the requests where it
    missed some, and loses all but one on ``loss`` of those where it found all.
    """
    rng = np.random.default_rng(seed)
    champion = rng.choice(FOUND, size=(runs, n), p=CHAMPION_P)
    changed = rng.random((runs, n)) < CHANGED
    challenger = np.where(changed, rng.choice(FOUND, size=(runs, n), p=CHAMPION_P), champion)
    challenger = np.where((rng.random((runs, n)) < gain) & (challenger < 3), 3, challenger)
    return champion, np.where((rng.random((runs, n)) < loss) & (challenger == 3), 1, challenger)


def _f1(found: np.ndarray) -> np.ndarray:
    return 2 * found / (found + 3)


def _entities(spans: list[tuple[str, int, int]]) -> str:
    return json.dumps([{"label": a, "start": s, "end": e, "text": "x"} for a, s, e in spans])


def _summary(spans: list[tuple[str, int, int]]) -> str:
    return "+".join(sorted({a for a, _, _ in spans})) or "(none)"


Row = tuple[list[Any] | None, list[Any] | None, list[Any] | None]


def _frame(
    rows: Sequence[Row],
    *,
    source: str | None = "human",
) -> pd.DataFrame:
    """Shadow pairs as the store gives an extractor's: (gold, champion, challenger) spans per
    request (gold None: unlabelled), the summaries in the classifier's columns."""

    def entities(spans: list[Any] | None) -> str | None:
        return None if spans is None else _entities(spans)

    def summary(spans: list[Any] | None) -> str | None:
        return None if spans is None else _summary(spans)

    n = len(rows)
    return pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "created_at": pd.date_range("2025-01-01", periods=n, freq="min", tz="UTC"),
            "champion_version": 1,
            "champion_label": [summary(c) for _, c, _ in rows],
            "champion_confidence": 0.9,
            "challenger_version": 2,
            "challenger_label": [summary(c) for _, _, c in rows],
            "challenger_confidence": 0.9,
            "escalated": False,
            "true_label": [summary(g) for g, _, _ in rows],
            "true_label_source": [None if g is None else source for g, _, _ in rows],
            "champion_entities": [entities(c) for _, c, _ in rows],
            "challenger_entities": [entities(c) for _, _, c in rows],
            "true_entities": [entities(g) for g, _, _ in rows],
        }
    )


def _simulated(n: int, *, gain: float = 0.0, loss: float = 0.0, seed: int) -> pd.DataFrame:
    champion, challenger = _found(1, n, gain=gain, loss=loss, seed=seed)
    return _frame(
        [(GOLD, GOLD[:a], GOLD[:b]) for a, b in zip(champion[0], challenger[0], strict=True)]
    )


# --------------------------------------------------------------------------- the e-value


@pytest.mark.parametrize("margin", [0.0, 0.05, 0.2])
@pytest.mark.parametrize(
    ("wins", "losses", "ties"), [(0, 0, 0), (3, 1, 10), (40, 15, 300), (150, 140, 20)]
)
def test_the_bounded_e_value_is_the_counts_formula_on_wins_losses_and_ties(
    margin: float, wins: int, losses: int, ties: int
) -> None:
    x = np.random.default_rng(wins).permutation([1.0] * wins + [-1.0] * losses + [0.0] * ties)
    better = float(log_e_value_bounded(x, margin=margin))
    worse = float(log_e_value_bounded(-x, margin=-margin))
    assert better == pytest.approx(float(log_e_value(wins, losses, ties, margin=margin)), abs=1e-9)
    assert worse == pytest.approx(float(log_e_value(losses, wins, ties, margin=-margin)), abs=1e-9)
    counted = sequential_test(wins=wins, losses=losses, ties=ties, alpha=ALPHA, margin=margin)
    bounded = bounded_sequential_test(x, alpha=ALPHA, margin=margin)
    assert bounded.e_better == pytest.approx(counted.e_better, rel=1e-9)
    assert bounded.e_worse == pytest.approx(counted.e_worse, rel=1e-9)
    assert (bounded.wins, bounded.losses, bounded.ties) == (wins, losses, ties)


def test_the_bounded_e_value_depends_on_the_multiset_only() -> None:
    rng = np.random.default_rng(1)
    x = _f1(rng.choice(FOUND, size=300)) - _f1(rng.choice(FOUND, size=300))
    for margin in (0.0, 0.1):
        whole = log_e_value_bounded(x, margin=margin)
        for _ in range(5):
            assert log_e_value_bounded(rng.permutation(x), margin=margin) == whole  # bit for bit
        # Along any order the running e-process ends at the same value.
        assert log_e_value_bounded(x, margin=margin, running=True)[-1] == pytest.approx(whole)
    # Rows are independent sequences; a running value at look k is the e-value of k outcomes.
    rows = x.reshape(3, 100)
    running = log_e_value_bounded(rows, running=True)
    assert running.shape == (3, 100)
    for k in (1, 17, 100):
        assert running[:, k - 1] == pytest.approx(log_e_value_bounded(rows[:, :k]))
    assert float(log_e_value_bounded(np.zeros(0))) == pytest.approx(0.0, abs=1e-12)


def test_the_bounded_e_value_refuses_outcomes_outside_minus_one_one() -> None:
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        log_e_value_bounded([0.5, 1.5])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        log_e_value_bounded([0.5, float("nan")])
    with pytest.raises(ValueError, match="margin"):
        log_e_value_bounded([0.5], margin=1.0)


@pytest.mark.parametrize("margin", [0.0, 0.05])
def test_an_equal_challenger_crosses_1_over_alpha_at_most_alpha_of_the_time_over_all_looks(
    margin: float,
) -> None:
    # Looking after every labelled request, 2000 sequences of 400; with a margin, at the
    # null's boundary (the challenger's F1 exactly ``margin`` lower on average).
    runs, n = 2000, 400
    champion, challenger = _found(runs, n, seed=2)
    x = _f1(challenger) - _f1(champion)
    if margin:
        # Lower the challenger's F1 by 0.5 on a share of requests where that stays in [0, 1]:
        # E[X] is then exactly -margin.
        room = _f1(challenger) >= 0.5
        share = margin / (0.5 * room.mean())
        cut = room & (np.random.default_rng(3).random((runs, n)) < share)
        x = np.where(cut, x - 0.5, x)
        assert abs(x.mean() + margin) < 0.003
    e = log_e_value_bounded(x, margin=margin, running=True)
    crossed = (e >= math.log(1 / ALPHA)).any(axis=1)
    assert crossed.mean() <= _mc_limit(runs), crossed.mean()


def test_the_whole_rule_promotes_an_equal_challenger_at_most_alpha_of_the_time() -> None:
    # Bootstrap, McNemar and all, every 25 labelled pairs up to the cap (the e-value test
    # above looks after every pair; min_samples, the cap and the veto only hold back).
    runs, cap = 200, POLICY.sample_cap
    champion, challenger = _found(runs, cap, seed=4)
    decisions = []
    for a, b in zip(_f1(champion), _f1(challenger), strict=True):
        for look in range(25, cap + 1, 25):
            scores = compare_paired(
                a[:look], b[:look], a[:look] == 1, b[:look] == 1, alpha=ALPHA, resamples=50
            )
            decision = extraction_gate_decision(
                scores, alpha=ALPHA, min_samples=POLICY.min_samples, cap=cap
            )
            if decision != "wait":
                break
        decisions.append(decision)
    assert decisions.count("promote") / runs <= _mc_limit(runs)
    assert "wait" not in decisions  # the cap decides every one


# --------------------------------------------------------------------------- through gate()


def _first_decision(pairs: pd.DataFrame, *, every: int) -> tuple[str, int]:
    for n in range(every, len(pairs) + 1, every):
        decision = gate(pairs.iloc[:n], POLICY, task="extraction").decision
        if decision != "wait":
            return decision, n
    return "wait", len(pairs)


def test_a_clearly_better_challenger_is_promoted() -> None:
    outcomes = [
        _first_decision(_simulated(POLICY.sample_cap, gain=0.7, seed=s), every=20)
        for s in range(20)
    ]
    assert sum(d == "promote" for d, _ in outcomes) >= 18


def test_a_clearly_worse_challenger_is_rejected_before_the_cap() -> None:
    for s in range(10):
        pairs = _simulated(POLICY.sample_cap, loss=0.3, seed=100 + s)
        decision, n = _first_decision(pairs, every=20)
        assert decision == "reject"
        assert n < POLICY.sample_cap
        assert any(
            "worse in F1" in r for r in gate(pairs.iloc[:n], POLICY, task="extraction").reasons
        )


@pytest.mark.parametrize(("gain", "loss"), [(0.0, 0.0), (0.3, 0.0), (0.7, 0.0), (0.0, 0.3)])
def test_the_cap_never_waits(gain: float, loss: float) -> None:
    pairs = _simulated(POLICY.sample_cap, gain=gain, loss=loss, seed=7)
    assert gate(pairs, POLICY, task="extraction").decision in ("promote", "reject")
    identical = pairs.assign(challenger_entities=pairs["champion_entities"])
    result = gate(identical, POLICY, task="extraction")
    assert result.decision == "reject" and result.e_value == pytest.approx(1.0)
    assert gate(identical.iloc[:-1], POLICY, task="extraction").decision == "wait"


# --------------------------------------------------------------------------- hand-made frames

D, OID = ("date", 0, 10), ("order_id", 20, 28)
#: (gold, champion, challenger) and the F1s: champion 1, 2/3, 1, 0, 1; challenger 1, 1, 1, 1,
#: 2/3. Exact: champion T F T F T, challenger T T T T F.
BLOCK: list[Row] = [
    ([D, OID], [D, OID], [D, OID]),
    ([D, OID], [D], [OID, D]),
    ([], [], []),
    ([("order_id", 5, 12)], [("order_id", 5, 11)], [("order_id", 5, 12)]),
    ([("date", 3, 9)], [("date", 3, 9)], [("date", 3, 9), ("order_id", 15, 20)]),
]
#: Rows that would sink the challenger, were they counted.
BAD: Row = ([D, OID], [D, OID], [])


def _hand_made(blocks: int) -> pd.DataFrame:
    labelled = _frame(BLOCK * blocks)
    unlabelled = _frame([(None, [D, OID], [])] * 10)
    fallback = _frame([BAD] * 7, source="fallback")
    return pd.concat([labelled, unlabelled, fallback], ignore_index=True)


def test_gate_on_a_hand_made_extraction_frame() -> None:
    result = gate(_hand_made(24), POLICY, task="extraction")
    assert result.task == "extraction"
    assert (result.n_pairs, result.n_labelled, result.fallback_labelled) == (137, 120, 7)
    assert result.champion_f1 == pytest.approx((1 + 2 / 3 + 1 + 0 + 1) / 5)
    assert result.challenger_f1 == pytest.approx((1 + 1 + 1 + 1 + 2 / 3) / 5)
    assert result.difference == pytest.approx(0.2)
    assert result.champion_exact_match == pytest.approx(0.6)
    assert result.challenger_exact_match == pytest.approx(0.8)
    assert (result.challenger_only, result.champion_only) == (48, 24)  # F1 higher, per side
    assert result.champion_accuracy is None and result.challenger_accuracy is None
    assert result.ci is not None and result.ci[0] < 0.2 < result.ci[1]
    x = np.array([0, 1 / 3, 0, 1, -1 / 3] * 24)
    evidence = bounded_sequential_test(x, alpha=ALPHA)
    assert result.e_value == pytest.approx(evidence.e_better)
    assert result.e_value_worse == pytest.approx(evidence.e_worse)
    assert result.p_value == pytest.approx(min(1.0, 1 / evidence.e_better))
    assert result.mcnemar_p is not None and result.wilcoxon_p is not None
    # Agreement over every answered pair: 2 of 5 per block, none of the unlabelled or
    # fallback-labelled ones.
    assert result.agreement == pytest.approx(48 / 137)
    assert result.decision == "promote"
    assert "F1" in result.reasons[-1] and "e-value" in result.reasons[-1]
    assert any("7 pairs labelled only by the fallback" in r for r in result.reasons)
    metrics = result.metrics()
    assert metrics["gate_champion_f1"] == pytest.approx(result.champion_f1)
    assert metrics["gate_f1_difference"] == pytest.approx(0.2)
    assert "gate_champion_exact_match" in metrics and "gate_mcnemar_p" in metrics
    assert not any("accuracy" in name for name in metrics)
    assert json.dumps(result.as_dict())  # JSON-ready for the alert and the event

    # Below min_samples: the same evidence waits.
    early = gate(_hand_made(10), POLICY, task="extraction")
    assert early.n_labelled == 50 and early.decision == "wait"
    assert any("fewer than min_samples" in r for r in early.reasons)


def test_unlabelled_and_fallback_labelled_pairs_are_ignored() -> None:
    only_others = pd.concat(
        [_frame([(None, [D], [OID])] * 30), _frame([BAD] * 30, source="fallback")],
        ignore_index=True,
    )
    result = gate(only_others, POLICY, task="extraction")
    assert (result.n_labelled, result.fallback_labelled, result.decision) == (0, 30, "wait")
    assert result.champion_f1 is None and result.e_value is None
    # A frame without sources: every label is a person's (as for a classifier).
    no_source = _frame([BAD] * 120).drop(columns="true_label_source")
    assert gate(no_source, POLICY, task="extraction").decision == "reject"
    # Rows are rows, whatever their index (a concatenation repeats labels).
    doubled = pd.concat([_frame(BLOCK * 24), _frame(BLOCK * 24)])
    assert gate(doubled, POLICY, task="extraction").n_labelled == 240
    # A blank truth is no label; "[]" is one (a text with nothing to extract).
    blank = _frame([([], [], [])] * 3).assign(true_entities=["", "  ", "[]"])
    assert gate(blank, POLICY, task="extraction").n_labelled == 1


def test_the_health_vetoes_apply_unchanged() -> None:
    pairs = _hand_made(24)
    slow = gate(pairs, POLICY, task="extraction", latency_ms=(10.0, 20.0))
    assert slow.decision == "reject"
    assert slow.reasons[-1].startswith("vetoed: challenger latency 20.0 ms")
    fast = gate(pairs, POLICY, task="extraction", latency_ms=(10.0, 11.0))
    assert fast.decision == "promote" and "F1" in fast.reasons[-1]
    assert any(r.startswith("latency: challenger 11.0 ms") for r in fast.reasons)
    failing = gate(pairs, POLICY, task="extraction", shadow_errors=20)
    assert failing.decision == "reject"
    assert any("shadow calls failed" in r for r in failing.reasons)
    # Failures reject a challenger still waiting for labels too, once min_samples calls ran.
    waiting = _frame([(None, [D], [D])] * 120)
    assert gate(waiting, POLICY, task="extraction", shadow_errors=10).decision == "reject"
    assert gate(waiting, POLICY, task="extraction").decision == "wait"


def test_an_undecided_extraction_challenger_is_superseded() -> None:
    pairs = _frame([([D, OID], [D], [D])] * 50)
    assert gate(pairs, POLICY, task="extraction", trained_labels=10, new_labels=20).decision == (
        "wait"
    )
    stale = gate(pairs, POLICY, task="extraction", trained_labels=10, new_labels=21)
    assert stale.decision == "supersede"
    assert any("superseded: 21 people's labels" in r for r in stale.reasons)


def test_unreadable_entities_and_missing_columns() -> None:
    pairs = _hand_made(24)
    pairs.loc[0, "challenger_entities"] = "{not json"
    pairs.loc[1, "true_entities"] = json.dumps([{"label": "date"}])  # no start/end
    result = gate(pairs, POLICY, task="extraction")
    assert result.n_labelled == 118
    assert any("2 labelled pairs with unreadable entity JSON" in r for r in result.reasons)
    legacy = _hand_made(24).drop(columns=["champion_entities", "challenger_entities"])
    old = gate(legacy, POLICY, task="extraction")
    assert (old.decision, old.n_labelled, old.agreement) == ("wait", 0, None)
    assert any("no champion_entities, challenger_entities column" in r for r in old.reasons)
    with pytest.raises(ValueError, match="unknown task"):
        gate(pairs, POLICY, task="ranking")


def test_the_classifier_columns_of_an_extractor_are_not_what_is_scored() -> None:
    # The summaries agree everywhere (same labels found), the spans do not: the challenger's
    # spans are all one character short.
    short = [(("date", 0, 10), ("date", 0, 9))] * 120
    pairs = _frame([([g], [g], [c]) for g, c in short])
    assert (pairs["champion_label"] == pairs["challenger_label"]).all()
    result = gate(pairs, POLICY, task="extraction")
    assert result.decision == "reject" and result.challenger_f1 == 0.0
    assert gate(pairs, POLICY).decision == "wait"  # read as a classifier: all ties


# --------------------------------------------------------------------------- the step


class _Registry:
    def __init__(self, aliases: dict[str, int]) -> None:
        self._aliases = aliases
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def aliases(self, name: str) -> dict[str, int]:
        return dict(self._aliases)

    def get_version(self, name: str, version: int) -> Any:
        return SimpleNamespace(tags={}, created_ms=0)

    def __getattr__(self, method: str) -> Any:
        return lambda *args, **kwargs: self.calls.append((method, args))


class _Store:
    def __init__(self, pairs: pd.DataFrame) -> None:
        self.pairs = pairs

    def shadow_pairs(self, name: str, *, challenger_version: int) -> pd.DataFrame:
        return self.pairs

    def shadow_failure_count(self, name: str, *, challenger_version: int) -> int:
        return 0


def test_the_gate_step_picks_the_extraction_path_from_the_spec(tmp_path: Path) -> None:
    from lifecycle.config.settings import Settings
    from lifecycle.registry.models import CHALLENGER, CHAMPION
    from lifecycle.steps import gate_challenger

    spec = SpecialistSpec(
        name="slots", task="extraction", entities=("date", "order_id"), promotion=POLICY
    )
    short = [(("date", 0, 10), ("date", 0, 9))] * 120
    worse = _frame([([g], [g], [c]) for g, c in short])
    registry: Any = _Registry({CHAMPION: 1, CHALLENGER: 2})
    store: Any = _Store(worse)
    outcome = gate_challenger(
        Settings(home=tmp_path / "home"), spec, store=store, registry=registry
    )
    assert outcome.action == "rejected"
    assert outcome.decision is not None and outcome.decision.task == "extraction"
    assert [m for m, _ in registry.calls] == ["retire_challenger"]
    assert "F1" in registry.calls[0][1][3]

    # No champion yet: a better challenger is promoted without timing.
    better = _hand_made(24)
    registry = _Registry({CHALLENGER: 2})
    store = _Store(better)
    outcome = gate_challenger(
        Settings(home=tmp_path / "home"), spec, store=store, registry=registry
    )
    assert outcome.action == "promoted"
    assert outcome.decision is not None and outcome.decision.challenger_f1 is not None
    assert [m for m, _ in registry.calls] == ["promote", "tag_version"]
