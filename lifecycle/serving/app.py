"""The gateway: a FastAPI app serving every specialist of one base model.

Routes raise HTTP errors; the logic below them (engine, sync, store, fallback)
does not know about HTTP. Everything the app holds lives on ``app.state.gw``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from lifecycle.errors import ConfigError, LifecycleError
from lifecycle.schemas import Prediction
from lifecycle.serving.api import (
    AdminResult,
    ErrorBody,
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
from lifecycle.serving.engine import ModelEngine, Route
from lifecycle.serving.limits import BodySizeLimit
from lifecycle.serving.metrics import GatewayMetrics
from lifecycle.serving.sync import RegistrySync
from lifecycle.settings import Settings
from lifecycle.spec import NAME_PATTERN, SpecialistsFile, SpecialistSpec

logger = logging.getLogger(__name__)

NamePath = Annotated[
    str, Path(pattern=NAME_PATTERN.pattern, max_length=63, description="Specialist name.")
]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 422, 503)
}


@dataclass
class Counters:
    requests: int = 0
    escalations: int = 0


@dataclass
class Gateway:
    """What one running gateway holds."""

    settings: Settings
    specs: dict[str, SpecialistSpec]
    engine: ModelEngine
    sync: RegistrySync
    writer: Any
    metrics: GatewayMetrics
    fallbacks: dict[str, Any]
    counters: dict[str, Counters] = field(default_factory=dict)
    started: float = field(default_factory=time.time)


def create_app(
    settings: Settings,
    specialists: SpecialistsFile,
    *,
    host: Any = None,
    registry_factory: Any = None,
    writer: Any = None,
    fallbacks: dict[str, Any] | None = None,
) -> FastAPI:
    """Build the gateway app. Models load, and the registry is read, at start-up.

    ``host``, ``registry_factory``, ``writer`` and ``fallbacks`` default to the real
    ones built from ``settings``; passing them in lets several apps share a base model.
    """
    if settings.admin_token is None and not settings.insecure_dev:
        raise ConfigError(
            "the gateway's admin routes need a token: set LIFECYCLE_ADMIN_TOKEN "
            "(or LIFECYCLE_INSECURE_DEV=true on a development machine)"
        )
    bases = {s.base_model for s in specialists.specialists}
    if len(bases) != 1:
        raise ConfigError(
            f"one gateway serves one base model, but the specialists use {sorted(bases)}; "
            "run one gateway per base model with its own specialists file"
        )
    specs = {s.name: s for s in specialists.specialists}
    if fallbacks is None:
        fallbacks = _build_fallbacks(specs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw = await _start(settings, specs, host, registry_factory, writer, fallbacks)
        app.state.gw = gw
        try:
            yield
        finally:
            await _stop(gw)

    app = FastAPI(
        title="lifecycle gateway",
        version="1",
        summary="Serves every LoRA specialist of one base model, with shadow, escalation and "
        "feedback; logs all traffic for drift monitoring.",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    _install_error_handlers(app)
    _install_routes(app, settings)
    return app


async def _start(
    settings: Settings,
    specs: dict[str, SpecialistSpec],
    host: Any,
    registry_factory: Any,
    writer: Any,
    fallbacks: dict[str, Any] | None,
) -> Gateway:
    from lifecycle.registry import Registry

    if host is None:
        from lifecycle.model import AdapterHost

        base = next(iter(specs.values())).base_model
        host = await asyncio.to_thread(
            AdapterHost, base, device=settings.device, threads=settings.torch_threads
        )
    if writer is None:
        writer = await asyncio.to_thread(_default_writer, settings)
    metrics = GatewayMetrics()
    engine = ModelEngine(
        host,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        shadow_queue_size=settings.shadow_queue_size,
        shadow_batch_size=settings.shadow_batch_size,
        shadow_max_delay_s=settings.shadow_max_delay_s,
        forward_batch_size=settings.forward_batch_size,
        piggyback_shadow=settings.shadow_piggyback,
        on_batch=metrics.observe_batch,
    )
    await engine.start()
    sync = RegistrySync(
        engine,
        registry_factory or (lambda: Registry(settings)),
        list(specs),
        poll_s=settings.registry_poll_s,
    )
    await sync.start()
    assert fallbacks is not None
    return Gateway(
        settings=settings,
        specs=specs,
        engine=engine,
        sync=sync,
        writer=writer,
        metrics=metrics,
        fallbacks=fallbacks,
        counters={name: Counters() for name in specs},
    )


def _build_fallbacks(specs: dict[str, SpecialistSpec]) -> dict[str, Any]:
    """Each specialist's fallback; a misconfigured one stops start-up with a clear error."""
    from lifecycle.fallback import FallbackSettings, build_fallback

    kinds = {spec.escalation.fallback for spec in specs.values()}
    options = FallbackSettings().openai_kwargs() if "openai" in kinds else {}
    built = {
        name: build_fallback(spec.escalation.fallback, **options) for name, spec in specs.items()
    }
    return {name: fb for name, fb in built.items() if fb is not None}


