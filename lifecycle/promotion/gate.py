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
- the guardrail (:mod:`lifecycle.promotion.guardrail`) compares the labelled traffic of the
  previous champion with that of the new one.

Only people's labels count. Fallback labels exist only for escalated (low-confidence) rows;
those are the hardest requests and the fallback may share the models' mistakes, so mixing
them in would bias both accuracies in ways the tests cannot correct for.

``ci`` is always the two-sided ``1 - 2 * alpha`` interval (90% at alpha 0.05): each bound on
its own is a one-sided level-``alpha`` confidence bound, which is what a one-sided decision
("better", "no worse than the margin") at ``alpha`` needs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from lifecycle.config.spec import PromotionSpec
from lifecycle.promotion.sequential import sequential_test
from lifecycle.promotion.statistics import paired_comparison

if TYPE_CHECKING:
    import pandas as pd

Decision = Literal["promote", "reject", "wait", "supersede"]

GATE_TEST = "sequential mixture e-values (anytime-valid) + Newcombe paired score interval"

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
