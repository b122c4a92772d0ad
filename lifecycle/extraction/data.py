"""Tables of (text, entities): loading and validating extraction training data.

An extraction specialist learns from texts whose spans are marked: a frame with a ``text``
column and an ``entities`` column holding, per row, a list of
``{"label": str, "start": int, "end": int, "text": str}`` dicts (character offsets into the
row's text, ``end`` exclusive, ``text[start:end] == entity text``). A span off by one
character still loads in pandas and still trains, but teaches the model the wrong boundary,
so every span is checked before training and each mistake is a
:class:`~lifecycle.config.errors.DataError` that names the row (1-based, "row 12"), the span
and what to fix, instead of a silent drop in F1 later.

Files are read like :func:`lifecycle.training.data.load_table` reads them (same formats,
same errors for a missing file, a bad extension, an empty file, bytes that are not UTF-8).
In CSV and Parquet the entities cell is a JSON string (a list of entity objects); in JSONL
it is the list itself. pandas is imported inside the functions.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifecycle.config.errors import DataError
from lifecycle.training.data import read_raw

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

_REQUIRED = ("label", "start", "end")


def load_extraction_table(
    path: str | Path, *, text_column: str = "text", entities_column: str = "entities"
) -> pd.DataFrame:
    """Read a CSV, JSONL or Parquet file into a frame with ``text`` and ``entities`` columns.

    The two columns are renamed to ``text`` and ``entities`` whatever the file called them;
    other columns (an ``intent``, a ``split``) are kept as they are. Every row's spans are
    checked with :func:`validate_entities` and come back normalised (keys ``label``,
    ``start``, ``end``, ``text``; sorted by start). Rows whose text is blank (and so have no
    span) are dropped with a logged warning. A missing entities cell is an error, not "no
    entities": write ``[]`` for a text with nothing to extract.
    """
    file = Path(path)
    raw = read_raw(file, convert_hint="convert the file to JSONL with text and entities keys")
    found = [str(c) for c in raw.columns]
    for wanted, option in ((text_column, "text_column"), (entities_column, "entities_column")):
        if wanted not in raw.columns:
            raise DataError(
                f"{file}: missing column {wanted!r}; found columns {found}. "
                f"Rename the column or pass {option}= with the right name."
            )
    clashing = [c for c in ("text", "entities") if c in raw.columns]
    clashing = [c for c in clashing if c not in (text_column, entities_column)]
    frame = raw.drop(columns=clashing).rename(
        columns={text_column: "text", entities_column: "entities"}
    )
    frame = frame.reset_index(drop=True)
    frame["entities"] = [
        _parse_cell(cell, row=row, file=file, column=entities_column)
        for row, cell in enumerate(frame["entities"], start=1)
    ]
    frame = validate_entities(frame, source=str(file))
    blank = frame["text"].str.strip() == ""
    if blank.all():
        raise DataError(f"{file}: all {len(frame)} rows have a blank {text_column!r}.")
    if blank.any():
        logger.warning(
            "%s: dropped %d of %d rows whose %r is blank",
            file,
            int(blank.sum()),
            len(frame),
            text_column,
        )
        frame = frame[~blank].reset_index(drop=True)
    return frame


def validate_entities(
    frame: pd.DataFrame,
    *,
    labels: Sequence[str] | None = None,
    closed: bool = False,
    source: str = "data",
) -> pd.DataFrame:
    """Check every row's spans against its text; return a copy with normalised spans.

    Rows are numbered from 1 in the frame's order. A row fails when its text is not a string,
    its entities are not a list, or one span lacks ``label``/``start``/``end``, has a blank
    or non-string label, non-integer offsets, offsets outside the text or ``start >= end``,
    a ``text`` that differs from the characters it points at, or overlaps another span of the
    row (the BIO tags a token model learns from cannot encode two spans on one character).
    With ``closed=True`` a label outside ``labels`` fails too; with ``closed=False`` such
    labels are only logged. A span without ``text`` gets it from the row's text; extra keys
    are dropped; labels are stripped. An empty list is valid: a text with nothing to extract
    is how the model learns when to say nothing.
    """
    if closed and labels is None:
        raise ValueError("closed=True needs the label set: pass labels=")
    missing = [c for c in ("text", "entities") if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing}; found {[str(c) for c in frame.columns]}. "
            "Load the file with load_extraction_table(), which names them text and entities."
        )
    allowed = set(labels) if labels is not None else None
    normalised: list[list[dict[str, Any]]] = []
    unknown: set[str] = set()
    for row, (text, cell) in enumerate(zip(frame["text"], frame["entities"], strict=True), 1):
        where = f"{source}: row {row}"
        if not isinstance(text, str):
            raise DataError(f"{where}: text is {type(text).__name__}, not a string.")
        spans = _check_row(text, cell, where=where)
        for span in spans:
            if allowed is not None and span["label"] not in allowed:
                if closed:
                    raise DataError(
                        f"{where}: {_describe(span)} has label {span['label']!r}, which is not "
                        f"in the label set {sorted(allowed)}. Fix the label or declare it."
                    )
                unknown.add(span["label"])
        normalised.append(spans)
    if unknown:
        # Under an open policy new labels are expected (a retrain learns them): info, not a
        # warning at every retrain.
        logger.info("%s: labels outside the declared set: %s", source, sorted(unknown))
    result = frame.copy()
    result["entities"] = normalised
    return result


def entity_labels(frame: pd.DataFrame) -> list[str]:
    """The distinct span labels of a (validated) frame, sorted."""
    return sorted({str(span["label"]) for spans in frame["entities"] for span in spans})


def _parse_cell(cell: object, *, row: int, file: Path, column: str) -> object:
    """An entities cell as a list: JSON strings parsed, Parquet's arrays made lists."""
    if isinstance(cell, str):
        if not cell.strip():
            raise DataError(
                f"{file}: row {row}: {column!r} is blank. Write [] for a text with no entities."
            )
        try:
            return json.loads(cell)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{file}: row {row}: {column!r} is not valid JSON ({exc.msg}). It must be a "
                'JSON list like [{"label": "city", "start": 0, "end": 5}].'
            ) from exc
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        raise DataError(
            f"{file}: row {row}: {column!r} is missing. Write [] for a text with no entities."
        )
    if hasattr(cell, "tolist") and not isinstance(cell, Mapping):  # numpy arrays from Parquet
        return cell.tolist()
    return cell


