"""The two sides of a check as one shape: the champion's reference and a window of traffic.

A ``MonitorData`` holds per-row columns (text, prediction, confidence, below_threshold,
true_label, and the text descriptors) and the embeddings as one matrix aligned with the rows
(NaN rows where an embedding is missing). Pure pandas/numpy: the store and registry reads
happen in ``monitors.check``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import pandas as pd

from monitors.descriptors import describe

COLUMNS = ("text", "prediction", "confidence", "below_threshold", "true_label")


@dataclass(frozen=True, eq=False)
class MonitorData:
    frame: pd.DataFrame
    embeddings: np.ndarray | None

    def __len__(self) -> int:
        return len(self.frame)

    def take(self, index: np.ndarray) -> MonitorData:
        """The rows at positions ``index`` (for resampling the reference)."""
        emb = None if self.embeddings is None else self.embeddings[index]
        return MonitorData(self.frame.iloc[index].reset_index(drop=True), emb)

    @property
    def labelled(self) -> pd.DataFrame:
        return self.frame[self.frame["true_label"].notna()]


def reference_data(
    reference: pd.DataFrame,
    embeddings: np.ndarray | None,
    *,
    vocabulary: Collection[str],
    escalation_threshold: float,
) -> MonitorData:
    """The champion's validation rows (text, label, prediction, confidence) as monitor data."""
    frame = pd.DataFrame(
        {
            "text": reference["text"].astype(object),
            "prediction": reference["prediction"].astype(str),
            "confidence": reference["confidence"].astype(float),
            "true_label": reference["label"].astype(object),
        }
    )
    return _finish(frame, embeddings, vocabulary, escalation_threshold)


def window_data(
    window: pd.DataFrame, *, vocabulary: Collection[str], escalation_threshold: float
) -> MonitorData:
    """A traffic window from ``TrafficStore.window`` as monitor data.

    Only people's labels count as truth here: fallback answers exist only for escalated
    (low-confidence) rows, so scoring the model on them would measure a biased sample.
    """
    truth = window.get("true_label", pd.Series(np.nan, index=window.index))
    source = window.get("true_label_source", pd.Series(np.nan, index=window.index))
    frame = pd.DataFrame(
        {
            "text": window["text"].astype(object) if "text" in window else np.nan,
            "prediction": window["label"].astype(str),
            "confidence": pd.to_numeric(window["confidence"], errors="coerce").astype(float),
            "true_label": truth.where(source == "human").astype(object),
        }
    )
    embeddings = _stack(window["embedding"]) if "embedding" in window else None
    return _finish(frame, embeddings, vocabulary, escalation_threshold)


def _finish(
    frame: pd.DataFrame,
    embeddings: np.ndarray | None,
    vocabulary: Collection[str],
    escalation_threshold: float,
) -> MonitorData:
    frame = frame.reset_index(drop=True)
    # Empty or whitespace-only texts carry nothing to compare: treat them as missing.
    text = frame["text"].where(frame["text"].map(lambda t: isinstance(t, str) and t.strip() != ""))
    frame["text"] = text.astype(object)
    frame["below_threshold"] = (frame["confidence"] < escalation_threshold).map(
        {True: "yes", False: "no"}
    )
    frame = pd.concat([frame, describe(frame["text"], vocabulary)], axis=1)
    if embeddings is not None:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(frame):
            embeddings = None
    return MonitorData(frame, embeddings)


def _stack(values: pd.Series) -> np.ndarray | None:
    """Per-row vectors as one matrix; rows without one (or of another length) are NaN."""
    vectors = [v for v in values if isinstance(v, np.ndarray) and v.ndim == 1]
    if not vectors:
        return None
    dims = pd.Series([len(v) for v in vectors]).mode().iloc[0]
    out = np.full((len(values), dims), np.nan, dtype=np.float32)
    for i, v in enumerate(values):
        if isinstance(v, np.ndarray) and v.ndim == 1 and len(v) == dims:
            out[i] = v
    return out
