"""Cost estimates (pure)."""

from __future__ import annotations

import pytest

from lifecycle.cost import estimate_cost


def test_cost_grows_with_escalations() -> None:
    none = estimate_cost(
        requests=1000, escalations=0, specialist_price_per_1k=0.01, fallback_price_per_1k=1.0
    )
    some = estimate_cost(
        requests=1000, escalations=100, specialist_price_per_1k=0.01, fallback_price_per_1k=1.0
    )
    assert none.per_1k == pytest.approx(0.01)
    assert some.per_1k == pytest.approx(0.11)
    assert some.escalation_rate == pytest.approx(0.1)
    assert some.saving == pytest.approx(0.89)


def test_no_traffic_costs_the_base_price() -> None:
    empty = estimate_cost(
        requests=0, escalations=0, specialist_price_per_1k=0.5, fallback_price_per_1k=0.0
    )
    assert empty.per_1k == 0.5 and empty.escalation_rate == 0.0 and empty.saving == 0.0
