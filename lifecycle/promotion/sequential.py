"""Anytime-valid tests for the promotion gate: mixture e-values on paired outcomes.

The gate looks at the shadow pairs every time the promote flow runs, with more labels each
time, and may stop at any look. A fixed-n test (McNemar) read at every look rejects a true
null far more often than its ``alpha`` (the bench measures about 3x at alpha 0.05), so the
gate uses e-values instead: a nonnegative supermartingale ``E_n`` under the null, for which
Ville's inequality gives ``P(E_n >= 1 / alpha for some n) <= alpha``. Deciding the moment
``E_n`` reaches ``1 / alpha`` is therefore valid at every look, however often the gate looks
and however many labels arrive between looks.

Each labelled pair is one outcome ``X``: +1 when only the challenger is right (a *win*),
-1 when only the champion is (a *loss*), 0 when both or neither are (a *tie*). The accuracy
difference (challenger minus champion) is ``E[X]``. For the null ``H0: E[X] <= -margin``
every ``lambda`` in ``[0, 1 / (1 - margin)]`` gives the supermartingale
``prod_i (1 + lambda * (X_i + margin))`` (each factor is >= 0 and has mean <= 1 under H0);
a mixture of them over a prior on ``lambda`` is one too. Its value depends only on the
counts of wins, losses and ties, never on their order: labels arrive late and out of
order, and the e-value of whatever set of pairs is labelled at a look is the same process
observed along the order in which the labels arrived.

- With ``margin == 0`` ties contribute a factor 1: only discordant pairs carry evidence.
  Writing ``lambda = 2p - 1``, the product is the likelihood ratio of a win probability
  ``p`` among discordant pairs against ``1/2``, and the mixture is the beta-binomial
  mixture martingale: a Beta(a, b) prior on ``p`` truncated to ``p > 1/2``, in closed form
  with ``betaln`` and the regularised incomplete beta function.
- With ``margin > 0`` (non-inferiority) the margin is in accuracy points of *all* pairs, so
  ties count too (a tie is evidence that the challenger is not ``margin`` worse). The same
  prior is used on ``u = lambda * (1 - margin)`` and the mixture is the discrete one of its
  Gauss-Legendre quadrature: a finite mixture with positive weights is itself a valid
  mixture, so the e-value is exact for that prior, not an approximation of a valid one.

"Worse" is the mirror test: ``H0: E[X] >= -margin`` with wins and losses swapped and the
margin negated.

Bounded outcomes (:func:`log_e_value_bounded`, :func:`bounded_sequential_test`): an
extraction request is partly right, so its outcome is the per-request F1 difference
``X = F1_challenger - F1_champion``, anywhere in ``[-1, 1]``. The same product
``prod_i (1 + lambda * (X_i + margin))`` is a supermartingale under ``H0: E[X] <= -margin``
for any such outcomes (each factor is >= 0 for ``lambda <= 1 / (1 - margin)``, and its
conditional mean is ``1 + lambda * (E[X] + margin) <= 1``), so its mixture over the same
quadrature prior is an e-process, whatever the margin, 0 included. On outcomes in
``{-1, 0, 1}`` it is the counts formula above term for term; with margin 0 the counts
formula is the continuous prior's closed form, which the 96-node quadrature reproduces (the
integrand is a polynomial in ``p``: exact up to 191 discordant pairs, within 1e-12 in the log
at 900). The sum over outcomes runs in sorted order, so the value depends on the multiset of
outcomes only.

Everything here is vectorised over numpy arrays so that the bench (``bench/gate.py``) runs
the gate's own arithmetic on thousands of sequences at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike

#: The Beta(a, b) prior on the challenger's win probability among discordant pairs,
#: truncated to p > 1/2. Uniform: no preference among sizes of improvement; in the bench it
#: decides a 5-point gain at 15% discordant pairs as fast as the narrower priors tried
#: (Beta(5, 5), Beta(10, 10)) and large gains faster.
PRIOR_A, PRIOR_B = 1.0, 1.0

#: Quadrature nodes of the finite mixture used when the margin is not 0.
_NODES = 96


@dataclass(frozen=True, slots=True)
class SequentialEvidence:
    """Both e-values of one look at the labelled pairs, and the counts behind them.

    ``e_better`` is against "challenger worse than ``-margin``" (promote when it reaches
    ``threshold``), ``e_worse`` against "challenger no worse than ``-margin``" (reject).
    ``p_better`` and ``p_worse`` are the anytime-valid p-values ``min(1, 1 / e)``.
    """

    wins: int
    losses: int
    ties: int
    margin: float
    e_better: float
    e_worse: float
    threshold: float

    @property
    def p_better(self) -> float:
        return min(1.0, 1.0 / self.e_better) if self.e_better > 0 else 1.0

    @property
    def p_worse(self) -> float:
        return min(1.0, 1.0 / self.e_worse) if self.e_worse > 0 else 1.0

    @property
    def better(self) -> bool:
        return self.e_better >= self.threshold

    @property
    def worse(self) -> bool:
        return self.e_worse >= self.threshold


def sequential_test(
    *, wins: int, losses: int, ties: int, alpha: float, margin: float = 0.0
) -> SequentialEvidence:
    """Both e-values for one look: ``wins`` pairs only the challenger got right, ``losses``
    only the champion, ``ties`` the rest; each decides at ``1 / alpha``."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if min(wins, losses, ties) < 0:
        raise ValueError("counts must be >= 0")
    better = float(log_e_value(wins, losses, ties, margin=margin))
    worse = float(log_e_value(losses, wins, ties, margin=-margin))
    return SequentialEvidence(
        wins=wins,
        losses=losses,
        ties=ties,
        margin=margin,
        e_better=_exp(better),
        e_worse=_exp(worse),
        threshold=1.0 / alpha,
    )


