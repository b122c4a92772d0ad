"""Shadow-pair frames for the gate tests: what the traffic store returns for a challenger."""

from __future__ import annotations

import numpy as np
import pandas as pd

LABELS = np.array(["card_lost", "refund", "delivery", "account"])


def wrong_labels(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A label different from each truth."""
    shift = rng.integers(1, len(LABELS), size=len(truth))
    index = np.searchsorted(np.sort(LABELS), truth)
    return np.sort(LABELS)[(index + shift) % len(LABELS)]


def pair_frame(truth: np.ndarray, champion: np.ndarray, challenger: np.ndarray) -> pd.DataFrame:
    """Shadow pairs as the traffic store returns them, every label a person's."""
    n = len(truth)
    return pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "created_at": pd.date_range("2025-01-01", periods=n, freq="min", tz="UTC"),
            "champion_version": 1,
            "champion_label": champion,
            "champion_confidence": 0.9,
            "challenger_version": 2,
            "challenger_label": challenger,
            "challenger_confidence": 0.9,
            "escalated": False,
            "true_label": truth,
            "true_label_source": "human",
        }
    )
