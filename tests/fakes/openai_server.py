"""A fake OpenAI-compatible chat-completions server for tests, speaking real HTTP.

``FakeOpenAI()`` runs a small FastAPI app under uvicorn in a background thread on
a free 127.0.0.1 port. Its behaviour is chosen at runtime with ``mode``:

- ``echo_label``: the label (from the system message's ``- label`` lines, or
  ``labels`` when set) whose name appears in the user text, else the first label;
- ``fixed``: ``fixed_answer``;
- ``garbage``: a sentence that names no label;
- ``error500``: HTTP 500 with an OpenAI-style error body;
- ``slow``: sleeps ``delay_s`` and then answers like ``echo_label``;
- ``malformed``: HTTP 200 with a body that is not valid JSON.

When ``expected_key`` is set, requests without ``Authorization: Bearer <key>`` get
a 401 with an OpenAI-style error body. Every request to ``/v1/chat/completions``
is recorded in ``requests`` (body and headers), before any check.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .server import FakeServer

MODES = ("echo_label", "fixed", "garbage", "error500", "slow", "malformed")
GARBAGE = "I am sorry, I cannot help with that request."
_LABEL_LINE = re.compile(r"^- (.+)$", re.MULTILINE)


@dataclass
class ReceivedRequest:
    """One request as the server saw it: the JSON body (None if not JSON) and headers."""

    body: Any
    headers: dict[str, str]


@dataclass
class FakeOpenAI(FakeServer):
    """Context manager: ``with FakeOpenAI() as fake: ... fake.base_url ...``."""

    mode: str = "echo_label"
    fixed_answer: str = ""
    delay_s: float = 2.0
    expected_key: str | None = None
    labels: list[str] | None = None
    requests: list[ReceivedRequest] = field(default_factory=list)
    thread_name: ClassVar[str] = "fake-openai"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def reset(self) -> None:
        """Back to the defaults, with no recorded requests (between tests)."""
        self.mode, self.fixed_answer, self.delay_s = "echo_label", "", 2.0
        self.expected_key, self.labels = None, None
        self.requests.clear()

    # -- the app --------------------------------------------------------------------

    def _app(self) -> FastAPI:
        app = FastAPI(title="fake-openai")

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            try:
                body = await request.json()
            except ValueError:
                body = None
            self.requests.append(ReceivedRequest(body=body, headers=dict(request.headers)))
            key = self.expected_key
            if key is not None and request.headers.get("authorization") != f"Bearer {key}":
                return _error(
                    401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
                )
            if not isinstance(body, dict):
                return _error(
                    400,
                    "We could not parse the JSON body of your request.",
                    "invalid_request_error",
                    None,
                )
            messages = body.get("messages")
            if not isinstance(body.get("model"), str) or not isinstance(messages, list):
                return _error(
                    400, "'model' and 'messages' are required.", "invalid_request_error", None
                )
            mode = self.mode
            if mode not in MODES:
                return _error(500, f"fake: unknown mode {mode!r}", "server_error", None)
            if mode == "error500":
                return _error(
                    500,
                    "The server had an error while processing your request.",
                    "server_error",
                    None,
                )
            if mode == "malformed":
                return Response('{"id": "chatcmpl-1", "choices": [', media_type="application/json")
            if mode == "slow":
                await self._sleep(self.delay_s)
            if mode == "fixed":
                answer = self.fixed_answer
            elif mode == "garbage":
                answer = GARBAGE
            else:
                answer = self._echo(messages)
            return JSONResponse(_completion(body["model"], messages, answer))

        return app

    def _echo(self, messages: list[Any]) -> str:
        system = " ".join(
            str(m.get("content", ""))
            for m in messages
            if isinstance(m, dict) and m.get("role") == "system"
        )
        user = " ".join(
            str(m.get("content", ""))
            for m in messages
            if isinstance(m, dict) and m.get("role") == "user"
        ).casefold()
        labels = self.labels or [s.strip() for s in _LABEL_LINE.findall(system)]
        for label in labels:
            if label.casefold() in user:
                return label
        return labels[0] if labels else ""


def _completion(model: str, messages: list[Any], answer: str) -> dict[str, Any]:
    prompt_tokens = sum(
        len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict)
    )
    completion_tokens = max(len(answer.split()), 1)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _error(status: int, message: str, kind: str, code: str | None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)
