"""What the promotion gate decides, for every task kind, and the rules all kinds share.

:class:`GateDecision` is the one result type of :func:`lifecycle.promotion.gate.gate`,
whichever kind of specialist it compares (``task``); the statistic differs (paired accuracy
of a classifier, paired per-request F1 of an extractor), the rest does not: which pairs
count (people's labels only), the health vetoes (shadow errors, latency), and the supersede
rule. Those shared rules live here so that each kind's gate is only its statistic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd

    from lifecycle.config.spec import PromotionSpec

Decision = Literal["promote", "reject", "wait", "supersede"]

GATE_TEST = "sequential mixture e-values (anytime-valid) + Newcombe paired score interval"


@dataclass(frozen=True, slots=True)
class GateDecision:
    """What the gate decided and the numbers behind it.

    Accuracies, the difference, the interval, the e-values and the p-values are None when no
    labelled pair exists. ``difference`` is challenger minus champion in the gate's
    statistic: accuracy for a classifier, mean per-request F1 for an extractor (``task``).
    ``ci`` is its two-sided ``1 - 2 * alpha`` interval (fixed-n, for reading: Newcombe's for
    a classifier, the paired bootstrap for an extractor). ``e_value`` is the sequential
    e-value against "the challenger is worse than ``-margin``" (promote at ``1 / alpha``),
    ``e_value_worse`` the mirror one (reject at ``1 / alpha``); ``p_value`` and
    ``p_value_worse`` are their anytime-valid p-values ``min(1, 1 / e)``. ``agreement`` is
    the share of all pairs (labelled or not) where both models answered the same (label, or
    set of spans). ``trained_labels`` and ``new_labels`` are the people's labels the
    challenger was trained on and those that arrived since, when known (the supersede rule).

    An extractor's decision leaves the accuracies None and fills the F1 and exact-match
    fields instead (an extraction answer is not right or wrong as a whole); its
    ``champion_only``/``challenger_only`` count the requests where that model's F1 is the
    higher one.
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
    #: Labelled pairs only the champion got right / only the challenger got right (an
    #: extractor: where its per-request F1 is the higher).
    champion_only: int = 0
    challenger_only: int = 0
    #: Pairs labelled by the fallback only, left out of the test (see ``lifecycle.promotion.gate``).
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
    #: The specialist's task kind: "classification" or "extraction".
    task: str = "classification"
    #: Extraction: mean per-request F1 and exact-match shares of each model, the two-sided
    #: exact McNemar p-value on exact match and the one-sided Wilcoxon signed-rank p-value of
    #: the F1 differences (fixed-n figures; McNemar vetoes a promotion).
    champion_f1: float | None = None
    challenger_f1: float | None = None
    champion_exact_match: float | None = None
    challenger_exact_match: float | None = None
    mcnemar_p: float | None = None
    wilcoxon_p: float | None = None

    @property
    def promote(self) -> bool:
        return self.decision == "promote"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (lists, no NaN) for an alert payload, an event or an MLflow run."""
        data = asdict(self)
        data["ci"] = list(self.ci) if self.ci is not None else None
        return data

    def metrics(self) -> dict[str, float]:
        """Finite numbers for MLflow, under stable names (an extractor's say F1)."""
        low, high = self.ci if self.ci else (None, None)
        values: dict[str, float | None] = {
            "gate_pairs": float(self.n_pairs),
            "gate_labelled": float(self.n_labelled),
        }
        if self.task == "extraction":
            values |= {
                "gate_champion_f1": self.champion_f1,
                "gate_challenger_f1": self.challenger_f1,
                "gate_f1_difference": self.difference,
                "gate_f1_ci_low": low,
                "gate_f1_ci_high": high,
                "gate_champion_exact_match": self.champion_exact_match,
                "gate_challenger_exact_match": self.challenger_exact_match,
                "gate_mcnemar_p": self.mcnemar_p,
                "gate_wilcoxon_p": self.wilcoxon_p,
            }
        else:
            values |= {
                "gate_champion_accuracy": self.champion_accuracy,
                "gate_challenger_accuracy": self.challenger_accuracy,
                "gate_difference": self.difference,
                "gate_ci_low": low,
                "gate_ci_high": high,
            }
        values |= {
            "gate_p_value": self.p_value,
            "gate_e_value": self.e_value,
            "gate_e_value_worse": self.e_value_worse,
            "gate_agreement": self.agreement,
            "gate_shadow_errors": float(self.shadow_errors),
            "gate_champion_latency_ms": self.champion_latency_ms,
            "gate_challenger_latency_ms": self.challenger_latency_ms,
        }
        return {k: v for k, v in values.items() if v is not None and math.isfinite(v)}


def has_columns(pairs: pd.DataFrame, columns: Sequence[str]) -> bool:
    """Whether there are pairs and they have every one of ``columns`` (a window from before a
    kind's columns existed has none of them: nothing to compare, not an error)."""
    return len(pairs) > 0 and all(c in pairs.columns for c in columns)


def human_labelled(
    pairs: pd.DataFrame, columns: tuple[str, str, str], *, as_text: bool = True
) -> tuple[pd.DataFrame, int]:
    """Pairs with a person's label and both answers, and how many had a fallback label only.

    ``columns`` names the champion's answer, the challenger's and the truth (labels of a
    classifier, entity JSON of an extractor); the result holds them as strings (as stored
    with ``as_text=False``). A blank truth is no label. Without ``true_label_source`` every
    label is taken as a person's.
    """
    if not has_columns(pairs, columns):
        return pairs.iloc[0:0], 0
    champion, challenger, truth = columns
    has_answers = pairs[champion].notna() & pairs[challenger].notna()
    has_truth = pairs[truth].notna() & (pairs[truth].astype(str).str.strip() != "")
    if "true_label_source" in pairs.columns:
        human = pairs["true_label_source"] == "human"
    else:  # a frame built without sources: every label is taken as a person's
        human = has_truth
    keep = has_answers & has_truth & human
    fallback_only = int((has_answers & has_truth & ~human).sum())
    labelled = pairs.loc[keep, list(columns)]
    return (labelled.astype(str) if as_text else labelled), fallback_only


@dataclass(frozen=True, slots=True)
class GateFacts:
    """What the caller knows besides the pairs, bundled so every task's gate passes it on whole.

    ``latency_ms`` is (champion, challenger) model time per batch when it was measured,
    ``shadow_errors`` the shadow calls that raised (absent from the pairs), and
    ``trained_labels``/``new_labels`` the people's labels the challenger was trained on and
    those that arrived since, when known (the supersede rule).
    """

    latency_ms: tuple[float, float] | None = None
    shadow_errors: int = 0
    trained_labels: int | None = None
    new_labels: int | None = None


def opening(
    pairs: pd.DataFrame,
    policy: PromotionSpec,
    facts: GateFacts,
    *,
    n_labelled: int,
    fallback_only: int,
    agreement: float | None,
) -> tuple[dict[str, Any], list[str], str | None]:
    """What every task's gate starts from before its statistic: the :class:`GateDecision`
    fields every decision carries, the reasons so far (fallback-only pairs left out) and why
    the challenger is stale (None when it is not)."""
    latency_ms = facts.latency_ms
    common: dict[str, Any] = {
        "n_pairs": len(pairs),
        "n_labelled": n_labelled,
        "agreement": agreement,
        "fallback_labelled": fallback_only,
        "alpha": policy.alpha,
        "margin": policy.margin,
        "sample_cap": policy.sample_cap,
        "trained_labels": facts.trained_labels,
        "new_labels": facts.new_labels,
        "shadow_errors": facts.shadow_errors,
        "champion_latency_ms": latency_ms[0] if latency_ms else None,
        "challenger_latency_ms": latency_ms[1] if latency_ms else None,
    }
    stale = supersede_reason(facts.trained_labels, facts.new_labels, policy)
    return common, fallback_reason(fallback_only), stale


def fallback_reason(fallback_only: int) -> list[str]:
    if not fallback_only:
        return []
    return [
        f"{fallback_only} pairs labelled only by the fallback were left out "
        "(escalated rows are the hard ones: they would bias the comparison)"
    ]


def without_labels(
    reasons: list[str],
    common: dict[str, Any],
    policy: PromotionSpec,
    *,
    shadow_errors: int,
    stale: str | None,
) -> GateDecision:
    """The decision before any labelled pair: reject a failing challenger once
    ``min_samples`` shadow calls were made, supersede a stale one, else wait."""
    n_pairs = common["n_pairs"]
    reasons.insert(0, f"no pair has a person's label yet ({n_pairs} shadow pairs)")
    broken = error_veto(n_pairs, shadow_errors, policy)
    if broken and n_pairs + shadow_errors >= policy.min_samples:
        return GateDecision(decision="reject", reasons=reasons + broken, **common)
    if stale:
        return GateDecision(decision="supersede", reasons=[*reasons, stale], **common)
    return GateDecision(decision="wait", reasons=reasons, **common)


def health(
    decision: Decision, *, n_pairs: int, facts: GateFacts, policy: PromotionSpec
) -> tuple[Decision, list[str], str | None]:
    """The decision after the health vetoes, the veto reasons, and a note on a latency that
    was measured and passed (None otherwise).

    A "promote" becomes "reject" when the challenger is too slow or fails too often; a
    "wait" or "supersede" becomes "reject" when it fails too often once ``min_samples``
    shadow calls were made.
    """
    shadow_errors, latency_ms = facts.shadow_errors, facts.latency_ms
    broken = error_veto(n_pairs, shadow_errors, policy)
    slow = latency_veto(latency_ms, policy)
    if decision == "promote" and (broken or slow):
        return "reject", broken + slow, None
    if (
        decision in ("wait", "supersede")
        and broken
        and n_pairs + shadow_errors >= policy.min_samples
    ):
        return "reject", broken, None
    if latency_ms is not None and not slow:
        return (
            decision,
            [],
            (
                f"latency: challenger {latency_ms[1]:.1f} ms vs champion {latency_ms[0]:.1f} ms "
                f"per batch, within {policy.max_latency_ratio}x"
            ),
        )
    return decision, [], None


def supersede_reason(
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


def latency_veto(latency_ms: tuple[float, float] | None, policy: PromotionSpec) -> list[str]:
    if latency_ms is None:
        return []
    champion, challenger = latency_ms
    if champion > 0 and challenger > policy.max_latency_ratio * champion:
        return [
            f"vetoed: challenger latency {challenger:.1f} ms > {policy.max_latency_ratio}x the "
            f"champion's {champion:.1f} ms on the same texts"
        ]
    return []


def error_veto(n_pairs: int, shadow_errors: int, policy: PromotionSpec) -> list[str]:
    calls = n_pairs + shadow_errors
    if shadow_errors > 0 and calls > 0 and shadow_errors / calls > policy.max_error_rate:
        return [
            f"vetoed: {shadow_errors} of {calls} shadow calls failed "
            f"({shadow_errors / calls:.1%} > {policy.max_error_rate:.1%})"
        ]
    return []
