"""Routes of the specialists resource: predict, feedback, review queue, label requests, listing.

Each route parses its input, calls the service below it (``predict``, ``feedback``) and maps
that service's errors to HTTP ones; a ``StoreError`` becomes a 503 in ``app``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query

from lifecycle.config.settings import Settings
from lifecycle.serving import feedback as feedback_service
from lifecycle.serving.api import (
    ErrorBody,
    FeedbackRequest,
    FeedbackResponse,
    LabelRequestItem,
    LabelRequestsResponse,
    PredictRequest,
    PredictResponse,
    ReviewResponse,
    ServedOut,
    SpecialistOut,
    SpecialistsResponse,
)
from lifecycle.serving.deps import ERRORS, GW, Admin, NamePath, known_or_error, route_or_error
from lifecycle.serving.outcomes import Outcome
from lifecycle.serving.predict import answer_texts
from lifecycle.serving.state import cost_of

router = APIRouter(tags=["specialists"])


@router.post(
    "/v1/specialists/{name}/predict",
    response_model=PredictResponse,
    responses=ERRORS,
    summary="Answer one or many texts with the specialist's champion (a label, or entities).",
)
async def predict(
    name: NamePath, body: PredictRequest, gw: GW, background: BackgroundTasks
) -> PredictResponse:
    """Each text gets a request id, a label, a calibrated confidence, the champion's version
    and whether it was escalated. A text under the specialist's confidence threshold goes to
    its fallback; if the fallback fails, the champion's answer is returned, flagged. Each text
    also gets the champion's out-of-scope score and verdict (None for a version without a
    detector); a text found out of scope is escalated as ``escalation.on_out_of_scope`` says.
    An extraction specialist also answers ``entities`` (character spans of the text, each with
    its confidence) and ``fields`` (per entity label, its most confident span's text); its
    label is their summary ('date+order_id', or '(none)'). Its text is escalated to the review
    queue (where it has one) when a span's confidence is under the threshold or a ``required``
    field is missing. When a challenger is loaded, the texts are also scored by it in shadow
    after the answer is sent.
    """
    route = route_or_error(gw, name)
    _check_limits(body.texts, gw.settings)
    answered = await answer_texts(gw, name, route, body.texts)
    if answered.shadow is not None:
        background.add_task(answered.shadow)
    return PredictResponse(specialist=name, predictions=answered.predictions)


@router.post(
    "/v1/specialists/{name}/feedback",
    response_model=FeedbackResponse,
    status_code=202,
    responses={**ERRORS, 429: {"model": ErrorBody}},
    summary="Record the true label (or entities) of earlier requests.",
)
async def feedback(name: NamePath, body: FeedbackRequest, gw: GW) -> FeedbackResponse:
    """Labels for earlier request ids, from a person (source 'human', the default) or from the
    fallback. A label is 1-100 printable characters without whitespace at its ends. Under the
    specialist's ``labels_policy: open`` (the default) a label the champion does not know is
    a proposed label: stored, and learned at a retrain once it has enough examples; past
    LIFECYCLE_MAX_PROPOSED_LABELS distinct proposed labels the call is a 429. Under ``closed``
    a label outside the set is a 422. An unknown request id is a 404. Nothing of a call with
    any refused item is stored. A repeated label replaces the earlier one (both are
    recorded).

    An extraction specialist's feedback sends ``entities`` instead of ``label``: the request's
    true spans, ``[{label, start, end, text?}]`` (``[]``: the text holds no entity); a label
    sent to an extractor, or entities to a classifier, is a 422 that says which to send. Where
    the gateway stores texts (LIFECYCLE_STORE_TEXT full) the spans are checked against the
    request's text: inside it, ``start < end``, ``text`` equal to the characters at
    ``start:end``, no overlaps; each problem is a 422 that says which span and why. Entity
    labels follow ``labels_policy`` as intents do."""
    route = route_or_error(gw, name)
    items = body.all_items()
    if not items:
        raise HTTPException(
            422,
            "give request_id with label (a classifier) or entities (an extractor), or a "
            "non-empty list of items",
        )
    try:
        proposed = await feedback_service.record_feedback(
            gw, name, route, items, source=body.source
        )
    except feedback_service.FeedbackRefused as exc:
        raise HTTPException(exc.status, str(exc)) from exc
    return FeedbackResponse(accepted=len(items), specialist=name, proposed_labels=proposed)


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
    known_or_error(gw, name)
    items = await feedback_service.review_queue(gw, name, limit=limit, scan=scan)
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
    those move the promotion gate), the least confident answers and requests answered with a
    label that surges against the champion's reference rows, in turn; requests a person
    already labelled are left out. Label them through the feedback route (or export them with
    ``lifecycle label-requests``). Needs the admin token: the texts are users' own words."""
    route = route_or_error(gw, name)
    found = await feedback_service.label_requests(gw, name, route, limit=limit)
    return LabelRequestsResponse(
        specialist=name,
        items=[LabelRequestItem(**i.as_dict()) for i in found.items],
        text_withheld=found.text_withheld,
        note=found.note,
    )


@router.get(
    "/v1/specialists",
    response_model=SpecialistsResponse,
    summary="What is loaded: task, champion and challenger versions, labels, status, cost.",
)
async def specialists(gw: GW) -> SpecialistsResponse:
    from lifecycle.labels.feedback import entity_label_counts, proposed_labels

    out = []
    for name, spec in gw.specs.items():
        route = gw.engine.routes.get(name)
        counters = gw.counters[name]
        cost, fallback_cost = cost_of(gw, name)
        outcome = gw.outcomes.get(name) or Outcome()
        given = outcome.label_counts
        if spec.task == "extraction":  # stored labels are summaries: count entity labels
            given = entity_label_counts(given)
        out.append(
            SpecialistOut(
                name=name,
                task=spec.task,
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
                proposed_labels=proposed_labels(given, route.champion.labels if route else ()),
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
