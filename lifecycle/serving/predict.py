"""The predict service: a call's texts answered by the champion, escalated where the
specialist says, logged to the traffic store and mirrored to the challenger in shadow.

It knows nothing of HTTP: the route checks the input, calls ``answer_texts`` and maps its
errors (a ``StoreError`` is a 503).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lifecycle.config.spec import SpecialistSpec
from lifecycle.extraction.spans import fields, keys, to_json
from lifecycle.model.artifacts import Prediction
from lifecycle.serving.api import EntityOut, PredictionOut
from lifecycle.serving.engine import Route
from lifecycle.serving.state import Gateway
from lifecycle.serving.traffic import commit

if TYPE_CHECKING:
    from lifecycle.serving.fallback import Fallback, FallbackAnswer
    from lifecycle.store import FeedbackRecord, RequestRecord

#: One text's answer, and what its fallback said (None: the champion's answer stood alone).
Escalated = tuple[PredictionOut, "FallbackAnswer | None"]


@dataclass(frozen=True)
class Answered:
    """What a predict call answers, and the shadow work to run once the answer is sent."""

    predictions: list[PredictionOut]
    #: Queues the texts for the challenger; None when none is loaded or sampling left it out.
    #: A coroutine, so that Starlette runs it on the event loop, which owns the shadow queue
    #: (a plain function would run in its threadpool, and asyncio queues are not thread-safe).
    shadow: Callable[[], Awaitable[None]] | None = None


async def answer_texts(gw: Gateway, name: str, route: Route, texts: list[str]) -> Answered:
    """Each text gets a request id, a label, a calibrated confidence, the champion's version
    and whether it was escalated, an extractor's answer also its spans and fields; the call
    is logged before it is answered (as durably as LIFECYCLE_TRAFFIC_DURABILITY says).
    Raises ``StoreError`` when the log refuses it."""
    started = time.perf_counter()
    champion = route.champion
    predictions = await gw.engine.predict(texts, [champion.adapter_id] * len(texts))
    spec = gw.specs[name]
    outs = await _escalate(gw, spec, route, texts, predictions)
    elapsed = time.perf_counter() - started
    seq = gw.writer.submit_many(
        [
            _request_record(gw, name, champion.version, text, pred, out, reply, elapsed)
            for text, pred, (out, reply) in zip(texts, predictions, outs, strict=True)
        ]
    )
    for out, reply in outs:
        if reply is not None and reply.ok and reply.label is not None:
            seq = gw.writer.submit(_fallback_feedback(name, out.request_id, reply.label))
    await commit(gw, seq)
    counters = gw.counters[name]
    counters.requests += 1
    counters.escalations += sum(1 for o, _ in outs if o.escalated)
    out_of_scope = sum(1 for p in predictions if p.out_of_scope)
    if out_of_scope:
        gw.metrics.out_of_scope.labels(name).inc(out_of_scope)
    version = str(champion.version)
    gw.metrics.requests.labels(name, version).inc()
    gw.metrics.texts.labels(name, version).inc(len(texts))
    gw.metrics.latency.labels(name).observe(elapsed)
    shadow = None
    if route.challenger is not None and random.random() < spec.promotion.shadow_sample_rate:
        ids = [o.request_id for o, _ in outs]
        shadow = functools.partial(_shadow, gw, name, route, texts, ids, predictions)
    return Answered(predictions=[o for o, _ in outs], shadow=shadow)


def _asked(
    gw: Gateway, spec: SpecialistSpec, pred: Prediction, unsure: list[str]
) -> Fallback | None:
    """The fallback that answers this text, or None when the champion's answer stands.

    An out-of-scope text follows ``escalation.on_out_of_scope`` first: 'review' queues it for
    people even when the specialist's fallback is openai or none (a person can say what it is,
    or that it is a new intent, where a model told to pick one of the labels picks one);
    'fallback' sends it to the specialist's fallback, if it has one, as a low confidence does.
    Otherwise, and for 'none', the confidence threshold decides; for an extractor, ``unsure``
    (``_unsure``) does, and its texts go to a review queue only: no model is asked for spans.
    """
    fallback: Fallback | None = gw.fallbacks.get(spec.name)
    if pred.out_of_scope or _says_out_of_scope(spec, pred):
        policy = spec.escalation.on_out_of_scope
        if policy == "review" and spec.name in gw.review_queues:
            return gw.review_queues[spec.name]
        if policy == "fallback" and fallback is not None:
            return fallback
    if pred.entities is not None:
        if not unsure:
            return None
        if fallback is not None and spec.escalation.fallback == "review":
            return fallback
        queue: Fallback | None = gw.review_queues.get(spec.name)
        return queue
    if fallback is not None and pred.confidence < spec.escalation.confidence_threshold:
        return fallback
    return None


def _unsure(spec: SpecialistSpec, pred: Prediction) -> list[str]:
    """Why an extractor's answer wants a person: ``low_confidence`` (a span under
    ``escalation.confidence_threshold``), ``missing_field`` (a field of ``required`` absent).
    Empty for a sure answer, and for a classifier (its threshold is read in ``_asked``)."""
    if pred.entities is None:
        return []
    reasons = []
    threshold = spec.escalation.confidence_threshold
    if any(e.confidence is not None and e.confidence < threshold for e in pred.entities):
        reasons.append("low_confidence")
    found = {e.label for e in pred.entities}
    if any(f not in found for f in spec.required):
        reasons.append("missing_field")
    return reasons


def _entities_out(pred: Prediction) -> list[EntityOut] | None:
    """An extractor's spans as its ``PredictionOut`` shows them; None for a classifier."""
    return None if pred.entities is None else [EntityOut.of(e) for e in pred.entities]


