"""The traffic writer's background thread: batches to the database, the journal meanwhile.

Part of ``TrafficWriter`` (see ``writer.py`` for the guarantees): what only its thread runs.
The loop picks one action at a time under the writer's lock (``_next_action``) and does it
without the lock, so that ``submit`` never waits on I/O:

- ``batch``: write the oldest records in memory, one transaction;
- ``journal``: replay the oldest journal segment first, so that the database receives records
  in submission order;
- ``spill``: move the oldest records from memory to the journal, when memory passes its bound
  or when a ``flush`` waits out an outage;
- ``stop``: journal what is left in memory and release the folders.

A failed database attempt sets a capped exponential backoff (with jitter); a row the database
refuses as invalid is isolated and set aside, not retried.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from itertools import islice
from pathlib import Path

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from lifecycle.store.journal import REJECTED_NAME, Journal
from lifecycle.store.records import Record, RequestRecord
from lifecycle.store.repository import TrafficStore
from lifecycle.store.wal import WriteAheadLog

log = logging.getLogger(__name__)


def _is_bad_row(exc: BaseException) -> bool:
    """True for errors caused by a row's values, which no retry would cure."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    if isinstance(exc, StatementError) and not isinstance(exc, DBAPIError):
        return True  # raised while binding a value, before the database saw it
    return isinstance(exc, TypeError | ValueError)


