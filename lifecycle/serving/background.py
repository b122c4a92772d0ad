"""An ASGI app under a real uvicorn server in a background thread: the gateway in the demo
and benchmarks, the gateway and the fake services in tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_background(
    app: Any,
    *,
    port: int | None = None,
    ready_timeout: float = 120.0,
    name: str = "gateway",
    graceful_s: int | None = None,
) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 and yield its base URL; stop it (and its lifespan) on exit.

    Without a ``port`` the OS picks a free one as the socket is bound, so that two servers
    starting at once never race for it. ``graceful_s`` bounds how long the stop waits for
    requests still in flight (None: as long as they take).
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port or 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=graceful_s,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"{name}-{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + ready_timeout
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"{name} failed to start; see the log above")
            if time.monotonic() > deadline:
                server.should_exit = True
                raise TimeoutError(f"{name} did not start within {ready_timeout:.0f} s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
