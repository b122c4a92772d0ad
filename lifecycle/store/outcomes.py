"""The traffic store's reads for what on-call watches: answers that were right, last verdicts.

Part of ``TrafficStore`` (a mixin on ``StoreEngine``): the counts behind
the cost per correct answer (``lifecycle.serving.cost.cost_per_correct``) and the newest alert's
verdict, which the gateway turns into its monitor-status gauge. Both are aggregate queries
that return a handful of numbers, cheap enough for the gateway's periodic refresh.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, func, select

from lifecycle.store import schema
from lifecycle.store.engine import StoreEngine

#: The only feedback source that counts as truth here: the fallback's own label would
#: measure the fallback against itself.
HUMAN = "human"


class OutcomeReads(StoreEngine):
    """Reads for the cost per correct answer and the monitor status (see the module)."""

    def outcome_counts(self, specialist: str, *, last: int | None = None) -> dict[str, Any]:
        """How a specialist's answers fared: the fields of ``lifecycle.serving.cost.OutcomeCounts``.

        Over the newest ``last`` requests (all when None). The answer counted is the one the
        client got: the fallback's label when the request was escalated and the fallback
        answered, else the champion's. A request is labelled when a person labelled it (the
        latest person's label wins); labels from the fallback are not truth here.
        """
        r, f = schema.requests, schema.feedback
        inner = select(r.c.id, r.c.label, r.c.confidence, r.c.escalated, r.c.fallback_label)
        inner = inner.where(r.c.specialist == specialist)
        if last is not None:
            inner = inner.order_by(r.c.created_at.desc(), r.c.id.desc()).limit(last)
        win = inner.subquery("win")
        by_fallback = and_(win.c.escalated.is_(True), win.c.fallback_label.is_not(None))

        def total(condition: Any, value: Any = 1) -> Any:
            return func.coalesce(func.sum(case((condition, value), else_=0)), 0)

        totals = select(
            func.count().label("requests"),
            total(win.c.escalated.is_(True)).label("escalations"),
            total(by_fallback).label("fallback_answered"),
            total(~by_fallback, win.c.confidence).label("champion_confidence"),
        )
        truth = (
            select(f.c.label)
            .where(f.c.request_id == win.c.id, f.c.source == HUMAN)
            .order_by(f.c.created_at.desc(), f.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        # Driven by the (few) requests people labelled, not by a lookup per request.
        labelled_ids = select(f.c.request_id).where(
            f.c.specialist == specialist, f.c.source == HUMAN
        )
        rows = (
            select(
                win.c.label,
                win.c.confidence,
                win.c.fallback_label,
                by_fallback.label("by_fallback"),
                truth.label("truth"),
            )
            .where(win.c.id.in_(labelled_ids))
            .subquery("labelled")
        )
        fb = rows.c.by_fallback.is_(True)
        labelled = select(
            total(~fb).label("labelled_champion"),
            total(and_(~fb, rows.c.label == rows.c.truth)).label("correct_champion"),
            total(~fb, rows.c.confidence).label("labelled_champion_confidence"),
            total(fb).label("labelled_fallback"),
            total(and_(fb, rows.c.fallback_label == rows.c.truth)).label("correct_fallback"),
        )
        with self._reading() as conn:
            counts = dict(conn.execute(totals).one()._mapping)
            counts |= dict(conn.execute(labelled).one()._mapping)
        floats = ("champion_confidence", "labelled_champion_confidence")
        return {k: float(v) if k in floats else int(v) for k, v in counts.items()}

    def latest_alert_verdict(self, specialist: str, *, kind: str = "monitor") -> str | None:
        """The verdict of the newest alert of ``kind`` about ``specialist`` (None: never any).

        Monitor alerts are stored for every check that is not OK (repeats as suppressed), and
        an OK check after a problem stores ``RESOLVED``: the newest one is the current status.
        """
        a = schema.alerts
        stmt = (
            select(a.c.verdict)
            .where(a.c.specialist == specialist, a.c.kind == kind)
            .order_by(a.c.created_at.desc(), a.c.id.desc())
            .limit(1)
        )
        with self._reading() as conn:
            value = conn.execute(stmt).scalar()
        return None if value is None else str(value)
