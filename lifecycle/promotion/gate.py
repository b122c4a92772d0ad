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
  correlation), a fixed-n summary for people to read; it does not decide. That is a
  classifier's statistic; an extractor's (``task="extraction"``) is the paired per-request
  F1 difference, with the bounded-outcome version of the same e-values
  (:mod:`lifecycle.promotion.extraction_gate`, :mod:`lifecycle.promotion.paired`). Both
  return a :class:`~lifecycle.promotion.decision.GateDecision` and share the label filter,
  the health vetoes and the supersede rule (:mod:`lifecycle.promotion.decision`).
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

from typing import TYPE_CHECKING, Any

from lifecycle.config.spec import PromotionSpec
from lifecycle.promotion.decision import (
    GATE_TEST,
    Decision,
    GateDecision,
    GateFacts,
    has_columns,
    health,
    human_labelled,
    opening,
    without_labels,
)
from lifecycle.promotion.sequential import sequential_test
from lifecycle.promotion.statistics import paired_comparison

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["GATE_TEST", "Decision", "GateDecision", "gate"]

_PAIR_COLUMNS = ("champion_label", "challenger_label", "true_label")


# --------------------------------------------------------------------------- the gate


def gate(
    pairs: pd.DataFrame,
    policy: PromotionSpec,
    *,
    latency_ms: tuple[float, float] | None = None,
    shadow_errors: int = 0,
    trained_labels: int | None = None,
    new_labels: int | None = None,
    task: str = "classification",
) -> GateDecision:
    """Decide on a challenger from its shadow pairs (``TrafficStore.shadow_pairs``).

    ``task`` is the specialist's kind: an extractor's pairs go to
    :func:`lifecycle.promotion.extraction_gate.extraction_gate` (paired per-request F1 from
    the entity columns; the same sequential logic, cap, supersede rule and health vetoes).
    For a classifier, with ``n`` labelled pairs (people's labels only), counted as wins
    (only the challenger right), losses (only the champion right) and ties, at every look:

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
    facts = GateFacts(latency_ms, shadow_errors, trained_labels, new_labels)
    if task == "extraction":
        from lifecycle.promotion.extraction_gate import extraction_gate

        return extraction_gate(pairs, policy, facts)
    if task != "classification":
        raise ValueError(f"unknown task {task!r}; known: classification, extraction")
    alpha, margin, cap = policy.alpha, policy.margin, policy.sample_cap
    labelled, fallback_only = human_labelled(pairs, _PAIR_COLUMNS)
    n = len(labelled)
    common, reasons, stale = opening(
        pairs, policy, facts, n_labelled=n, fallback_only=fallback_only, agreement=_agreement(pairs)
    )
    if n == 0:
        return without_labels(reasons, common, policy, shadow_errors=shadow_errors, stale=stale)

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

    decision, vetoes, note = health(decision, n_pairs=len(pairs), facts=facts, policy=policy)
    reasons.extend(vetoes if note is None else [note])
    return GateDecision(decision=decision, reasons=reasons, **common, **numbers)


def _agreement(pairs: pd.DataFrame) -> float | None:
    if not has_columns(pairs, _PAIR_COLUMNS[:2]):
        return None
    answered = pairs["champion_label"].notna() & pairs["challenger_label"].notna()
    if not answered.any():
        return None
    both = pairs.loc[answered]
    return float(
        (both["champion_label"].astype(str) == both["challenger_label"].astype(str)).mean()
    )
