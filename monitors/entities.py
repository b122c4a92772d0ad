"""An extractor's answers as per-request columns: what its drift signals and F1 read.

A classifier's answer is one label, which ``monitors.frames`` already holds as
``prediction``. An extractor's answer is a list of character spans (the ``entities`` JSON the
gateway logs, ``lifecycle.extraction.spans``), and its ways of going wrong show in the shape
of that list before any label arrives: fewer spans per request, less sure spans, shorter or
longer spans, more requests with nothing found, a required field missing more often. So each
request gets plain columns the Evidently machinery (``monitors.drift``) compares with the
reference like any descriptor:

- ``n_entities`` (count), ``entity_confidence`` (mean span confidence) and ``span_length``
  (mean characters; both NaN for a request without spans, so that "nothing found" is not
  mixed into them: ``no_entity`` says that on its own);
- ``no_entity`` and ``missing_required`` (yes/no; the latter only when the spec has
  ``required`` fields, so a signal that cannot move is not tested and costs no false-alarm
  budget).

Two more feed the label-free F1 estimate (``monitors.entity_quality``): ``confidence_sum``
(expected correct spans) and ``outside_error``, the chance that something outside the
predicted spans is wrong (a missed entity): the request's confidence is the probability of
its whole answer, the product of its spans' confidences that of its spans alone, and the
ratio what is left. Where a person corrected the answer (``true_entities``), ``gold_count``,
``correct_count`` (exact spans), ``exact`` and ``boundary_misses`` (gold spans missed that a
wrong predicted span overlaps: a boundary or label error rather than a span not marked at
all) make the measured F1 and calibrate the estimate.

A request whose entities are missing (a row logged before extraction, a broken JSON) gets NaN
everywhere: unknown is not "none found".
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.extraction.spans import NO_ENTITY, Entity, from_json, keys, summary
from monitors.frames import MonitorData, reference_data, window_data

logger = logging.getLogger(__name__)

#: Columns of an answer's shape, tested for drift (``monitors.drift.SIGNAL_DEFS``).
SIGNAL_COLUMNS = ("n_entities", "entity_confidence", "span_length", "no_entity", "missing_required")
#: Columns of the answer the label-free F1 estimate reads.
ESTIMATE_COLUMNS = ("confidence_sum", "outside_error")
#: Columns measured against a person's correction (NaN on unlabelled rows).
TRUTH_COLUMNS = ("gold_count", "correct_count", "exact", "boundary_misses")


def parse(value: Any) -> list[Entity] | None:
    """A request's entities from the store's JSON (or a list already parsed); None when
    missing or unreadable."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        if isinstance(value, str):
            return from_json(value) if value.strip() else []
        if isinstance(value, Sequence | np.ndarray):
            return [v if isinstance(v, Entity) else _entity(v) for v in value]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.debug("unreadable entities %r: %s", value, exc)
    return None


def _entity(value: Mapping[str, Any]) -> Entity:
    confidence = value.get("confidence")
    return Entity(
        label=str(value["label"]),
        start=int(value["start"]),
        end=int(value["end"]),
        text=str(value.get("text", "")),
        confidence=None if confidence is None else float(confidence),
    )


def answer_columns(
    entities: Sequence[Any], confidence: Sequence[float], *, required: Collection[str] = ()
) -> pd.DataFrame:
    """The signal and estimate columns (module docstring), one row per request.

    ``confidence`` is each request's whole-answer confidence; ``required`` the spec's fields
    every request should yield (no ``missing_required`` column without any).
    """
    rows = [
        _answer_row(parse(e), float(q), required) for e, q in zip(entities, confidence, strict=True)
    ]
    columns = [
        c for c in (*SIGNAL_COLUMNS, *ESTIMATE_COLUMNS) if required or c != "missing_required"
    ]
    frame = pd.DataFrame(rows, columns=[*SIGNAL_COLUMNS, *ESTIMATE_COLUMNS])[columns]
    for column in ("no_entity", "missing_required"):
        if column in frame:
            frame[column] = frame[column].astype(object)
    return frame


def _answer_row(
    found: list[Entity] | None, request_confidence: float, required: Collection[str]
) -> tuple[Any, ...]:
    if found is None:
        return (np.nan,) * (len(SIGNAL_COLUMNS) + len(ESTIMATE_COLUMNS))
    n = len(found)
    confidences = [e.confidence for e in found]
    known = [c for c in confidences if c is not None]
    mean_conf = float(np.mean(known)) if known else np.nan
    length = float(np.mean([e.end - e.start for e in found])) if n else np.nan
    labels = {e.label for e in found}
    missing = "yes" if any(f not in labels for f in required) else "no"
    whole = len(known) == n
    conf_sum = float(sum(known)) if whole else np.nan
    outside = np.nan
    if whole and math.isfinite(request_confidence):
        spans = math.prod(known)
        # Spans sure of themselves but an answer less sure: the doubt lies outside the spans.
        outside = 0.0 if spans <= 0 else 1.0 - min(1.0, max(request_confidence, 0.0) / spans)
    return (
        float(n),
        mean_conf,
        length,
        "yes" if n == 0 else "no",
        missing,
        conf_sum,
        outside,
    )


