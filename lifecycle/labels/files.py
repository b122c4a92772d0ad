"""Label files: label requests out (CSV, Label Studio tasks), people's labels back in.

``lifecycle label-requests --export`` writes the ranked queue of ``lifecycle.labels.requests`` as a
CSV (request_id, text, reason, predicted, label left empty) or as Label Studio import tasks
(``[{"data": {"text", "request_id", ...}, "predictions": [...]}]``, for a text
classification project whose labelling config names its ``<Choices>`` ``label`` and its
``<Text>`` ``text``). ``lifecycle feedback --file`` reads the same CSV with ``label`` filled in,
or Label Studio's JSON export (each task's ``data.request_id`` and its annotation's
``result[].value.choices[0]``), checks every row with ``lifecycle.labels.feedback.check_feedback``
(the gateway's own rules) and writes the accepted rows in one transaction.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifecycle.config.errors import DataError
from lifecycle.labels.feedback import ACCEPTED, INVALID, LabelSet, RowCheck, check_feedback
from lifecycle.labels.requests import LabelRequest

CSV_COLUMNS = ("request_id", "text", "reason", "predicted", "label")
FORMATS = ("csv", "labelstudio")


def export_csv(items: Sequence[LabelRequest]) -> str:
    """The queue as CSV, ``label`` empty for a person to fill; text empty where withheld."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for i in items:
        writer.writerow([i.request_id, i.text or "", i.reason, i.predicted, ""])
    return out.getvalue()


def export_labelstudio(items: Sequence[LabelRequest]) -> str:
    """The queue as Label Studio import tasks: ``data`` holds the text (absent when withheld)
    and the request id, ``predictions`` the champion's answer as a pre-selected choice."""
    tasks = []
    for i in items:
        data: dict[str, Any] = {"request_id": i.request_id, "reason": i.detail}
        if i.text is not None:
            data["text"] = i.text
        tasks.append(
            {
                "data": data,
                "predictions": [
                    {
                        "model_version": f"v{i.model_version}",
                        "score": i.confidence,
                        "result": [
                            {
                                "from_name": "label",
                                "to_name": "text",
                                "type": "choices",
                                "value": {"choices": [i.predicted]},
                            }
                        ],
                    }
                ],
            }
        )
    return json.dumps(tasks, indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True, slots=True)
class FileRow:
    """One row read from a label file; ``problem`` when it cannot be a label at all, ``skip``
    when it holds no label (a row a person left empty)."""

    row: int
    request_id: str
    label: str
    problem: str | None = None
    skip: bool = False


