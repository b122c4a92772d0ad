"""Operations routes: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from lifecycle.serving.api import Health, Readiness
from lifecycle.serving.deps import GW
from lifecycle.serving.state import refresh_gauges

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health, summary="The process is up.")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A specialist is not serving."}},
    summary="Every specialist is serving; registry and traffic store health reported.",
)
async def readyz(gw: GW) -> JSONResponse:
    serving = [n for n in gw.specs if n in gw.engine.routes]
    body = Readiness(
        ready=len(serving) == len(gw.specs),
        serving=serving,
        unavailable=gw.sync.state.unavailable,
        registry_up=gw.sync.state.registry_up,
        registry_error=gw.sync.state.last_error,
        traffic_store_up=bool(gw.writer.healthy),
        runtime=gw.engine.runtime,
    )
    # Serving what it has is still ready: a registry or store outage is reported, not fatal.
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics (text exposition format).",
)
async def metrics(gw: GW) -> PlainTextResponse:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    refresh_gauges(gw)
    return PlainTextResponse(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)