async def _stop(gw: Gateway) -> None:
    await gw.sync.stop()
    await gw.engine.stop()
    for fb in gw.fallbacks.values():
        close = getattr(fb, "aclose", None)
        if close is not None:
            await close()
    await asyncio.to_thread(gw.writer.close)


def _default_writer(settings: Settings) -> Any:
    from lifecycle.store import TrafficStore, TrafficWriter

    # The writer migrates the database to the current schema before its first write.
    return TrafficWriter(TrafficStore(settings.traffic_url), journal_dir=settings.home / "journal")


# -- routes -------------------------------------------------------------------------


async def _gw(request: Request) -> Gateway:  # async: no thread hop per request
    return request.app.state.gw


GW = Annotated[Gateway, Depends(_gw)]
bearer = HTTPBearer(auto_error=False, description="LIFECYCLE_ADMIN_TOKEN")


def _require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    settings: Settings = request.app.state.gw.settings
    if settings.admin_token is None:
        return  # insecure_dev: create_app refused to start otherwise
    expected = settings.admin_token.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials else b""
    # Constant time, so the token cannot be guessed byte by byte from response times.
    if not credentials or not secrets.compare_digest(given, expected):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


Admin = Depends(_require_admin)


def _route_or_error(gw: Gateway, name: str) -> Route:
    if name not in gw.specs:
        raise HTTPException(404, f"no specialist named {name!r}; see GET /v1/specialists")
    route = gw.engine.routes.get(name)
    if route is None:
        why = gw.sync.state.unavailable.get(name, "not loaded yet")
        raise HTTPException(503, f"specialist {name!r} is not serving: {why}")
    return route


