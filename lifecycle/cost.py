"""Estimated cost of a specialist's traffic against sending all of it to the fallback."""

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
