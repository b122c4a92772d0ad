"""The traffic store's reads over windows of time, for the monitors and the promotion gate.

Part of ``TrafficStore`` (a mixin on ``StoreEngine``): a specialist's requests with their
effective true labels (``window``), champion and challenger side by side (``shadow_pairs``),
the counts the gate needs (``shadow_failure_count``, ``labels_since``) and ``alerts``. Frames
are pandas, shaped for the monitors. The effective true label of a request is decided here,
in SQL, once: a human label beats a fallback label; among labels of the same rank the latest
wins.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, case, func, select

from lifecycle.store import schema
from lifecycle.store.engine import StoreEngine
from lifecycle.store.records import as_utc, decode_embedding

if TYPE_CHECKING:
    import pandas as pd


class WindowReads(StoreEngine):
    """Monitor and gate reads over a time window (see the module)."""

    def window(
        self,
        specialist: str,
        *,
        last: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        model_version: int | None = None,
        with_embeddings: bool = True,
    ) -> pd.DataFrame:
        """A specialist's requests with their effective true labels, oldest first.

        ``since`` is inclusive and ``until`` exclusive; ``last`` keeps the newest N rows that
        pass the other filters. Columns: id, created_at (UTC), text, text_sha256, label (the
        answer), confidence, model_version, latency_ms, escalated, fallback_label,
        fallback_source, fallback_latency_ms, flagged, ood_score (float; NaN without a
        detector), out_of_scope (pandas' nullable ``boolean``: <NA> without a detector, so
        ``.fillna(False)`` before numpy), entities (an extractor's spans as JSON, None for a
        classifier), true_label and true_label_source (NaN without feedback), true_entities
        (the effective feedback's spans as JSON; None when unlabelled or labelled as a
        classifier's) and, when asked, embedding (a float32 array per row, None if absent).
        ``lifecycle.extraction.spans.from_json`` reads the entity columns.
        """
        if last is not None and last < 0:
            raise ValueError("last must be >= 0")
        r = schema.requests
        columns = [
            r.c.id,
            r.c.created_at,
            r.c.text,
            r.c.text_sha256,
            r.c.label,
            r.c.confidence,
            r.c.model_version,
            r.c.latency_ms,
            r.c.escalated,
            r.c.fallback_label,
            r.c.fallback_source,
            r.c.fallback_latency_ms,
            r.c.flagged,
            r.c.ood_score,
            r.c.out_of_scope,
            r.c.entities,
        ]
        if with_embeddings:
            columns.append(r.c.embedding)
        inner = select(*columns).where(r.c.specialist == specialist)
        inner = _time_filter(inner, r.c.created_at, since=since, until=until)
        if model_version is not None:
            inner = inner.where(r.c.model_version == model_version)
        if last is not None:
            inner = inner.order_by(r.c.created_at.desc(), r.c.id.desc()).limit(last)
        win = inner.cte("win")
        truth, best = _effective_feedback(win.c.id)
        stmt = (
            select(
                *[c for c in win.c if c.name != "embedding"],
                truth.c.label.label("true_label"),
                truth.c.source.label("true_label_source"),
                truth.c.entities.label("true_entities"),
                *([win.c.embedding] if with_embeddings else []),
            )
            .select_from(win.outerjoin(truth, best))
            .order_by(win.c.created_at, win.c.id)
        )
        frame = self._frame(stmt)
        _cast(frame, bool, ("escalated", "flagged"))
        _cast(frame, "int64", ("model_version",))
        _cast(frame, float, ("confidence", "latency_ms", "fallback_latency_ms", "ood_score"))
        # Nullable: a version without a detector says nothing, which is neither True nor False.
        _cast(frame, "boolean", ("out_of_scope",))
        _nan_for_missing(
            frame, ("fallback_label", "fallback_source", "true_label", "true_label_source")
        )
        _none_for_missing(frame, ("entities", "true_entities"))
        if with_embeddings:
            frame["embedding"] = _decoded(frame["embedding"])
        return frame

    def shadow_pairs(
        self,
        specialist: str,
        *,
        challenger_version: int,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> pd.DataFrame:
        """Champion and challenger answers side by side, one row per shadowed request.

        Columns: request_id, created_at (the request's), champion_version, champion_label,
        champion_confidence, champion_latency_ms (the request's, end to end),
        challenger_version, challenger_label, challenger_confidence, challenger_latency_ms
        (queueing included: shadow work waits for idle turns), escalated, true_label,
        true_label_source (NaN without feedback), and an extractor's spans as JSON:
        champion_entities, challenger_entities, true_entities (None for a classifier, and
        true_entities None without feedback). Oldest first. A shadow prediction whose request
        row is not stored yet is left out.
        """
        r, s = schema.requests, schema.shadow_predictions
        truth, best = _effective_feedback(r.c.id)
        stmt = (
            select(
                r.c.id.label("request_id"),
                r.c.created_at,
                r.c.model_version.label("champion_version"),
                r.c.label.label("champion_label"),
                r.c.confidence.label("champion_confidence"),
                r.c.latency_ms.label("champion_latency_ms"),
                s.c.model_version.label("challenger_version"),
                s.c.label.label("challenger_label"),
                s.c.confidence.label("challenger_confidence"),
                s.c.latency_ms.label("challenger_latency_ms"),
                r.c.escalated,
                truth.c.label.label("true_label"),
                truth.c.source.label("true_label_source"),
                r.c.entities.label("champion_entities"),
                s.c.entities.label("challenger_entities"),
                truth.c.entities.label("true_entities"),
            )
            .select_from(s.join(r, r.c.id == s.c.request_id).outerjoin(truth, best))
            .where(s.c.specialist == specialist, s.c.model_version == challenger_version)
            .order_by(r.c.created_at, r.c.id)
        )
        stmt = _time_filter(stmt, r.c.created_at, since=since, until=until)
        frame = self._frame(stmt)
        _cast(frame, bool, ("escalated",))
        _cast(frame, "int64", ("champion_version", "challenger_version"))
        _cast(
            frame,
            float,
            (
                "champion_confidence",
                "challenger_confidence",
                "champion_latency_ms",
                "challenger_latency_ms",
            ),
        )
        _nan_for_missing(frame, ("true_label", "true_label_source"))
        _none_for_missing(frame, ("champion_entities", "challenger_entities", "true_entities"))
        return frame

    def shadow_failure_count(
        self,
        specialist: str,
        *,
        challenger_version: int,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many shadow calls of this challenger raised (each request counted once)."""
        sf = schema.shadow_failures
        stmt = (
            select(func.count())
            .select_from(sf)
            .where(sf.c.specialist == specialist, sf.c.model_version == challenger_version)
        )
        stmt = _time_filter(stmt, sf.c.created_at, since=since, until=until)
        with self._reading() as conn:
            return int(conn.execute(stmt).scalar() or 0)

    def labels_since(
        self, specialist: str, *, since: datetime | None = None, source: str = "human"
    ) -> int:
        """Requests of a specialist that got a ``source`` label at or after ``since`` (by the
        label's time, each request once): one count over the feedback table, for the gate's
        supersede rule."""
        f = schema.feedback
        stmt = select(func.count(func.distinct(f.c.request_id))).where(
            f.c.specialist == specialist, f.c.source == source
        )
        stmt = _time_filter(stmt, f.c.created_at, since=since, until=None)
        with self._reading() as conn:
            return int(conn.execute(stmt).scalar() or 0)

    def alerts(
        self,
        specialist: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> pd.DataFrame:
        """Alerts, oldest first: id, specialist, kind, verdict, payload (a dict), created_at."""
        a = schema.alerts
        stmt = select(a.c.id, a.c.specialist, a.c.kind, a.c.verdict, a.c.payload, a.c.created_at)
        if specialist is not None:
            stmt = stmt.where(a.c.specialist == specialist)
        stmt = _time_filter(stmt, a.c.created_at, since=since, until=until)
        frame = self._frame(stmt.order_by(a.c.created_at, a.c.id))
        frame["payload"] = [json.loads(p) for p in frame["payload"]]
        return frame

    def _frame(self, stmt: Select[Any]) -> pd.DataFrame:
        import pandas as pd

        with self._reading() as conn:
            result = conn.execute(stmt)
            keys = list(result.keys())
            rows = result.all()
        frame = pd.DataFrame([tuple(row) for row in rows], columns=keys)
        if "created_at" in frame:
            frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
        return frame


def _time_filter(
    stmt: Select[Any], column: Any, *, since: datetime | None, until: datetime | None
) -> Select[Any]:
    if since is not None:
        stmt = stmt.where(column >= as_utc(since, name="since"))
    if until is not None:
        stmt = stmt.where(column < as_utc(until, name="until"))
    return stmt


def _effective_feedback(request_id: Any) -> tuple[Any, Any]:
    """The feedback row holding a request's effective label, to LEFT JOIN on (alias, ON clause).

    A human label beats a fallback label whenever given; within a source the latest wins (by
    ``created_at``, then by insertion order). A correlated ``LIMIT 1`` on the request_id index
    per request: a ranked subquery joined back cannot use an index and was quadratic on SQLite.
    """
    f = schema.feedback
    best = (
        select(f.c.id)
        .where(f.c.request_id == request_id)
        .order_by(
            case((f.c.source == "human", 0), else_=1),
            f.c.created_at.desc(),
            f.c.id.desc(),
        )
        .limit(1)
        .scalar_subquery()
    )
    truth = f.alias("truth")
    return truth, truth.c.id == best


def _cast(frame: pd.DataFrame, dtype: Any, columns: Sequence[str]) -> None:
    for name in columns:
        frame[name] = frame[name].astype(dtype)


def _nan_for_missing(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    import numpy as np

    for name in columns:
        frame[name] = frame[name].astype(object).where(frame[name].notna(), np.nan)


def _none_for_missing(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """JSON text columns as objects holding str or None (never NaN), on every backend and for
    an empty frame alike."""
    for name in columns:
        frame[name] = frame[name].astype(object).where(frame[name].notna(), None)


def _decoded(values: pd.Series) -> Any:
    import numpy as np

    out = np.empty(len(values), dtype=object)
    for i, raw in enumerate(values):
        out[i] = None if raw is None else decode_embedding(bytes(raw))
    return out
