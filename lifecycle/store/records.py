"""What the gateway hands to the traffic writer: one frozen record class per table.

Records are validated when they are built (in the caller's thread), so that a bad value fails
where it was made and never reaches the background writer. Each record knows its database row
(``to_row``) and a JSON form for the writer's journal (``record_to_json`` / ``record_from_json``),
which must round-trip exactly: a journal written by one process is replayed by the next.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray

FeedbackSource = Literal["human", "fallback"]
FEEDBACK_SOURCES: tuple[str, ...] = ("human", "fallback")

#: What ``RequestRecord.embedding`` accepts; it is kept as float16 little-endian bytes.
EmbeddingInput: TypeAlias = bytes | NDArray[Any] | Sequence[float] | None

_EMBEDDING_DTYPE = np.dtype("<f2")


def utcnow() -> datetime:
    """Now, timezone-aware in UTC: the only kind of time the store keeps."""
    return datetime.now(UTC)


def new_id() -> str:
    """A fresh client-side id (uuid4 hex): records are idempotent by it when replayed."""
    return uuid.uuid4().hex


def as_utc(value: datetime, *, name: str = "created_at") -> datetime:
    """``value`` in UTC; a naive datetime is refused, since its zone would be a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return value.astimezone(UTC)


def text_digest(text: str) -> str:
    """SHA-256 hex of a text, kept even when the text itself is redacted."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def encode_embedding(vector: bytes | NDArray[Any] | Sequence[float]) -> bytes:
    """A 1-D vector as float16 little-endian bytes (2 bytes a value); bytes pass through.

    float16 halves storage against float32 and keeps ~3 significant digits, plenty for
    drift statistics on normalised embeddings (values beyond +-65504 become inf).
    """
    if isinstance(vector, bytes | bytearray | memoryview):
        data = bytes(vector)
        if len(data) % 2:
            raise ValueError("an encoded embedding has an even number of bytes (float16)")
        return data
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"an embedding is a 1-D vector, got shape {array.shape}")
    return array.astype(_EMBEDDING_DTYPE).tobytes()


def decode_embedding(data: bytes) -> NDArray[np.float32]:
    """The float32 vector of bytes written by ``encode_embedding`` (a fresh, writable array)."""
    if len(data) % 2:
        raise ValueError("an encoded embedding has an even number of bytes (float16)")
    return np.frombuffer(data, dtype=_EMBEDDING_DTYPE).astype(np.float32)


def _coerce(record: object, kind: type, *names: str) -> None:
    """Plain Python numbers (numpy scalars in, int/float/bool out), or a ValueError that names
    the field."""
    for name in names:
        value = getattr(record, name)
        try:
            object.__setattr__(record, name, kind(value))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be {kind.__name__}, got {value!r}") from exc


def _require(value: str | None, name: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def _check(
    record: object,
    required: tuple[str, ...],
    *,
    ints: tuple[str, ...] = (),
    floats: tuple[str, ...] = (),
    bools: tuple[str, ...] = (),
) -> None:
    """Every record's first checks, in this order (so the first bad field is the one named):
    the non-empty strings, then the plain int, float and bool fields."""
    for name in required:
        _require(getattr(record, name), name)
    _coerce(record, int, *ints)
    _coerce(record, float, *floats)
    _coerce(record, bool, *bools)


def _check_entities(value: object) -> None:
    """An extractor's spans as ``lifecycle.extraction.spans.to_json`` writes them: a JSON list
    (of objects), or None for a classifier. Checked here so that a bad value fails in the
    caller, not in the writer's thread."""
    if value is None:
        return
    if not isinstance(value, str):
        raise ValueError(f"entities must be a JSON string or None, got {type(value).__name__}")
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"entities is not JSON: {exc}") from exc
    if not isinstance(parsed, list) or not all(isinstance(e, dict) for e in parsed):
        raise ValueError("entities must be a JSON list of objects")


@dataclass(frozen=True, kw_only=True, slots=True)
class _Row:
    """What every record shares: its database row is its fields, in declaration order.

    ``__post_init__`` has already coerced each field to a plain value (numpy scalars to
    int/float/bool, times to UTC, embeddings to bytes), so the row needs no conversion.
    """

    def to_row(self) -> dict[str, Any]:
        """The record's row, a column a field."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, kw_only=True, slots=True)
class _ModelCall(_Row):
    """Which challenger was called for which request: the fields its answer and its failure
    both start with (the gate counts the two together), declared once."""

    request_id: str
    specialist: str
    model_version: int


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestRecord(_Row):
    """One answered text: the champion's prediction, and the fallback's when it escalated."""

    table: ClassVar[str] = "requests"

    id: str = field(default_factory=new_id)
    specialist: str
    model_version: int
    text: str | None
    text_sha256: str | None = None
    label: str
    confidence: float
    embedding: EmbeddingInput = field(default=None, repr=False)
    latency_ms: float
    escalated: bool = False
    fallback_label: str | None = None
    fallback_source: str | None = None
    fallback_latency_ms: float | None = None
    #: Something went wrong but an answer was given (e.g. the fallback failed).
    flagged: bool = False
    created_at: datetime = field(default_factory=utcnow)
    #: The champion's out-of-scope score (higher: less like its training data) and whether it
    #: passed the version's threshold; None for a version without a detector. Defaults keep
    #: journal lines written before these fields readable.
    ood_score: float | None = None
    out_of_scope: bool | None = None
    #: An extractor's spans as JSON (``lifecycle.extraction.spans.to_json``; ``label`` holds
    #: their summary); None for a classifier and in journal lines written before extraction.
    entities: str | None = None

    def __post_init__(self) -> None:
        _check(
            self,
            ("id", "specialist", "label"),
            ints=("model_version",),
            floats=("confidence", "latency_ms"),
            bools=("escalated", "flagged"),
        )
        if self.fallback_latency_ms is not None:
            _coerce(self, float, "fallback_latency_ms")
        if self.ood_score is not None:
            _coerce(self, float, "ood_score")
            if not math.isfinite(self.ood_score):
                # JSON (the journal) and PostgreSQL's float differ on inf/NaN: keep "unknown".
                object.__setattr__(self, "ood_score", None)
        if self.out_of_scope is not None:
            _coerce(self, bool, "out_of_scope")
        _check_entities(self.entities)
        object.__setattr__(self, "created_at", as_utc(self.created_at))
        if self.embedding is not None:
            object.__setattr__(self, "embedding", encode_embedding(self.embedding))
        if self.text_sha256 is None and self.text is not None:
            object.__setattr__(self, "text_sha256", text_digest(self.text))


@dataclass(frozen=True, kw_only=True, slots=True)
class ShadowRecord(_ModelCall):
    """A challenger's prediction for a request the champion answered (never shown to clients)."""

    table: ClassVar[str] = "shadow_predictions"

    label: str
    confidence: float
    latency_ms: float
    created_at: datetime = field(default_factory=utcnow)
    #: The challenger's spans as JSON when it is an extractor (as ``RequestRecord.entities``).
    entities: str | None = None

    def __post_init__(self) -> None:
        _check(
            self,
            ("request_id", "specialist", "label"),
            ints=("model_version",),
            floats=("confidence", "latency_ms"),
        )
        _check_entities(self.entities)
        object.__setattr__(self, "created_at", as_utc(self.created_at))