def _install_routes(app: FastAPI, settings: Settings) -> None:
    @app.post(
        "/v1/specialists/{name}/predict",
        response_model=PredictResponse,
        responses=ERRORS,
        tags=["specialists"],
        summary="Classify one or many texts with the specialist's champion.",
    )
    async def predict(
        name: NamePath, body: PredictRequest, gw: GW, background: BackgroundTasks
    ) -> PredictResponse:
        """Each text gets a request id, a label, a calibrated confidence, the champion's version
        and whether it was escalated. A text under the specialist's confidence threshold goes to
        its fallback; if the fallback fails, the champion's answer is returned, flagged. When a
        challenger is loaded, the texts are also scored by it in shadow after the answer is sent.
        """
        started = time.perf_counter()
        route = _route_or_error(gw, name)
        _check_limits(body.texts, gw.settings)
        champion = route.champion
        predictions = await gw.engine.predict(body.texts, [champion.adapter_id] * len(body.texts))
        spec = gw.specs[name]
        outs = await _escalate(gw, spec, route, body.texts, predictions)
        elapsed = time.perf_counter() - started
        records = []
        for text, pred, (out, fallback_answer) in zip(body.texts, predictions, outs, strict=True):
            records.append(
                _request_record(
                    gw, name, champion.version, text, pred, out, fallback_answer, elapsed
                )
            )
        for record in records:
            gw.writer.submit(record)
        for out, (_, answer) in zip([o for o, _ in outs], outs, strict=True):
            if answer is not None and answer.ok and answer.label is not None:
                gw.writer.submit(_fallback_feedback(name, out.request_id, answer.label))
        counters = gw.counters[name]
        counters.requests += 1
        counters.escalations += sum(1 for o, _ in outs if o.escalated)
        version = str(champion.version)
        gw.metrics.requests.labels(name, version).inc()
        gw.metrics.texts.labels(name, version).inc(len(body.texts))
        gw.metrics.latency.labels(name).observe(elapsed)
        if route.challenger is not None and random.random() < spec.promotion.shadow_sample_rate:
            ids = [o.request_id for o, _ in outs]
            background.add_task(_shadow, gw, name, route, body.texts, ids, predictions)
        return PredictResponse(specialist=name, predictions=[o for o, _ in outs])

    @app.post(
        "/v1/specialists/{name}/feedback",
        response_model=FeedbackResponse,
        status_code=202,
        responses=ERRORS,
        tags=["specialists"],
        summary="Record the true label of earlier requests.",
    )
    async def feedback(name: NamePath, body: FeedbackRequest, gw: GW) -> FeedbackResponse:
        """Labels for earlier request ids, from a person (source 'human', the default) or from the
        fallback. An unknown request id is a 404 and a label outside the specialist's set a 422;
        nothing of a call with either is stored. A repeated label replaces the earlier one (both
        are recorded)."""
        from lifecycle.store import FeedbackRecord

        route = _route_or_error(gw, name)
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
        for item in items:
            gw.writer.submit(
                FeedbackRecord(
                    request_id=item.request_id,
                    specialist=name,
                    label=item.label,
                    source=body.source,
                )
            )
        return FeedbackResponse(accepted=len(items), specialist=name)

    @app.get(
        "/v1/specialists/{name}/review",
        response_model=ReviewResponse,
        responses=ERRORS,
        tags=["specialists"],
        dependencies=[Admin],
        summary="Escalated requests waiting for a person's label (the review queue).",
    )
    async def review(
        name: NamePath,
        gw: GW,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        scan: Annotated[
            int, Query(ge=1, le=100_000, description="Recent requests looked at.")
        ] = 5000,
    ) -> ReviewResponse:
        """Requests the champion was unsure of and whose fallback left the label to people, newest
        first, without a label yet. Label them through the feedback route. Needs the admin token:
        the texts are users' own words."""
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

    @app.get(
        "/v1/specialists",
        response_model=SpecialistsResponse,
        tags=["specialists"],
        summary="What is loaded: champion and challenger versions, labels, status, cost.",
    )
    async def specialists(gw: GW) -> SpecialistsResponse:
        out = []
        for name, spec in gw.specs.items():
            route = gw.engine.routes.get(name)
            counters = gw.counters[name]
            cost, fallback_cost = _cost(gw, name)
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
                )
            )
        return SpecialistsResponse(specialists=out, registry_up=gw.sync.state.registry_up)

    @app.post(
        "/v1/admin/reload",
        response_model=AdminResult,
        responses=ERRORS,
        tags=["admin"],
        dependencies=[Admin],
        summary="Read the registry's aliases now and swap adapters that changed.",
    )
    async def reload(gw: GW) -> AdminResult:
        changes = await gw.sync.sync()
        return AdminResult(ok="error" not in changes, detail=changes)

    @app.post(
        "/v1/admin/specialists/{name}/promote",
        response_model=AdminResult,
        responses=ERRORS,
        tags=["admin"],
        dependencies=[Admin],
        summary="Make the challenger the champion now (the old champion becomes 'previous').",
    )
    async def promote(name: NamePath, gw: GW) -> AdminResult:
        return await _move_aliases(gw, name, "promote")

    @app.post(
        "/v1/admin/specialists/{name}/rollback",
        response_model=AdminResult,
        responses=ERRORS,
        tags=["admin"],
        dependencies=[Admin],
        summary="Make the 'previous' version the champion again.",
    )
    async def rollback(name: NamePath, gw: GW) -> AdminResult:
        return await _move_aliases(gw, name, "rollback")

    @app.get("/healthz", tags=["ops"], summary="The process is up.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Every specialist is serving and the stores answer.")
    async def readyz(gw: GW) -> JSONResponse:
        serving = [n for n in gw.specs if n in gw.engine.routes]
        body = {
            "ready": len(serving) == len(gw.specs),
            "serving": serving,
            "unavailable": gw.sync.state.unavailable,
            "registry_up": gw.sync.state.registry_up,
            "registry_error": gw.sync.state.last_error,
            "traffic_store_up": bool(gw.writer.healthy),
        }
        # Serving what it has is still ready: a registry or store outage is reported, not fatal.
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics.")
    async def metrics(gw: GW) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        _refresh_gauges(gw)
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# -- helpers ----------------------------------------------------------------------


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