def _entities_json(pred: Prediction) -> str | None:
    """The spans as the traffic store keeps them; None for a classifier."""
    return None if pred.entities is None else to_json(pred.entities)


def _agrees(challenger: Prediction, champion: Prediction) -> bool:
    """Same answer: the same label, or for extractors the same spans (label, start, end)."""
    if challenger.entities is None and champion.entities is None:
        return challenger.label == champion.label
    return sorted(keys(challenger.entities or ())) == sorted(keys(champion.entities or ()))


def _says_out_of_scope(spec: SpecialistSpec, pred: Prediction) -> bool:
    """The champion answered the spec's ``out_of_scope_label``: it learned to say 'not mine'."""
    return spec.out_of_scope_label is not None and pred.label == spec.out_of_scope_label


async def _escalate(
    gw: Gateway, spec: SpecialistSpec, route: Route, texts: list[str], predictions: list[Prediction]
) -> list[Escalated]:
    version = route.champion.version

    async def one(text: str, pred: Prediction) -> Escalated:
        out = PredictionOut(
            request_id=uuid.uuid4().hex,
            label=pred.label,
            confidence=pred.confidence,
            model_version=version,
            escalated=False,
            source="specialist",
            out_of_scope=True if _says_out_of_scope(spec, pred) else pred.out_of_scope,
            ood_score=pred.ood_score,
            entities=_entities_out(pred),
            fields=fields(pred.entities) if pred.entities is not None else None,
        )
        unsure = _unsure(spec, pred)
        for reason in unsure:
            gw.metrics.extraction_unsure.labels(spec.name, reason).inc()
        fallback = _asked(gw, spec, pred, unsure)
        if fallback is None:
            return out, None
        reply = await fallback.classify(
            text, labels=route.champion.labels, specialist=spec.name, description=spec.description
        )
        outcome = "ok" if reply.ok and reply.label else ("queued" if reply.ok else "failed")
        gw.metrics.escalations.labels(spec.name, reply.source, outcome).inc()
        if reply.ok and reply.label is not None:
            return out.model_copy(
                update={"escalated": True, "label": reply.label, "source": reply.source}
            ), reply
        # Review queue (no label yet) or a failed fallback: the champion's answer stands.
        return out.model_copy(update={"escalated": True, "flagged": not reply.ok}), reply

    return list(await asyncio.gather(*(one(t, p) for t, p in zip(texts, predictions, strict=True))))


def _request_record(
    gw: Gateway,
    name: str,
    version: int,
    text: str,
    pred: Prediction,
    out: PredictionOut,
    reply: FallbackAnswer | None,
    elapsed: float,
) -> RequestRecord:
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
        fallback_label=reply.label if reply is not None else None,
        fallback_source=reply.source if reply is not None else None,
        fallback_latency_ms=reply.latency_ms if reply is not None else None,
        flagged=out.flagged,
        ood_score=pred.ood_score,
        out_of_scope=pred.out_of_scope,
        entities=_entities_json(pred),
    )


def _fallback_feedback(name: str, request_id: str, label: str) -> FeedbackRecord:
    from lifecycle.store import FeedbackRecord

    return FeedbackRecord(request_id=request_id, specialist=name, label=label, source="fallback")


async def _shadow(
    gw: Gateway,
    name: str,
    route: Route,
    texts: list[str],
    request_ids: list[str],
    champion: list[Prediction],
) -> None:
    """Queue the texts for the challenger; each chunk's fate is stored and counted."""
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
            agree += _agrees(pred, champ)
            gw.writer.submit(
                ShadowRecord(
                    request_id=request_id,
                    specialist=name,
                    model_version=challenger.version,
                    label=pred.label,
                    confidence=pred.confidence,
                    latency_ms=latency_ms,
                    entities=_entities_json(pred),
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
