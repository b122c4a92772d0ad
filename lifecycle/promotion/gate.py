"""Promotion rules: when a shadowed challenger replaces the champion, and when to undo it.

Two pure decisions over data frames, no registry and no I/O, so the promote flow and the
guardrail in the monitor flow are thin and these rules are tested without either:

- :func:`gate` compares champion and challenger on the *same* requests (the gateway shadows
  the challenger), so the comparison is paired: only requests where exactly one model is
  right carry information on which is better. The promote flow looks at the pairs again and
  again as labels arrive, so the decision is a sequential test valid at every look
  (:mod:`lifecycle.promotion.sequential`: mixture e-values, a beta-binomial mixture on the
  discordant pairs; with a margin, a betting mixture over all pairs): promote when the e-value
  against
  "challenger worse than ``-margin``" reaches ``1 / alpha``, reject when the mirror e-value
  ("challenger no worse than ``-margin``") does, or when ``policy.sample_cap`` labelled pairs
  leave it undecided. The difference in accuracy is reported with Newcombe's paired score
  interval (Newcombe 1998, method 10: Wilson intervals per model combined with the pairs'
  correlation), a fixed-n summary for people to read; it does not decide.
- :func:`guardrail` compares the labelled traffic of the previous champion with that of the
  new one. Different requests, so the test is unpaired: a one-sided Farrington-Manning score
  test for a drop larger than the margin.

Only people's labels count. Fallback labels exist only for escalated (low-confidence) rows;
those are the hardest requests and the fallback may share the models' mistakes, so mixing
them in would bias both accuracies in ways the tests cannot correct for.

``ci`` is always the two-sided ``1 - 2 * alpha`` interval (90% at alpha 0.05): each bound on
its own is a one-sided level-``alpha`` confidence bound, which is what a one-sided decision
("better", "no worse than the margin") at ``alpha`` needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from lifecycle.config.spec import PromotionSpec
from lifecycle.promotion.sequential import sequential_test

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

Decision = Literal["promote", "reject", "wait", "supersede"]
GuardrailAction = Literal["rollback", "keep", "wait"]

GATE_TEST = "sequential mixture e-values (anytime-valid) + Newcombe paired score interval"
GUARDRAIL_TEST = "Farrington-Manning score test (one-sided, unpaired)"

_PAIR_COLUMNS = ("champion_label", "challenger_label", "true_label")


@dataclass(frozen=True, slots=True)
class GateDecision:
    """What the gate decided and the numbers behind it.

    Accuracies, the difference, the interval, the e-values and the p-values are None when no
    labelled pair exists. ``difference`` is challenger minus champion. ``ci`` is the
    two-sided ``1 - 2 * alpha`` Newcombe interval of the difference (fixed-n, for reading).
    ``e_value`` is the sequential e-value against "the challenger is worse than
    ``-margin``" (promote at ``1 / alpha``), ``e_value_worse`` the mirror one (reject at
    ``1 / alpha``); ``p_value`` and ``p_value_worse`` are their anytime-valid p-values
    ``min(1, 1 / e)``. ``agreement`` is the share of all pairs (labelled or not) where both
    models answered the same label. ``trained_labels`` and ``new_labels`` are the people's
    labels the challenger was trained on and those that arrived since, when known (the
    supersede rule).
    """

    decision: Decision
    reasons: list[str]
    n_pairs: int
    n_labelled: int
    champion_accuracy: float | None = None
    challenger_accuracy: float | None = None
    difference: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    p_value_worse: float | None = None
    e_value: float | None = None
    e_value_worse: float | None = None
    test: str = GATE_TEST
    agreement: float | None = None
    #: Labelled pairs only the champion got right / only the challenger got right.
    champion_only: int = 0
    challenger_only: int = 0
    #: Pairs labelled by the fallback only, left out of the test (see the module docstring).
    fallback_labelled: int = 0
    alpha: float = 0.05
    margin: float = 0.0
    #: Labelled pairs at which an undecided challenger is rejected.
    sample_cap: int = 0
    trained_labels: int | None = None
    new_labels: int | None = None
    #: Health: shadow calls that raised, and the side-by-side model time per batch (ms)
    #: when it was measured (only before a promotion: it loads both models).
    shadow_errors: int = 0
    champion_latency_ms: float | None = None
    challenger_latency_ms: float | None = None

    @property
    def promote(self) -> bool:
        return self.decision == "promote"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (lists, no NaN) for an alert payload, an event or an MLflow run."""
        data = asdict(self)
        data["ci"] = list(self.ci) if self.ci is not None else None
        return data

    def metrics(self) -> dict[str, float]:
        """Finite numbers for MLflow, under stable names."""
        values: dict[str, float | None] = {
            "gate_pairs": float(self.n_pairs),
            "gate_labelled": float(self.n_labelled),
            "gate_champion_accuracy": self.champion_accuracy,
            "gate_challenger_accuracy": self.challenger_accuracy,
            "gate_difference": self.difference,
            "gate_ci_low": self.ci[0] if self.ci else None,
            "gate_ci_high": self.ci[1] if self.ci else None,
            "gate_p_value": self.p_value,
            "gate_e_value": self.e_value,
            "gate_e_value_worse": self.e_value_worse,
            "gate_agreement": self.agreement,
            "gate_shadow_errors": float(self.shadow_errors),
            "gate_champion_latency_ms": self.champion_latency_ms,
            "gate_challenger_latency_ms": self.challenger_latency_ms,
        }
        return {k: v for k, v in values.items() if v is not None and math.isfinite(v)}


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