async def _escalate(
    gw: Gateway, spec: SpecialistSpec, route: Route, texts: list[str], predictions: list[Prediction]
) -> list[tuple[PredictionOut, Any]]:
    threshold = spec.escalation.confidence_threshold
    fallback = gw.fallbacks.get(spec.name)
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
        )
        if fallback is None or pred.confidence >= threshold:
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
    from lifecycle.store import ShadowRecord

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

    if not gw.engine.shadow(texts, challenger.adapter_id, done):
        gw.metrics.shadow_dropped.labels(name).inc()  # a request with some shadow work dropped


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


async def _move_aliases(gw: Gateway, name: str, action: str) -> AdminResult:
    if name not in gw.specs:
        raise HTTPException(404, f"no specialist named {name!r}")
    from lifecycle.registry import Registry

    registry = Registry(gw.settings)
    try:
        moved = await asyncio.to_thread(
            registry.promote if action == "promote" else registry.rollback, name, reason="admin API"
        )
    except LifecycleError as exc:
        raise HTTPException(409, str(exc)) from exc
    changes = await gw.sync.sync()
    return AdminResult(ok=True, detail={"aliases": moved, "reload": changes})


def _cost(gw: Gateway, name: str) -> tuple[float, float]:
    from lifecycle.cost import estimate_cost

    counters = gw.counters[name]
    cost = estimate_cost(
        requests=counters.requests,
        escalations=counters.escalations,
        specialist_price_per_1k=gw.settings.specialist_price_per_1k,
        fallback_price_per_1k=gw.settings.fallback_price_per_1k,
    )
    return cost.per_1k, cost.fallback_only_per_1k


def _refresh_gauges(gw: Gateway) -> None:
    m = gw.metrics
    for queue, depth in gw.engine.queue_depths.items():
        m.queue_depth.labels(queue).set(depth)
    m.registry_up.set(1 if gw.sync.state.registry_up else 0)
    m.store_up.set(1 if gw.writer.healthy else 0)
    m.store_pending.labels("memory").set(gw.writer.pending_memory)
    m.store_pending.labels("journal").set(gw.writer.pending_journal)
    for name in gw.specs:
        cost, fallback_only = _cost(gw, name)
        m.cost_per_1k.labels(name, "specialist").set(cost)
        m.cost_per_1k.labels(name, "fallback_only").set(fallback_only)
        route = gw.engine.routes.get(name)
        if route is not None:
            m.model_version.labels(name, "champion").set(route.champion.version)
            m.model_version.labels(name, "challenger").set(
                route.challenger.version if route.challenger else 0
            )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back: it may be a megabyte, or someone's private text.
        problems = []
        for err in exc.errors()[:20]:
            location = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{location or 'body'}: {err.get('msg', 'invalid')}")
        _count_error(request, 422)
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        _count_error(request, exc.status_code)
        return JSONResponse(
            {"detail": exc.detail},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(LifecycleError)
    async def lifecycle_error(request: Request, exc: LifecycleError) -> JSONResponse:
        _count_error(request, 400)
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        _count_error(request, 500)
        return JSONResponse({"detail": "internal error; see the gateway's log"}, status_code=500)


def _count_error(request: Request, status: int) -> None:
    gw = getattr(request.app.state, "gw", None)
    if gw is not None:
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        gw.metrics.errors.labels(path, str(status)).inc()
