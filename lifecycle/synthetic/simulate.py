"""Replays a traffic scenario against a running gateway, with feedback labels arriving late.

What a client population does to the gateway in production, compressed: texts in
arrival order, the true label of a share of them sent back some requests later
(people label with a delay), and the accuracy the clients saw before and after
the drift's onset. A failed request counts as a wrong answer: the client got none.

An extraction stream (an ``entities`` column of gold spans instead of ``label``) is sent the
same way: the clients' figure is then entity F1 on exact spans (and exact match), and people
send the text's gold spans as the corrected ``entities``.

Two kinds of simulated people: :func:`simulate`'s ``feedback_share`` labels requests at
random as they are answered; a :class:`Labeller` labels a share of them in rounds, taking
the gateway's label-request queue first (what a team labelling from
``GET /v1/specialists/{name}/label-requests`` does) or at random for comparison.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


@dataclass
class PhaseStats:
    """What the clients of one phase got. For an extraction stream ``correct`` counts exact
    matches (every span right, none extra) and the span counts give entity micro-F1."""

    requests: int = 0
    correct: int = 0
    escalated: int = 0
    #: Extraction: spans predicted with the gold label, start and end; all predicted; all gold.
    true_spans: int = 0
    predicted_spans: int = 0
    gold_spans: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.requests if self.requests else float("nan")

    @property
    def f1(self) -> float:
        """Entity micro-F1 on exact spans (1.0 when there was nothing to find and nothing
        was found; NaN without requests)."""
        if not self.requests:
            return float("nan")
        spans = self.predicted_spans + self.gold_spans
        return 2 * self.true_spans / spans if spans else 1.0

    def add_spans(self, gold: Iterable[Any], predicted: Iterable[Any]) -> None:
        """Count one answered request's spans (dicts or ``Entity`` objects) and whether it was
        an exact match (the same spans, as a multiset)."""
        from lifecycle.extraction.spans import keys

        g, p = Counter(keys(gold)), Counter(keys(predicted))
        self.true_spans += sum((g & p).values())
        self.gold_spans += sum(g.values())
        self.predicted_spans += sum(p.values())
        self.correct += g == p


@dataclass
class SimulationReport:
    sent: int = 0
    feedback_sent: int = 0
    feedback_refused: int = 0
    errors: int = 0
    versions: dict[int, int] = field(default_factory=dict)
    phases: dict[str, PhaseStats] = field(default_factory=dict)
    seconds: float = 0.0
    #: (request id, truth) of every answered text, in order: what a :class:`Labeller` may
    #: label later. The truth is a label, or an extraction stream's gold spans (a list).
    answered: list[tuple[str, Any]] = field(default_factory=list)
    #: Labels the gateway stored as proposed (unknown to the champion), with how many sent.
    proposed: dict[str, int] = field(default_factory=dict)

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
                | ({"f1": p.f1} if p.gold_spans + p.predicted_spans else {})
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

    A stream with an ``entities`` column (gold spans, no ``label``) is an extraction
    specialist's: each answer's spans are scored against them (``PhaseStats.f1``; ``correct``
    counts exact matches) and the feedback sends them as the corrected ``entities``.
    """
    import httpx

    rng = random.Random(seed)
    report = SimulationReport()
    pending: deque[tuple[int, str, Any]] = deque()
    owns_client = client is None
    client = client or httpx.Client(base_url=url, timeout=60.0)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    started = time.perf_counter()
    rows = stream.to_dict("records")
    spans = "entities" in stream.columns
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
                for row in chunk:  # the client got no answer: a wrong one, not a missing one
                    report.phases.setdefault(
                        str(row.get("phase", "all")), PhaseStats()
                    ).requests += 1
                continue
            for row, pred in zip(chunk, response.json()["predictions"], strict=True):
                phase = report.phases.setdefault(str(row.get("phase", "all")), PhaseStats())
                phase.requests += 1
                if spans:
                    phase.add_spans(row["entities"], pred.get("entities") or ())
                else:
                    phase.correct += pred["label"] == row["label"]
                phase.escalated += pred["escalated"]
                version = int(pred["model_version"])
                report.versions[version] = report.versions.get(version, 0) + 1
                truth = _gold(row["entities"]) if spans else row["label"]
                report.answered.append((pred["request_id"], truth))
                if rng.random() < feedback_share:
                    pending.append((report.sent + feedback_delay, pred["request_id"], truth))
            while pending and pending[0][0] <= report.sent:
                _send_feedback(client, specialist, pending.popleft(), report, headers)
        while pending:
            _send_feedback(client, specialist, pending.popleft(), report, headers)
    finally:
        if owns_client:
            client.close()
    report.seconds = time.perf_counter() - started
    return report


