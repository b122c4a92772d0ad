"""Routes of the specialists resource: predict, feedback, review queue, label requests, listing."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query

from lifecycle.config.errors import StoreError
from lifecycle.config.settings import Settings
from lifecycle.config.spec import SpecialistSpec
from lifecycle.model.artifacts import Prediction
from lifecycle.serving.api import (
    ErrorBody,
    FeedbackRequest,
    FeedbackResponse,
    LabelRequestItem,
    LabelRequestsResponse,
    PredictionOut,
    PredictRequest,
    PredictResponse,
    ReviewItem,
    ReviewResponse,
    ServedOut,
    SpecialistOut,
    SpecialistsResponse,
)
from lifecycle.serving.deps import ERRORS, GW, Admin, NamePath, route_or_error
from lifecycle.serving.engine import Route
from lifecycle.serving.outcomes import Outcome
from lifecycle.serving.state import Gateway, cost_of

router = APIRouter(tags=["specialists"])


@router.post(
    "/v1/specialists/{name}/predict",
    response_model=PredictResponse,
    responses=ERRORS,
    summary="Classify one or many texts with the specialist's champion.",
)
async def predict(
    name: NamePath, body: PredictRequest, gw: GW, background: BackgroundTasks
) -> PredictResponse:
    """Each text gets a request id, a label, a calibrated confidence, the champion's version
    and whether it was escalated. A text under the specialist's confidence threshold goes to
    its fallback; if the fallback fails, the champion's answer is returned, flagged. Each text
    also gets the champion's out-of-scope score and verdict (None for a version without a
    detector); a text found out of scope is escalated as ``escalation.on_out_of_scope`` says.
    When a challenger is loaded, the texts are also scored by it in shadow after the answer is
    sent.
    """
    started = time.perf_counter()
    route = route_or_error(gw, name)
    _check_limits(body.texts, gw.settings)
    champion = route.champion
    predictions = await gw.engine.predict(body.texts, [champion.adapter_id] * len(body.texts))
    spec = gw.specs[name]
    outs = await _escalate(gw, spec, route, body.texts, predictions)
    elapsed = time.perf_counter() - started
    records = []
    for text, pred, (out, fallback_answer) in zip(body.texts, predictions, outs, strict=True):
        records.append(
            _request_record(gw, name, champion.version, text, pred, out, fallback_answer, elapsed)
        )
    seq = gw.writer.submit_many(records)
    for out, (_, answer) in zip([o for o, _ in outs], outs, strict=True):
        if answer is not None and answer.ok and answer.label is not None:
            seq = gw.writer.submit(_fallback_feedback(name, out.request_id, answer.label))
    await _commit(gw, seq)
    counters = gw.counters[name]
    counters.requests += 1
    counters.escalations += sum(1 for o, _ in outs if o.escalated)
    out_of_scope = sum(1 for p in predictions if p.out_of_scope)
    if out_of_scope:
        gw.metrics.out_of_scope.labels(name).inc(out_of_scope)
    version = str(champion.version)
    gw.metrics.requests.labels(name, version).inc()
    gw.metrics.texts.labels(name, version).inc(len(body.texts))
    gw.metrics.latency.labels(name).observe(elapsed)
    if route.challenger is not None and random.random() < spec.promotion.shadow_sample_rate:
        ids = [o.request_id for o, _ in outs]
        background.add_task(_shadow, gw, name, route, body.texts, ids, predictions)
    return PredictResponse(specialist=name, predictions=[o for o, _ in outs])


@router.post(
    "/v1/specialists/{name}/feedback",
    response_model=FeedbackResponse,
    status_code=202,
    responses={**ERRORS, 429: {"model": ErrorBody}},
    summary="Record the true label of earlier requests.",
)
async def feedback(name: NamePath, body: FeedbackRequest, gw: GW) -> FeedbackResponse:
    """Labels for earlier request ids, from a person (source 'human', the default) or from the
    fallback. A label is 1-100 printable characters without whitespace at its ends. Under the
    specialist's ``labels_policy: open`` (the default) a label the champion does not know is
    a proposed label: stored, and learned at a retrain once it has enough examples; past
    LIFECYCLE_MAX_PROPOSED_LABELS distinct proposed labels the call is a 429. Under ``closed``
    a label outside the set is a 422. An unknown request id is a 404. Nothing of a call with
    any refused item is stored. A repeated label replaces the earlier one (both are
    recorded)."""
    from lifecycle.labels.feedback import check_feedback, refusal
    from lifecycle.store import FeedbackRecord

    route = route_or_error(gw, name)
    items = body.all_items()
    if not items:
        raise HTTPException(422, "give request_id and label, or a non-empty list of items")
    labels = await _label_set(gw, name, route, [i.label for i in items])
    owners = await _request_owners(gw, [i.request_id for i in items])
    checks = check_feedback([(i.request_id, i.label) for i in items], labels=labels, owners=owners)
    refused = refusal(checks)
    if refused is not None:
        raise HTTPException(*refused)
    seq = gw.writer.submit_many(
        FeedbackRecord(
            request_id=item.request_id, specialist=name, label=item.label, source=body.source
        )
        for item in items
    )
    await _commit(gw, seq)
    proposed = sorted({c.label for c in checks if c.proposed})
    gw.proposed_accepted.setdefault(name, set()).update(proposed)
    return FeedbackResponse(accepted=len(items), specialist=name, proposed_labels=proposed)


async def _label_set(gw: Gateway, name: str, route: Route, given: list[str]) -> Any:
    """What feedback for ``name`` is checked against (``lifecycle.labels.feedback.LabelSet``).

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
        try:
            stored |= set(await asyncio.to_thread(gw.writer.store.label_counts, name, source=None))
        except Exception as exc:
            # Before the writer's first write the database may have no tables yet, and then
            # no label either; any other failure leaves the cap unknowable: try again later.
            if getattr(gw.writer, "migrated", True):
                raise HTTPException(
                    503, "the traffic store cannot be read right now; send the label again later"
                ) from exc
    return LabelSet(
        specialist=name,
        known=known,
        open=open_set,
        stored_proposed=frozenset(stored - known),
        max_proposed=gw.settings.max_proposed_labels,
    )


