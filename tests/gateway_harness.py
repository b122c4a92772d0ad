"""A real gateway for tests: uvicorn on a free loopback port, in a thread of the test process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningGateway:
    def __init__(self, app: Any, port: int, token: str | None) -> None:
        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.token = token

    @property
    def gw(self) -> Any:
        return self.app.state.gw

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@contextmanager
def running_gateway(
    app: Any, *, token: str | None = None, ready_timeout: float = 120.0
) -> Iterator[RunningGateway]:
    """Start ``app`` under a real uvicorn server; stop it (and its lifespan) on exit."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + ready_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("gateway failed to start; see the log above")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError("gateway did not start in time")
        time.sleep(0.05)
    try:
        yield RunningGateway(app, port, token)
    finally:
        server.should_exit = True
        thread.join(timeout=60)


class SharedHost:
    """The session's host under another name, so a second app can load the same adapter ids."""

    def __init__(self, host: Any) -> None:
        self._host = host
        self._prefix = f"x{id(self)}-"

    def __enter__(self) -> SharedHost:
        return self

    def __exit__(self, *exc: object) -> None:
        """Unload what this view loaded: the session's host outlives every app."""
        for adapter_id in self.adapter_ids:
            self.remove_adapter(adapter_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._host, name)

    @property
    def adapter_ids(self) -> list[str]:
        return [
            a[len(self._prefix) :] for a in self._host.adapter_ids if a.startswith(self._prefix)
        ]

    def load_adapter(self, adapter_id: str, folder: Any) -> Any:
        return self._host.load_adapter(self._prefix + adapter_id, folder)

    def remove_adapter(self, adapter_id: str) -> None:
        self._host.remove_adapter(self._prefix + adapter_id)

    def meta(self, adapter_id: str) -> Any:
        return self._host.meta(self._prefix + adapter_id)

    def predict(self, texts: Any, adapter_ids: Any, **kwargs: Any) -> Any:
        return self._host.predict(texts, [self._prefix + a for a in adapter_ids], **kwargs)