def read_label_file(path: Path) -> list[FileRow]:
    """Rows of a labels CSV (columns request_id, label) or a Label Studio JSON export.

    Raises ``DataError`` when the file as a whole cannot be read; a bad row is returned with
    its problem, numbered from 1 (the CSV's header is row 0)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if path.suffix.lower() == ".json" or raw.lstrip().startswith("["):
        return _labelstudio_rows(raw, path)
    return _csv_rows(raw, path)


def _csv_rows(raw: str, path: Path) -> list[FileRow]:
    reader = csv.DictReader(io.StringIO(raw))
    columns = set(reader.fieldnames or ())
    if not {"request_id", "label"} <= columns:
        raise DataError(
            f"{path}: a labels CSV needs the columns request_id and label; found "
            f"{', '.join(sorted(columns)) or 'none'}"
        )
    rows = []
    for n, record in enumerate(reader, start=1):
        if None in record:  # more cells than the header has columns
            rows.append(FileRow(n, "", "", problem="more cells than the header has columns"))
            continue
        request_id = (record.get("request_id") or "").strip()
        label = record.get("label")
        if label is None:
            rows.append(FileRow(n, request_id, "", problem="fewer cells than the header"))
        elif not label.strip():
            rows.append(FileRow(n, request_id, "", skip=True))
        else:
            rows.append(FileRow(n, request_id, label))
    return rows


def _labelstudio_rows(raw: str, path: Path) -> list[FileRow]:
    try:
        tasks = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(tasks, list):
        raise DataError(f"{path}: a Label Studio export is a JSON list of tasks")
    rows = []
    for n, task in enumerate(tasks, start=1):
        data = task.get("data") if isinstance(task, dict) else None
        request_id = data.get("request_id") if isinstance(data, dict) else None
        if not isinstance(request_id, str):
            rows.append(FileRow(n, "", "", problem="the task has no data.request_id"))
            continue
        label, problem = _choice(task)
        if problem is not None:
            rows.append(FileRow(n, request_id, "", problem=problem))
        elif label is None:
            rows.append(FileRow(n, request_id, "", skip=True))
        else:
            rows.append(FileRow(n, request_id, label))
    return rows


def _choice(task: dict[str, Any]) -> tuple[str | None, str | None]:
    """(the label of the task's newest kept annotation, problem); (None, None): unlabelled."""
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        return None, "annotations is not a list"
    kept = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        return None, None
    results = kept[-1].get("result") or []
    if not isinstance(results, list):
        return None, "the annotation's result is not a list"
    for result in results:
        value = result.get("value") if isinstance(result, dict) else None
        choices = value.get("choices") if isinstance(value, dict) else None
        if isinstance(choices, list) and choices:
            if not isinstance(choices[0], str):
                return None, "the annotation's choice is not text"
            if len(choices) > 1:
                return None, f"the annotation picks {len(choices)} choices; one label is needed"
            return choices[0], None
    return None, "the annotation holds no choices (a text classification config is expected)"


@dataclass
class BulkReport:
    """What ``apply_label_file`` did with each row of a file."""

    rows: list[RowCheck] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    written: int = 0
    refused_whole_file: bool = False

    @property
    def accepted(self) -> list[RowCheck]:
        return [r for r in self.rows if r.accepted]

    @property
    def rejected(self) -> list[RowCheck]:
        return [r for r in self.rows if not r.accepted]

    def as_dict(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "accepted": len(self.accepted),
            "rejected": [
                {"row": r.row, "request_id": r.request_id, "status": r.status, "reason": r.reason}
                for r in self.rejected
            ],
            "skipped_rows": self.skipped,
            "proposed_labels": sorted({r.label for r in self.accepted if r.proposed}),
            "refused_whole_file": self.refused_whole_file,
        }


def apply_label_file(
    store: Any,
    rows: Sequence[FileRow],
    *,
    labels: LabelSet,
    source: str = "human",
    strict: bool = False,
) -> BulkReport:
    """Check every row first, then write the accepted ones in one store transaction.

    ``strict``: any rejected row refuses the whole file (nothing written). Either way the
    report says, per row, what was accepted and why the rest was not.
    """
    from lifecycle.store import FeedbackRecord

    report = BulkReport(skipped=[r.row for r in rows if r.skip])
    wanted = [r for r in rows if not r.skip]
    readable = [r for r in wanted if r.problem is None]
    owners = store.request_specialists([r.request_id for r in readable])
    checks = check_feedback(
        [(r.request_id, r.label) for r in readable], labels=labels, owners=owners
    )
    by_row = {r.row: c for r, c in zip(readable, checks, strict=True)}
    for r in wanted:
        if r.problem is not None:
            report.rows.append(RowCheck(r.row, r.request_id, r.label, INVALID, r.problem))
        else:  # renumbered: check_feedback counts the readable rows only
            c = by_row[r.row]
            report.rows.append(
                RowCheck(r.row, c.request_id, c.label, c.status, c.reason, c.proposed)
            )
    if strict and report.rejected:
        report.refused_whole_file = True
        return report
    records = [
        FeedbackRecord(
            request_id=r.request_id, specialist=labels.specialist, label=r.label, source=source
        )
        for r in report.rows
        if r.status == ACCEPTED
    ]
    report.written = store.write(records) if records else 0
    return report
