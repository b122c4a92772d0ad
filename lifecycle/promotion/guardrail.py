"""The guardrail, pure: whether a promotion hurt quality enough to roll it back.

It compares the labelled traffic of the previous champion with that of the new one.
Different requests, so the test is unpaired: a one-sided Farrington-Manning score test for a
drop larger than the margin (:func:`lifecycle.promotion.statistics.drop_p_value`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from lifecycle.promotion.statistics import drop_p_value, successes

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

GuardrailAction = Literal["rollback", "keep", "wait"]
GUARDRAIL_TEST = "Farrington-Manning score test (one-sided, unpaired)"


@dataclass(frozen=True, slots=True)
class GuardrailDecision:
    """Whether a promotion hurt quality enough to roll back, and the numbers behind it.

    ``difference`` is after minus before; ``p_value`` is one-sided for "after is lower than
    before by more than ``margin``". None where a side has no labelled rows.
    """

    action: GuardrailAction
    reasons: list[str]
    n_before: int
    n_after: int
    before_accuracy: float | None = None
    after_accuracy: float | None = None
    difference: float | None = None
    p_value: float | None = None
    test: str = GUARDRAIL_TEST
    alpha: float = 0.05
    margin: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rollback(self) -> bool:
        return self.action == "rollback"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rollback"] = self.rollback
        return data


def guardrail(
    before: pd.Series | Sequence[bool] | np.ndarray,
    after: pd.Series | Sequence[bool] | np.ndarray,
    *,
    alpha: float = 0.05,
    margin: float = 0.0,
    min_samples: int = 50,
) -> GuardrailDecision:
    """Roll back when the new champion is worse than the previous one by more than ``margin``.

    ``before`` and ``after`` say, per labelled request, whether the previous and the new
    champion answered correctly (missing values are dropped). The requests differ, so the
    test is unpaired: one-sided Farrington-Manning score test of H0 ``before - after <=
    margin`` at ``alpha`` (with margin 0, the pooled two-proportion z-test). Fewer than
    ``min_samples`` labelled rows on either side: "wait". Not significant: "keep".
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    x_before, n_before = successes(before)
    x_after, n_after = successes(after)
    common: dict[str, Any] = {
        "n_before": n_before,
        "n_after": n_after,
        "alpha": alpha,
        "margin": margin,
        "before_accuracy": x_before / n_before if n_before else None,
        "after_accuracy": x_after / n_after if n_after else None,
    }
    if n_before and n_after:
        common["difference"] = x_after / n_after - x_before / n_before
    if min(n_before, n_after) < min_samples:
        return GuardrailDecision(
            action="wait",
            reasons=[
                f"too few labelled rows to judge the promotion: {n_before} before and "
                f"{n_after} after, need {min_samples} on each side"
            ],
            **common,
        )
    p_value = drop_p_value(x_before, n_before, x_after, n_after, margin=margin)
    summary = (
        f"accuracy {x_after / n_after:.3f} after ({n_after} rows) vs {x_before / n_before:.3f} "
        f"before ({n_before} rows)"
    )
    if p_value < alpha:
        return GuardrailDecision(
            action="rollback",
            reasons=[
                summary,
                f"significant drop of more than {margin:.3f}: score test p={p_value:.4g} "
                f"< alpha {alpha}",
            ],
            p_value=p_value,
            **common,
        )
    return GuardrailDecision(
        action="keep",
        reasons=[
            summary,
            f"no significant drop of more than {margin:.3f}: p={p_value:.4g} >= alpha {alpha}",
        ],
        p_value=p_value,
        **common,
    )
