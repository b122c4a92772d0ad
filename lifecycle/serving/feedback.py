"""The feedback service: people's labels checked and stored, and the two queues that ask
for them (the review queue, the ranked label requests).

It knows nothing of HTTP: the routes call it and map its errors (``FeedbackRefused`` to its
status, a ``StoreError`` to 503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lifecycle.config.errors import LifecycleError, StoreError
from lifecycle.serving.api import EntityOut, FeedbackItem, ReviewItem
from lifecycle.serving.engine import Route
from lifecycle.serving.state import Gateway
from lifecycle.serving.traffic import commit, read_store, read_store_once_migrated

if TYPE_CHECKING:
    from lifecycle.labels.feedback import LabelSet
    from lifecycle.labels.requests import LabelRequests


#: How long an extractor's feedback waits for its requests to reach the database.
IN_FLIGHT_WAIT_S = 10.0


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

    A classifier's items carry a ``label``, an extractor's ``entities`` (checked against the
    request's stored text, and stored with their summary as the label); the other kind is
    refused with a 422 that says what to send. Raises ``FeedbackRefused`` for a call with any
    refused item, ``StoreError`` when the store cannot say what it needs to know, or cannot log
    the labels.
    """
    from lifecycle.labels.feedback import check_feedback, refusal

    spec = gw.specs[name]
    _check_kind(name, spec.task, items)
    if spec.task == "extraction":
        return await _record_entities(gw, name, route, items, source=source)
    pairs = [(i.request_id, i.label or "") for i in items]
    labels = await _label_set(gw, name, route, [label for _, label in pairs])
    owners = await _request_owners(gw, [i.request_id for i in items])
    checks = check_feedback(pairs, labels=labels, owners=owners)
    refused = refusal(checks)
    if refused is not None:
        raise FeedbackRefused(*refused)
    proposed = sorted({c.label for c in checks if c.proposed})
    await _store(gw, name, [(c.request_id, c.label, None) for c in checks], source, proposed)
    return proposed


def _check_kind(name: str, task: str, items: list[FeedbackItem]) -> None:
    """A classifier takes labels, an extractor spans: the other is a 422 that says which."""
    if task == "extraction" and any(i.entities is None for i in items):
        raise FeedbackRefused(
            422,
            f"{name!r} is an extraction specialist: send entities (a list of {{label, start, "
            "end, text}} spans; [] when the text holds none), not label",
        )
    if task != "extraction" and any(i.label is None for i in items):
        raise FeedbackRefused(
            422, f"{name!r} is a classifier: send label (its true label), not entities"
        )


async def _record_entities(
    gw: Gateway, name: str, route: Route, items: list[FeedbackItem], *, source: str
) -> list[str]:
    """An extractor's feedback: spans checked (``check_entity_feedback``), then stored."""
    from lifecycle.extraction.spans import to_json
    from lifecycle.labels.feedback import check_entity_feedback, refusal

    rows = [(i.request_id, [e.model_dump() for e in i.entities or ()]) for i in items]
    given = sorted({str(span["label"]) for _, spans in rows for span in spans})
    labels = await _label_set(gw, name, route, given)
    owners = await _request_owners(gw, [i.request_id for i in items])
    texts = await _request_texts(gw, [i.request_id for i in items])
    checks = check_entity_feedback(rows, labels=labels, owners=owners, texts=texts)
    refused = refusal(checks)
    if refused is not None:
        raise FeedbackRefused(*refused)
    proposed = sorted({label for c in checks for label in c.new_labels})
    stored = [(c.request_id, c.label, to_json(c.entities or ())) for c in checks]
    await _store(gw, name, stored, source, proposed)
    return proposed


async def _store(
    gw: Gateway,
    name: str,
    rows: Sequence[tuple[str, str, str | None]],
    source: str,
    proposed: list[str],
) -> None:
    """Log (request_id, label, entities JSON) rows as feedback and wait until durable."""
    from lifecycle.store import FeedbackRecord

    seq = gw.writer.submit_many(
        FeedbackRecord(
            request_id=request_id, specialist=name, label=label, source=source, entities=entities
        )
        for request_id, label, entities in rows
    )
    await commit(gw, seq)
    gw.proposed_accepted.setdefault(name, set()).update(proposed)


async def _label_set(gw: Gateway, name: str, route: Route, given: list[str]) -> LabelSet:
    """What feedback for ``name`` is checked against.

    The proposed labels already stored are read only when the call brings a label outside the
    known set, so that everyday feedback costs no extra query.
    """
    from lifecycle.labels.feedback import LabelSet, entity_label_counts, known_labels

    spec = gw.specs[name]
    # A label the spec declares is accepted before any version knows it: that is how a
    # new intent gets labelled traffic to be retrained on under a closed policy. An
    # extractor's labels are its entity labels.
    known = known_labels(
        champion=route.champion.labels,
        challenger=route.challenger.labels if route.challenger else (),
        declared=spec.label_set,
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
        # An extractor's stored labels are summaries of entity labels ('date+order_id').
        stored |= set(entity_label_counts(counts) if spec.task == "extraction" else counts)
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


async def _request_texts(gw: Gateway, request_ids: list[str]) -> dict[str, str | None]:
    """The stored text of each request, to check an extractor's spans against; empty when
    the store keeps no texts (LIFECYCLE_STORE_TEXT hash or none: spans are checked without).

    Requests still in the writer's hands are flushed to the database first. A request whose
    text the store should hold but cannot give (the database is away) is a ``StoreError``:
    spans are never stored unchecked where they could have been checked.
    """
    if gw.settings.store_text != "full":
        return {}
    if any(gw.writer.known_request(i) is not None for i in request_ids):
        await asyncio.to_thread(gw.writer.flush, IN_FLIGHT_WAIT_S)
    texts: dict[str, str | None] = await read_store_once_migrated(
        gw, gw.writer.store.request_texts, request_ids, default={}
    )
    if any(i not in texts and gw.writer.known_request(i) is not None for i in request_ids):
        raise StoreError(
            "the request's text is not in the traffic store yet, so its spans cannot be "
            "checked; send the feedback again later"
        )
    return texts


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
            entities=_entities_out(row.entities),
            confidence=float(row.confidence),
            model_version=int(row.model_version),
        )
        for row in waiting.itertuples()
    ]


async def label_requests(gw: Gateway, name: str, route: Route, *, limit: int) -> LabelRequests:
    """The requests most worth a person's label (``lifecycle.labels.requests``). Raises
    ``StoreError`` when the store cannot be read."""
    from lifecycle.labels.requests import label_requests as ranked

    spec = gw.specs[name]
    shares = (
        await gw.sync.reference_shares(name, route.champion.version)
        if spec.task == "classification"
        else None
    )
    return await read_store(
        ranked,
        gw.writer.store,
        spec,
        champion_version=route.champion.version,
        challenger_version=route.challenger.version if route.challenger else None,
        store_text=gw.settings.store_text,
        limit=limit,
        expected_shares=shares,
        failures=(StoreError,),
    )


def _entities_out(raw: str | None) -> list[EntityOut] | None:
    """Stored spans (JSON) as the API shows them; None for a classifier's row."""
    from lifecycle.extraction.spans import from_json

    return None if raw is None else [EntityOut.of(e) for e in from_json(raw)]
