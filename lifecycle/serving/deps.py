"""Dependencies of the routes: the gateway, the admin check, the specialist's route."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lifecycle.config.settings import Settings
from lifecycle.config.spec import NAME_PATTERN
from lifecycle.serving.api import ErrorBody
from lifecycle.serving.engine import Route
from lifecycle.serving.state import Gateway

NamePath = Annotated[
    str, Path(pattern=NAME_PATTERN.pattern, max_length=63, description="Specialist name.")
]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 422, 503)
}


async def get_gateway(request: Request) -> Gateway:  # async: no thread hop per request
    return request.app.state.gw


GW = Annotated[Gateway, Depends(get_gateway)]
bearer = HTTPBearer(auto_error=False, description="LIFECYCLE_ADMIN_TOKEN")


def require_admin(
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


Admin = Depends(require_admin)


def known_or_error(gw: Gateway, name: str) -> None:
    """A 404 for a name the specialists file does not declare."""
    if name not in gw.specs:
        raise HTTPException(404, f"no specialist named {name!r}; see GET /v1/specialists")


def route_or_error(gw: Gateway, name: str) -> Route:
    """What answers ``name`` now; a 404 for an unknown name, a 503 while it is not serving."""
    known_or_error(gw, name)
    route = gw.engine.routes.get(name)
    if route is None:
        why = gw.sync.state.unavailable.get(name, "not loaded yet")
        raise HTTPException(503, f"specialist {name!r} is not serving: {why}")
    return route