def truth_columns(entities: Sequence[Any], true_entities: Sequence[Any]) -> pd.DataFrame:
    """Per request, scored against a person's spans: gold_count, correct_count (exact
    label, start and end, as multisets), exact (1.0 when every span is right and none is
    missing) and boundary_misses; NaN where there is no correction or no answer."""
    rows = []
    for raw_pred, raw_true in zip(entities, true_entities, strict=True):
        pred, gold = parse(raw_pred), parse(raw_true)
        if pred is None or gold is None:
            rows.append((np.nan,) * len(TRUTH_COLUMNS))
            continue
        p, g = Counter(keys(pred)), Counter(keys(gold))
        correct = sum((p & g).values())
        wrong = list((p - g).elements())
        missed = list((g - p).elements())
        overlapped = sum(1 for m in missed if any(_overlap(m, w) for w in wrong))
        rows.append((float(sum(g.values())), float(correct), float(p == g), float(overlapped)))
    return pd.DataFrame(rows, columns=list(TRUTH_COLUMNS), dtype=float)


def _overlap(a: tuple[str, int, int], b: tuple[str, int, int]) -> bool:
    return a[1] < b[2] and b[1] < a[2]


def with_entities(
    data: MonitorData,
    *,
    entities: Sequence[Any],
    true_entities: Sequence[Any],
    required: Collection[str] = (),
) -> MonitorData:
    """``data`` with the extraction columns added, and ``true_label`` the summary of the
    person's spans (``date+order_id``) where there are any, NaN elsewhere: for an extractor
    a row is labelled when its spans were corrected."""
    frame = data.frame
    answers = answer_columns(entities, frame["confidence"].to_numpy(dtype=float), required=required)
    truth = truth_columns(entities, true_entities)
    summaries = [None if (t := parse(v)) is None else summary(t) for v in true_entities]
    out = pd.concat(
        [frame.drop(columns=[c for c in answers if c in frame]), answers, truth], axis=1
    )
    out["true_label"] = pd.Series(summaries, dtype=object)
    return MonitorData(out, data.embeddings)


def extraction_reference_data(
    reference: pd.DataFrame,
    embeddings: np.ndarray | None,
    *,
    vocabulary: Collection[str],
    escalation_threshold: float,
    required: Collection[str] = (),
) -> MonitorData:
    """An extractor's reference rows (``validation.parquet``: text, label, prediction,
    confidence, entities, true_entities) as monitor data with the extraction columns."""
    base = reference_data(
        reference, embeddings, vocabulary=vocabulary, escalation_threshold=escalation_threshold
    )
    return with_entities(
        base,
        entities=_column(reference, "entities"),
        true_entities=_column(reference, "true_entities"),
        required=required,
    )


def extraction_window_data(
    window: pd.DataFrame,
    *,
    vocabulary: Collection[str],
    escalation_threshold: float,
    required: Collection[str] = (),
) -> MonitorData:
    """An extractor's traffic window (``TrafficStore.window`` with ``entities`` and
    ``true_entities``) as monitor data. As for a classifier, only people's corrections are
    truth: a fallback's answer exists for escalated rows only, a biased sample."""
    base = window_data(window, vocabulary=vocabulary, escalation_threshold=escalation_threshold)
    source = _column(window, "true_label_source")
    truth = [
        t if s == "human" else None
        for t, s in zip(_column(window, "true_entities"), source, strict=True)
    ]
    return with_entities(
        base, entities=_column(window, "entities"), true_entities=truth, required=required
    )


def _column(frame: pd.DataFrame, name: str) -> list[Any]:
    if name not in frame:
        return [None] * len(frame)
    return frame[name].tolist()


def describe_answers(data: MonitorData) -> dict[str, Any]:
    """What the window's JSON says about the answers: mean spans per request, the share of
    requests with nothing found or a required field missing, and each label's share of
    requests (its presence), for a reader comparing with the reference."""
    frame = data.frame
    if "n_entities" not in frame or not len(frame):
        return {}
    out: dict[str, Any] = {
        "mean_entities": _finite(frame["n_entities"].mean()),
        "no_entity_rate": _finite((frame["no_entity"] == "yes").mean()),
    }
    if "missing_required" in frame:
        out["missing_required_rate"] = _finite((frame["missing_required"] == "yes").mean())
    present: Counter[str] = Counter()
    for label in frame["prediction"].astype(str):
        present.update(set(label.split("+")) - {NO_ENTITY})
    out["label_share"] = {k: v / len(frame) for k, v in sorted(present.items())}
    return out


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None
