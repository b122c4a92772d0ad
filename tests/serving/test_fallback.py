"""The fallbacks against a fake OpenAI-compatible server over real HTTP."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from lifecycle.config.errors import ConfigError
from lifecycle.serving.fallback import (
    NOT_IN_SET,
    RAW_LIMIT,
    FallbackAnswer,
    FallbackSettings,
    OpenAIFallback,
    ReviewQueueFallback,
    build_fallback,
)
from lifecycle.serving.prompt import match_label
from tests.fakes.openai_server import FakeOpenAI

LABELS = ["billing", "lost_card", "refund", "other"]
KEY = "sk-test-0123456789"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeOpenAI) -> FakeOpenAI:
    server.reset()
    return server


def classify(fake: FakeOpenAI, text: str = "a text", **kwargs: Any) -> FallbackAnswer:
    """One classify call on a fresh fallback, closed afterwards."""

    async def go() -> FallbackAnswer:
        args: dict[str, Any] = {"base_url": fake.base_url, "model": "big-model"}
        args.update(kwargs)
        async with OpenAIFallback(**args) as fallback:
            return await fallback.classify(text, labels=LABELS, specialist="support-router")

    return asyncio.run(go())


def test_answers_the_right_label(fake: FakeOpenAI) -> None:
    answer = classify(fake, "my refund never arrived")
    assert answer == FallbackAnswer(
        label="refund",
        source="openai",
        latency_ms=answer.latency_ms,
        ok=True,
        error=None,
        raw="refund",
    )
    assert 0 < answer.latency_ms < 5000


def test_request_is_a_chat_completions_body_with_the_key_as_bearer(fake: FakeOpenAI) -> None:
    fake.expected_key = KEY
    answer = classify(fake, "card gone", api_key=KEY)
    assert answer.ok
    (seen,) = fake.requests
    body = seen.body
    assert body["model"] == "big-model"
    assert body["temperature"] == 0.0
    assert isinstance(body["max_tokens"], int) and 1 <= body["max_tokens"] <= 64
    system, user = body["messages"]
    assert system["role"] == "system" and user == {"role": "user", "content": "card gone"}
    assert all(f"- {label}" in system["content"] for label in LABELS)
    assert "exactly one label" in system["content"]
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["content-type"] == "application/json"


def test_no_key_no_authorization_header(fake: FakeOpenAI) -> None:
    assert classify(fake).ok
    assert "authorization" not in fake.requests[0].headers


@pytest.mark.parametrize(
    "said",
    [
        "Refund",
        "  'refund'\n",
        '"REFUND".',
        "refund!",
        "**refund**",
        '{"label": "refund"}',
        '```json\n{"label": "Refund"}\n```',
        "The label is: refund.",
    ],
)
def test_label_spelled_differently_maps_to_the_set(fake: FakeOpenAI, said: str) -> None:
    fake.mode, fake.fixed_answer = "fixed", said
    answer = classify(fake)
    assert (answer.ok, answer.label, answer.raw) == (True, "refund", said)


def test_match_label_rules() -> None:
    assert match_label("Lost card", LABELS) == "lost_card"
    assert match_label("lost-card", LABELS) == "lost_card"
    assert match_label("I think it is a lost card case", LABELS) == "lost_card"
    assert match_label("refunds", LABELS) is None  # whole words only
    assert match_label("billing or refund", LABELS) is None  # ambiguous: no guess
    assert match_label('{"label": "weather"}', LABELS) is None
    assert match_label("", LABELS) is None
    # A label inside a longer label that was found does not make the answer ambiguous.
    assert match_label("it is a lost card", ["card", "lost card"]) == "lost card"


def test_answer_not_in_label_set(fake: FakeOpenAI) -> None:
    fake.mode = "garbage"
    answer = classify(fake)
    assert (answer.ok, answer.label, answer.error) == (False, None, NOT_IN_SET)
    assert answer.raw and "sorry" in answer.raw

    fake.fixed_answer, fake.mode = "x" * 2000, "fixed"
    long = classify(fake)
    assert not long.ok and long.raw is not None and len(long.raw) == RAW_LIMIT


def test_server_error_is_retried_then_reported(fake: FakeOpenAI) -> None:
    fake.mode = "error500"
    answer = classify(fake, max_retries=1)
    assert not answer.ok and answer.label is None
    assert answer.error and "500" in answer.error and "2 attempts" in answer.error
    assert len(fake.requests) == 2

    fake.requests.clear()
    assert not classify(fake, max_retries=0).ok
    assert len(fake.requests) == 1


def test_slow_answer_times_out_within_the_bound(fake: FakeOpenAI) -> None:
    fake.mode, fake.delay_s = "slow", 3.0
    start = time.monotonic()
    answer = classify(fake, timeout_s=0.5, max_retries=2)
    elapsed = time.monotonic() - start
    assert not answer.ok and answer.error and "timeout" in answer.error
    assert elapsed < 0.5 + 1
    assert len(fake.requests) == 1  # a timeout is not retried


def test_malformed_json_is_reported(fake: FakeOpenAI) -> None:
    fake.mode = "malformed"
    answer = classify(fake, max_retries=1)
    assert (answer.ok, answer.label) == (False, None)
    assert answer.error and "malformed" in answer.error
    assert len(fake.requests) == 1


def test_wrong_key_is_401_not_retried_and_never_logged(
    fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake.expected_key = KEY
    wrong = "sk-wrong-key-9876"
    with caplog.at_level(logging.DEBUG):
        answer = classify(fake, api_key=wrong, max_retries=3)
        assert classify(fake, api_key=KEY).ok
    assert not answer.ok and answer.error and "401" in answer.error
    assert len(fake.requests) == 2  # one per call: a 4xx is not retried
    assert wrong not in caplog.text and KEY not in caplog.text
    assert wrong not in str(answer)
    assert KEY not in repr(OpenAIFallback(base_url=fake.base_url, model="m", api_key=KEY))


def test_refused_connection_is_retried_then_reported() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def go() -> FallbackAnswer:
        async with OpenAIFallback(
            base_url=f"http://127.0.0.1:{port}/v1", model="m", timeout_s=2, max_retries=1
        ) as fallback:
            return await fallback.classify("x", labels=LABELS, specialist="s")

    answer = asyncio.run(go())
    assert not answer.ok and answer.error and "connection error" in answer.error
    assert "2 attempts" in answer.error


def test_a_client_passed_in_is_used_and_left_open(fake: FakeOpenAI) -> None:
    async def go() -> tuple[FallbackAnswer, bool]:
        async with httpx.AsyncClient() as client:
            fallback = OpenAIFallback(base_url=fake.base_url + "/", model="m", client=client)
            answer = await fallback.classify("billing", labels=LABELS, specialist="s")
            await fallback.aclose()
            return answer, client.is_closed

    answer, closed = asyncio.run(go())
    assert answer.label == "billing" and not closed


def test_review_queue_answers_at_once_with_no_label() -> None:
    answer = asyncio.run(ReviewQueueFallback().classify("x", labels=LABELS, specialist="s"))
    assert (answer.label, answer.source, answer.ok, answer.error) == (None, "review", True, None)


def test_build_fallback_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_fallback("none") is None
    assert isinstance(build_fallback("review"), ReviewQueueFallback)
    openai = build_fallback(
        "openai", base_url="http://127.0.0.1:8001/v1", model="m", api_key=SecretStr(KEY)
    )
    assert isinstance(openai, OpenAIFallback) and openai.model == "m"
    with pytest.raises(ConfigError, match="unknown fallback kind"):
        build_fallback("gpt")
    with pytest.raises(ConfigError, match="base_url"):
        build_fallback("openai", model="m")
    with pytest.raises(ConfigError, match="unknown openai fallback settings"):
        build_fallback("openai", base_url="http://x/v1", model="m", temprature=0.2)
    with pytest.raises(ConfigError, match="http"):
        build_fallback("openai", base_url="127.0.0.1:8001", model="m")

    monkeypatch.setenv("LIFECYCLE_FALLBACK_BASE_URL", "http://127.0.0.1:8001/v1/")
    monkeypatch.setenv("LIFECYCLE_FALLBACK_API_KEY", KEY)
    settings = FallbackSettings()
    assert settings.model == "gpt-4o-mini" and settings.timeout_s == 5.0
    assert KEY not in repr(settings)
    from_dump = build_fallback("openai", **settings.model_dump())
    assert isinstance(from_dump, OpenAIFallback)
    assert from_dump.base_url == "http://127.0.0.1:8001/v1"
    assert isinstance(build_fallback("openai", **settings.openai_kwargs()), OpenAIFallback)
