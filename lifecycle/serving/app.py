"""The gateway: a FastAPI app serving every specialist of one base model.

Routes (one router per resource) raise HTTP errors; the logic below them (the predict and
feedback services, engine, sync, store, fallback) knows nothing of HTTP, and a
``LifecycleError`` it raises is mapped here: 503 for an ``UnavailableError`` (the traffic
store is down), 400 for the rest. What a running gateway holds is on ``app.state.gw``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lifecycle.config.errors import ConfigError, LifecycleError, UnavailableError
from lifecycle.config.settings import Settings
from lifecycle.config.spec import SpecialistsFile, SpecialistSpec
from lifecycle.serving import routes_admin, routes_ops, routes_specialists
from lifecycle.serving.engine import ModelEngine
from lifecycle.serving.limits import BodySizeLimit
from lifecycle.serving.metrics import GatewayMetrics
from lifecycle.serving.state import Counters, Gateway, refresh_outcomes
from lifecycle.serving.sync import RegistrySync

logger = logging.getLogger(__name__)


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
    for module in (routes_specialists, routes_admin, routes_ops):
        app.include_router(module.router)
    return app


def _model_workers(
    settings: Settings, specs: dict[str, SpecialistSpec]
) -> tuple[Any, list[Any], list[Any]]:
    """The base model once per model worker (and the shadow worker), and torch's threads
    shared out between the champion workers: the shadow worker only runs when they idle."""
    import os

    from lifecycle.model.base import pick_placement
    from lifecycle.model.host import AdapterHost

    cores = os.cpu_count() or 1
    on_gpu = pick_placement(settings.device).device != "cpu"
    workers = settings.model_workers or (1 if on_gpu or cores < 2 else 2)
    threads = settings.torch_threads or max(1, cores // workers)
    base = next(iter(specs.values())).base_model
    shadow = settings.shadow_worker if settings.shadow_worker is not None else workers > 1
    hosts = [
        AdapterHost(
            base,
            device=settings.device,
            threads=threads,
            quantize=settings.quantize,
            min_agreement=settings.quantize_min_agreement,
        )
        for _ in range(workers + int(shadow))
    ]
    for host in hosts:
        host.score_out_of_scope = settings.ood_scores
    return hosts[0], hosts[1:workers], hosts[workers:]


async def _start(
    settings: Settings,
    specs: dict[str, SpecialistSpec],
    host: Any,
    registry_factory: Any,
    writer: Any,
    fallbacks: dict[str, Any] | None,
) -> Gateway:
    from lifecycle.registry.models import Registry

    replicas: list[Any] = []
    shadow_hosts: list[Any] = []
    if host is None:
        host, replicas, shadow_hosts = await asyncio.to_thread(_model_workers, settings, specs)
    if writer is None:
        writer = await asyncio.to_thread(_default_writer, settings)
    metrics = GatewayMetrics()
    engine = ModelEngine(
        host,
        replicas=replicas,
        shadow_hosts=shadow_hosts,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        shadow_queue_size=settings.shadow_queue_size,
        shadow_batch_size=settings.shadow_batch_size,
        shadow_max_delay_s=settings.shadow_max_delay_s,
        forward_batch_size=settings.forward_batch_size,
        piggyback_shadow=settings.shadow_piggyback,
        shadow_drain_s=settings.shadow_drain_s,
        on_batch=metrics.observe_batch,
    )
    await engine.start()
    registry_factory = registry_factory or functools.partial(Registry, settings)
    sync = RegistrySync(
        engine,
        registry_factory,
        list(specs),
        poll_s=settings.registry_poll_s,
        tasks={name: spec.task for name, spec in specs.items()},
        probe_rows=settings.quantize_probe_rows if settings.quantize == "auto" else 0,
    )
    await sync.start()
    assert fallbacks is not None
    gw = Gateway(
        settings=settings,
        specs=specs,
        engine=engine,
        sync=sync,
        writer=writer,
        metrics=metrics,
        fallbacks=fallbacks,
        review_queues=_review_queues(specs),
        counters={name: Counters() for name in specs},
        registry_factory=registry_factory,
    )
    # Figures from the traffic store (cost per correct answer, monitor status): read in the
    # background now and after every registry poll, never on a request's path.
    sync.add_after_sync(lambda: refresh_outcomes(gw))
    return gw


def _build_fallbacks(specs: dict[str, SpecialistSpec]) -> dict[str, Any]:
    """Each specialist's fallback; a misconfigured one stops start-up with a clear error."""
    from lifecycle.serving.fallback import FallbackSettings, build_fallback

    kinds = {spec.escalation.fallback for spec in specs.values()}
    options = FallbackSettings().openai_kwargs() if "openai" in kinds else {}
    built = {
        name: build_fallback(spec.escalation.fallback, **options) for name, spec in specs.items()
    }
    return {name: fb for name, fb in built.items() if fb is not None}


def _review_queues(specs: dict[str, SpecialistSpec]) -> dict[str, Any]:
    """A review queue per specialist that sends its out-of-scope texts to people
    (``escalation.on_out_of_scope: review``): its own fallback may be openai or none."""
    from lifecycle.serving.fallback import build_fallback

    return {
        name: build_fallback("review")
        for name, spec in specs.items()
        if spec.escalation.on_out_of_scope == "review"
    }


#: Starts the log line with each specialist's shadow counts at shutdown, after the drain:
#: /metrics is gone by then, so this line is where a soak (bench/soak.py) reads them.
SHADOW_COUNTS_LOG = "shadow work at shutdown:"


async def _stop(gw: Gateway) -> None:
    await gw.sync.stop()
    await gw.engine.stop()
    logger.info("%s %s", SHADOW_COUNTS_LOG, json.dumps(gw.metrics.shadow_counts(), sort_keys=True))
    for fb in [*gw.fallbacks.values(), *gw.review_queues.values()]:
        close = getattr(fb, "aclose", None)
        if close is not None:
            await close()
    await asyncio.to_thread(gw.writer.close)


def _default_writer(settings: Settings) -> Any:
    from lifecycle.store import TrafficStore, TrafficWriter

    # The writer migrates the database to the current schema before its first write.
    return TrafficWriter(
        TrafficStore(settings.traffic_url),
        journal_dir=settings.home / "journal",
        durability=settings.traffic_durability,
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
        # An outage (the traffic store down) is no fault of the call: it may work later.
        status = 503 if isinstance(exc, UnavailableError) else 400
        _count_error(request, status)
        return JSONResponse({"detail": str(exc)}, status_code=status)

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
