"""Self-training's pure parts: which unlabelled requests a retrain may self-label, and which
of a first candidate's answers it keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from lifecycle.training.retrain_plan import held_out_text, stable_split
from lifecycle.training.self_training import PSEUDO, pseudo_labelled, unlabelled_texts

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _texts_not_held_out(n: int, fraction: float = 0.2) -> list[str]:
    out = [f"where is my parcel number {i}" for i in range(400)]
    return [t for t in out if not held_out_text(t, fraction)][:n]


def _window(rows: list[dict[str, object]]) -> pd.DataFrame:
    base = {"true_label": None, "escalated": False, "fallback_label": None}
    frame = pd.DataFrame([{**base, **row} for row in rows])
    frame["id"] = [f"r{i}" for i in range(len(frame))]
    return frame


def test_only_unlabelled_recent_kept_texts_not_held_out_are_picked() -> None:
    free = _texts_not_held_out(6)
    held = next(t for t in (f"held text {i}" for i in range(500)) if held_out_text(t, 0.2))
    window = _window(
        [
            {"text": free[0], "created_at": T0 - timedelta(hours=1)},  # before the champion
            {"text": free[1], "created_at": T0},
            {"text": free[2], "created_at": T0, "true_label": "refund"},  # a person's label
            {"text": free[3], "created_at": T0, "escalated": True, "fallback_label": "refund"},
            {"text": free[4], "created_at": T0, "fallback_label": "refund"},  # not escalated
            {"text": free[1], "created_at": T0 + timedelta(seconds=1)},  # a duplicate
            {"text": None, "created_at": T0},  # the store kept no text
            {"text": "   ", "created_at": T0},
            {"text": held, "created_at": T0},  # a retrain holds this text out
            {"text": free[5], "created_at": T0},  # excluded by the caller
        ]
    )
    picked = unlabelled_texts(window, since=T0, holdout_fraction=0.2, exclude={free[5]})
    assert picked == [free[1], free[4]]
    # The same rule as the retrain's holdout: nothing picked would be held out there.
    frame = pd.DataFrame({"text": [*picked, held], "label": ["a"] * (len(picked) + 1)})
    assert stable_split(frame, fraction=0.2)[1]["text"].tolist() == [held]


def test_no_since_takes_every_row_and_an_empty_window_gives_nothing() -> None:
    free = _texts_not_held_out(2)
    window = _window([{"text": free[0], "created_at": T0 - timedelta(days=9)}, {"text": free[1]}])
    assert unlabelled_texts(window, since=None, holdout_fraction=0.2) == free
    assert unlabelled_texts(window.iloc[0:0], since=T0, holdout_fraction=0.2) == []


def test_confident_answers_are_kept_in_order_and_capped_most_confident_first() -> None:
    texts = ["a", "b", "c", "d", "e"]
    probs = np.array(
        [[0.9, 0.1], [0.4, 0.6], [0.05, 0.95], [0.55, 0.45], [0.2, 0.8]], dtype=np.float32
    )
    kept = pseudo_labelled(texts, probs, ["x", "y"], threshold=0.6, max_rows=10)
    assert kept["text"].tolist() == ["a", "b", "c", "e"]
    assert kept["label"].tolist() == ["x", "y", "y", "y"]
    assert set(kept["source"]) == {PSEUDO}
    capped = pseudo_labelled(texts, probs, ["x", "y"], threshold=0.6, max_rows=2)
    assert capped["text"].tolist() == ["a", "c"]  # 0.90 and 0.95: the two most confident


@pytest.mark.parametrize(
    ("texts", "threshold", "max_rows"), [([], 0.5, 5), (["a"], 0.0, 5), (["a"], 0.5, 0)]
)
def test_nothing_to_keep_gives_an_empty_table_with_the_columns(
    texts: list[str], threshold: float, max_rows: int
) -> None:
    probs = np.full((len(texts), 2), 0.5)
    out = pseudo_labelled(texts, probs, ["x", "y"], threshold=threshold, max_rows=max_rows)
    assert len(out) == 0 and list(out.columns) == ["text", "label", "source"]


def test_no_answer_over_the_threshold_gives_an_empty_table() -> None:
    out = pseudo_labelled(["a", "b"], np.full((2, 2), 0.5), ["x", "y"], threshold=0.9, max_rows=5)
    assert len(out) == 0


def test_probabilities_that_do_not_match_the_texts_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        pseudo_labelled(["a", "b"], np.full((3, 2), 0.5), ["x", "y"], threshold=0.5, max_rows=5)