def _gold(entities: Any) -> list[dict[str, Any]]:
    """A stream row's gold spans as the feedback route takes them: label, start, end."""
    from lifecycle.extraction.spans import keys

    return [{"label": label, "start": s, "end": e} for label, s, e in keys(entities or ())]


def _send_feedback(
    client: Any,
    specialist: str,
    item: tuple[int, str, Any],
    report: SimulationReport,
    headers: dict[str, str],
) -> None:
    """Send one truth: a classifier's label, or an extractor's corrected spans (a list)."""
    _, request_id, truth = item
    answer = {"entities": truth} if isinstance(truth, list) else {"label": truth}
    response = client.post(
        f"/v1/specialists/{specialist}/feedback",
        json={"request_id": request_id, **answer},
        headers=headers,
    )
    if response.status_code == 202:
        report.feedback_sent += 1
        proposed = set(response.json().get("proposed_labels") or ())
        labels = {str(e["label"]) for e in truth} if isinstance(truth, list) else {truth}
        for label in sorted(labels & proposed):
            report.proposed[label] = report.proposed.get(label, 0) + 1
    else:
        report.feedback_refused += 1
        logger.debug("feedback answered %d: %s", response.status_code, response.text[:200])


@dataclass
class Labeller:
    """A simulated person who labels ``share`` of the answered requests, in rounds.

    For an extraction stream the label is the text's gold spans, sent as the corrected
    ``entities`` of an extractor's feedback; ``proposed`` then counts entity labels.

    ``source="queue"`` takes the gateway's ranked label requests first and fills the rest of
    the round's budget at random; ``"random"`` draws every label at random from the same
    pool, for a comparison at the same label count. The pool is the newest ``pool_size``
    answered requests not yet labelled (the queue covers the champion's newest window too).
    Call :meth:`saw` with each :func:`simulate` report, then :meth:`label`.
    """

    share: float
    source: Literal["queue", "random"] = "queue"
    seed: int = 0
    pool_size: int = 1000
    from_queue: int = 0
    at_random: int = 0
    refused: int = 0
    #: Labels sent that the gateway stored as proposed labels, with how many.
    proposed: dict[str, int] = field(default_factory=dict)
    #: Request id -> its truth (a label, or gold spans), oldest first.
    _pool: OrderedDict[str, Any] = field(default_factory=OrderedDict, repr=False)
    _owed: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"share must be within [0, 1], got {self.share}")
        self._rng = random.Random(self.seed)

    @property
    def sent(self) -> int:
        return self.from_queue + self.at_random

    def saw(self, report: SimulationReport) -> None:
        for request_id, truth in report.answered:
            self._pool[request_id] = truth
        while len(self._pool) > self.pool_size:
            self._pool.popitem(last=False)
        self._owed += self.share * len(report.answered)

    def label(self, client: Any, specialist: str, *, token: str | None = None) -> dict[str, int]:
        """Send this round's labels through ``/feedback``; what was sent, by where it came from."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        budget = int(self._owed)
        chosen: list[str] = []
        if self.source == "queue" and budget > 0:
            chosen = self._queue(client, specialist, headers, budget)
        n_queue, taken = len(chosen), set(chosen)
        rest = [rid for rid in self._pool if rid not in taken]
        chosen += self._rng.sample(rest, min(budget - n_queue, len(rest)))
        round_report = SimulationReport()
        for rid in chosen:
            _send_feedback(client, specialist, (0, rid, self._pool.pop(rid)), round_report, headers)
        self._owed -= len(chosen)
        self.from_queue += n_queue
        self.at_random += len(chosen) - n_queue
        self.refused += round_report.feedback_refused
        for label, n in round_report.proposed.items():
            self.proposed[label] = self.proposed.get(label, 0) + n
        return {"queue": n_queue, "random": len(chosen) - n_queue}

    def _queue(
        self, client: Any, specialist: str, headers: dict[str, str], budget: int
    ) -> list[str]:
        response = client.get(
            f"/v1/specialists/{specialist}/label-requests",
            # More than the budget: the queue may hold requests this person never saw.
            params={"limit": min(max(4 * budget, 100), 1000)},
            headers=headers,
        )
        if response.status_code != 200:
            logger.warning("label-requests answered %d: %s", response.status_code, response.text)
            return []
        ids = [item["request_id"] for item in response.json()["items"]]
        return [rid for rid in ids if rid in self._pool][:budget]
