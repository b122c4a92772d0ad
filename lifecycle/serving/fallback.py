"""Fallbacks for low-confidence requests: a bigger model, or a queue for people.

When a specialist's confidence is below its threshold the gateway escalates the
request. ``OpenAIFallback`` asks a bigger model behind any OpenAI-compatible
chat-completions endpoint (OpenAI, vLLM, llama.cpp, Ollama, ...) for one label of
the specialist's label set; ``ReviewQueueFallback`` answers at once with no label,
so that the request is stored as escalated and a person labels it later.

A fallback never raises on transport or protocol problems (timeouts, refused
connections, HTTP errors, malformed answers): the gateway must answer its client
whatever the big model does, so every outcome is a ``FallbackAnswer`` with ``ok``
and a short ``error``. The API key is sent as a bearer header and never logged.
The requests go through the ``openai`` client; the retries and the time bound are ours.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lifecycle.config.errors import ConfigError
from lifecycle.serving.prompt import build_messages, match_label

if TYPE_CHECKING:
    from openai import AsyncOpenAI

logger = logging.getLogger(__name__)

#: Fallback kinds a specialist may declare (``escalation.fallback`` in the spec).
KINDS = ("none", "openai", "review")
#: Longest model text kept in ``FallbackAnswer.raw`` (it ends up in the traffic store).
RAW_LIMIT = 500
#: Error message when the model answered, but with no label of the set.
NOT_IN_SET = "answer not in label set"

_ERROR_LIMIT = 200
_BACKOFF_S = 0.1  # first pause between retries, doubled each time, never past the deadline
_OPENAI_ARGS = frozenset(
    {
        "base_url",
        "model",
        "api_key",
        "timeout_s",
        "max_retries",
        "temperature",
        "max_tokens",
        "client",
    }
)


@dataclass(frozen=True)
class FallbackAnswer:
    """What a fallback said about one text.

    ``label`` is None when the fallback gave no label of the set: by design (the
    review queue, ``ok=True``) or because it failed (``ok=False``, ``error`` says why).
    ``raw`` is the model's text, truncated to ``RAW_LIMIT`` characters.
    """

    label: str | None
    source: str
    latency_ms: float
    ok: bool
    error: str | None = None
    raw: str | None = None


class Fallback(Protocol):
    """What the gateway needs of a fallback."""

    async def classify(
        self, text: str, *, labels: Sequence[str], specialist: str, description: str = ""
    ) -> FallbackAnswer: ...

    async def aclose(self) -> None: ...


class FallbackSettings(BaseSettings):
    """Where the fallback model lives, from ``LIFECYCLE_FALLBACK_*``.

    Its price is ``Settings.fallback_price_per_1k`` (``LIFECYCLE_FALLBACK_PRICE_PER_1K``).
    Build the fallback with ``build_fallback(kind, **settings.openai_kwargs())``.
    """

    model_config = SettingsConfigDict(
        env_prefix="LIFECYCLE_FALLBACK_", extra="ignore", populate_by_name=True
    )

    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible API root, e.g. http://127.0.0.1:8001/v1 (openai kind).",
    )
    model: str = Field(default="gpt-4o-mini", min_length=1, description="Model name to ask.")
    api_key: SecretStr | None = Field(
        default=None, description="Sent as 'Authorization: Bearer'; never logged."
    )
    timeout_s: float = Field(default=5.0, gt=0, le=600, description="Bound on one classify call.")
    max_retries: int = Field(
        default=1, ge=0, le=10, description="Extra attempts on connection errors and HTTP 5xx."
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL, e.g. http://127.0.0.1:8001/v1")
        return value

    def openai_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of ``OpenAIFallback``: the key unwrapped, prices left out."""
        return {
            "base_url": self.base_url,
            "model": self.model,
            "api_key": self.api_key.get_secret_value() if self.api_key else None,
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
        }


# -- the fallbacks ----------------------------------------------------------------------


