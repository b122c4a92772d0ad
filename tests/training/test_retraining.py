"""The training set of a retrain: labels from traffic, holdouts, replay of the reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from lifecycle.training.retraining import labelled_rows, plan_retraining

KNOWN = ["card_lost", "refund", "delivery"]


def _row(i: int, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": f"req-{i}",
        "created_at": pd.Timestamp("2025-01-01", tz="UTC") + pd.Timedelta(minutes=i),
        "text": f"message number {i}",
        "text_sha256": f"{i:064x}",
        "label": "refund",
        "confidence": 0.9,
        "model_version": 1,
        "latency_ms": 5.0,
        "escalated": False,
        "fallback_label": np.nan,
        "fallback_source": np.nan,
        "fallback_latency_ms": np.nan,
        "flagged": False,
        "true_label": np.nan,
        "true_label_source": np.nan,
    }
    row.update(overrides)
    return row


def _window(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def _traffic(n: int, *, seed: int, labels: tuple[str, ...] = tuple(KNOWN)) -> pd.DataFrame:
    """``n`` requests, all with a person's label drawn from ``labels``."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(np.array(labels), size=n)
    return _window(
        [_row(i, true_label=str(t), true_label_source="human") for i, t in enumerate(truth)]
    )


def _reference(n_per_label: int = 40) -> pd.DataFrame:
    rows = [(f"reference {label} {i}", label) for label in KNOWN for i in range(n_per_label)]
    return pd.DataFrame(rows, columns=["text", "label"])


def _plan(window: pd.DataFrame, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "reference": _reference(),
        "labels_known": KNOWN,
        "min_labels": 20,
        "replay_ratio": 1.0,
        "holdout_fraction": 0.2,
        "seed": 0,
    }
    kwargs.update(overrides)
    return plan_retraining(window, **kwargs)


# --------------------------------------------------------------------------- labelled rows


def test_a_persons_label_beats_the_fallback_for_the_same_request() -> None:
    window = _window(
        [
            _row(
                0,
                escalated=True,
                fallback_label="refund",
                true_label="card_lost",
                true_label_source="human",
            ),
            # The same request again (overlapping windows): fallback first, person later...
            _row(1, id="req-x", true_label="delivery", true_label_source="fallback"),
            _row(2, id="req-x", true_label="refund", true_label_source="human"),
            # ...and a person first, a later fallback label must not override it.
            _row(3, id="req-y", true_label="card_lost", true_label_source="human"),
            _row(4, id="req-y", true_label="delivery", true_label_source="fallback"),
        ]
    )
    rows = labelled_rows(window)
    assert list(rows.columns) == ["text", "label", "label_source", "request_id"]
    by_id = rows.set_index("request_id")
    assert len(rows) == 3
    assert by_id.loc["req-0", "label"] == "card_lost"
    assert by_id.loc["req-x", "label"] == "refund"
    assert by_id.loc["req-y", "label"] == "card_lost"
    assert set(rows["label_source"]) == {"human"}


def test_fallback_labels_fill_in_where_no_person_labelled_and_are_marked() -> None:
    window = _window(
        [
            _row(0, true_label="delivery", true_label_source="fallback", escalated=True),
            _row(1, escalated=True, fallback_label=" card_lost "),  # no feedback row yet
            _row(2, escalated=False, fallback_label="refund"),  # not escalated: not a label
            _row(3),  # nothing at all
            _row(4, true_label="refund", true_label_source="human"),
        ]
    )
    rows = labelled_rows(window)
    assert rows["request_id"].tolist() == ["req-0", "req-1", "req-4"]  # window order kept
    assert rows["label"].tolist() == ["delivery", "card_lost", "refund"]
    assert rows["label_source"].tolist() == ["fallback", "fallback", "human"]


def test_rows_without_text_are_dropped_and_counted() -> None:
    window = _window(
        [
            _row(0, text=None, true_label="refund", true_label_source="human"),
            _row(1, text="   ", escalated=True, fallback_label="refund"),
            _row(2, text=None),  # unlabelled: nothing lost, not counted
            _row(3, true_label="refund", true_label_source="human"),
        ]
    )
    rows = labelled_rows(window)
    assert rows["request_id"].tolist() == ["req-3"]
    assert rows.attrs["dropped_no_text"] == 2
    plan = _plan(window, min_labels=1)
    assert plan.counts.dropped_no_text == 2
    assert plan.counts.human == 1
    assert any("no stored text" in w for w in plan.warnings)


# --------------------------------------------------------------------------- the plan