@dataclass(frozen=True, kw_only=True, slots=True)
class ShadowFailureRecord(_ModelCall):
    """A challenger call that raised for a request: the gate counts these as errors."""

    table: ClassVar[str] = "shadow_failures"

    error: str
    created_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        _check(self, ("request_id", "specialist", "error"), ints=("model_version",))
        # The column is bounded; the message is for people, its head is enough.
        object.__setattr__(self, "error", self.error[:256])
        object.__setattr__(self, "created_at", as_utc(self.created_at))


@dataclass(frozen=True, kw_only=True, slots=True)
class FeedbackRecord(_Row):
    """A true label for an earlier request; every one is kept, the effective one is chosen later.

    ``feedback_uid`` is made by the client so that a replayed record is recognised and skipped;
    the row's integer ``id`` is assigned by the database.
    """

    table: ClassVar[str] = "feedback"

    request_id: str
    specialist: str
    label: str
    #: "human" or "fallback" (checked at runtime; typed ``str`` for callers holding a str).
    source: str = "human"
    feedback_uid: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)
    #: For an extractor's request: the corrected spans as JSON (``[]``: the text has none),
    #: and ``label`` their summary; None for a classifier's label.
    entities: str | None = None

    def __post_init__(self) -> None:
        _check(self, ("request_id", "specialist", "label", "feedback_uid"))
        _check_entities(self.entities)
        if self.source not in FEEDBACK_SOURCES:
            raise ValueError(f"source must be one of {FEEDBACK_SOURCES}, got {self.source!r}")
        object.__setattr__(self, "created_at", as_utc(self.created_at))


@dataclass(frozen=True, kw_only=True, slots=True)
class AlertRecord(_Row):
    """Something on-call was told about (a monitor verdict, a rollback), with its evidence."""

    table: ClassVar[str] = "alerts"

    id: str = field(default_factory=new_id)
    specialist: str | None
    kind: str
    verdict: str
    payload: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        _check(self, ("id", "kind", "verdict"))
        # Serialised once here: a payload that is not JSON fails in the caller, not the writer.
        object.__setattr__(self, "payload", json.loads(_dump_payload(self.payload)))
        object.__setattr__(self, "created_at", as_utc(self.created_at))

    def to_row(self) -> dict[str, Any]:
        """The ``alerts`` row; the payload is stored as JSON text."""
        # _Row's, named: zero-argument super() fails in a slots dataclass on Python 3.11.
        return _Row.to_row(self) | {"payload": _dump_payload(self.payload)}


def _dump_payload(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, default=str, allow_nan=False)


#: Any record the writer accepts (usable in ``isinstance`` too).
Record: TypeAlias = (
    RequestRecord | ShadowRecord | ShadowFailureRecord | FeedbackRecord | AlertRecord
)
RECORD_TYPES: tuple[type, ...] = (
    RequestRecord,
    ShadowRecord,
    ShadowFailureRecord,
    FeedbackRecord,
    AlertRecord,
)
_BY_TABLE: dict[str, type] = {cls.table: cls for cls in RECORD_TYPES}  # type: ignore[attr-defined]


def record_to_json(record: Record) -> dict[str, Any]:
    """A JSON-safe dict of a record: ``{"table": ..., "row": ...}`` (bytes as base64)."""
    row = record.to_row()
    row["created_at"] = record.created_at.isoformat()
    if isinstance(record, RequestRecord) and record.embedding is not None:
        row["embedding"] = base64.b64encode(record.embedding).decode("ascii")  # type: ignore[arg-type]
    if isinstance(record, AlertRecord):
        row["payload"] = record.payload
    return {"table": record.table, "row": row}


def record_from_json(data: dict[str, Any]) -> Record:
    """The record that ``record_to_json`` wrote; ``ValueError``/``KeyError`` if it is not one."""
    cls = _BY_TABLE[data["table"]]
    row = dict(data["row"])
    row["created_at"] = datetime.fromisoformat(row["created_at"])
    if cls is RequestRecord and row.get("embedding") is not None:
        row["embedding"] = base64.b64decode(row["embedding"])
    record: Record = cls(**row)
    return record