@router.get(
    "/v1/specialists/{name}/review",
    response_model=ReviewResponse,
    responses=ERRORS,
    dependencies=[Admin],
    summary="Escalated requests waiting for a person's label (the review queue).",
)
async def review(
    name: NamePath,
    gw: GW,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    scan: Annotated[int, Query(ge=1, le=100_000, description="Recent requests looked at.")] = 5000,
) -> ReviewResponse:
    """Requests the champion was unsure of, or found out of scope, and whose fallback left the
    label to people, newest first, without a label yet. Label them through the feedback route.
    Needs the admin token: the texts are users' own words."""
    if name not in gw.specs:
        raise HTTPException(404, f"no specialist named {name!r}; see GET /v1/specialists")
    try:
        frame = await asyncio.to_thread(
            gw.writer.store.window, name, last=scan, with_embeddings=False
        )
    except Exception as exc:
        raise HTTPException(503, "the traffic store cannot be read right now") from exc
    waiting = frame[
        frame["escalated"].astype(bool)
        & (frame["fallback_source"] == "review")
        & frame["true_label"].isna()
    ].iloc[::-1][:limit]
    items = [
        ReviewItem(
            request_id=row.id,
            text=row.text if isinstance(row.text, str) else None,
            predicted=row.label,
            confidence=float(row.confidence),
            model_version=int(row.model_version),
        )
        for row in waiting.itertuples()
    ]
    return ReviewResponse(specialist=name, items=items)