class WriterThread:
    """The writer thread's work; ``TrafficWriter`` sets the state below and starts the thread.

    Every attribute is guarded by ``_lock`` except the journal (the thread's alone) and the
    log (``_wal_lock``).
    """

    store: TrafficStore
    journal_dir: Path
    _journal: Journal
    _wal: WriteAheadLog | None
    _wal_lock: threading.Lock
    _wal_buffer: deque[tuple[int, Record]]
    _lock: threading.Lock
    _wake: threading.Condition
    _progress: threading.Condition
    _queue: deque[tuple[int, Record]]
    _inflight: dict[str, str]
    _db_seq: int
    _journal_pending: int
    _written: int
    _failures: int
    _rejected: int
    _healthy: bool
    _migrated: bool
    _attempt_since: float | None
    _outage_since: float
    _batch_size: int
    _max_wait_s: float
    _memory_limit: int
    _stall_after_s: float
    _backoff_initial_s: float
    _backoff_max_s: float
    _backoff_s: float
    _retry_at: float
    _spill_retry_at: float
    _batch_deadline: float | None
    _flush_waiters: int
    _flush_requests: int
    _failed_ticket: int
    _stopping: bool

    def _run(self) -> None:
        while True:
            with self._lock:
                action, count = self._next_action()
            if action == "stop":
                self._shutdown()
                return
            try:
                if action == "spill":
                    self._spill(count)
                elif action == "journal":
                    self._replay_journal()
                else:
                    self._write_batch()
            except Exception as exc:  # the thread must outlive any bug
                log.exception("traffic writer: unexpected error")
                self._failed(exc)

    def _next_action(self) -> tuple[str, int]:
        """What to do next; waits (releasing the lock) while there is nothing to do."""
        while True:
            if self._stopping:
                return "stop", 0
            now = time.monotonic()
            size = len(self._queue)
            can_spill = now >= self._spill_retry_at
            if size > self._memory_limit and can_spill:
                return "spill", size - self._memory_limit // 2
            backing_off = now < self._retry_at
            if backing_off and self._flush_requests <= self._failed_ticket:
                # Every flush has seen an attempt fail: park memory in the journal for it.
                if self._flush_waiters and size and can_spill:
                    return "spill", size
                self._wake.wait(self._retry_at - now)
                continue
            # (A flush newer than the last failure gets a fresh attempt now, backoff or not.)
            if self._journal_pending:
                return "journal", 0
            if size:
                if size >= self._batch_size or self._flush_waiters:
                    return "batch", 0
                if self._batch_deadline is None:
                    self._batch_deadline = now + self._max_wait_s
                if now >= self._batch_deadline:
                    return "batch", 0
                self._wake.wait(self._batch_deadline - now)
                continue
            self._batch_deadline = None
            self._wake.wait()

    def _write_batch(self) -> None:
        with self._lock:
            batch = list(islice(self._queue, self._batch_size))
            self._batch_deadline = None
        records = [record for _, record in batch]
        if not self._attempt(records):
            return
        with self._lock:
            for _ in batch:
                self._queue.popleft()
            self._db_seq = batch[-1][0]
            self._written += len(batch)
            self._forget(records)
            self._progress.notify_all()
        self._release_wal()

    def _replay_journal(self) -> None:
        segment = self._journal.oldest()
        if segment is None:  # pragma: no cover - pending said otherwise
            with self._lock:
                self._journal_pending = 0
            return
        records = segment.cache or []
        while segment.done < len(records):
            chunk = records[segment.done : segment.done + self._batch_size]
            if not self._attempt(chunk):
                return
            segment.done += len(chunk)
            with self._lock:
                self._written += len(chunk)
                self._forget(chunk)
                self._journal_pending = self._journal.pending
                self._progress.notify_all()
        self._journal.remove(segment)
        with self._lock:
            self._db_seq = max(self._db_seq, segment.last_seq)
            self._journal_pending = self._journal.pending
            self._progress.notify_all()
        self._release_wal()

    def _spill(self, count: int) -> None:
        """Move the ``count`` oldest records from memory to the journal."""
        with self._lock:
            entries = list(islice(self._queue, count))
        if not entries:
            return
        try:
            rejected = self._journal.append(entries)
        except Exception as exc:  # OSError mostly: disk full, folder gone
            log.error(
                "traffic writer: cannot write the journal in %s (%s); %d records stay in memory",
                self.journal_dir,
                exc,
                len(self._queue),
            )
            with self._lock:
                self._failures += 1
                self._spill_retry_at = time.monotonic() + self._backoff_max_s
                self._journal_pending = self._journal.pending
                self._progress.notify_all()
            return
        with self._lock:
            for _ in entries:
                self._queue.popleft()
            self._journal_pending = self._journal.pending
            self._rejected += rejected
            self._progress.notify_all()
        log.debug("traffic writer: %d records moved to the journal", len(entries))

    def _attempt(self, records: list[Record]) -> bool:
        """Write records (migrating first if needed); False, with backoff set, on failure."""
        with self._lock:
            self._attempt_since = time.monotonic()
            ticket = self._flush_requests
        try:
            if not self._migrated:
                self.store.upgrade(timeout_s=self._stall_after_s * 5)
                self._migrated = True
            self._write(records)
        except Exception as exc:
            self._failed(exc, ticket=ticket)
            return False
        finally:
            with self._lock:
                self._attempt_since = None
        self._succeeded()
        return True

    def _write(self, records: list[Record]) -> None:
        try:
            self.store.write(records)
        except Exception as exc:
            if not _is_bad_row(exc):
                raise
            if len(records) > 1:
                for record in records:  # isolate the bad rows; the good ones are written
                    self._write([record])
                return
            self._journal.reject(records[0], f"{type(exc).__name__}: {exc}")
            with self._lock:
                self._rejected += 1
            log.error(
                "traffic writer: the database refused a %s row (%s); kept in %s",
                records[0].table,
                exc,
                self.journal_dir / REJECTED_NAME,
            )

    def _failed(self, exc: BaseException, *, ticket: int | None = None) -> None:
        with self._lock:
            self._failures += 1
            self._failed_ticket = self._flush_requests if ticket is None else ticket
            was_healthy = self._healthy
            self._healthy = False
            now = time.monotonic()
            if was_healthy:
                self._outage_since = now
            self._retry_at = now + self._backoff_s * random.uniform(0.8, 1.0)
            self._backoff_s = min(self._backoff_s * 2, self._backoff_max_s)
            self._progress.notify_all()
        if was_healthy:
            log.warning(
                "traffic store %s unavailable (%s); records are kept in memory, then in %s",
                self.store.safe_url,
                exc,
                self.journal_dir,
            )
        else:
            log.debug("traffic store still unavailable: %s", exc)

    def _succeeded(self) -> None:
        with self._lock:
            was_healthy = self._healthy
            self._healthy = True
            self._backoff_s = self._backoff_initial_s
            self._retry_at = 0.0
            outage = time.monotonic() - self._outage_since
        if not was_healthy:
            log.info("traffic store %s is back after %.1f s", self.store.safe_url, outage)

    def _forget(self, records: list[Record]) -> None:
        """Drop written requests from the in-flight index (caller holds the lock)."""
        for record in records:
            if isinstance(record, RequestRecord):
                self._inflight.pop(record.id, None)

    def _shutdown(self) -> None:
        with self._lock:
            entries = list(self._queue)
        saved = True
        if entries:
            try:
                rejected = self._journal.append(entries)
                with self._lock:
                    self._queue.clear()
                    self._rejected += rejected
                    self._journal_pending = self._journal.pending
            except OSError as exc:
                saved = False
                log.error(
                    "traffic writer: %d records not journaled (%s)%s",
                    len(entries),
                    exc,
                    "; the write-ahead log keeps those that were acknowledged"
                    if self._wal is not None
                    else ": lost",
                )
        if self._wal is not None:
            with self._wal_lock:
                # Everything not in the database is in the journal now, unless that failed.
                self._wal.close(keep=not saved)
        try:
            self._journal.close()
        except OSError as exc:  # pragma: no cover - the folder vanished under us
            log.warning("traffic writer: could not release the journal folder: %s", exc)
        with self._lock:
            self._progress.notify_all()

    def _release_wal(self) -> None:
        """Forget log entries and segments that the database now holds (writer thread)."""
        if self._wal is None:
            return
        with self._wal_lock:
            with self._lock:
                db_seq = self._db_seq
                while self._wal_buffer and self._wal_buffer[0][0] <= db_seq:
                    self._wal_buffer.popleft()
            self._wal.release(db_seq)