def _check_row(text: str, cell: object, *, where: str) -> list[dict[str, Any]]:
    """The row's spans, checked and normalised, sorted by (start, end)."""
    if hasattr(cell, "tolist") and not isinstance(cell, Mapping):
        cell = cell.tolist()
    if not isinstance(cell, list | tuple):
        raise DataError(
            f"{where}: entities is a {type(cell).__name__}, not a list. "
            "Give a list of span objects, [] for none."
        )
    spans = [
        _check_span(text, entity, where=f"{where}: entity {k}") for k, entity in enumerate(cell, 1)
    ]
    spans.sort(key=lambda s: (s["start"], s["end"], s["label"]))
    for first, second in itertools.pairwise(spans):
        if second["start"] < first["end"]:
            raise DataError(
                f"{where}: {_describe(first)} and {_describe(second)} overlap. "
                "Spans of one text must not share characters: keep one of them."
            )
    return spans


def _check_span(text: str, entity: object, *, where: str) -> dict[str, Any]:
    if not isinstance(entity, Mapping):
        raise DataError(
            f"{where} is a {type(entity).__name__}, not an object with label, start and end."
        )
    absent = [key for key in _REQUIRED if key not in entity]
    if absent:
        raise DataError(f"{where} lacks {', '.join(absent)}; every span needs label, start, end.")
    label, start, end = entity["label"], entity["start"], entity["end"]
    if not isinstance(label, str) or not label.strip():
        raise DataError(f"{where}: label {label!r} is not a non-empty string.")
    for name, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise DataError(f"{where}: {name} {value!r} is not an integer character offset.")
    start, end = int(start), int(end)
    label = label.strip()
    if start < 0:
        raise DataError(f"{where}: start {start} is negative.")
    if end > len(text):
        raise DataError(f"{where}: end {end} is past the end of the text ({len(text)} characters).")
    if start >= end:
        raise DataError(f"{where}: start {start} >= end {end}; a span needs end > start.")
    covered = text[start:end]
    given = entity.get("text")
    if given is not None and given != covered:
        raise DataError(
            f"{where}: text {given!r} differs from the text at {start}:{end}, {covered!r}. "
            "Offsets count characters (not bytes) from 0, end exclusive."
        )
    return {"label": label, "start": start, "end": end, "text": covered}


def _describe(span: Mapping[str, Any]) -> str:
    return f"{span['label']!r} at {span['start']}:{span['end']} ({span['text']!r})"
