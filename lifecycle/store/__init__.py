"""The traffic store: every request, shadow prediction, feedback label and alert, in SQL.

- ``TrafficStore(url)``: migrations (``upgrade``), idempotent batch writes and the monitors'
  reads (``window``, ``shadow_pairs``, ``alerts``) as pandas frames.
- ``TrafficWriter(store, journal_dir=...)``: the gateway's non-blocking, batched, loss-free
  writer (memory, then a local journal, while the database is away).
- Records (``RequestRecord``, ``ShadowRecord``, ``ShadowFailureRecord``, ``FeedbackRecord``,
  ``AlertRecord``) and the float16 embedding codec.

SQLite (the default, a file under ``LIFECYCLE_HOME``) and PostgreSQL are supported.
"""

from __future__ import annotations

from lifecycle.store.engine import create_store_engine
from lifecycle.store.records import (
    AlertRecord,
    FeedbackRecord,
    FeedbackSource,
    Record,
    RequestRecord,
    ShadowFailureRecord,
    ShadowRecord,
    decode_embedding,
    encode_embedding,
    text_digest,
)
from lifecycle.store.repository import TrafficStore
from lifecycle.store.writer import FlushResult, TrafficWriter, WriterStats

__all__ = [
    "AlertRecord",
    "FeedbackRecord",
    "FeedbackSource",
    "FlushResult",
    "Record",
    "RequestRecord",
    "ShadowFailureRecord",
    "ShadowRecord",
    "TrafficStore",
    "TrafficWriter",
    "WriterStats",
    "create_store_engine",
    "decode_embedding",
    "encode_embedding",
    "text_digest",
]