# --------------------------------------------------------------------------- the gate


def gate(
    pairs: pd.DataFrame,
    policy: PromotionSpec,
    *,
    latency_ms: tuple[float, float] | None = None,
    shadow_errors: int = 0,
    trained_labels: int | None = None,
    new_labels: int | None = None,
) -> GateDecision:
    """Decide on a challenger from its shadow pairs (``TrafficStore.shadow_pairs``).

    With ``n`` labelled pairs (people's labels only), counted as wins (only the challenger
    right), losses (only the champion right) and ties, at every look:

    - the e-value against "challenger worse than ``-policy.margin``" reaches
      ``1 / policy.alpha``: "promote" (with margin 0: better; with a margin: non-inferior,
      the margin being the loss the policy declared acceptable). Valid at any ``n``: Ville's
      inequality bounds the chance that a challenger that is not better ever gets there by
      ``alpha``, so ``min_samples`` holds nothing back.
    - the mirror e-value ("challenger no worse than ``-margin``") reaches ``1 / alpha``:
      "reject" (futility: it is worse, it cannot win).
    - ``n >= policy.sample_cap`` (``max_samples``, default ``2 * min_samples``) and neither:
      "reject" (no evidence of improvement; with margin 0 this is also the fate of a
      challenger identical to the champion).
    - otherwise "wait"; but "supersede" when ``new_labels`` (people's labels that arrived
      since the challenger's training) exceed ``policy.supersede_factor`` times
      ``trained_labels`` (those it was trained on): a retrain on all of them is a better bet
      than more waiting, and a waiting challenger blocks the next retrain.

    Health vetoes turn a "promote" into "reject": ``latency_ms`` as (champion, challenger),
    model time on the same texts and batches, with the challenger's above
    ``policy.max_latency_ratio`` times the champion's; or ``shadow_errors`` (shadow calls
    that raised, absent from ``pairs``) above ``policy.max_error_rate`` of all shadow calls.
    Failures above that rate also reject a challenger still waiting for labels once
    ``policy.min_samples`` shadow calls were made: no label count makes a broken model
    worth serving. ``policy.auto_promote`` and ``shadow_sample_rate`` are the caller's and
    the gateway's business, not the gate's.
    """
    alpha, margin, cap = policy.alpha, policy.margin, policy.sample_cap
    n_pairs = len(pairs)
    labelled, fallback_only = _human_labelled(pairs)
    n = len(labelled)
    common: dict[str, Any] = {
        "n_pairs": n_pairs,
        "n_labelled": n,
        "agreement": _agreement(pairs),
        "fallback_labelled": fallback_only,
        "alpha": alpha,
        "margin": margin,
        "sample_cap": cap,
        "trained_labels": trained_labels,
        "new_labels": new_labels,
        "shadow_errors": shadow_errors,
        "champion_latency_ms": latency_ms[0] if latency_ms else None,
        "challenger_latency_ms": latency_ms[1] if latency_ms else None,
    }
    reasons: list[str] = []
    if fallback_only:
        reasons.append(
            f"{fallback_only} pairs labelled only by the fallback were left out "
            "(escalated rows are the hard ones: they would bias the comparison)"
        )
    stale = _supersede_reason(trained_labels, new_labels, policy)
    if n == 0:
        reasons.insert(0, f"no pair has a person's label yet ({n_pairs} shadow pairs)")
        broken = _error_veto(n_pairs, shadow_errors, policy)
        if broken and n_pairs + shadow_errors >= policy.min_samples:
            return GateDecision(decision="reject", reasons=reasons + broken, **common)
        if stale:
            return GateDecision(decision="supersede", reasons=[*reasons, stale], **common)
        return GateDecision(decision="wait", reasons=reasons, **common)

    champ_ok = (labelled["champion_label"] == labelled["true_label"]).to_numpy()
    chall_ok = (labelled["challenger_label"] == labelled["true_label"]).to_numpy()
    stats = paired_comparison(champ_ok, chall_ok, alpha=alpha)
    evidence = sequential_test(
        wins=stats.challenger_only,
        losses=stats.champion_only,
        ties=stats.n - stats.challenger_only - stats.champion_only,
        alpha=alpha,
        margin=margin,
    )
    numbers: dict[str, Any] = {
        "champion_accuracy": stats.champion_accuracy,
        "challenger_accuracy": stats.challenger_accuracy,
        "difference": stats.difference,
        "ci": stats.ci,
        "p_value": evidence.p_better,
        "p_value_worse": evidence.p_worse,
        "e_value": evidence.e_better,
        "e_value_worse": evidence.e_worse,
        "champion_only": stats.champion_only,
        "challenger_only": stats.challenger_only,
    }
    level = f"{1 - 2 * alpha:.0%}"
    summary = (
        f"challenger {stats.challenger_accuracy:.3f} vs champion {stats.champion_accuracy:.3f} "
        f"on {n} labelled pairs: difference {stats.difference:+.3f}, {level} CI "
        f"[{stats.ci[0]:+.3f}, {stats.ci[1]:+.3f}]; {stats.challenger_only} pairs only the "
        f"challenger got right, {stats.champion_only} only the champion"
    )
    reasons.insert(0, summary)
    bar = f"1/alpha = {evidence.threshold:.4g}"
    versus = f"not {margin:.3f} worse" if margin > 0 else "better"

    decision: Decision
    if evidence.better:
        decision = "promote"
        reasons.append(
            f"challenger is better: e-value {evidence.e_better:.4g} >= {bar} (sequential, "
            "valid at every look)"
            if margin == 0
            else f"challenger is non-inferior (within margin {margin}): e-value "
            f"{evidence.e_better:.4g} >= {bar} (sequential, valid at every look)"
        )
    elif evidence.worse:
        decision = "reject"
        reasons.append(
            f"challenger is worse: e-value {evidence.e_worse:.4g} >= {bar}"
            + (f" for a loss of more than the margin {margin}" if margin > 0 else "")
        )
    elif n >= cap:
        decision = "reject"
        reasons.append(
            f"no evidence of improvement after {n} labelled pairs (cap {cap}): e-value "
            f"{evidence.e_better:.4g} < {bar} for {versus}"
        )
    elif stale:
        decision = "supersede"
        reasons.append(f"undecided (e-value {evidence.e_better:.4g} < {bar}); {stale}")
    else:
        decision = "wait"
        reasons.append(
            f"undecided: e-value {evidence.e_better:.4g} for {versus} and "
            f"{evidence.e_worse:.4g} for worse, both < {bar}; rejecting at {cap} labelled pairs"
        )

    broken = _error_veto(n_pairs, shadow_errors, policy)
    slow = _latency_veto(latency_ms, policy)
    if decision == "promote" and (broken or slow):
        decision = "reject"
        reasons.extend(broken + slow)
    elif (
        decision in ("wait", "supersede")
        and broken
        and n_pairs + shadow_errors >= policy.min_samples
    ):
        decision = "reject"
        reasons.extend(broken)
    elif latency_ms is not None and not slow:
        reasons.append(
            f"latency: challenger {latency_ms[1]:.1f} ms vs champion {latency_ms[0]:.1f} ms "
            f"per batch, within {policy.max_latency_ratio}x"
        )
    return GateDecision(decision=decision, reasons=reasons, **common, **numbers)


