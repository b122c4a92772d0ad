"""A real gateway for tests: uvicorn on a free loopback port, in a thread of the test process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from lifecycle.config.settings import Settings
from lifecycle.config.spec import SpecialistsFile
from lifecycle.serving.background import free_port, serve_in_background
from tests.conftest import TINY

__all__ = [
    "TOKEN",
    "RunningGateway",
    "SharedHost",
    "free_port",
    "gateway_settings",
    "running_gateway",
    "tiny_specs",
]

TOKEN = "s3cret-admin-token-for-tests"


def gateway_settings(home: Path, **overrides: Any) -> Settings:
    """The gateway's settings for tests: the admin token, no registry polling (a test swaps
    versions itself), and request limits small enough to reach in a test."""
    values: dict[str, Any] = {
        "home": home,
        "admin_token": TOKEN,
        "registry_poll_s": 0,
        "max_texts_per_request": 64,
        "max_text_chars": 2000,
        "max_body_bytes": 200_000,
    }
    values.update(overrides)
    return Settings(**values)


def tiny_specs(**overrides: Any) -> SpecialistsFile:
    """The specialists file with the tiny classifier alone, its fields overridden."""
    return SpecialistsFile.model_validate({"specialists": [{**TINY, **overrides}]})


class RunningGateway:
    def __init__(self, app: Any, url: str, token: str | None) -> None:
        self.app = app
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
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
    with serve_in_background(app, ready_timeout=ready_timeout) as url:
        yield RunningGateway(app, url, token)


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

    def load_adapter(self, adapter_id: str, folder: Any, *, probe_texts: Any = None) -> Any:
        return self._host.load_adapter(self._prefix + adapter_id, folder, probe_texts=probe_texts)

    def remove_adapter(self, adapter_id: str) -> None:
        self._host.remove_adapter(self._prefix + adapter_id)

    def meta(self, adapter_id: str) -> Any:
        return self._host.meta(self._prefix + adapter_id)

    def predict(self, texts: Any, adapter_ids: Any, **kwargs: Any) -> Any:
        return self._host.predict(texts, [self._prefix + a for a in adapter_ids], **kwargs)
