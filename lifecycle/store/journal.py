"""The traffic writer's local journal: records that could not reach the database yet.

Layout under the journal folder given to the writer::

    <journal_dir>/
      .adopt.lock                 # held briefly while a starting writer adopts orphans
      <pid>-<random>/             # one folder per live writer
        .lock                     # flock held for the writer's life
        000000000001.jsonl        # segments, oldest first; one JSON record per line
      rejected.jsonl              # rows the database refused as invalid (kept, not retried)

Segments (``segments.SegmentLog``) are append-only and fsync'd after each append, so a
record is durable once ``append`` returns. A starting writer adopts the folders of writers that
are gone (their ``.lock`` is free: flock dies with its process) and loose ``*.jsonl`` files in
the folder, before anything of its own, so that a crashed process's records are replayed
first. A torn last line (a crash mid-write) is skipped with a warning. Locks are POSIX
``flock``; where ``fcntl`` is missing, a journal folder must not be shared between live
processes.

Only the writer's thread touches a ``Journal`` after construction: it has no locks of its own.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from lifecycle.store.records import Record, RequestRecord, record_to_json
from lifecycle.store.segments import (
    SEGMENT_SUFFIX,
    Segment,
    SegmentLog,
    fsync_dir,
    json_line,
    read_lines,
    read_records,
)

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
REJECTED_NAME = "rejected.jsonl"


def _try_lock(path: Path, *, blocking: bool) -> IO[bytes] | None:
    """An open handle holding an exclusive flock on ``path``, or None when another holds it."""
    handle = open(path, "a+b")  # noqa: SIM115 - the handle is the lock; closed by the caller
    if fcntl is None:  # pragma: no cover
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        handle.close()
        return None
    return handle


class Journal:
    """Append-only segment files owned by one writer; oldest segment first."""

    def __init__(self, root: Path, *, segment_records: int = 4096) -> None:
        """Create this writer's folder and adopt what dead writers left (oldest first)."""
        self.root = Path(root)
        #: Request ids (with their specialist) of adopted records, for the writer's index.
        self.adopted_requests: dict[str, str] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        self.folder = self.root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._log = SegmentLog(self.folder, fsync=True, segment_records=segment_records)
        self._segments = self._log.segments
        with self._guard():
            # Made and locked under the guard: no starting writer can take it for an orphan.
            self.folder.mkdir()
            lock = _try_lock(self.folder / LOCK_NAME, blocking=True)
            assert lock is not None
            self._lock = lock
            self.adopted = self._adopt_orphans()
        if self.adopted:
            log.info("journal: adopted %d records left by an earlier process", self.adopted)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        guard = _try_lock(self.root / ".adopt.lock", blocking=True)
        try:
            yield
        finally:
            if guard is not None:
                guard.close()

    # -- start-up ------------------------------------------------------------------------

    def _adopt_orphans(self) -> int:
        adopted = 0
        for entry in sorted(self.root.iterdir()):
            if entry == self.folder:
                continue
            if entry.is_dir():
                adopted += self._adopt_folder(entry)
            elif entry.suffix == SEGMENT_SUFFIX and entry.name != REJECTED_NAME:
                adopted += self._adopt_file(entry)
        return adopted

    def _adopt_folder(self, folder: Path) -> int:
        lock = _try_lock(folder / LOCK_NAME, blocking=False)
        if lock is None:
            return 0  # its writer is alive
        try:
            adopted = sum(
                self._adopt_file(path) for path in sorted(folder.glob(f"*{SEGMENT_SUFFIX}"))
            )
            (folder / LOCK_NAME).unlink(missing_ok=True)
            try:
                folder.rmdir()
            except OSError:
                log.warning("journal: could not remove %s (not empty?)", folder)
        finally:
            lock.close()
        return adopted

    def _adopt_file(self, path: Path) -> int:
        count = 0
        for item in read_lines(path):
            count += 1
            row = item.get("row", {})
            if item.get("table") == RequestRecord.table and "id" in row:
                self.adopted_requests[str(row["id"])] = str(row.get("specialist"))
        if count == 0:
            path.unlink(missing_ok=True)
            return 0
        target = self._log.new_path()
        os.replace(path, target)
        # Adopted records are numbered 1..n ahead of the new writer's own submissions.
        last_seq = sum(s.count for s in self._segments) + count
        self._segments.append(Segment(path=target, count=count, last_seq=last_seq))
        fsync_dir(self.folder)
        return count

    # -- the writer's operations ---------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records in the journal not yet written to the database."""
        return sum(s.count - s.done for s in self._segments)

    def __bool__(self) -> bool:
        return bool(self._segments)

    def append(self, entries: Sequence[tuple[int, Record]]) -> int:
        """Append ``(seq, record)`` pairs in order and fsync: durable when this returns.

        A record that cannot be serialised goes to ``rejected.jsonl`` instead; returns how
        many did. Raises ``OSError`` when the folder cannot be written.
        """
        rejected = 0

        def set_aside(record: Record, exc: Exception) -> None:
            nonlocal rejected
            self.reject(record, f"cannot be journaled: {exc}")
            rejected += 1

        self._log.append(entries, unserialisable=set_aside)
        return rejected

    def oldest(self) -> Segment | None:
        """The segment to replay next, its records loaded (``segment.cache``)."""
        if not self._segments:
            return None
        segment = self._segments[0]
        if segment is self._log.active:
            self._log.close_active()  # later appends start a new segment
        if segment.cache is None:
            segment.cache = list(read_records(segment.path))
            # A torn append may leave more (or fewer) readable lines than were counted.
            segment.count = len(segment.cache)
            segment.done = min(segment.done, segment.count)
        return segment

    def remove(self, segment: Segment) -> None:
        """Delete a segment whose records are all in the database."""
        if segment is self._log.active:
            self._log.close_active()  # appends must not go on into a deleted file
        if self._segments and self._segments[0] is segment:
            self._segments.popleft()
        segment.cache = None
        segment.path.unlink(missing_ok=True)

    def reject(self, record: Record, reason: str) -> None:
        """Keep a row the database refused as invalid, with why, in ``rejected.jsonl``."""
        try:
            line = record_to_json(record) | {"error": reason}
        except Exception:  # a record too broken to serialise: keep what can be
            line = {"table": record.table, "repr": repr(record), "error": reason}
        with open(self.root / REJECTED_NAME, "ab") as handle:
            handle.write(json_line(line))
            handle.flush()
            os.fsync(handle.fileno())

    def close(self) -> None:
        """Release the folder: removed when empty, else left (locked no more) for adoption."""
        self._log.close_active()
        with self._guard():
            if not self._segments:
                (self.folder / LOCK_NAME).unlink(missing_ok=True)
                with suppress(OSError):
                    self.folder.rmdir()
            self._lock.close()

    def segment_paths(self) -> list[Path]:
        """Paths of the segments still held (for tests and diagnostics)."""
        return [s.path for s in self._segments]
