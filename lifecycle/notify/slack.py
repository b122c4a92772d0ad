"""An ``AlertMessage`` as Slack-compatible JSON: a ``text`` fallback plus Block Kit blocks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from lifecycle.notify.message import AlertMessage, AlertReason, clip

#: Slack's limits (api.slack.com/reference/block-kit/blocks): longer text is refused.
_HEADER_MAX, _SECTION_MAX, _FIELD_MAX, _TEXT_MAX = 150, 3000, 2000, 3000


def slack_payload(message: AlertMessage) -> dict[str, Any]:
    """Slack-compatible JSON for a message: a ``text`` fallback plus readable ``blocks``.

    Text from the message is escaped for Slack's mrkdwn (``&``, ``<``, ``>``) so that a
    reason cannot ping ``<!channel>`` or smuggle a link, and clipped to Slack's limits; the
    full message stays in the traffic store.
    """
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(clip(message.title, _HEADER_MAX))},
        _section(_escape(message.summary) or "_no summary_"),
    ]
    fields = _facts(message)
    if fields:
        blocks.append({"type": "section", "fields": fields})
    if message.reasons:
        blocks.append(_section("*Reasons*\n" + "\n".join(_reason_line(r) for r in message.reasons)))
    if message.report_uri:
        blocks.append(_section(f"*Report*: {_link(message.report_uri)}"))
    if message.actions:
        blocks.append(_section("*Actions*\n" + _code_block(message.actions)))
    context = f"fingerprint `{message.fingerprint}`"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    text = clip(f"{message.title}: {_escape(message.summary)}", _TEXT_MAX)
    return {"text": text, "blocks": blocks}


def _facts(message: AlertMessage) -> list[dict[str, Any]]:
    facts: list[tuple[str, str]] = [("Specialist", message.specialist), ("Kind", message.kind)]
    if message.champion_version is not None:
        facts.append(("Champion", f"v{message.champion_version}"))
    if message.window:
        lines = (f"{key}: {_scalar(value)}" for key, value in message.window.items())
        facts.append(("Window", "\n".join(lines)))
    # Slack takes at most 10 fields.
    return [_mrkdwn(clip(f"*{name}*\n{_escape(value)}", _FIELD_MAX)) for name, value in facts[:10]]


def _reason_line(reason: AlertReason) -> str:
    line = f"• {reason.signal}: {_number(reason.value)} (threshold {_number(reason.threshold)})"
    if reason.detail:
        line += f" - {reason.detail}"
    return _escape(line)


def _link(uri: str) -> str:
    # Only web links are clickable; an MLflow artifact URI (runs:/..., s3://...) is shown as code.
    if uri.startswith(("http://", "https://")) and not any(c in uri for c in " <>|\n"):
        return f"<{_escape(uri)}|open the report>"
    return _code_span(uri)


def _code_block(lines: Sequence[str]) -> str:
    # A ``` inside would close the block early; a zero-width space breaks it up.
    body = "\n".join(line.replace("```", "``\u200b`") for line in lines)
    return f"```{_escape(body)}```"


def _code_span(text: str) -> str:
    # A backtick inside would end the span early.
    inner = _escape(text.replace("`", "'"))
    return f"`{inner}`"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(clip(text, _SECTION_MAX))}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": False}


def _escape(text: str) -> str:
    """Slack's three control characters (api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
