"""Replays a traffic scenario against a running gateway, with feedback labels arriving late.

What a client population does to the gateway in production, compressed: texts in
arrival order, the true label of a share of them sent back some requests later
(people label with a delay), and the accuracy the clients saw before and after
the drift's onset.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


@dataclass
class PhaseStats:
    requests: int = 0
    correct: int = 0
    escalated: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.requests if self.requests else float("nan")


@dataclass
class SimulationReport:
    sent: int = 0
    feedback_sent: int = 0
    feedback_refused: int = 0
    errors: int = 0
    versions: dict[int, int] = field(default_factory=dict)
    phases: dict[str, PhaseStats] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "feedback_sent": self.feedback_sent,
            "feedback_refused": self.feedback_refused,
            "errors": self.errors,
            "versions": self.versions,
            "seconds": round(self.seconds, 2),
            "phases": {
                name: {"requests": p.requests, "accuracy": p.accuracy, "escalated": p.escalated}
                for name, p in self.phases.items()
            },
        }


def simulate(
    url: str,
    specialist: str,
    stream: pd.DataFrame,
    *,
    texts_per_request: int = 1,
    feedback_share: float = 0.3,
    feedback_delay: int = 50,
    rate: float = 0.0,
    seed: int = 0,
    token: str | None = None,
    client: Any = None,
) -> SimulationReport:
    """Send ``stream`` (columns text, label, phase) to the gateway at ``url``.

    ``feedback_share`` of the texts get their true label back ``feedback_delay``
    requests after they were answered. ``rate`` caps requests per second (0: as fast
    as the gateway answers). Labels the gateway does not know (a new intent) are
    refused with a 422 and counted, as a real labelling tool would see.
    """
    import httpx

    rng = random.Random(seed)
    report = SimulationReport()
    pending: deque[tuple[int, str, str]] = deque()
    owns_client = client is None
    client = client or httpx.Client(base_url=url, timeout=60.0)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    started = time.perf_counter()
    rows = stream.to_dict("records")
    try:
        for start in range(0, len(rows), texts_per_request):
            chunk = rows[start : start + texts_per_request]
            if rate > 0:
                time.sleep(
                    max(0.0, start / texts_per_request / rate - (time.perf_counter() - started))
                )
            response = client.post(
                f"/v1/specialists/{specialist}/predict",
                json={"texts": [r["text"] for r in chunk]},
                headers=headers,
            )
            report.sent += 1
            if response.status_code != 200:
                report.errors += 1
                logger.warning("predict answered %d: %s", response.status_code, response.text[:200])
                continue
            for row, pred in zip(chunk, response.json()["predictions"], strict=True):
                phase = report.phases.setdefault(str(row.get("phase", "all")), PhaseStats())
                phase.requests += 1
                phase.correct += pred["label"] == row["label"]
                phase.escalated += pred["escalated"]
                version = int(pred["model_version"])
                report.versions[version] = report.versions.get(version, 0) + 1
                if rng.random() < feedback_share:
                    pending.append((report.sent + feedback_delay, pred["request_id"], row["label"]))
            while pending and pending[0][0] <= report.sent:
                _send_feedback(client, specialist, pending.popleft(), report, headers)
        while pending:
            _send_feedback(client, specialist, pending.popleft(), report, headers)
    finally:
        if owns_client:
            client.close()
    report.seconds = time.perf_counter() - started
    return report


def _send_feedback(
    client: Any,
    specialist: str,
    item: tuple[int, str, str],
    report: SimulationReport,
    headers: dict[str, str],
) -> None:
    _, request_id, label = item
    response = client.post(
        f"/v1/specialists/{specialist}/feedback",
        json={"request_id": request_id, "label": label},
        headers=headers,
    )
    if response.status_code == 202:
        report.feedback_sent += 1
    else:
        report.feedback_refused += 1