def test_too_few_labels_is_not_ready_and_says_exactly_how_many_are_missing() -> None:
    window = pd.concat(
        [
            _traffic(30, seed=1),
            _window([_row(100 + i, escalated=True, fallback_label="refund") for i in range(7)]),
            _window([_row(200 + i) for i in range(50)]),  # unlabelled traffic
        ],
        ignore_index=True,
    )
    plan = _plan(window, min_labels=100)
    assert not plan.ready
    assert plan.missing == 100 - 37
    assert (plan.counts.human, plan.counts.fallback) == (30, 7)
    assert "63 more" in plan.reason
    assert plan.train.empty and plan.holdout_new.empty and plan.holdout_old.empty


def test_ready_plan_replays_rows_from_the_reference_only() -> None:
    plan = _plan(_traffic(100, seed=2), replay_ratio=0.5)
    assert plan.ready, plan.reason
    assert plan.missing == 0
    replayed = plan.train[plan.train["source"] == "replay"]
    new = plan.train[plan.train["source"] == "new"]
    reference_rows = set(zip(_reference()["text"], _reference()["label"], strict=True))
    assert len(replayed) == round(0.5 * len(new))
    assert set(zip(replayed["text"], replayed["label"], strict=True)) <= reference_rows
    assert set(replayed["label_source"]) == {"reference"}
    assert replayed["request_id"].isna().all()
    assert new["request_id"].str.startswith("req-").all()
    assert plan.summary()["replay_rows"] == len(replayed)


def test_holdouts_are_disjoint_from_training() -> None:
    plan = _plan(_traffic(200, seed=3), replay_ratio=1.0)
    assert plan.ready
    new_train_ids = set(plan.train.loc[plan.train["source"] == "new", "request_id"])
    held_ids = set(plan.holdout_new["request_id"])
    assert held_ids and not held_ids & new_train_ids
    assert len(held_ids) + len(new_train_ids) == 200
    assert len(plan.holdout_new) == pytest.approx(0.2 * 200, abs=3)
    # Every label is represented in the new holdout (stratified).
    assert set(plan.holdout_new["label"]) == set(KNOWN)
    replayed_texts = set(plan.train.loc[plan.train["source"] == "replay", "text"])
    old_held = set(plan.holdout_old["text"])
    assert old_held and not old_held & replayed_texts
    assert set(plan.holdout_old["label"]) == set(KNOWN)


def test_new_labels_are_reported_and_a_single_example_stays_in_training() -> None:
    window = pd.concat(
        [
            _traffic(60, seed=4),
            _window(
                [_row(500 + i, true_label="cancel", true_label_source="human") for i in range(6)]
            ),
            _window([_row(600, true_label="fraud", true_label_source="human")]),
        ],
        ignore_index=True,
    )
    plan = _plan(window)
    assert plan.ready
    assert plan.new_labels == ["cancel", "fraud"]
    assert plan.label_counts["fraud"] == 1 and plan.label_counts["cancel"] == 6
    assert "fraud" in set(plan.train["label"])
    assert "fraud" not in set(plan.holdout_new["label"])
    assert any("fraud" in w and "single" in w for w in plan.warnings)


def test_the_plan_is_deterministic_for_a_seed() -> None:
    window = _traffic(120, seed=5)
    first, again = _plan(window, seed=7), _plan(window, seed=7)
    pd.testing.assert_frame_equal(first.train, again.train)
    pd.testing.assert_frame_equal(first.holdout_new, again.holdout_new)
    pd.testing.assert_frame_equal(first.holdout_old, again.holdout_old)
    # The new rows' holdout is fixed per text, whatever the seed (the reference's is seeded).
    other = _plan(window, seed=8)
    assert set(other.holdout_new["request_id"]) == set(first.holdout_new["request_id"])
    assert set(other.holdout_old["text"]) != set(first.holdout_old["text"])


def test_a_row_held_out_once_is_held_out_at_every_later_retrain() -> None:
    # A champion trained by one retrain must never be scored on rows it learnt from by the
    # next: as labels keep arriving, no training row crosses into the holdout, and back.
    grown = _traffic(400, seed=5)
    earlier = _plan(grown.iloc[:150].reset_index(drop=True))
    later = _plan(grown)
    held_before = set(earlier.holdout_new["text"])
    trained_before = set(earlier.train.loc[earlier.train["source"] == "new", "text"])
    assert held_before and trained_before
    assert held_before <= set(later.holdout_new["text"])
    assert not trained_before & set(later.holdout_new["text"])
    assert 0.1 < len(later.holdout_new) / 400 < 0.3  # about holdout_fraction
    # Copies of one text are on one side only.
    twice = pd.concat([grown, grown.assign(id=grown["id"] + "-again")], ignore_index=True)
    plan = _plan(twice)
    assert not set(plan.holdout_new["text"]) & set(plan.train["text"])