class _AttemptError(Exception):
    """One attempt failed; ``retryable`` for connection errors and HTTP 5xx."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class OpenAIFallback:
    """A bigger model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    One ``classify`` call takes at most about ``timeout_s``, retries included, and
    never raises for transport or protocol problems. An HTTP client passed in is used
    as is and left open by ``aclose``; otherwise one is created on first use.
    """

    source = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 5.0,
        max_retries: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 32,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        base_url = (base_url or "").strip().rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"fallback base_url {base_url!r} is not an http(s) URL; "
                "set LIFECYCLE_FALLBACK_BASE_URL, e.g. http://127.0.0.1:8001/v1"
            )
        if not model:
            raise ConfigError("fallback model is empty; set LIFECYCLE_FALLBACK_MODEL")
        if not timeout_s > 0 or max_retries < 0 or max_tokens < 1:
            raise ConfigError(
                "fallback timeout_s must be > 0, max_retries >= 0 and max_tokens >= 1 "
                f"(got {timeout_s}, {max_retries}, {max_tokens})"
            )
        self.base_url = base_url
        self.model = model
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self._api_key = api_key or None
        self._client = client
        self._owns_client = client is None
        self._openai: AsyncOpenAI | None = None
        # At start-up, not in the first classify call: the import takes a second or more,
        # which would count against that call's time bound.
        importlib.import_module("openai")

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"OpenAIFallback(base_url={self.base_url!r}, model={self.model!r}, api_key={key})"

    async def __aenter__(self) -> OpenAIFallback:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
        self._openai = None

    async def classify(
        self, text: str, *, labels: Sequence[str], specialist: str, description: str = ""
    ) -> FallbackAnswer:
        """Ask the model for one label of ``labels`` for ``text``.

        ``ok`` is True only when the answer maps to a label of the set; otherwise
        ``error`` is a short reason (timeout, connection error, HTTP status,
        malformed response, or "answer not in label set" with the text in ``raw``).
        """
        start = time.perf_counter()
        labels = list(labels)
        if not labels:
            return self._failed(start, "no labels given", specialist=specialist)
        messages = build_messages(
            text, labels=labels, specialist=specialist, description=description
        )
        deadline = time.monotonic() + self.timeout_s
        try:
            content = await asyncio.wait_for(self._complete(messages, deadline), self.timeout_s)
        except TimeoutError:
            return self._failed(start, f"timeout after {self.timeout_s:g}s", specialist=specialist)
        except _AttemptError as exc:
            return self._failed(start, str(exc), specialist=specialist)
        raw = content[:RAW_LIMIT]
        label = match_label(content, labels)
        if label is None:
            return self._failed(start, NOT_IN_SET, specialist=specialist, raw=raw)
        return FallbackAnswer(
            label=label, source=self.source, latency_ms=_ms_since(start), ok=True, raw=raw
        )

    def _failed(
        self, start: float, error: str, *, specialist: str, raw: str | None = None
    ) -> FallbackAnswer:
        error = self._redact(error)[:_ERROR_LIMIT]
        logger.warning("fallback %s for specialist %r: %s", self.model, specialist, error)
        return FallbackAnswer(
            label=None,
            source=self.source,
            latency_ms=_ms_since(start),
            ok=False,
            error=error,
            raw=raw,
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _sdk(self) -> AsyncOpenAI:
        if self._openai is None:
            import openai

            if self._client is None:
                # Our own, not the SDK's: it would follow redirects and pool differently.
                self._client = httpx.AsyncClient(timeout=self.timeout_s)
            self._openai = openai.AsyncOpenAI(
                base_url=self.base_url,
                # The SDK wants a key; without one, this one is not sent (``_attempt``).
                api_key=self._api_key or "none",
                timeout=self.timeout_s,
                # The SDK's retries would retry timeouts and 429s and sleep past the deadline.
                max_retries=0,
                http_client=self._client,
            )
        return self._openai

    async def _complete(self, messages: list[dict[str, str]], deadline: float) -> str:
        """The answer's text, retrying connection errors and 5xx while time is left."""
        attempt = 0
        while True:
            try:
                return await self._attempt(messages, deadline)
            except _AttemptError as exc:
                pause = _BACKOFF_S * 2**attempt
                if (
                    not exc.retryable
                    or attempt >= self.max_retries
                    or time.monotonic() + pause >= deadline
                ):
                    if attempt:
                        raise _AttemptError(
                            f"{exc} (after {attempt + 1} attempts)", retryable=False
                        ) from exc
                    raise
                attempt += 1
                logger.info("fallback %s: %s; retry %d in %.2fs", self.model, exc, attempt, pause)
                await asyncio.sleep(pause)

    async def _attempt(self, messages: list[dict[str, str]], deadline: float) -> str:
        import openai

        remaining = max(deadline - time.monotonic(), 0.001)
        # OPENAI_ORG_ID and OPENAI_PROJECT_ID are OpenAI's, not any base_url's to see.
        unsent = [
            "OpenAI-Organization",
            "OpenAI-Project",
            *([] if self._api_key else ["Authorization"]),
        ]
        try:
            completion = await self._sdk().chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]  # plain dicts for its TypedDicts
                temperature=self.temperature,
                max_tokens=self.max_tokens,
                timeout=remaining,
                extra_headers={header: openai.Omit() for header in unsent},
            )
        except openai.APITimeoutError as exc:
            raise _AttemptError(f"timeout after {self.timeout_s:g}s", retryable=False) from exc
        except openai.APIConnectionError as exc:
            # The SDK wraps every transport failure: only a network one is worth a retry.
            cause = exc.__cause__ or exc
            network = isinstance(cause, (httpx.NetworkError, httpx.RemoteProtocolError))
            what = "connection error" if network else "request failed"
            raise _AttemptError(
                f"{what}: {cause or type(cause).__name__}", retryable=network
            ) from exc
        except openai.APIStatusError as exc:
            raise _AttemptError(
                f"HTTP {exc.status_code}: {_error_detail(exc.response)}",
                retryable=exc.status_code >= 500,
            ) from exc
        except ValueError as exc:
            raise _AttemptError("malformed response: not JSON", retryable=False) from exc
        if isinstance(completion, str):  # what the SDK returns for a body that is not JSON
            raise _AttemptError("malformed response: not JSON", retryable=False)
        try:
            content = completion.choices[0].message.content
        except (AttributeError, IndexError, KeyError, TypeError) as exc:
            raise _AttemptError(
                "malformed response: no choices[0].message.content", retryable=False
            ) from exc
        if not isinstance(content, str):
            raise _AttemptError("malformed response: content is not text", retryable=False)
        return content


