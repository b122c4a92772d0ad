"""Estimated cost of a specialist's traffic against sending all of it to the fallback: per
1,000 requests, and per correct answer (what teams compare a specialist with a general model by).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CostEstimate:
    requests: int
    escalations: int
    escalation_rate: float
    #: The specialist's own cost plus its escalations' fallback calls, per 1,000 requests.
    per_1k: float
    #: What 1,000 requests would cost if the fallback answered every one.
    fallback_only_per_1k: float

    @property
    def saving(self) -> float:
        """Share of the fallback-only cost saved (1.0 = everything)."""
        if self.fallback_only_per_1k <= 0:
            return 0.0
        return 1.0 - self.per_1k / self.fallback_only_per_1k


def estimate_cost(
    *, requests: int, escalations: int, specialist_price_per_1k: float, fallback_price_per_1k: float
) -> CostEstimate:
    rate = escalations / requests if requests else 0.0
    return CostEstimate(
        requests=requests,
        escalations=escalations,
        escalation_rate=rate,
        per_1k=specialist_price_per_1k + rate * fallback_price_per_1k,
        fallback_only_per_1k=fallback_price_per_1k,
    )


#: Requests the cost per correct answer is measured over (the newest): a current figure, and
#: a bounded read for the gateway, which refreshes it after every registry poll.
OUTCOME_WINDOW = 10_000
#: Labelled escalated answers needed before the fallback's measured accuracy replaces the
#: assumed one (``LIFECYCLE_FALLBACK_ACCURACY``): a share of a handful is mostly noise.
MIN_FALLBACK_LABELS = 20


@dataclass(frozen=True)
class OutcomeCounts:
    """What the traffic store knows of a specialist's answers (``TrafficStore.outcome_counts``).

    ``fallback_answered``: escalated requests whose answer came from the fallback; every other
    request was answered by the champion (a failed or queued fallback leaves its answer).
    ``champion_confidence``: the sum of the champion's calibrated confidences over the requests
    it answered. ``labelled_*``, ``correct_*``: requests with a person's label, and those whose
    answer matched it; ``labelled_champion_confidence`` is the confidence sum over the former.
    """

    requests: int = 0
    escalations: int = 0
    fallback_answered: int = 0
    champion_confidence: float = 0.0
    labelled_champion: int = 0
    correct_champion: int = 0
    labelled_champion_confidence: float = 0.0
    labelled_fallback: int = 0
    correct_fallback: int = 0


@dataclass(frozen=True)
class CostPerCorrect:
    """Spend per answer that was right: the figure that compares a specialist with the model
    it escalates to, since a cheap wrong answer is no saving."""

    #: Expected correct answers: counted where a person labelled, estimated elsewhere.
    correct: float
    #: Answers checked against a person's label.
    correct_measured_on: int
    #: ``correct`` / requests (None without requests).
    accuracy: float | None
    #: The fallback's accuracy used, and how many labelled escalations measured it (0: assumed).
    fallback_accuracy: float
    fallback_accuracy_measured_on: int
    #: The specialist's calls plus its escalations' fallback calls.
    spend: float
    #: ``spend`` / ``correct``; None while nothing is known to be right.
    per_correct: float | None
    #: The fallback alone: its price per request / its accuracy.
    fallback_only_per_correct: float | None


def cost_per_correct(
    counts: OutcomeCounts,
    *,
    specialist_price_per_1k: float,
    fallback_price_per_1k: float,
    fallback_accuracy: float,
) -> CostPerCorrect:
    """(Specialist spend + its fallback's spend) / requests answered correctly, beside the same
    figure for the fallback answering everything.

    Correct answers are counted on requests with a person's label; elsewhere they are
    expected ones: the champion's calibrated confidence for each answer it gave (what a
    calibrated probability means), and the fallback's accuracy for each answer the fallback
    gave: measured on labelled escalations once there are ``MIN_FALLBACK_LABELS``, else the
    assumed ``fallback_accuracy``.
    """
    c = counts
    if c.labelled_fallback >= MIN_FALLBACK_LABELS:
        fb_accuracy, fb_measured_on = c.correct_fallback / c.labelled_fallback, c.labelled_fallback
    else:
        fb_accuracy, fb_measured_on = fallback_accuracy, 0
    unlabelled_fallback = max(c.fallback_answered - c.labelled_fallback, 0)
    unlabelled_confidence = max(c.champion_confidence - c.labelled_champion_confidence, 0.0)
    counted = c.correct_champion + c.correct_fallback
    correct = counted + unlabelled_confidence + unlabelled_fallback * fb_accuracy
    spend = (c.requests * specialist_price_per_1k + c.escalations * fallback_price_per_1k) / 1000
    fallback_price = fallback_price_per_1k / 1000
    return CostPerCorrect(
        correct=correct,
        correct_measured_on=c.labelled_champion + c.labelled_fallback,
        accuracy=correct / c.requests if c.requests else None,
        fallback_accuracy=fb_accuracy,
        fallback_accuracy_measured_on=fb_measured_on,
        spend=spend,
        per_correct=spend / correct if correct > 0 else None,
        fallback_only_per_correct=fallback_price / fb_accuracy if fb_accuracy > 0 else None,
    )
