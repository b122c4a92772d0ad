"""The promotion gate of extraction specialists: paired per-request F1, not paired accuracy.

A classification pair is right or wrong, so :mod:`lifecycle.promotion.gate` counts wins and
losses. An extraction answer can be partly right (two of three slots), so each labelled
shadow request gives each model a per-request exact-span F1 in ``[0, 1]``
(:func:`lifecycle.extraction.metrics.request_f1`) and an exact match (all spans right). The
outcome of request ``i`` is the paired difference ``X_i = F1_challenger - F1_champion``, in
``[-1, 1]``, and the statistic is their mean.

What decides: the anytime-valid e-values of
:func:`lifecycle.promotion.sequential.bounded_sequential_test` (the betting mixture
``prod_i (1 + lambda * (X_i + margin))`` over the classification gate's prior), valid at
every look of the promote flow however often it looks, as the classification gate's are:

- ``e_better`` against "the challenger's mean F1 is more than ``margin`` below the
  champion's" (its growth is evidence of better, or non-inferior with a margin);
  ``e_worse`` the mirror one, against "no more than ``margin`` below" (its growth is
  evidence of worse). ``p_value_better`` and ``p_value_worse`` are their anytime-valid
  p-values ``min(1, 1 / e)``.

What is reported for people to read (fixed-sample figures, valid at one look, not deciding
except where said):

- ``ci_low``/``ci_high``: the paired bootstrap interval of the mean difference
  (``scipy.stats.bootstrap``, BCa; percentile when BCa is undefined, e.g. all differences
  equal), two-sided ``1 - 2 * alpha`` so that each bound is a one-sided level-``alpha``
  bound, as in the classification gate.
- ``wilcoxon_p``: the one-sided Wilcoxon signed-rank p-value of ``X_i + margin > 0``, a rank
  view (a handful of large swings does not make it small). ``zero_method="wilcox"`` by
  default: tied requests (most of them, when two fine-tunes of one base agree) are dropped,
  as the e-value with margin 0 ignores them; ``"zsplit"`` keeps them and is very
  conservative when ties dominate. None when every shifted difference is 0.
- ``mcnemar_p``: the two-sided exact McNemar test on exact match (a binomial test of the
  requests only one model matched exactly, against 1/2). None without such a request. It
  is the one fixed-sample figure that takes part in the rule, and only as a veto.

The rule of :func:`extraction_gate_decision`, with ``n`` labelled pairs and
``exact_worse`` meaning ``mcnemar_p < alpha`` with the challenger's exact-match share below
the champion's:

1. at ``n >= cap`` it always decides: "promote" if ``e_better >= 1 / alpha`` and not
   ``exact_worse``, else "reject" (no evidence of improvement: the champion stays);
2. below ``min_samples``: "wait";
3. "promote" when ``e_better >= 1 / alpha`` and not ``exact_worse``;
4. "reject" when ``e_worse >= 1 / alpha``: worse by more than the margin;
5. otherwise "wait".

By Ville's inequality a challenger that is not better (mean F1 difference ``<= -margin``)
reaches ``e_better >= 1 / alpha`` at some look with probability at most ``alpha``;
``min_samples``, the cap and the McNemar veto only hold promotions back, so the rule's false
promotion rate over all looks stays at most ``alpha`` (``bench/gate.py --task extraction``:
1.4% for an equal challenger looked at after every label, where the interval-and-Wilcoxon
rule this module used before promoted 13% when read at every look). The
veto is read at every look as well, so a challenger whose exact match is truly equal is
vetoed at some look more often than ``alpha / 2``: a cost in power, not in validity.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

ExtractionDecision = Literal["promote", "reject", "wait"]


@dataclass(frozen=True, slots=True)
class PairedScores:
    """Two extraction models on the same labelled requests: means, evidence, figures.

    ``difference`` is challenger minus champion in mean per-request F1; ``e_better`` and
    ``e_worse`` are the sequential e-values that decide (see the module docstring);
    ``ci_low`` and ``ci_high`` bound the difference at two-sided ``1 - 2 * alpha``.
    ``exact_champion`` and ``exact_challenger`` are exact-match shares. ``alpha`` and
    ``margin`` are those the numbers were computed with: the decision reuses them.
    """

    n: int
    champion_mean: float
    challenger_mean: float
    difference: float
    ci_low: float
    ci_high: float
    e_better: float
    e_worse: float
    exact_champion: float
    exact_challenger: float
    mcnemar_p: float | None
    wilcoxon_p: float | None
    alpha: float = 0.05
    margin: float = 0.0
    #: Requests where the challenger's F1 is higher / the champion's is (the rest: equal).
    challenger_higher: int = 0
    champion_higher: int = 0
    #: Requests only the champion / only the challenger matched exactly (McNemar's pairs).
    champion_only_exact: int = 0
    challenger_only_exact: int = 0

    @property
    def p_value_better(self) -> float:
        """Anytime-valid p-value of "better than ``-margin``": ``min(1, 1 / e_better)``."""
        return min(1.0, 1.0 / self.e_better) if self.e_better > 0 else 1.0

    @property
    def p_value_worse(self) -> float:
        """Anytime-valid p-value of "worse than ``-margin``": ``min(1, 1 / e_worse)``."""
        return min(1.0, 1.0 / self.e_worse) if self.e_worse > 0 else 1.0

    @property
    def exact_worse(self) -> bool:
        """Exact match significantly lower for the challenger (two-sided McNemar at alpha)."""
        return (
            self.mcnemar_p is not None
            and self.mcnemar_p < self.alpha
            and self.exact_challenger < self.exact_champion
        )

    def metrics(self, prefix: str = "gate_") -> dict[str, float]:
        """The finite numbers, for an MLflow run, under stable names that say F1."""
        values: dict[str, float | None] = {
            "pairs": float(self.n),
            "champion_f1": self.champion_mean,
            "challenger_f1": self.challenger_mean,
            "f1_difference": self.difference,
            "f1_ci_low": self.ci_low,
            "f1_ci_high": self.ci_high,
            "e_value": self.e_better,
            "e_value_worse": self.e_worse,
            "p_value": self.p_value_better,
            "p_value_worse": self.p_value_worse,
            "champion_exact_match": self.exact_champion,
            "challenger_exact_match": self.exact_challenger,
            "mcnemar_p": self.mcnemar_p,
            "wilcoxon_p": self.wilcoxon_p,
        }
        return {
            f"{prefix}{k}": float(v)
            for k, v in values.items()
            if v is not None and math.isfinite(v)
        }


def compare_paired(
    champion_f1: Sequence[float] | np.ndarray,
    challenger_f1: Sequence[float] | np.ndarray,
    champion_exact: Sequence[bool] | np.ndarray,
    challenger_exact: Sequence[bool] | np.ndarray,
    *,
    alpha: float,
    margin: float = 0.0,
    seed: int = 0,
    resamples: int = 2000,
    zero_method: Literal["zsplit", "wilcox", "pratt"] = "wilcox",
) -> PairedScores:
    """Paired evidence and figures of two models' per-request F1 and exact match.

    All four sequences are aligned (element ``i`` is request ``i`` for both models). The
    e-values depend on the multiset of differences only (not on the requests' order); the
    bootstrap is deterministic for a ``seed``. ``zero_method`` is the Wilcoxon test's
    treatment of tied requests (see the module docstring). Raises ValueError on empty or
    unequal inputs, F1 values outside ``[0, 1]``, or ``alpha`` outside ``(0, 0.5)``.
    """
    import numpy as np

    from lifecycle.promotion.sequential import bounded_sequential_test

    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    sizes = {len(champion_f1), len(challenger_f1), len(champion_exact), len(challenger_exact)}
    if len(sizes) != 1:
        raise ValueError(
            "champion_f1, challenger_f1, champion_exact and challenger_exact must be equally "
            f"long (one value per request), got lengths {sorted(sizes)}"
        )
    n = len(champion_f1)
    if n == 0:
        raise ValueError("a paired comparison needs at least one labelled request")
    x = np.asarray(champion_f1, dtype=float)
    y = np.asarray(challenger_f1, dtype=float)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("per-request F1 values must be finite numbers")
    if x.min() < 0 or y.min() < 0 or x.max() > 1 or y.max() > 1:
        raise ValueError("per-request F1 values must lie in [0, 1]")
    ex = np.asarray(champion_exact, dtype=bool)
    ey = np.asarray(challenger_exact, dtype=bool)

    d = y - x
    evidence = bounded_sequential_test(d, alpha=alpha, margin=margin)
    low, high = _bootstrap(x, y, alpha=alpha, seed=seed, resamples=resamples)
    champion_only = int((ex & ~ey).sum())
    challenger_only = int((~ex & ey).sum())
    return PairedScores(
        n=n,
        champion_mean=float(x.mean()),
        challenger_mean=float(y.mean()),
        difference=float(d.mean()),
        ci_low=low,
        ci_high=high,
        e_better=evidence.e_better,
        e_worse=evidence.e_worse,
        exact_champion=float(ex.mean()),
        exact_challenger=float(ey.mean()),
        mcnemar_p=mcnemar_p(champion_only=champion_only, challenger_only=challenger_only),
        wilcoxon_p=_wilcoxon_greater(d + margin, zero_method=zero_method),
        alpha=alpha,
        margin=margin,
        challenger_higher=evidence.wins,
        champion_higher=evidence.losses,
        champion_only_exact=champion_only,
        challenger_only_exact=challenger_only,
    )


def extraction_gate_decision(
    scores: PairedScores, *, alpha: float, min_samples: int, cap: int
) -> ExtractionDecision:
    """ "promote", "reject" or "wait" by the rule in the module docstring.

    ``alpha`` must be the one ``scores`` was computed with; the margin is the one in
    ``scores``. At ``n >= cap`` the answer is never "wait", whatever ``min_samples`` says.
    """
    return decide_with_reason(scores, alpha=alpha, min_samples=min_samples, cap=cap)[0]


def decide_with_reason(
    scores: PairedScores, *, alpha: float, min_samples: int, cap: int
) -> tuple[ExtractionDecision, str]:
    """:func:`extraction_gate_decision` and one sentence that says why, for the gate's
    reasons (the numbers of the comparison itself are the caller's summary)."""
    if not math.isclose(alpha, scores.alpha):
        raise ValueError(
            f"alpha {alpha} differs from the {scores.alpha} the scores were computed with; "
            "recompute them with compare_paired(alpha=...)"
        )
    margin, n, bar = scores.margin, scores.n, 1.0 / alpha
    crossed = scores.e_better >= bar
    worse = scores.e_worse >= bar
    versus = f"not {margin:.3f} worse in F1" if margin > 0 else "better in F1"
    veto = (
        f"exact match significantly lower ({scores.exact_challenger:.3f} vs "
        f"{scores.exact_champion:.3f}, McNemar p {scores.mcnemar_p or 0.0:.3g} < {alpha})"
    )
    sure = (
        f"challenger is {versus}: e-value {scores.e_better:.4g} >= 1/alpha = {bar:.4g} "
        "(sequential, valid at every look), exact match not significantly lower"
    )
    if n >= cap:
        if crossed and not scores.exact_worse:
            return "promote", sure
        why = veto if crossed else f"e-value {scores.e_better:.4g} < {bar:.4g} for {versus}"
        return "reject", f"no promotion after {n} labelled pairs (cap {cap}): {why}"
    if n < min_samples:
        return "wait", f"{n} labelled pairs, fewer than min_samples {min_samples}"
    if crossed and not scores.exact_worse:
        return "promote", sure
    if worse:
        return "reject", (
            f"challenger is worse in F1: e-value {scores.e_worse:.4g} >= {bar:.4g}"
            + (f" for a loss of more than the margin {margin}" if margin > 0 else "")
        )
    held = (
        f"e-value {scores.e_better:.4g} >= {bar:.4g} but {veto}"
        if crossed
        else (
            f"e-value {scores.e_better:.4g} for {versus} and {scores.e_worse:.4g} for worse, "
            f"both < {bar:.4g}"
        )
    )
    return "wait", f"undecided: {held}; rejecting at {cap} labelled pairs"


def mcnemar_p(*, champion_only: int, challenger_only: int) -> float | None:
    """Two-sided exact McNemar p-value from the discordant counts; None when there are none.

    Under "both models match as often" each discordant request is a fair coin, so the
    p-value is a two-sided binomial test of ``challenger_only`` out of the discordant pairs.
    """
    from scipy.stats import binomtest

    discordant = champion_only + challenger_only
    if discordant == 0:
        return None
    return float(binomtest(challenger_only, discordant, 0.5, alternative="two-sided").pvalue)


def _bootstrap(
    x: np.ndarray, y: np.ndarray, *, alpha: float, seed: int, resamples: int
) -> tuple[float, float]:
    """The ``1 - 2 * alpha`` paired bootstrap interval of ``mean(y - x)`` (BCa, or
    percentile where BCa is undefined)."""
    import warnings

    import numpy as np
    from scipy.stats import bootstrap

    d = y - x
    if np.ptp(d) == 0:
        # Every request moved by the same amount (typically 0): no spread to resample; BCa
        # divides by zero and every resample has the same mean anyway.
        value = float(d[0])
        return value, value

    def mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(b - a, axis=axis)

    level = 1 - 2 * alpha
    result = None
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DegenerateDataWarning: we fall back instead
            result = bootstrap(
                (x, y),
                mean_difference,
                paired=True,
                vectorized=True,
                n_resamples=resamples,
                confidence_level=level,
                method=method,
                **_seed_argument(seed),
            )
        low, high = result.confidence_interval
        if math.isfinite(low) and math.isfinite(high):
            break
    assert result is not None
    low, high = result.confidence_interval
    return float(low), float(high)


def _seed_argument(seed: int) -> dict[str, Any]:
    """``rng=`` where scipy has it (1.15+), ``random_state=`` before."""
    import numpy as np
    from scipy.stats import bootstrap

    generator = np.random.default_rng(seed)
    if "rng" in inspect.signature(bootstrap).parameters:
        return {"rng": generator}
    return {"random_state": generator}


def _wilcoxon_greater(shifted: np.ndarray, *, zero_method: str) -> float | None:
    """One-sided Wilcoxon signed-rank p-value of "the shifted differences lean positive"."""
    import warnings

    import numpy as np
    from scipy.stats import wilcoxon

    shifted = np.round(shifted, 12)  # d + margin == 0 up to float noise is a tie
    if not np.any(shifted != 0):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns that ties force the normal approximation
        result = wilcoxon(shifted, zero_method=zero_method, alternative="greater")
    p = float(result.pvalue)
    return p if math.isfinite(p) else None
