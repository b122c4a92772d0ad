"""Traffic recorded without a gateway: predictions written to the store as the gateway would.

Benchmarks, tests and scenario studies need thousands of logged requests with known truth;
going through HTTP would measure the gateway instead of the monitor. ``record_traffic``
predicts a frame of texts with a loaded specialist and stores one request row per text (with
its embedding), and people's labels for a chosen share of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from lifecycle.model.host import AdapterHost
    from lifecycle.store import TrafficStore
    from lifecycle.store.records import Record


@dataclass(frozen=True)
class Recorded:
    request_ids: list[str]
    predictions: list[str]
    confidences: list[float]
    labelled: int


def record_traffic(
    store: TrafficStore,
    host: AdapterHost,
    adapter_id: str,
    *,
    specialist: str,
    model_version: int,
    frame: pd.DataFrame,
    label_share: float = 0.0,
    start: datetime | None = None,
    spacing: timedelta = timedelta(milliseconds=10),
    escalation_threshold: float = 0.0,
    seed: int = 0,
    batch: int = 2000,
) -> Recorded:
    """Predict ``frame.text`` and store the requests (and labels for ``label_share`` of them).

    Rows get increasing ``created_at`` from ``start`` (default: now minus the span), so that
    windows by count and by time both select them in order.
    """
    from lifecycle.store import FeedbackRecord, RequestRecord

    if not 0.0 <= label_share <= 1.0:
        raise ValueError(f"label_share must be within [0, 1], got {label_share}")
    texts = frame["text"].astype(str).tolist()
    truth: Sequence[str] | None = frame["label"].astype(str).tolist() if "label" in frame else None
    start = start or datetime.now(UTC) - spacing * (len(texts) + 1)
    rng = np.random.default_rng(seed)
    labelled = rng.random(len(texts)) < label_share if truth is not None else None
    ids: list[str] = []
    labels: list[str] = []
    confidences: list[float] = []
    n_labels = 0
    for offset in range(0, len(texts), batch):
        chunk = texts[offset : offset + batch]
        predictions = host.predict(chunk, adapter_id)
        records: list[Record] = []
        for i, (text, pred) in enumerate(zip(chunk, predictions, strict=True)):
            at = start + spacing * (offset + i)
            request = RequestRecord(
                specialist=specialist,
                model_version=model_version,
                text=text,
                label=pred.label,
                confidence=pred.confidence,
                embedding=pred.embedding,
                latency_ms=0.0,
                escalated=pred.confidence < escalation_threshold,
                created_at=at,
            )
            records.append(request)
            ids.append(request.id)
            labels.append(pred.label)
            confidences.append(float(pred.confidence))
            if truth is not None and labelled is not None and labelled[offset + i]:
                records.append(
                    FeedbackRecord(
                        request_id=request.id,
                        specialist=specialist,
                        label=truth[offset + i],
                        created_at=at,
                    )
                )
                n_labels += 1
        store.write(records)
    return Recorded(ids, labels, confidences, n_labels)


def record_shadow(
    store: TrafficStore,
    host: AdapterHost,
    adapter_id: str,
    *,
    specialist: str,
    model_version: int,
    request_ids: Sequence[str],
    texts: Sequence[str],
    batch: int = 2000,
) -> int:
    """Score stored requests with a challenger and store its shadow predictions."""
    from lifecycle.store import ShadowRecord

    if len(request_ids) != len(texts):
        raise ValueError("request_ids and texts differ in length")
    for offset in range(0, len(texts), batch):
        chunk = list(texts[offset : offset + batch])
        predictions = host.predict(chunk, adapter_id)
        store.write(
            [
                ShadowRecord(
                    request_id=rid,
                    specialist=specialist,
                    model_version=model_version,
                    label=p.label,
                    confidence=p.confidence,
                    latency_ms=0.0,
                )
                for rid, p in zip(request_ids[offset : offset + batch], predictions, strict=True)
            ]
        )
    return len(texts)
