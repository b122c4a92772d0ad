"""A fake Slack incoming-webhook server for tests, speaking real HTTP.

``FakeSlack()`` runs a small FastAPI app under uvicorn in a background thread on a free
127.0.0.1 port; it accepts a POST on any path (``url`` looks like a real webhook, with a
token in the path). Its behaviour is chosen at runtime with ``mode``:

- ``ok``: 200 with the body ``ok``, as Slack answers;
- ``fail_then_ok``: the first ``fail_count`` requests get a 500, later ones ``ok``;
- ``always_500``: every request gets a 500;
- ``rate_limited``: the first ``fail_count`` requests get a 429 with
  ``Retry-After: <retry_after>``, later ones ``ok``;
- ``slow``: sleeps ``delay_s`` (longer than the client's timeout) and then answers ``ok``;
- ``bad_request``: 400 with the body ``invalid_payload``, as Slack answers a malformed one.

Every request is recorded in ``requests`` (JSON body, headers, path) before anything else.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from .server import FakeServer

MODES = ("ok", "fail_then_ok", "always_500", "rate_limited", "slow", "bad_request")
#: The secret part of a webhook URL; tests check that it never reaches logs or the store.
TOKEN_PATH = "/services/T0FAKE/B0FAKE/s3cr3tT0k3nXYZ"


@dataclass
class ReceivedWebhook:
    """One POST as the server saw it: the JSON body (None if not JSON), headers and path."""

    body: Any
    headers: dict[str, str]
    path: str


@dataclass
class FakeSlack(FakeServer):
    """Context manager: ``with FakeSlack() as slack: ... slack.url ...``."""

    mode: str = "ok"
    fail_count: int = 1
    retry_after: str = "0"
    delay_s: float = 2.0
    requests: list[ReceivedWebhook] = field(default_factory=list)
    thread_name: ClassVar[str] = "fake-slack"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """A webhook URL on this server, token and all."""
        return f"http://{self.host}:{self.port}{TOKEN_PATH}"

    @property
    def bodies(self) -> list[Any]:
        return [r.body for r in self.requests]

    def reset(self) -> None:
        """Back to the defaults, with no recorded requests (between tests)."""
        self.mode, self.fail_count, self.retry_after, self.delay_s = "ok", 1, "0", 2.0
        self.requests.clear()

    # -- the app --------------------------------------------------------------------

    def _app(self) -> FastAPI:
        app = FastAPI(title="fake-slack")

        @app.post("/{path:path}")
        async def webhook(path: str, request: Request) -> Response:
            try:
                body = await request.json()
            except ValueError:
                body = None
            with self._lock:
                self.requests.append(
                    ReceivedWebhook(body=body, headers=dict(request.headers), path=f"/{path}")
                )
                seen = len(self.requests)
            return await self._answer(seen)

        return app

    async def _answer(self, seen: int) -> Response:
        """The answer to the ``seen``-th request under the current mode."""
        mode = self.mode
        if mode not in MODES:
            return PlainTextResponse(f"fake: unknown mode {mode!r}", status_code=500)
        failing = seen <= self.fail_count
        if mode == "always_500" or (mode == "fail_then_ok" and failing):
            return PlainTextResponse("internal_error", status_code=500)
        if mode == "rate_limited" and failing:
            return PlainTextResponse(
                "rate_limited", status_code=429, headers={"Retry-After": self.retry_after}
            )
        if mode == "bad_request":
            return PlainTextResponse("invalid_payload", status_code=400)
        if mode == "slow":
            await self._sleep(self.delay_s)
        return PlainTextResponse("ok")
