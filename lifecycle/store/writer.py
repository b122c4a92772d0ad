"""The traffic writer: batched, non-blocking and loss-free writes to the traffic store.

``submit`` only appends to an in-memory queue (a few microseconds under a lock that no I/O
ever holds), so the gateway's event loop never waits on the database. One background thread
drains the queue in batches (``batch_size`` records or ``max_wait_s``, whichever comes first),
one transaction per batch, with idempotent inserts.

When the database is down or locked, nothing accepted is lost:

1. records stay in memory, in order, up to ``memory_limit``;
2. past that, the oldest are appended to the journal (JSON lines, fsync'd per append; see
   ``lifecycle.store.journal``), so memory stays bounded (the thread enforces the bound
   between database attempts, which the store's lock and connect timeouts keep short);
3. writes are retried with capped exponential backoff; when one succeeds, the journal is
   replayed first, then memory: the database receives records in submission order;
4. a journal left by a crashed process is adopted at start and replayed before anything new.

What memory holds is lost if the process dies. With ``durability`` set to ``"write"`` or
``"fsync"`` the caller also calls ``commit`` before it acknowledges: the records are then in a
write-ahead log on disk (see ``lifecycle.store.wal``), which the next writer adopts and replays.

A row the database refuses as invalid (a constraint, a value too long) is not retried forever:
its batch is retried row by row and the bad row is kept in ``<journal_dir>/rejected.jsonl``.

Ordering gives a simple durability test: records are numbered on submission and reach the
database in that order, so "everything up to N is in the database" is one comparison; that is
what ``flush`` waits for.

This module holds the caller's side (any thread); what the background thread does is in
``writer_thread.py``.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from lifecycle.config.errors import StoreError
from lifecycle.store.journal import REJECTED_NAME, Journal
from lifecycle.store.records import RECORD_TYPES, Record, RequestRecord
from lifecycle.store.repository import TrafficStore
from lifecycle.store.segments import SEGMENT_SUFFIX
from lifecycle.store.wal import Durability, WriteAheadLog
from lifecycle.store.writer_thread import WriterThread

log = logging.getLogger(__name__)

#: Where everything submitted before a ``flush`` is when it returns ("pending": timed out).
FlushResult = Literal["database", "journal", "pending"]


@dataclass(frozen=True)
class WriterStats:
    """A consistent snapshot of the writer's counters (e.g. for /metrics)."""

    submitted: int
    written: int
    pending_memory: int
    pending_journal: int
    failures: int
    rejected: int
    healthy: bool


