"""Scores of an extraction model: exact-span precision, recall and F1, per label and overall.

A predicted span counts only when its label, start and end all equal a gold span's (the
CoNLL/seqeval convention): a span one character short is as wrong as a missing one, because
a downstream consumer that reads ``text[start:end]`` gets a different string. Each request's
spans are a multiset, so a model that predicts the same span twice earns one true positive
and one false positive.

Three views, for three readers:

- micro P/R/F1 over all spans: the headline number, dominated by the common labels;
- macro F1 (mean of per-label F1): what a rare slot that the model never finds costs;
- exact match (share of requests whose predicted spans equal the gold ones): what a caller
  that needs every slot of a request right sees, and, with :func:`request_f1`, the per-request
  outcomes the promotion gate pairs between champion and challenger.

Undefined ratios (no prediction, no gold) are 0, as in scikit-learn's ``zero_division=0``,
except that a data set with no gold span and no predicted span scores micro 1.0: there was
nothing to find and nothing was invented. Pure Python, no imports beyond the standard library.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Span = tuple[str, int, int]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/ ]")


@dataclass(frozen=True, slots=True)
class LabelScore:
    """Exact-span scores of one label; ``support`` is its number of gold spans."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True, slots=True)
class ExtractionEvaluation:
    """Scores of predicted spans against gold spans over ``n`` requests."""

    n: int
    micro_precision: float
    micro_recall: float
    micro_f1: float
    macro_f1: float
    exact_match: float
    per_label: dict[str, LabelScore]

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat, MLflow-ready metrics: ``{prefix}micro_f1``, ..., ``{prefix}f1.<label>``.

        Labels are sanitised to the characters MLflow accepts in a metric name (others become
        ``_``); two labels that sanitise alike get ``_2``, ``_3`` suffixes rather than
        silently overwriting each other.
        """
        values = {
            f"{prefix}micro_precision": self.micro_precision,
            f"{prefix}micro_recall": self.micro_recall,
            f"{prefix}micro_f1": self.micro_f1,
            f"{prefix}macro_f1": self.macro_f1,
            f"{prefix}exact_match": self.exact_match,
        }
        for label in sorted(self.per_label):
            base = f"{prefix}f1.{_metric_safe(label)}"
            name, k = base, 1
            while name in values:
                k += 1
                name = f"{base}_{k}"
            values[name] = self.per_label[label].f1
        return values

    def table(self) -> list[dict[str, object]]:
        """One row per label (label, precision, recall, f1, support), most gold spans first."""
        rows = sorted(self.per_label.items(), key=lambda item: (-item[1].support, item[0]))
        return [
            {
                "label": label,
                "precision": score.precision,
                "recall": score.recall,
                "f1": score.f1,
                "support": score.support,
            }
            for label, score in rows
        ]


def evaluate_entities(
    gold: Sequence[Sequence[Span]],
    predicted: Sequence[Sequence[Span]],
    *,
    labels: Sequence[str] | None = None,
) -> ExtractionEvaluation:
    """Exact-span scores of ``predicted`` against ``gold``, one sequence of spans per request.

    ``labels`` fixes the label set of the macro average (a declared label absent from both
    sides then scores F1 0, so macro F1 stays comparable across evaluations of one
    specialist); without it the macro average runs over the labels seen in gold or
    predictions. ``per_label`` holds both. Raises ValueError when the two sides hold a
    different number of requests or none.
    """
    if len(gold) != len(predicted):
        raise ValueError(
            f"gold has {len(gold)} requests but predicted has {len(predicted)}; "
            "give one (possibly empty) list of spans per request on both sides"
        )
    if len(gold) == 0:
        raise ValueError("no request to evaluate: give at least one request")
    tp: Counter[str] = Counter()
    n_gold: Counter[str] = Counter()
    n_pred: Counter[str] = Counter()
    exact = 0
    for gold_spans, pred_spans in zip(gold, predicted, strict=True):
        g, p = _bag(gold_spans), _bag(pred_spans)
        exact += g == p
        for (label, _, _), count in g.items():
            n_gold[label] += count
        for (label, _, _), count in p.items():
            n_pred[label] += count
        for span, count in (g & p).items():
            tp[span[0]] += count

    seen = set(n_gold) | set(n_pred)
    per_label = {
        label: _score(tp[label], n_pred[label], n_gold[label])
        for label in sorted(seen | set(labels or ()))
    }
    macro_over = sorted(set(labels)) if labels is not None else sorted(seen)
    macro = (
        sum(per_label[label].f1 for label in macro_over) / len(macro_over) if macro_over else 0.0
    )

    total_tp, total_pred, total_gold = sum(tp.values()), sum(n_pred.values()), sum(n_gold.values())
    if total_pred == 0 and total_gold == 0:
        micro = LabelScore(precision=1.0, recall=1.0, f1=1.0, support=0)
        macro = 1.0 if labels is None else macro
    else:
        micro = _score(total_tp, total_pred, total_gold)
    return ExtractionEvaluation(
        n=len(gold),
        micro_precision=micro.precision,
        micro_recall=micro.recall,
        micro_f1=micro.f1,
        macro_f1=macro,
        exact_match=exact / len(gold),
        per_label=per_label,
    )


def request_f1(gold: Sequence[Span], predicted: Sequence[Span]) -> float:
    """Exact-span F1 of one request: 1.0 when both are empty, 0.0 when only one is.

    The per-request outcome the promotion gate pairs between two models on the same text.
    """
    g, p = _bag(gold), _bag(predicted)
    n_gold, n_pred = sum(g.values()), sum(p.values())
    if n_gold == 0 and n_pred == 0:
        return 1.0
    return _score(sum((g & p).values()), n_pred, n_gold).f1


def request_exact(gold: Sequence[Span], predicted: Sequence[Span]) -> bool:
    """Whether one request's predicted spans equal its gold spans (as multisets)."""
    return _bag(gold) == _bag(predicted)


def _bag(spans: Iterable[Sequence[Any]]) -> Counter[Span]:
    """Spans as a multiset of ``(label, start, end)`` tuples (lists from JSON accepted)."""
    bag: Counter[Span] = Counter()
    for span in spans:
        if len(span) != 3:
            raise ValueError(f"a span is (label, start, end), got {span!r}")
        label, start, end = span
        bag[(str(label), int(start), int(end))] += 1
    return bag


def _score(tp: int, n_pred: int, n_gold: int) -> LabelScore:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    # 2TP / (pred + gold): the harmonic mean of P and R without its rounding.
    f1 = 2 * tp / (n_pred + n_gold) if tp else 0.0
    return LabelScore(precision=precision, recall=recall, f1=f1, support=n_gold)


def _metric_safe(label: str) -> str:
    return _UNSAFE.sub("_", label) or "_"