def log_e_value(
    wins: ArrayLike, losses: ArrayLike, ties: ArrayLike = 0, *, margin: float = 0.0
) -> np.ndarray:
    """Log of the mixture e-value against ``H0: E[X] <= -margin`` (see the module docstring).

    ``wins``, ``losses`` and ``ties`` broadcast against each other; ``margin`` is in
    ``(-1, 1)`` (negative for the mirror test). With no pair the e-value is 1 (log 0).
    """
    import numpy as np

    if not -1 < margin < 1:
        raise ValueError(f"margin must be in (-1, 1), got {margin}")
    w = np.asarray(wins, dtype=float)
    lo = np.asarray(losses, dtype=float)
    t = np.asarray(ties, dtype=float)
    if margin == 0:
        return _log_beta_binomial(w, lo) + 0.0 * t
    log_nodes, u = _quadrature()
    # The three factors 1 + lambda * (X + margin) with lambda = u / (1 - margin).
    up = np.log1p(u * (1 + margin) / (1 - margin))
    tie = np.log1p(u * margin / (1 - margin))
    down = np.log1p(-u)
    terms = w[..., None] * up + t[..., None] * tie + lo[..., None] * down + log_nodes
    return np.asarray(_logsumexp(terms))


def bounded_sequential_test(
    outcomes: ArrayLike, *, alpha: float, margin: float = 0.0
) -> SequentialEvidence:
    """Both e-values for one look at bounded paired outcomes ``X_i`` in ``[-1, 1]`` (e.g.
    per-request F1 of the challenger minus the champion's); each decides at ``1 / alpha``.

    ``wins``, ``losses`` and ``ties`` of the result count the outcomes above, below and at
    0 (requests where the challenger scored higher, lower, the same): for reading only, the
    e-values use the outcomes themselves.
    """
    import numpy as np

    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    x = np.asarray(outcomes, dtype=float).ravel()
    better = float(log_e_value_bounded(x, margin=margin))
    worse = float(log_e_value_bounded(-x, margin=-margin))
    return SequentialEvidence(
        wins=int((x > 0).sum()),
        losses=int((x < 0).sum()),
        ties=int((x == 0).sum()),
        margin=margin,
        e_better=_exp(better),
        e_worse=_exp(worse),
        threshold=1.0 / alpha,
    )


def log_e_value_bounded(
    outcomes: ArrayLike, *, margin: float = 0.0, running: bool = False
) -> np.ndarray:
    """Log of the betting-mixture e-value against ``H0: E[X] <= -margin`` for paired
    outcomes in ``[-1, 1]`` along the last axis of ``outcomes`` (see the module docstring).

    ``margin`` is in ``(-1, 1)`` (negative for the mirror test: pass ``-outcomes`` and
    ``-margin``). Leading axes are independent sequences. By default the result has the
    leading shape: the e-value of all the outcomes, summed in sorted order (a function of
    their multiset). ``running=True`` gives the e-process along the given order instead,
    one value per prefix (the outcomes' shape): what a gate looking after every label sees.
    With no outcome the e-value is 1 (log 0). Raises ValueError on outcomes outside
    ``[-1, 1]`` or not finite.
    """
    import numpy as np

    if not -1 < margin < 1:
        raise ValueError(f"margin must be in (-1, 1), got {margin}")
    x = np.asarray(outcomes, dtype=float)
    if x.ndim == 0:
        raise ValueError("outcomes need an axis of observations")
    if x.size and not (np.isfinite(x).all() and np.abs(x).max() <= 1):
        raise ValueError("paired outcomes must be finite and lie in [-1, 1]")
    log_nodes, u = _quadrature()
    shifted = x + margin if running else np.sort(x, axis=-1) + margin
    # One node at a time: arrays of the outcomes' size, not 96 times it (the bench's are big).
    total: np.ndarray | None = None
    for log_weight, lam in zip(log_nodes, u / (1 - margin), strict=True):
        logs = np.log1p(lam * shifted)
        part = (np.cumsum(logs, axis=-1) if running else logs.sum(axis=-1)) + log_weight
        total = part if total is None else np.logaddexp(total, part)
    assert total is not None
    return np.asarray(total)


def _log_beta_binomial(wins: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """``log int_{1/2}^1 (2p)^w (2(1-p))^l dBeta(p; a, b) / P(p > 1/2)``, in closed form."""
    import numpy as np
    from scipy.special import betaincc, betaln

    a, b = PRIOR_A, PRIOR_B
    with np.errstate(divide="ignore"):  # an upper tail that underflows: e-value 0
        tail = np.log(betaincc(a + wins, b + losses, 0.5))
    return (
        (wins + losses) * math.log(2.0)
        + betaln(a + wins, b + losses)
        - betaln(a, b)
        + tail
        - math.log(float(betaincc(a, b, 0.5)))
    )


@lru_cache(maxsize=1)
def _quadrature() -> tuple[np.ndarray, np.ndarray]:
    """Log weights and ``u = 2p - 1`` of the prior's Gauss-Legendre discretisation."""
    import numpy as np
    from scipy.stats import beta

    x, weights = np.polynomial.legendre.leggauss(_NODES)
    p = 0.75 + 0.25 * x  # the nodes on (1/2, 1)
    mass = weights * beta.pdf(p, PRIOR_A, PRIOR_B)
    return np.log(mass / mass.sum()), 2 * p - 1


def _logsumexp(terms: np.ndarray) -> np.ndarray:
    import numpy as np
    from scipy.special import logsumexp

    return np.asarray(logsumexp(terms, axis=-1))


def _exp(value: float) -> float:
    # e-values of a clear-cut comparison overflow a float: clamp, to stay finite for JSON.
    return math.exp(min(value, 700.0))
