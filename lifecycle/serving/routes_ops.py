"""Operations routes: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from lifecycle.serving.deps import GW
from lifecycle.serving.state import refresh_gauges

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="The process is up.")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Every specialist is serving and the stores answer.")
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


@router.get("/metrics", summary="Prometheus metrics.")
async def metrics(gw: GW) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    refresh_gauges(gw)
    return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)
