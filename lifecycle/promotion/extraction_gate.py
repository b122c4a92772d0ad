"""The gate of an extraction specialist: its shadow pairs' entities, scored per request.

``TrafficStore.shadow_pairs`` gives an extractor's pairs the columns ``champion_entities``,
``challenger_entities`` and ``true_entities``: JSON lists of ``{label, start, end, ...}``
(:func:`lifecycle.extraction.spans.to_json`), ``true_entities`` None until a label arrives.
(``champion_label`` and the like hold the answers' summaries, ``date+order_id``: too coarse
to score, so they are not read here.) Each labelled request gives each model an exact-span
F1 and an exact match (:mod:`lifecycle.extraction.metrics`), and the decision is
:func:`lifecycle.promotion.paired.extraction_gate_decision`'s: sequential e-values on the
paired F1 differences, valid at every look, with exact match as a veto. Which labels count
(people's only), the health vetoes and the supersede rule are the classifier's
(:mod:`lifecycle.promotion.decision`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lifecycle.extraction.metrics import request_exact, request_f1
from lifecycle.extraction.spans import from_json, keys
from lifecycle.promotion.decision import (
    GateDecision,
    has_columns,
    health,
    human_labelled,
    opening,
    without_labels,
)
from lifecycle.promotion.paired import PairedScores, compare_paired, decide_with_reason

if TYPE_CHECKING:
    import pandas as pd

    from lifecycle.config.spec import PromotionSpec
    from lifecycle.promotion.decision import Decision, GateFacts

EXTRACTION_TEST = (
    "sequential betting e-values on per-request F1 (anytime-valid) + paired bootstrap "
    "interval; exact McNemar on exact match (veto)"
)

ENTITY_COLUMNS = ("champion_entities", "challenger_entities", "true_entities")

Spans = list[tuple[str, int, int]]


def extraction_gate(pairs: pd.DataFrame, policy: PromotionSpec, facts: GateFacts) -> GateDecision:
    """Decide on an extraction challenger from its shadow pairs (see the module docstring).

    ``facts`` bundles :func:`lifecycle.promotion.gate.gate`'s keyword arguments (it calls
    this for ``task="extraction"``), and the health, cap and supersede rules are its own;
    ``policy.margin`` is in F1 points of the mean per-request F1, and ``policy.min_samples``
    labelled pairs are needed before an evidence-based decision (the cap decides regardless).
    Pairs whose entity JSON cannot be read are left out, and the reasons say how many.
    """
    alpha, cap = policy.alpha, policy.sample_cap
    labelled, fallback_only = human_labelled(pairs, ENTITY_COLUMNS, as_text=False)
    champion_f1, challenger_f1, champion_exact, challenger_exact = [], [], [], []
    unreadable = 0
    for champion_raw, challenger_raw, truth_raw in labelled.itertuples(index=False, name=None):
        gold, champion, challenger = _spans(truth_raw), _spans(champion_raw), _spans(challenger_raw)
        if gold is None or champion is None or challenger is None:
            unreadable += 1
            continue
        champion_f1.append(request_f1(gold, champion))
        challenger_f1.append(request_f1(gold, challenger))
        champion_exact.append(request_exact(gold, champion))
        challenger_exact.append(request_exact(gold, challenger))
    n = len(champion_f1)
    common, reasons, stale = opening(
        pairs, policy, facts, n_labelled=n, fallback_only=fallback_only, agreement=_agreement(pairs)
    )
    common |= {"task": "extraction", "test": EXTRACTION_TEST}
    missing = [c for c in ENTITY_COLUMNS if c not in pairs.columns]
    if missing and len(pairs):
        reasons.append(f"the shadow pairs have no {', '.join(missing)} column: nothing to score")
    if unreadable:
        reasons.append(f"{unreadable} labelled pairs with unreadable entity JSON were left out")
    if n == 0:
        return without_labels(
            reasons, common, policy, shadow_errors=facts.shadow_errors, stale=stale
        )

    scores = compare_paired(
        champion_f1,
        challenger_f1,
        champion_exact,
        challenger_exact,
        alpha=alpha,
        margin=policy.margin,
    )
    decision: Decision
    decision, why = decide_with_reason(scores, alpha=alpha, min_samples=policy.min_samples, cap=cap)
    if decision == "wait" and stale:
        decision, why = "supersede", f"{why}; {stale}"
    numbers: dict[str, Any] = {
        "champion_f1": scores.champion_mean,
        "challenger_f1": scores.challenger_mean,
        "difference": scores.difference,
        "ci": (scores.ci_low, scores.ci_high),
        "p_value": scores.p_value_better,
        "p_value_worse": scores.p_value_worse,
        "e_value": scores.e_better,
        "e_value_worse": scores.e_worse,
        "champion_only": scores.champion_higher,
        "challenger_only": scores.challenger_higher,
        "champion_exact_match": scores.exact_champion,
        "challenger_exact_match": scores.exact_challenger,
        "mcnemar_p": scores.mcnemar_p,
        "wilcoxon_p": scores.wilcoxon_p,
    }
    reasons.insert(0, _summary(scores))
    decision, vetoes, note = health(decision, n_pairs=len(pairs), facts=facts, policy=policy)
    # The decisive sentence last (after a passing latency, before a veto): an alert that
    # quotes the last reason quotes it.
    reasons.extend([*([note] if note else []), _with_means(why, scores), *vetoes])
    return GateDecision(decision=decision, reasons=reasons, **common, **numbers)


def _summary(scores: PairedScores) -> str:
    level = f"{1 - 2 * scores.alpha:.0%}"
    mcnemar = "n/a" if scores.mcnemar_p is None else f"{scores.mcnemar_p:.3g}"
    wilcoxon = "n/a" if scores.wilcoxon_p is None else f"{scores.wilcoxon_p:.3g}"
    return (
        f"challenger F1 {scores.challenger_mean:.3f} vs champion {scores.champion_mean:.3f} "
        f"(mean per-request exact-span F1) on {scores.n} labelled pairs: difference "
        f"{scores.difference:+.3f}, {level} bootstrap CI [{scores.ci_low:+.3f}, "
        f"{scores.ci_high:+.3f}]; {scores.challenger_higher} requests the challenger scored "
        f"higher, {scores.champion_higher} the champion; exact match "
        f"{scores.exact_challenger:.3f} vs {scores.exact_champion:.3f} (McNemar p {mcnemar}); "
        f"Wilcoxon p {wilcoxon}"
    )


def _with_means(why: str, scores: PairedScores) -> str:
    return (
        f"{why} (F1 {scores.challenger_mean:.3f} vs {scores.champion_mean:.3f} on "
        f"{scores.n} labelled pairs)"
    )


def _spans(raw: object) -> Spans | None:
    """(label, start, end) of each entity in a stored answer (JSON text, or a list of
    dicts); None when it cannot be read."""
    try:
        if isinstance(raw, list):
            return keys(raw)
        if isinstance(raw, str):
            return keys(from_json(raw))
    except (ValueError, KeyError, TypeError):
        return None
    return None


def _agreement(pairs: pd.DataFrame) -> float | None:
    """Share of answered pairs where both models found the same spans (as multisets)."""
    if not has_columns(pairs, ENTITY_COLUMNS[:2]):
        return None
    same = total = 0
    for champion_raw, challenger_raw in pairs[list(ENTITY_COLUMNS[:2])].itertuples(
        index=False, name=None
    ):
        champion, challenger = _spans(champion_raw), _spans(challenger_raw)
        if champion is None or challenger is None:
            continue
        total += 1
        same += sorted(champion) == sorted(challenger)
    return same / total if total else None