def test_zero_replay_and_zero_holdout() -> None:
    plan = _plan(_traffic(40, seed=6), replay_ratio=0.0, holdout_fraction=0.0)
    assert plan.ready
    assert len(plan.train) == 40
    assert (plan.train["source"] == "new").all()
    assert plan.holdout_new.empty and plan.holdout_old.empty


@pytest.mark.parametrize(
    "window",
    [pd.DataFrame(), _traffic(5, seed=0).iloc[0:0]],
    ids=["no-columns", "no-rows"],
)
def test_an_empty_window_is_not_ready(window: pd.DataFrame) -> None:
    rows = labelled_rows(window)
    assert rows.empty
    assert list(rows.columns) == ["text", "label", "label_source", "request_id"]
    plan = _plan(window)
    assert not plan.ready
    assert plan.missing == 20
    assert plan.counts.usable == 0
    assert plan.new_labels == []


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="holdout_fraction"):
        _plan(_traffic(30, seed=0), holdout_fraction=1.0)
    with pytest.raises(ValueError, match="replay_ratio"):
        _plan(_traffic(30, seed=0), replay_ratio=-1)
    with pytest.raises(ValueError, match="reference needs"):
        _plan(_traffic(30, seed=0), reference=pd.DataFrame({"sentence": ["x"]}))


# --------------------------------------------------------------------------- replay and recency


def test_replay_comes_from_the_champions_training_set_and_replay_rows_raises_it() -> None:
    window = _traffic(60, seed=11)
    champion_train = pd.DataFrame(
        [(f"trained {label} {i}", label) for label in KNOWN for i in range(100)],
        columns=["text", "label"],
    )
    plan = _plan(window, replay=champion_train, replay_ratio=0.5)
    replayed = plan.train[plan.train["source"] == "replay"]
    new_rows = int((plan.train["source"] == "new").sum())
    assert len(replayed) == round(0.5 * new_rows)
    assert replayed["text"].str.startswith("trained ").all()
    # The reference only gives the old holdout, never replayed rows.
    assert plan.holdout_old["text"].str.startswith("reference ").all()

    more = _plan(window, replay=champion_train, replay_ratio=0.5, replay_rows=150)
    assert int((more.train["source"] == "replay").sum()) == 150
    capped = _plan(window, replay=champion_train, replay_ratio=0.5, replay_rows=10_000)
    assert int((capped.train["source"] == "replay").sum()) == 300  # all of it, no more


def test_rows_since_the_champion_count_recent_weight_times() -> None:
    window = _traffic(100, seed=12)
    since = window["created_at"].iloc[60]  # rows 60..99 are the drifted, recent ones
    plan = _plan(window, recent_since=since, recent_weight=3.0)
    new = plan.train[plan.train["source"] == "new"]
    recent = plan.train[plan.train["source"] == "recent"]
    recent_ids = set(window["id"].iloc[60:])
    expected = new[new["request_id"].isin(recent_ids)]
    assert len(recent) == 2 * len(expected) > 0
    assert set(recent["request_id"]) == set(expected["request_id"])
    assert plan.summary()["recent_copies"] == len(recent)
    # Replay is sized on the new rows before duplication.
    assert int((plan.train["source"] == "replay").sum()) == len(new)
    # A weight of 1 (or no cut-off) duplicates nothing.
    assert "recent" not in set(_plan(window, recent_since=since, recent_weight=1.0).train["source"])
    assert "recent" not in set(_plan(window, recent_weight=3.0).train["source"])


# --------------------------------------------------------------------------- candidate check


def test_a_candidate_must_strictly_beat_the_champion_on_held_out_drifted_rows() -> None:
    from lifecycle.training.retraining import judge_candidate

    def scores(mine: float, theirs: float) -> dict[str, float]:
        return {
            "holdout_new.challenger_accuracy": mine,
            "holdout_new.champion_accuracy": theirs,
        }

    better = judge_candidate(scores(0.70, 0.63), holdout_rows=120, min_rows=20)
    assert better.accepted and better.checked
    tie = judge_candidate(scores(0.63, 0.63), holdout_rows=120, min_rows=20)
    assert not tie.accepted
    worse = judge_candidate(scores(0.61, 0.63), holdout_rows=120, min_rows=20)
    assert not worse.accepted
    assert worse.reason == "held-out drifted accuracy 0.610 <= champion 0.630 on 120 rows"
    # Too few rows to compare: accepted unchecked, and the reason says so.
    few = judge_candidate(scores(0.40, 0.90), holdout_rows=12, min_rows=20)
    assert few.accepted and not few.checked and "unchecked" in few.reason
    assert judge_candidate({}, holdout_rows=0, min_rows=20).accepted
