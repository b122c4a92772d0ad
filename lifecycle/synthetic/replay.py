"""Traffic recorded without a gateway: predictions written to the store as the gateway would.

Benchmarks, tests and scenario studies need thousands of logged requests with known truth;
going through HTTP would measure the gateway instead of the monitor. ``record_traffic``
predicts a frame of texts with a loaded specialist and stores one request row per text (with
its embedding), and people's labels for a chosen share of them. An extraction specialist's
frame (an ``entities`` column of gold spans) is recorded as the gateway records an
extractor's traffic: the answer's spans as JSON beside their summary, and people's labels as
corrected spans.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

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
    windows by count and by time both select them in order. With an ``entities`` column (an
    extractor's gold spans) the labels are corrected spans, stored as the feedback route
    stores them (spans as JSON, their summary as the label).
    """
    from lifecycle.extraction.spans import summary, to_json
    from lifecycle.store import FeedbackRecord, RequestRecord

    if not 0.0 <= label_share <= 1.0:
        raise ValueError(f"label_share must be within [0, 1], got {label_share}")
    texts = frame["text"].astype(str).tolist()
    gold: list[str] | None = None  # an extractor's true spans, as JSON
    truth: Sequence[str] | None = None
    if "entities" in frame:
        spans = [_spans(cell, t) for cell, t in zip(frame["entities"], texts, strict=True)]
        gold = [json.dumps(s, ensure_ascii=False) for s in spans]
        truth = [summary(s) for s in spans]
    elif "label" in frame:
        truth = frame["label"].astype(str).tolist()
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
                entities=None if pred.entities is None else to_json(pred.entities),
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
                        entities=None if gold is None else gold[offset + i],
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
    """Score stored requests with a challenger and store its shadow predictions (with its
    spans, for an extractor)."""
    from lifecycle.extraction.spans import to_json
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
                    entities=None if p.entities is None else to_json(p.entities),
                )
                for rid, p in zip(request_ids[offset : offset + batch], predictions, strict=True)
            ]
        )
    return len(texts)


def _spans(cell: Any, text: str) -> list[dict[str, Any]]:
    """A frame's gold spans (a list, or JSON text) as label, start, end, text dicts."""
    raw = json.loads(cell) if isinstance(cell, str) else cell
    if hasattr(raw, "tolist"):
        raw = raw.tolist()
    out = []
    for e in raw or []:
        start, end = int(e["start"]), int(e["end"])
        out.append({"label": str(e["label"]), "start": start, "end": end, "text": text[start:end]})
    return out
