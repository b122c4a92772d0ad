"""Admin routes: reload from the registry, promote, roll back (bearer token)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException

from lifecycle.config.errors import LifecycleError, UnavailableError
from lifecycle.serving.api import AdminResult
from lifecycle.serving.deps import ERRORS, GW, Admin, NamePath
from lifecycle.serving.state import Gateway

# Every admin route needs the token and answers errors alike: said once, for the router.
router = APIRouter(tags=["admin"], responses=ERRORS, dependencies=[Admin])


@router.post(
    "/v1/admin/reload",
    response_model=AdminResult,
    summary="Read the registry's aliases now and swap adapters that changed.",
)
async def reload(gw: GW) -> AdminResult:
    changes = await gw.sync.sync()
    return AdminResult(ok="error" not in changes, detail=changes)


@router.post(
    "/v1/admin/specialists/{name}/promote",
    response_model=AdminResult,
    summary="Make the challenger the champion now (the old champion becomes 'previous').",
)
async def promote(name: NamePath, gw: GW) -> AdminResult:
    return await _move_aliases(gw, name, "promote")


@router.post(
    "/v1/admin/specialists/{name}/rollback",
    response_model=AdminResult,
    summary="Make the 'previous' version the champion again.",
)
async def rollback(name: NamePath, gw: GW) -> AdminResult:
    return await _move_aliases(gw, name, "rollback")


async def _move_aliases(gw: Gateway, name: str, action: str) -> AdminResult:
    if name not in gw.specs:
        raise HTTPException(404, f"no specialist named {name!r}")
    registry = gw.registry_factory()
    try:
        moved = await asyncio.to_thread(
            registry.promote if action == "promote" else registry.rollback, name, reason="admin API"
        )
    except UnavailableError:
        raise  # an outage, not a conflict: the app answers 503
    except LifecycleError as exc:
        raise HTTPException(409, str(exc)) from exc
    changes = await gw.sync.sync()
    return AdminResult(ok=True, detail={"aliases": moved, "reload": changes})