def _supersede_reason(
    trained_labels: int | None, new_labels: int | None, policy: PromotionSpec
) -> str | None:
    """Why a waiting challenger is stale, or None: more people's labels arrived since its
    training than ``supersede_factor`` times those it learnt from (at least one)."""
    if trained_labels is None or new_labels is None:
        return None
    limit = policy.supersede_factor * max(trained_labels, 1)
    if new_labels <= limit:
        return None
    return (
        f"superseded: {new_labels} people's labels arrived since its training, more than "
        f"{policy.supersede_factor:g} x the {trained_labels} it was trained on; a retrain "
        "on all of them replaces it"
    )


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
    from scipy.stats import norm

    if n <= 0:
        raise ValueError("a proportion needs n >= 1")
    z = float(norm.ppf(1 - alpha))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _human_labelled(pairs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Pairs with a person's label and both answers, and how many had a fallback label only."""
    if len(pairs) == 0 or any(c not in pairs.columns for c in _PAIR_COLUMNS):
        return pairs.iloc[0:0], 0
    has_answers = pairs["champion_label"].notna() & pairs["challenger_label"].notna()
    has_truth = pairs["true_label"].notna() & (pairs["true_label"].astype(str).str.strip() != "")
    if "true_label_source" in pairs.columns:
        human = pairs["true_label_source"] == "human"
    else:  # a frame built without sources: every label is taken as a person's
        human = has_truth
    keep = has_answers & has_truth & human
    fallback_only = int((has_answers & has_truth & ~human).sum())
    labelled = pairs.loc[keep, list(_PAIR_COLUMNS)].astype(str)
    return labelled, fallback_only


def _agreement(pairs: pd.DataFrame) -> float | None:
    if len(pairs) == 0 or any(c not in pairs.columns for c in _PAIR_COLUMNS[:2]):
        return None
    answered = pairs["champion_label"].notna() & pairs["challenger_label"].notna()
    if not answered.any():
        return None
    both = pairs.loc[answered]
    return float(
        (both["champion_label"].astype(str) == both["challenger_label"].astype(str)).mean()
    )


def _latency_veto(latency_ms: tuple[float, float] | None, policy: PromotionSpec) -> list[str]:
    if latency_ms is None:
        return []
    champion, challenger = latency_ms
    if champion > 0 and challenger > policy.max_latency_ratio * champion:
        return [
            f"vetoed: challenger latency {challenger:.1f} ms > {policy.max_latency_ratio}x the "
            f"champion's {champion:.1f} ms on the same texts"
        ]
    return []


def _error_veto(n_pairs: int, shadow_errors: int, policy: PromotionSpec) -> list[str]:
    calls = n_pairs + shadow_errors
    if shadow_errors > 0 and calls > 0 and shadow_errors / calls > policy.max_error_rate:
        return [
            f"vetoed: {shadow_errors} of {calls} shadow calls failed "
            f"({shadow_errors / calls:.1%} > {policy.max_error_rate:.1%})"
        ]
    return []


# --------------------------------------------------------------------------- the guardrail


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
    x_before, n_before = _successes(before)
    x_after, n_after = _successes(after)
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


def _successes(values: pd.Series | Sequence[bool] | np.ndarray) -> tuple[int, int]:
    """(correct, labelled) from an array of bools where None/NaN means "no label"."""
    import pandas as pd

    series = pd.Series(values, dtype=object).dropna()
    flags = series.astype(bool).to_numpy()
    return int(flags.sum()), len(flags)
