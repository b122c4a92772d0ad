"""The training set of an extractor's retrain: people's span corrections from the traffic.

What differs from a classifier's plan (``lifecycle.training.retraining``), the rules being the
same (``lifecycle.training.retrain_plan``):

- Truth is a person's corrected spans only (the window's ``true_entities`` with source
  "human"). An extractor has no fallback labels: a fallback that answers with a label cannot
  say where the spans are, and the champion's own answer is what is being corrected.
- The labels are entity labels: a proposed label is an entity label the champion does not
  know, counted as the labelled rows that hold it. A row that holds a label still short of
  examples is held back whole: trained without that span, it would teach the model that the
  new field is nothing.
- The replay and the old holdout come with their gold spans: the champion's training set
  keeps them as JSON in ``entities``, its reference (``validation.parquet``) in
  ``true_entities`` (its ``entities`` there are the champion's own predictions).

A row's ``label`` is the summary of its spans (``date+order_id``, ``(none)``), which stratifies
the splits and weighs the replay as intents do for a classifier.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lifecycle.extraction.spans import summary
from lifecycle.training.retrain_plan import RowKind, clean, has_rows, window_columns

if TYPE_CHECKING:
    import pandas as pd

EXTRACTION_COLUMNS = ["text", "label", "entities", "label_source", "request_id"]


def _read_corrections(
    window: pd.DataFrame,
) -> tuple[pd.DataFrame, dict[str, int], int, list[str]]:
    """An extractor's ``RowKind.read``: its corrected rows, the rows holding each entity
    label, and a warning on corrections whose spans do not fit."""
    rows, dropped, invalid = _corrections(window)
    notes = []
    if invalid:
        notes.append(
            f"{invalid} corrections have spans that do not fit their text (outside it, "
            "overlapping, or text that differs) and are left out"
        )
    return rows, _rows_per_label(rows["entities"]), dropped, notes


def _holds(rows: pd.DataFrame, short: Collection[str]) -> pd.Series:
    """The rows with a span of a short label: held back whole, since trained without that
    span the model would learn that the new field is nothing."""
    return rows["entities"].map(lambda spans: any(s["label"] in short for s in spans)).astype(bool)


def labelled_entities(window: pd.DataFrame) -> pd.DataFrame:
    """One row per request a person corrected, with text: text, label (the spans' summary),
    entities (span dicts sorted by start), label_source ("human"), request_id.

    Oldest first; a request that occurs more than once keeps its latest correction.
    Corrections without text, or with spans that do not fit their text, are left out (the
    plan counts them).
    """
    return _corrections(window)[0]


def _corrections(window: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """(corrected rows, rows dropped for want of text, for spans that do not fit)."""
    import pandas as pd

    columns = window_columns(window, "text", "true_entities", "true_label_source")
    records: dict[Any, tuple[Any, ...]] = {}
    dropped = invalid = 0
    for request_id, text, truth, source in zip(*columns, strict=True):
        raw = clean(truth, strip=False)
        if raw is None or source != "human":
            continue
        if clean(text, strip=False) is None:
            dropped += 1
            continue
        spans = _fitting(str(text), raw)
        if spans is None:
            invalid += 1
            continue
        records.pop(request_id, None)  # the latest correction, at its latest position
        records[request_id] = (text, summary(spans), spans, "human", request_id)
    frame = pd.DataFrame(list(records.values()), columns=EXTRACTION_COLUMNS).astype(object)
    return frame, dropped, invalid


def entity_frame(frame: pd.DataFrame, *, what: str = "reference") -> pd.DataFrame:
    """Gold rows of a reference or training set as text, label (summary), entities.

    The gold spans are ``true_entities`` where the frame has them (a reference: its
    ``entities`` are the model's answers), else ``entities``; either as JSON text or as
    lists. Rows without text or gold, or whose spans do not fit their text, are dropped.
    """
    import pandas as pd

    gold = "true_entities" if "true_entities" in frame.columns else "entities"
    needs = "'text' and 'entities' (or 'true_entities')"
    if not has_rows(frame, {"text", gold}, what=what, needs=needs):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in ("text", "label", "entities")})
    rows = []
    for text, cell in zip(frame["text"], frame[gold], strict=True):
        if clean(text, strip=False) is None:
            continue
        spans = _fitting(str(text), cell)
        if spans is not None:
            rows.append((text, summary(spans), spans))
    return pd.DataFrame(rows, columns=["text", "label", "entities"]).astype(object)


def _fitting(text: str, cell: Any) -> list[dict[str, Any]] | None:
    """The cell's spans (JSON text or a list) checked against ``text``, sorted by start,
    each with its ``text``; None for a missing cell or spans that do not fit."""
    if cell is None or (isinstance(cell, float) and cell != cell):
        return None
    try:
        spans = json.loads(cell) if isinstance(cell, str) else cell
        if hasattr(spans, "tolist"):
            spans = spans.tolist()
        out: list[dict[str, Any]] = []
        for span in spans:
            start, end, label = int(span["start"]), int(span["end"]), str(span["label"]).strip()
            given = span.get("text")
            if not label or not 0 <= start < end <= len(text):
                return None
            if given is not None and given != text[start:end]:
                return None
            out.append({"label": label, "start": start, "end": end, "text": text[start:end]})
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    out.sort(key=lambda s: (s["start"], s["end"]))
    if any(b["start"] < a["end"] for a, b in itertools.pairwise(out)):
        return None
    return out


def _rows_per_label(entities: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, int]:
    """Entity label -> labelled rows holding it (a row counts once per label)."""
    counts: dict[str, int] = {}
    for spans in entities:
        for label in {str(s["label"]) for s in spans}:
            counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items()))


#: An extractor's part in ``lifecycle.training.retrain_plan.plan`` (``plan_retraining(...,
#: task="extraction")``). ``window`` is a ``TrafficStore.window`` frame (``true_entities``,
#: ``true_label_source``); the reference is the champion's (``true_entities``, or
#: ``entities`` for plain data such as the spec's file) and the replay its training set
#: (``entities`` as JSON); the labels known are the champion's entity labels. The plan's
#: frames have an ``entities`` column of span dicts besides text and label.
EXTRACTION_ROWS = RowKind(
    columns=EXTRACTION_COLUMNS,
    read=_read_corrections,
    holds=_holds,
    reference=lambda frame, what: entity_frame(frame, what=what),
    noun="corrected",
    short_warning=(
        "proposed entity labels with too few examples ({need} needed): the {held} rows "
        "holding them are left out of this training: {short}"
    ),
    sources=lambda counts: "people's corrections",
    single_row_warning=False,  # a rare combination of fields trains: the split keeps it
)
