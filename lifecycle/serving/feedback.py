"""The feedback service: people's labels checked and stored, and the two queues that ask
for them (the review queue, the ranked label requests).

It knows nothing of HTTP: the routes call it and map its errors (``FeedbackRefused`` to its
status, a ``StoreError`` to 503).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lifecycle.config.errors import LifecycleError, StoreError
from lifecycle.serving.api import FeedbackItem, ReviewItem
from lifecycle.serving.engine import Route
from lifecycle.serving.state import Gateway
from lifecycle.serving.traffic import commit, read_store, read_store_once_migrated

if TYPE_CHECKING:
    from lifecycle.labels.feedback import LabelSet
    from lifecycle.labels.requests import LabelRequests


class FeedbackRefused(LifecycleError):
    """A feedback call refused as a whole, nothing of it stored. ``status`` says why, as
    ``lifecycle.labels.feedback.refusal`` ranks it: 422 a malformed or out-of-set label, 404
    an unknown request id, 429 past the cap on proposed labels."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def record_feedback(
    gw: Gateway, name: str, route: Route, items: list[FeedbackItem], *, source: str
) -> list[str]:
    """Store the labels of ``items`` (all or none) and return the proposed ones among them.

    Raises ``FeedbackRefused`` for a call with any refused item, ``StoreError`` when the store
    cannot say what it needs to know, or cannot log the labels.
    """
    from lifecycle.labels.feedback import check_feedback, refusal
    from lifecycle.store import FeedbackRecord

    labels = await _label_set(gw, name, route, [i.label for i in items])
    owners = await _request_owners(gw, [i.request_id for i in items])
    checks = check_feedback([(i.request_id, i.label) for i in items], labels=labels, owners=owners)
    refused = refusal(checks)
    if refused is not None:
        raise FeedbackRefused(*refused)
    seq = gw.writer.submit_many(
        FeedbackRecord(request_id=item.request_id, specialist=name, label=item.label, source=source)
        for item in items
    )
    await commit(gw, seq)
    proposed = sorted({c.label for c in checks if c.proposed})
    gw.proposed_accepted.setdefault(name, set()).update(proposed)
    return proposed


async def _label_set(gw: Gateway, name: str, route: Route, given: list[str]) -> LabelSet:
    """What feedback for ``name`` is checked against.

    The proposed labels already stored are read only when the call brings a label outside the
    known set, so that everyday feedback costs no extra query.
    """
    from lifecycle.labels.feedback import LabelSet, known_labels

    spec = gw.specs[name]
    # A label the spec declares is accepted before any version knows it: that is how a
    # new intent gets labelled traffic to be retrained on under a closed policy.
    known = known_labels(
        champion=route.champion.labels,
        challenger=route.challenger.labels if route.challenger else (),
        declared=spec.labels,
        out_of_scope_label=spec.out_of_scope_label,
    )
    open_set = spec.labels_policy == "open"
    stored: set[str] = set(gw.proposed_accepted.get(name, ()))
    if open_set and not set(given) <= known | stored:
        # Before the writer's first write the database may have no tables yet, and then no
        # label either; any other failure leaves the cap unknowable: try again later.
        counts: dict[str, int] = await read_store_once_migrated(
            gw, gw.writer.store.label_counts, name, source=None, default={}
        )
        stored |= set(counts)
    return LabelSet(
        specialist=name,
        known=known,
        open=open_set,
        stored_proposed=frozenset(stored - known),
        max_proposed=gw.settings.max_proposed_labels,
    )


async def _request_owners(gw: Gateway, request_ids: list[str]) -> dict[str, str | None]:
    """The specialist of each request: in flight in the writer, else one store query for all."""
    owners: dict[str, str | None] = {i: gw.writer.known_request(i) for i in request_ids}
    missing = [i for i, owner in owners.items() if owner is None]
    if missing:
        # Before the writer's first write the database may have no tables, and every
        # request is still in flight: the ids not found there are unknown.
        owners.update(
            await read_store_once_migrated(
                gw, gw.writer.store.request_specialists, missing, default={}
            )
        )
    return owners


async def review_queue(gw: Gateway, name: str, *, limit: int, scan: int) -> list[ReviewItem]:
    """Escalated requests among the newest ``scan`` whose fallback left the label to people
    and that have none yet, newest first. Raises ``StoreError`` when the store cannot be read.
    """
    frame = await read_store(gw.writer.store.window, name, last=scan, with_embeddings=False)
    waiting = frame[
        frame["escalated"].astype(bool)
        & (frame["fallback_source"] == "review")
        & frame["true_label"].isna()
    ].iloc[::-1][:limit]
    return [
        ReviewItem(
            request_id=row.id,
            text=row.text if isinstance(row.text, str) else None,
            predicted=row.label,
            confidence=float(row.confidence),
            model_version=int(row.model_version),
        )
        for row in waiting.itertuples()
    ]


async def label_requests(gw: Gateway, name: str, route: Route, *, limit: int) -> LabelRequests:
    """The requests most worth a person's label (``lifecycle.labels.requests``). Raises
    ``StoreError`` when the store cannot be read."""
    from lifecycle.labels.requests import label_requests as ranked

    return await read_store(
        ranked,
        gw.writer.store,
        gw.specs[name],
        champion_version=route.champion.version,
        challenger_version=route.challenger.version if route.challenger else None,
        store_text=gw.settings.store_text,
        limit=limit,
        failures=(StoreError,),
    )
