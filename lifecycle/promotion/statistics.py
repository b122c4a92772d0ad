"""The statistics behind the promotion rules, pure: accuracies of two models on the same
rows with Newcombe's paired interval, and the Farrington-Manning score test for a drop
between two unpaired samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


@dataclass(frozen=True, slots=True)
class PairedComparison:
    """Accuracies of two models on the same rows, their discordant counts and interval."""

    n: int
    champion_accuracy: float
    challenger_accuracy: float
    difference: float
    ci: tuple[float, float]
    champion_only: int
    challenger_only: int


def paired_comparison(
    champion_correct: Sequence[bool] | np.ndarray,
    challenger_correct: Sequence[bool] | np.ndarray,
    *,
    alpha: float,
) -> PairedComparison:
    """Accuracies, discordant counts and Newcombe's interval for paired accuracies.

    ``ci`` is the two-sided ``1 - 2 * alpha`` interval of challenger minus champion. Needs at
    least one row.
    """
    import numpy as np

    x = np.asarray(champion_correct, dtype=bool)
    y = np.asarray(challenger_correct, dtype=bool)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("champion_correct and challenger_correct must be 1-d and equally long")
    n = len(x)
    if n == 0:
        raise ValueError("a paired comparison needs at least one row")
    both = int((x & y).sum())
    champ_only = int((x & ~y).sum())
    chall_only = int((~x & y).sum())
    neither = n - both - champ_only - chall_only
    ci = newcombe_paired_interval(both, chall_only, champ_only, neither, alpha=alpha)
    return PairedComparison(
        n=n,
        champion_accuracy=(both + champ_only) / n,
        challenger_accuracy=(both + chall_only) / n,
        difference=(chall_only - champ_only) / n,
        ci=ci,
        champion_only=champ_only,
        challenger_only=chall_only,
    )


def newcombe_paired_interval(
    both: int, first_only: int, second_only: int, neither: int, *, alpha: float
) -> tuple[float, float]:
    """Newcombe (1998) method 10 interval for p(first right) - p(second right), paired.

    Two-sided at ``1 - 2 * alpha``. The correlation term uses Newcombe's continuity-corrected
    phi (as in Altman et al., *Statistics with Confidence*), which keeps the interval from
    being too narrow when the two models mostly agree.
    """
    n = both + first_only + second_only + neither
    if n <= 0:
        raise ValueError("the interval needs at least one pair")
    p1 = (both + first_only) / n
    p2 = (both + second_only) / n
    l1, u1 = wilson_interval(both + first_only, n, alpha=alpha)
    l2, u2 = wilson_interval(both + second_only, n, alpha=alpha)
    margins = (
        (both + first_only)
        * (second_only + neither)
        * (both + second_only)
        * (first_only + neither)
    )
    cross = both * neither - first_only * second_only
    if margins == 0:
        phi = 0.0
    else:
        corrected = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
        phi = corrected / math.sqrt(margins)
    d = p1 - p2
    low = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = d + math.sqrt(
        max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    )
    return max(-1.0, low), min(1.0, high)


def wilson_interval(successes: int, n: int, *, alpha: float) -> tuple[float, float]:
    """The two-sided ``1 - 2 * alpha`` Wilson score interval of a proportion."""
    from scipy.stats import binomtest

    if n <= 0:
        raise ValueError("a proportion needs n >= 1")
    ci = binomtest(successes, n).proportion_ci(confidence_level=1 - 2 * alpha, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def drop_p_value(x1: int, n1: int, x2: int, n2: int, *, margin: float = 0.0) -> float:
    """One-sided Farrington-Manning p-value for H1 ``p1 - p2 > margin`` (unpaired).

    ``p1 = x1 / n1`` is the earlier accuracy, ``p2 = x2 / n2`` the later one. The variance is
    taken at the maximum-likelihood proportions restricted to ``p1 - p2 = margin``
    (Miettinen-Nurminen's closed form, without their ``n / (n - 1)`` factor).
    """
    from scipy.stats import norm

    if n1 <= 0 or n2 <= 0:
        raise ValueError("both samples need at least one row")
    p1, p2 = x1 / n1, x2 / n2
    r1, r2 = _restricted_mle(p1, n1, p2, n2, margin)
    variance = r1 * (1 - r1) / n1 + r2 * (1 - r2) / n2
    excess = p1 - p2 - margin
    if variance <= 1e-15:
        # Both restricted proportions at 0 or 1: the data sit exactly on a boundary.
        return 0.0 if excess > 0 else 1.0
    return float(norm.sf(excess / math.sqrt(variance)))


def _restricted_mle(p1: float, n1: int, p2: float, n2: int, delta: float) -> tuple[float, float]:
    """(p1, p2) maximising the likelihood under ``p1 - p2 = delta`` (Farrington-Manning)."""
    if delta == 0:
        pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
        return pooled, pooled
    theta = n2 / n1
    a = 1 + theta
    b = -(1 + theta + p1 + theta * p2 + delta * (theta + 2))
    c = delta * delta + delta * (2 * p1 + theta + 1) + p1 + theta * p2
    d = -p1 * delta * (1 + delta)
    v = b**3 / (3 * a) ** 3 - b * c / (6 * a * a) + d / (2 * a)
    u = math.copysign(math.sqrt(max(0.0, b * b / (3 * a) ** 2 - c / (3 * a))), v)
    if u == 0:
        r1 = -b / (3 * a)
    else:
        w = (math.pi + math.acos(max(-1.0, min(1.0, v / u**3)))) / 3
        r1 = 2 * u * math.cos(w) - b / (3 * a)
    r1 = min(1.0, max(delta, r1))
    return r1, r1 - delta


def successes(values: pd.Series | Sequence[bool] | np.ndarray) -> tuple[int, int]:
    """(correct, labelled) from an array of bools where None/NaN means "no label"."""
    import pandas as pd

    series = pd.Series(values, dtype=object).dropna()
    flags = series.astype(bool).to_numpy()
    return int(flags.sum()), len(flags)
