"""The alert as plain data: what went wrong, its evidence, and what to run.

Monitors and flows describe a problem as an ``AlertMessage``; the rest of ``notify`` renders
it (``slack``), decides whether to send it (``dedup``), posts it (``delivery``) and records
it (``alerter``). The verdict and status words below are what the traffic store keeps.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Verdicts with a meaning to the dedupe: OK closes an open problem, RESOLVED says so.
OK = "OK"
RESOLVED = "RESOLVED"
#: Outcome statuses. ``sent``: at least one webhook accepted; ``failed``: none did;
#: ``no_webhook``: none configured (stored only); ``skipped``: nothing to say (OK, nothing open).
SENT, SUPPRESSED, FAILED, NO_WEBHOOK, SKIPPED = (
    "sent",
    "suppressed",
    "failed",
    "no_webhook",
    "skipped",
)


class AlertReason(BaseModel):
    """One piece of evidence: a signal, its value and the threshold it crossed."""

    model_config = ConfigDict(frozen=True)

    signal: str
    value: float | None = None
    threshold: float | None = None
    detail: str = ""

    @field_validator("value", "threshold")
    @classmethod
    def _finite(cls, number: float | None) -> float | None:
        # NaN/inf cannot be stored as JSON (the store refuses them); "unknown" is honest.
        return number if number is None or math.isfinite(number) else None


class AlertMessage(BaseModel):
    """What on-call reads: the problem, its evidence, where the report is, what to run."""

    specialist: str = Field(min_length=1)
    kind: str = Field(min_length=1, description="monitor, promotion, gate, rollback, retrain")
    verdict: str = Field(min_length=1, description="OK, WARN, DRIFT, QUALITY_DROP, ...")
    summary: str = Field(description="One line a person reads first.")
    reasons: list[AlertReason] = Field(default_factory=list)
    window: dict[str, Any] = Field(
        default_factory=dict, description="e.g. rows, labelled, since, until."
    )
    champion_version: int | None = None
    report_uri: str | None = Field(default=None, description="The Evidently report: URI or link.")
    actions: list[str] = Field(default_factory=list, description="Commands that act on it.")
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("verdict", mode="before")
    @classmethod
    def _plain_verdict(cls, verdict: Any) -> Any:
        # Monitors may hand over an Enum; the store and the dedupe compare plain upper strings.
        if isinstance(verdict, enum.Enum):
            verdict = verdict.value
        return verdict.strip().upper() if isinstance(verdict, str) else verdict

    @property
    def fingerprint(self) -> str:
        """Identity of the problem, not of its numbers: a value that creeps does not re-alert.

        The champion's version is part of it: the same verdict about a new champion (a second
        promotion, a drift that outlived a retrain) is news, whatever the cooldown says.
        """
        signals = sorted({reason.signal for reason in self.reasons})
        key = json.dumps(
            [self.specialist, self.kind, self.verdict, signals, self.champion_version],
            ensure_ascii=False,
        )
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]

    @property
    def title(self) -> str:
        """``[DRIFT] support-router (monitor)``: the ascii-only lead of every rendering."""
        return f"[{self.verdict}] {self.specialist} ({self.kind})"


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def oneline(exc: BaseException) -> str:
    """An exception as one short line, for a log or a stored delivery error."""
    return clip(" ".join(str(exc).split()) or type(exc).__name__, 300)
