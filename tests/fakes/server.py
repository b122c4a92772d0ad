"""What the fake services share: their app under a real uvicorn in a thread, on a free port."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from fastapi import FastAPI

from lifecycle.serving.background import serve_in_background

F = TypeVar("F", bound="FakeServer")


@dataclass
class FakeServer:
    """``with`` serves ``_app()`` on 127.0.0.1 (``port`` is then set) and stops it on exit."""

    host: str = "127.0.0.1"
    port: int = 0
    #: The server thread's name (with the port).
    thread_name: ClassVar[str] = "fake"

    def __post_init__(self) -> None:
        self._serving = ExitStack()
        self._stopping = threading.Event()

    def _app(self) -> FastAPI:
        raise NotImplementedError

    def __enter__(self: F) -> F:
        url = self._serving.enter_context(
            serve_in_background(self._app(), ready_timeout=10, name=self.thread_name, graceful_s=2)
        )
        self.port = int(url.rsplit(":", 1)[1])
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()  # ends "slow" sleeps at once
        self._serving.close()

    async def _sleep(self, seconds: float) -> None:
        """A slow answer's wait, cut short when the server stops."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self._stopping.is_set():
            await asyncio.sleep(0.02)
