"""Posting an alert's JSON to every configured webhook, with retries, never raising on outages.

Transport errors, timeouts, 429 and 5xx are retried (``tenacity``) with a doubling backoff; a
429's ``Retry-After`` is honoured up to a cap; other 4xx and a bad URL are final. Webhook URLs
carry tokens, so logs, errors and the stored ``Delivery`` name the host only.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lifecycle.notify.message import clip, oneline

if TYPE_CHECKING:
    import httpx
    from tenacity import RetryCallState

log = logging.getLogger(__name__)

_ERROR_BODY_MAX = 200
_USER_AGENT = "lifecycle-alerts/1"


@dataclass(frozen=True)
class Delivery:
    """How one webhook took an alert. ``host`` is scheme://host[:port], never the token."""

    host: str
    ok: bool
    status: int | None
    attempts: int
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "ok": self.ok,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
        }


@dataclass(frozen=True)
class _Try:
    """One POST as it ended: ``error`` is None on success; a 429 keeps its Retry-After."""

    status: int | None
    error: str | None
    retryable: bool
    retry_after: str | None = None


class Webhooks:
    """POSTs a payload to each URL: ``1 + retries`` attempts at most per URL, waiting
    ``backoff_base_s`` doubled per retry up to ``backoff_max_s`` in between (a 429's
    ``Retry-After`` instead, up to ``retry_after_cap_s``). ``sleep`` and ``transport`` are
    seams for tests."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout_s: float,
        retries: int,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_after_cap_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.urls = list(urls)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_cap_s = retry_after_cap_s
        self._sleep = sleep
        self._transport = transport

    def __repr__(self) -> str:
        return f"[{', '.join(webhook_host(url) for url in self.urls)}]"

    def deliver(self, payload: dict[str, Any]) -> list[Delivery]:
        """Post ``payload`` to every URL in turn; one ``Delivery`` per URL, in their order."""
        if not self.urls:
            return []
        import httpx

        body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": _USER_AGENT}
        with httpx.Client(
            timeout=self.timeout_s,
            transport=self._transport,
            follow_redirects=False,  # a redirect would carry the alert somewhere unconfigured
            headers=headers,
        ) as client:
            return [self._post(client, url, body) for url in self.urls]

    def _post(self, client: httpx.Client, url: str, body: bytes) -> Delivery:
        from tenacity import Retrying, retry_if_result, stop_after_attempt

        host = webhook_host(url)
        attempts = 0

        def attempt() -> _Try:
            nonlocal attempts
            attempts += 1
            return _post_once(client, url, host, body)

        def log_retry(state: RetryCallState) -> None:
            wait = state.next_action.sleep if state.next_action else 0.0
            error = _last_try(state).error
            log.info(
                "webhook %s attempt %d failed (%s); retry in %.2fs",
                host,
                state.attempt_number,
                error,
                wait,
            )

        retrying = Retrying(
            stop=stop_after_attempt(1 + self.retries),
            wait=self._wait,
            retry=retry_if_result(lambda tried: tried.retryable),
            sleep=lambda seconds: self._sleep(float(seconds)),
            before_sleep=log_retry,
            retry_error_callback=_last_try,  # out of attempts: the last answer, not an error
        )
        tried: _Try = retrying(attempt)
        if tried.error is None:
            return Delivery(host=host, ok=True, status=tried.status, attempts=attempts)
        log.warning("alert webhook %s failed after %d attempt(s): %s", host, attempts, tried.error)
        return Delivery(
            host=host, ok=False, status=tried.status, attempts=attempts, error=tried.error
        )

    def _wait(self, state: RetryCallState) -> float:
        from tenacity import wait_exponential

        backoff = wait_exponential(multiplier=self.backoff_base_s, max=self.backoff_max_s)
        wait = float(backoff(state))
        tried = _last_try(state)
        if tried.status == 429:
            return self._retry_after(tried.retry_after, default=wait)
        return wait

    def _retry_after(self, header: str | None, *, default: float) -> float:
        # Seconds only: Slack sends seconds; an HTTP-date falls back to our own backoff.
        try:
            seconds = float(header) if header is not None else default
        except ValueError:
            seconds = default
        if not math.isfinite(seconds):
            seconds = default
        return min(max(seconds, 0.0), self.retry_after_cap_s)


def _post_once(client: httpx.Client, url: str, host: str, body: bytes) -> _Try:
    import httpx

    try:
        response = client.post(url, content=body)
    except httpx.UnsupportedProtocol as exc:  # a bad URL will not heal by waiting
        return _Try(None, _scrub(exc, url, host), retryable=False)
    except httpx.TransportError as exc:  # connect errors, timeouts, resets
        return _Try(None, _scrub(exc, url, host), retryable=True)
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        return _Try(None, _scrub(exc, url, host), retryable=False)
    status = response.status_code
    if response.is_success:
        return _Try(status, None, retryable=False)
    return _Try(
        status,
        f"HTTP {status}: {clip(response.text.strip(), _ERROR_BODY_MAX)}",
        retryable=status == 429 or status >= 500,
        retry_after=response.headers.get("retry-after") if status == 429 else None,
    )


def _last_try(state: RetryCallState) -> _Try:
    assert state.outcome is not None  # tenacity calls its hooks after an attempt
    tried: _Try = state.outcome.result()
    return tried


def webhook_host(url: str) -> str:
    """scheme://host[:port] of a webhook URL: its path and query hold the secret token."""
    try:
        import httpx

        parsed = httpx.URL(url)
    except Exception:
        return "<invalid url>"
    if not parsed.host:
        return "<invalid url>"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


def _scrub(exc: BaseException, url: str, host: str) -> str:
    # Some transport errors quote the URL; keep the token out of logs and the store.
    return f"{type(exc).__name__}: {oneline(exc)}".replace(url, host)
