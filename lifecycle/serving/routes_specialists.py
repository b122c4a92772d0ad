"""Routes of the specialists resource: predict, feedback, review queue, listing."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query

from lifecycle.errors import StoreError
from lifecycle.schemas import Prediction
from lifecycle.serving.api import (
    FeedbackRequest,
    FeedbackResponse,
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
from lifecycle.settings import Settings
from lifecycle.spec import SpecialistSpec

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
    responses=ERRORS,
    summary="Record the true label of earlier requests.",
)
async def feedback(name: NamePath, body: FeedbackRequest, gw: GW) -> FeedbackResponse:
    """Labels for earlier request ids, from a person (source 'human', the default) or from the
    fallback. An unknown request id is a 404 and a label outside the specialist's set a 422;
    nothing of a call with either is stored. A repeated label replaces the earlier one (both
    are recorded)."""
    from lifecycle.store import FeedbackRecord

    route = route_or_error(gw, name)
    items = body.all_items()
    if not items:
        raise HTTPException(422, "give request_id and label, or a non-empty list of items")
    spec = gw.specs[name]
    # A label the spec declares is accepted before any version knows it: that is how a
    # new intent gets labelled traffic to be retrained on.
    labels = (
        set(route.champion.labels)
        | set(route.challenger.labels if route.challenger else ())
        | set(spec.labels or ())
    )
    wrong = sorted({i.label for i in items if i.label not in labels})
    if wrong:
        raise HTTPException(422, f"labels not in {name!r}'s label set: {', '.join(wrong[:10])}")
    for item in items:
        owner = await _request_owner(gw, item.request_id)
        if owner != name:
            raise HTTPException(404, f"no request {item.request_id} for specialist {name!r}")
    seq = gw.writer.submit_many(
        FeedbackRecord(
            request_id=item.request_id, specialist=name, label=item.label, source=body.source
        )
        for item in items
    )
    await _commit(gw, seq)
    return FeedbackResponse(accepted=len(items), specialist=name)


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
    "/v1/specialists",
    response_model=SpecialistsResponse,
    summary="What is loaded: champion and challenger versions, labels, status, cost.",
)
async def specialists(gw: GW) -> SpecialistsResponse:
    out = []
    for name, spec in gw.specs.items():
        route = gw.engine.routes.get(name)
        counters = gw.counters[name]
        cost, fallback_cost = cost_of(gw, name)
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
                **(gw.outcomes.get(name) or Outcome()).listing(),
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
    if pred.out_of_scope:
        policy = spec.escalation.on_out_of_scope
        if policy == "review" and spec.name in gw.review_queues:
            return gw.review_queues[spec.name]
        if policy == "fallback" and fallback is not None:
            return fallback
    if fallback is not None and pred.confidence < spec.escalation.confidence_threshold:
        return fallback
    return None


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
            out_of_scope=pred.out_of_scope,
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

    if not gw.engine.shadow(texts, challenger.adapter_id, done, failed):
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


async def _request_owner(gw: Gateway, request_id: str) -> str | None:
    owner = gw.writer.known_request(request_id)
    if owner is not None:
        return owner
    try:
        return await asyncio.to_thread(gw.writer.store.request_specialist, request_id)
    except Exception as exc:
        raise HTTPException(
            503, "the traffic store cannot be read right now; send the label again later"
        ) from exc