@router.get(
    "/v1/specialists/{name}/label-requests",
    response_model=LabelRequestsResponse,
    responses=ERRORS,
    dependencies=[Admin],
    summary="The requests most worth a person's label, ranked.",
)
async def label_requests(
    name: NamePath,
    gw: GW,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> LabelRequestsResponse:
    """From the champion's newest window: out-of-scope requests spread across their clusters
    (each group of new traffic gets labels), champion/challenger disagreements in shadow (only
    those move the promotion gate) and the least confident answers, in turn; requests a person
    already labelled are left out. Label them through the feedback route (or export them with
    ``lifecycle label-requests``). Needs the admin token: the texts are users' own words."""
    from lifecycle.labels.requests import label_requests as ranked

    route = route_or_error(gw, name)
    try:
        found = await asyncio.to_thread(
            ranked,
            gw.writer.store,
            gw.specs[name],
            champion_version=route.champion.version,
            challenger_version=route.challenger.version if route.challenger else None,
            store_text=gw.settings.store_text,
            limit=limit,
        )
    except StoreError as exc:
        raise HTTPException(503, "the traffic store cannot be read right now") from exc
    return LabelRequestsResponse(
        specialist=name,
        items=[LabelRequestItem(**i.as_dict()) for i in found.items],
        text_withheld=found.text_withheld,
        note=found.note,
    )


@router.get(
    "/v1/specialists",
    response_model=SpecialistsResponse,
    summary="What is loaded: champion and challenger versions, labels, status, cost.",
)
async def specialists(gw: GW) -> SpecialistsResponse:
    from lifecycle.labels.feedback import proposed_labels

    out = []
    for name, spec in gw.specs.items():
        route = gw.engine.routes.get(name)
        counters = gw.counters[name]
        cost, fallback_cost = cost_of(gw, name)
        outcome = gw.outcomes.get(name) or Outcome()
        out.append(
            SpecialistOut(
                name=name,
                status="serving" if route else gw.sync.state.unavailable.get(name, "loading"),
                champion=ServedOut(
                    version=route.champion.version, adapter_id=route.champion.adapter_id
                )
                if route
                else None,
                challenger=ServedOut(
                    version=route.challenger.version, adapter_id=route.challenger.adapter_id
                )
                if route and route.challenger
                else None,
                labels=list(route.champion.labels) if route else [],
                escalation_threshold=spec.escalation.confidence_threshold,
                requests=counters.requests,
                escalations=counters.escalations,
                estimated_cost_per_1k=cost,
                estimated_cost_per_1k_fallback_only=fallback_cost,
                proposed_labels=proposed_labels(
                    outcome.label_counts, route.champion.labels if route else ()
                ),
                **outcome.listing(),
            )
        )
    return SpecialistsResponse(specialists=out, registry_up=gw.sync.state.registry_up)


def _check_limits(texts: list[str], settings: Settings) -> None:
    if len(texts) > settings.max_texts_per_request:
        raise HTTPException(
            413, f"{len(texts)} texts in one call; the limit is {settings.max_texts_per_request}"
        )
    long = [i for i, t in enumerate(texts) if len(t) > settings.max_text_chars]
    if long:
        raise HTTPException(
            413,
            f"texts at positions {long[:10]} are longer than {settings.max_text_chars} characters",
        )


def _asked(gw: Gateway, spec: SpecialistSpec, pred: Prediction) -> Any:
    """The fallback that answers this text, or None when the champion's answer stands.

    An out-of-scope text follows ``escalation.on_out_of_scope`` first: 'review' queues it for
    people even when the specialist's fallback is openai or none (a person can say what it is,
    or that it is a new intent, where a model told to pick one of the labels picks one);
    'fallback' sends it to the specialist's fallback, if it has one, as a low confidence does.
    Otherwise, and for 'none', the confidence threshold decides.
    """
    fallback = gw.fallbacks.get(spec.name)
    if pred.out_of_scope or _says_out_of_scope(spec, pred):
        policy = spec.escalation.on_out_of_scope
        if policy == "review" and spec.name in gw.review_queues:
            return gw.review_queues[spec.name]
        if policy == "fallback" and fallback is not None:
            return fallback
    if fallback is not None and pred.confidence < spec.escalation.confidence_threshold:
        return fallback
    return None


def _says_out_of_scope(spec: SpecialistSpec, pred: Prediction) -> bool:
    """The champion answered the spec's ``out_of_scope_label``: it learned to say 'not mine'."""
    return spec.out_of_scope_label is not None and pred.label == spec.out_of_scope_label


async def _escalate(
    gw: Gateway, spec: SpecialistSpec, route: Route, texts: list[str], predictions: list[Prediction]
) -> list[tuple[PredictionOut, Any]]:
    version = route.champion.version

    async def one(text: str, pred: Prediction) -> tuple[PredictionOut, Any]:
        request_id = uuid.uuid4().hex
        out = PredictionOut(
            request_id=request_id,
            label=pred.label,
            confidence=pred.confidence,
            model_version=version,
            escalated=False,
            source="specialist",
            out_of_scope=True if _says_out_of_scope(spec, pred) else pred.out_of_scope,
            ood_score=pred.ood_score,
        )
        fallback = _asked(gw, spec, pred)
        if fallback is None:
            return out, None
        answer = await fallback.classify(
            text, labels=route.champion.labels, specialist=spec.name, description=spec.description
        )
        outcome = "ok" if answer.ok and answer.label else ("queued" if answer.ok else "failed")
        gw.metrics.escalations.labels(spec.name, answer.source, outcome).inc()
        if answer.ok and answer.label is not None:
            return out.model_copy(
                update={"escalated": True, "label": answer.label, "source": answer.source}
            ), answer
        # Review queue (no label yet) or a failed fallback: the champion's answer stands.
        return out.model_copy(update={"escalated": True, "flagged": not answer.ok}), answer

    return list(await asyncio.gather(*(one(t, p) for t, p in zip(texts, predictions, strict=True))))


def _request_record(
    gw: Gateway,
    name: str,
    version: int,
    text: str,
    pred: Prediction,
    out: PredictionOut,
    answer: Any,
    elapsed: float,
) -> Any:
    from lifecycle.store import RequestRecord

    mode = gw.settings.store_text
    return RequestRecord(
        id=out.request_id,
        specialist=name,
        model_version=version,
        text=text if mode == "full" else None,
        text_sha256=hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        if mode != "none"
        else None,
        label=pred.label,
        confidence=pred.confidence,
        embedding=pred.embedding,
        latency_ms=elapsed * 1000.0,
        escalated=out.escalated,
        fallback_label=answer.label if answer is not None else None,
        fallback_source=answer.source if answer is not None else None,
        fallback_latency_ms=answer.latency_ms if answer is not None else None,
        flagged=out.flagged,
        ood_score=pred.ood_score,
        out_of_scope=pred.out_of_scope,
    )


def _fallback_feedback(name: str, request_id: str, label: str) -> Any:
    from lifecycle.store import FeedbackRecord

    return FeedbackRecord(request_id=request_id, specialist=name, label=label, source="fallback")


def _shadow(
    gw: Gateway,
    name: str,
    route: Route,
    texts: list[str],
    request_ids: list[str],
    champion: list[Prediction],
) -> None:
    from lifecycle.store import ShadowFailureRecord, ShadowRecord

    challenger = route.challenger
    assert challenger is not None
    queued = time.perf_counter()

    def done(offset: int, preds: list[Prediction]) -> None:
        latency_ms = (time.perf_counter() - queued) * 1000.0
        agree = 0
        end = offset + len(preds)
        for request_id, pred, champ in zip(
            request_ids[offset:end], preds, champion[offset:end], strict=True
        ):
            agree += pred.label == champ.label
            gw.writer.submit(
                ShadowRecord(
                    request_id=request_id,
                    specialist=name,
                    model_version=challenger.version,
                    label=pred.label,
                    confidence=pred.confidence,
                    latency_ms=latency_ms,
                )
            )
        version = str(challenger.version)
        gw.metrics.shadow_predictions.labels(name, version).inc(len(preds))
        gw.metrics.shadow_agreement.labels(name, version).inc(agree)

    def failed(offset: int, count: int, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        for request_id in request_ids[offset : offset + count]:
            gw.writer.submit(
                ShadowFailureRecord(
                    request_id=request_id,
                    specialist=name,
                    model_version=challenger.version,
                    error=error,
                )
            )
        gw.metrics.shadow_errors.labels(name, str(challenger.version)).inc(count)

    def discarded(offset: int, count: int) -> None:
        gw.metrics.shadow_discarded.labels(name).inc(count)

    if not gw.engine.shadow(texts, challenger.adapter_id, done, failed, discarded):
        gw.metrics.shadow_dropped.labels(name).inc()  # a request with some shadow work dropped


async def _commit(gw: Gateway, seq: int) -> None:
    """Wait until what was just accepted is on disk (traffic_durability), before answering."""
    if gw.settings.traffic_durability == "memory":
        return
    try:
        await asyncio.to_thread(gw.writer.commit, seq)
    except StoreError as exc:
        # The records stay queued for the database, but the client is not told "stored".
        raise HTTPException(503, f"the traffic log cannot be written: {exc}") from exc


async def _request_owners(gw: Gateway, request_ids: list[str]) -> dict[str, str | None]:
    """The specialist of each request: in flight in the writer, else one store query for all."""
    owners: dict[str, str | None] = {i: gw.writer.known_request(i) for i in request_ids}
    missing = [i for i, owner in owners.items() if owner is None]
    if missing:
        try:
            owners.update(await asyncio.to_thread(gw.writer.store.request_specialists, missing))
        except Exception as exc:
            # Before the writer's first write the database may have no tables, and every
            # request is still in flight: the ids not found there are unknown.
            if getattr(gw.writer, "migrated", True):
                raise HTTPException(
                    503, "the traffic store cannot be read right now; send the label again later"
                ) from exc
    return owners