class TrafficWriter(WriterThread):
    """Accepts records from any thread or the event loop; a background thread stores them.

    The thread starts in the constructor; ``close()`` (or leaving a ``with`` block, or the
    interpreter exiting) flushes and stops it. ``store`` must be migrated, or ``migrate=True``
    (the default) migrates it before the first write, which lets a process start while its
    database is down.
    """

    def __init__(
        self,
        store: TrafficStore,
        *,
        journal_dir: Path | str,
        batch_size: int = 256,
        max_wait_s: float = 0.05,
        memory_limit: int = 50_000,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 5.0,
        segment_records: int = 4096,
        stall_after_s: float = 2.0,
        migrate: bool = True,
        durability: Durability = "memory",
    ) -> None:
        if batch_size < 1 or memory_limit < 1:
            raise ValueError("batch_size and memory_limit must be >= 1")
        if max_wait_s < 0 or backoff_initial_s <= 0 or backoff_max_s < backoff_initial_s:
            raise ValueError("need max_wait_s >= 0 and 0 < backoff_initial_s <= backoff_max_s")
        self.store = store
        self.journal_dir = Path(journal_dir)
        self._batch_size = batch_size
        self._max_wait_s = max_wait_s
        self._memory_limit = memory_limit
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._stall_after_s = stall_after_s
        self._migrated = not migrate

        try:
            self._journal = Journal(self.journal_dir, segment_records=segment_records)
        except OSError as exc:
            raise StoreError(
                f"the traffic journal folder {self.journal_dir} cannot be used ({exc}); "
                "point it at a writable local folder"
            ) from exc
        #: Records adopted at start from the journal of a process that is gone.
        self.adopted = self._journal.adopted
        self.durability: Durability = durability
        self._wal = (
            None
            if durability == "memory"
            else WriteAheadLog(
                self._journal.folder,
                fsync=durability == "fsync",
                segment_records=segment_records,
                start_seq=self.adopted,
            )
        )
        # Records not yet in the log; the log is appended under its own lock so that request
        # threads never wait on the writer thread's database work.
        self._wal_lock = threading.Lock()
        self._wal_buffer: deque[tuple[int, Record]] = deque()

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the thread waits for work here
        self._progress = threading.Condition(self._lock)  # flush() waits for progress here
        self._queue: deque[tuple[int, Record]] = deque()
        self._inflight: dict[str, str] = dict(self._journal.adopted_requests)
        # Sequence numbers: adopted records are 1..adopted, then each submit takes the next.
        self._seq = self.adopted
        self._db_seq = 0  # every record numbered <= this is in the database
        self._journal_pending = self._journal.pending
        self._submitted = 0
        self._written = 0
        self._failures = 0
        self._rejected = 0
        self._healthy = True
        self._attempt_since: float | None = None
        self._outage_since = 0.0
        self._backoff_s = backoff_initial_s
        self._retry_at = 0.0
        self._spill_retry_at = 0.0
        self._batch_deadline: float | None = None
        self._flush_waiters = 0
        self._flush_requests = 0  # flush calls so far
        self._failed_ticket = 0  # flush calls made before the latest failed attempt began
        self._closed = False
        self._stopping = False

        self._thread = threading.Thread(
            target=self._run, name="lifecycle-traffic-writer", daemon=True
        )
        self._thread.start()
        atexit.register(self._at_exit)

    # -- the caller's side ---------------------------------------------------------------

    def submit(self, record: Record) -> int:
        """Accept a record; never blocks on the database. Raises ``StoreError`` once closed.

        Returns its sequence number, for ``commit``.
        """
        return self.submit_many((record,))

    def submit_many(self, records: Iterable[Record]) -> int:
        """Accept several records at once, in order; returns the last one's sequence number."""
        items = list(records)
        for record in items:
            if not isinstance(record, RECORD_TYPES):
                raise TypeError(f"not a traffic record: {type(record).__name__}")
        with self._lock:
            if self._closed:
                raise StoreError("the traffic writer is closed: no more records are accepted")
            for record in items:
                self._seq += 1
                self._queue.append((self._seq, record))
                if self._wal is not None:
                    self._wal_buffer.append((self._seq, record))
                if isinstance(record, RequestRecord):
                    self._inflight[record.id] = record.specialist
            self._submitted += len(items)
            size = len(self._queue)
            if size <= len(items) or size >= self._batch_size or size > self._memory_limit:
                self._wake.notify()
            return self._seq

    def commit(self, seq: int | None = None) -> None:
        """Return once every record numbered <= ``seq`` (default: all so far) is on disk.

        On disk means in the database or in the write-ahead log (written to the OS, and
        fsync'd in ``"fsync"`` mode), so it survives the process being killed. Concurrent
        callers share one append (group commit). A no-op when ``durability`` is ``"memory"``.
        It waits: call it from a worker thread, not the event loop. Raises ``StoreError`` when
        the log cannot be written; the records then stay queued for the database.
        """
        if self._wal is None:
            return
        with self._wal_lock:
            with self._lock:
                target = self._seq if seq is None else seq
                if target <= max(self._wal.durable_seq, self._db_seq):
                    return
                entries = list(self._wal_buffer)
                self._wal_buffer.clear()
                upto = self._seq
            try:
                self._wal.append(entries, upto)
            except OSError as exc:
                with self._lock:
                    self._wal_buffer.extendleft(reversed(entries))
                    self._failures += 1
                log.error("traffic writer: the write-ahead log cannot be written: %s", exc)
                raise StoreError(
                    f"the traffic log in {self.journal_dir} cannot be written ({exc.strerror})"
                ) from exc

    @property
    def migrated(self) -> bool:
        """Whether this writer has brought the database to the current schema (it does so
        before its first write): until then a read may find no tables, and nothing written."""
        return self._migrated

    def known_request(self, request_id: str) -> str | None:
        """The specialist of a request accepted but not yet in the database (memory or journal).

        None means "not in flight": the caller then asks the database
        (``store.request_specialist``). Never touches the database itself.
        """
        with self._lock:
            return self._inflight.get(request_id)

    def flush(self, timeout: float | None = 30.0) -> FlushResult:
        """Wait until everything submitted so far is durable, and say where.

        ``"database"``: all of it is in the database. ``"journal"``: the database is down (an
        attempt made after this call began failed; a flush always makes one, even during a
        backoff) and what is not in it is in the journal, fsync'd. ``"pending"``: the timeout
        passed with some of it only in memory. Call it from a worker thread, not the event loop
        (``await asyncio.to_thread(writer.flush)``): it waits.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._seq
            self._flush_requests += 1
            ticket = self._flush_requests
            self._flush_waiters += 1
            self._wake.notify()
            try:
                while True:
                    where = self._durability(target, ticket)
                    if where is not None:
                        return where
                    if not self._thread.is_alive():
                        return "pending"
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return "pending"
                    self._progress.wait(remaining)
            finally:
                self._flush_waiters -= 1

    def close(self, timeout: float | None = 30.0) -> FlushResult:
        """Refuse new records, flush, stop the thread; what is left in memory goes to the journal.

        Returns where the records are at the end (see ``flush``). Idempotent.
        """
        with self._lock:
            already = self._closed
            self._closed = True
        if not already:
            self.flush(timeout)
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(timeout=None if timeout is None else max(timeout, 5.0))
        if self._thread.is_alive():
            log.error("traffic writer did not stop (database call hanging?); records may be lost")
        atexit.unregister(self._at_exit)
        with self._lock:
            if self._db_seq >= self._seq:
                return "database"
            return "pending" if self._queue else "journal"

    def __enter__(self) -> TrafficWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _at_exit(self) -> None:
        self.close(timeout=10.0)

    # -- counters ------------------------------------------------------------------------

    @property
    def submitted(self) -> int:
        """Records accepted by ``submit`` (adopted journal records not included)."""
        return self._submitted

    @property
    def written(self) -> int:
        """Records committed to the database by this writer (replays included)."""
        return self._written

    @property
    def pending_memory(self) -> int:
        """Records held in memory only."""
        return len(self._queue)

    @property
    def pending_journal(self) -> int:
        """Records in the journal, not yet in the database."""
        return self._journal_pending

    @property
    def failures(self) -> int:
        """Failed attempts (database writes, journal appends) since start."""
        return self._failures

    @property
    def rejected(self) -> int:
        """Rows the database refused as invalid, kept in ``rejected.jsonl``."""
        return self._rejected

    @property
    def healthy(self) -> bool:
        """The last write succeeded and none has been hanging for ``stall_after_s``."""
        with self._lock:
            if not self._healthy:
                return False
            started = self._attempt_since
        return started is None or time.monotonic() - started < self._stall_after_s

    def stats(self) -> WriterStats:
        """All counters at one instant."""
        healthy = self.healthy
        with self._lock:
            return WriterStats(
                submitted=self._submitted,
                written=self._written,
                pending_memory=len(self._queue),
                pending_journal=self._journal_pending,
                failures=self._failures,
                rejected=self._rejected,
                healthy=healthy,
            )

    def journal_files(self) -> list[Path]:
        """Journal segment files on disk under ``journal_dir`` (any writer's), oldest first."""
        files = [*self.journal_dir.glob(f"*/*{SEGMENT_SUFFIX}")]
        files += [p for p in self.journal_dir.glob(f"*{SEGMENT_SUFFIX}") if p.name != REJECTED_NAME]
        return sorted(files)

    def _durability(self, target: int, ticket: int) -> FlushResult | None:
        """Where records numbered <= target are, once settled (caller holds the lock).

        "journal" counts only after an attempt begun after this flush was asked failed: a
        flush always tries the database once, even during a backoff.
        """
        if self._db_seq >= target:
            return "database"
        in_memory = bool(self._queue) and self._queue[0][0] <= target
        if not in_memory and not self._healthy and self._failed_ticket >= ticket:
            return "journal"
        return None