class ReviewQueueFallback:
    """Escalation to people: no label now; the request is stored as escalated and a
    person's label arrives later through the feedback route."""

    source = "review"

    async def classify(
        self, text: str, *, labels: Sequence[str], specialist: str, description: str = ""
    ) -> FallbackAnswer:
        """Answer at once with no label (``ok=True``: nothing went wrong)."""
        return FallbackAnswer(label=None, source=self.source, latency_ms=0.0, ok=True)

    async def aclose(self) -> None:
        """Nothing to release."""


def build_fallback(kind: str, **settings: Any) -> OpenAIFallback | ReviewQueueFallback | None:
    """The fallback a specialist declares (``escalation.fallback``): none, openai or review.

    ``settings`` are ``OpenAIFallback`` arguments, used by the openai kind only; a
    ``FallbackSettings.model_dump()`` works as is (the key may be a ``SecretStr``,
    ). Unknown kinds, unknown settings and a missing ``base_url``
    are ``ConfigError``s.
    """
    name = kind.strip().lower()
    if name == "none":
        return None
    if name == "review":
        return ReviewQueueFallback()
    if name != "openai":
        raise ConfigError(f"unknown fallback kind {kind!r}; use one of {', '.join(KINDS)}")
    args = dict(settings)
    if unknown := sorted(set(args) - _OPENAI_ARGS):
        raise ConfigError(
            f"unknown openai fallback settings {unknown}; known: {sorted(_OPENAI_ARGS)}"
        )
    if isinstance(args.get("api_key"), SecretStr):
        args["api_key"] = args["api_key"].get_secret_value()
    if not args.get("base_url"):
        raise ConfigError(
            "the openai fallback needs a base_url: set LIFECYCLE_FALLBACK_BASE_URL, "
            "e.g. http://127.0.0.1:8001/v1"
        )
    return OpenAIFallback(**args)


def _error_detail(response: httpx.Response) -> str:
    """The message of an OpenAI-style error body, else the start of the body."""
    try:
        data = response.json()
        message = data["error"]["message"]
        if isinstance(message, str) and message:
            return message[:_ERROR_LIMIT]
    except (ValueError, KeyError, TypeError):
        pass
    return response.text[:_ERROR_LIMIT].strip() or response.reason_phrase


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
