"""The traffic writer's local journal: records that could not reach the database yet.

Layout under the journal folder given to the writer::

    <journal_dir>/
      .adopt.lock                 # held briefly while a starting writer adopts orphans
      <pid>-<random>/             # one folder per live writer
        .lock                     # flock held for the writer's life
        000000000001.jsonl        # segments, oldest first; one JSON record per line
      rejected.jsonl              # rows the database refused as invalid (kept, not retried)

Segments are append-only and fsync'd after each append, so a record is durable once
``append`` returns. A starting writer adopts the folders of writers that are gone (their
``.lock`` is free: flock dies with its process) and loose ``*.jsonl`` files in the folder,
before anything of its own, so that a crashed process's records are replayed first. A torn
last line (a crash mid-write) is skipped with a warning. Locks are POSIX ``flock``; where
``fcntl`` is missing, a journal folder must not be shared between live processes.

Only the writer's thread touches a ``Journal`` after construction: it has no locks of its own.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lifecycle.store.records import Record, RequestRecord, record_from_json, record_to_json

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".jsonl"
LOCK_NAME = ".lock"
REJECTED_NAME = "rejected.jsonl"


@dataclass
class Segment:
    """One journal file: how many records it holds and how many are already in the database."""

    path: Path
    count: int = 0
    #: Writer sequence number of its newest record (adopted records are numbered 1..n).
    last_seq: int = 0
    #: Records at its head already written to the database (kept across retries).
    done: int = 0
    cache: list[Record] | None = field(default=None, repr=False)


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


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a segment; torn or corrupt lines are logged and skipped."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                if not isinstance(item, dict):
                    raise ValueError("not an object")
            except ValueError:
                log.warning(
                    "journal %s: line %d is not a record (torn write?); skipped", path, number
                )
                continue
            yield item


def _records(path: Path) -> Iterator[Record]:
    for item in _read_lines(path):
        try:
            yield record_from_json(item)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("journal %s: a line is not a valid record (%s); skipped", path, exc)


class Journal:
    """Append-only segment files owned by one writer; oldest segment first."""

    def __init__(self, root: Path, *, segment_records: int = 4096) -> None:
        """Create this writer's folder and adopt what dead writers left (oldest first)."""
        self.root = Path(root)
        self.segment_records = max(int(segment_records), 1)
        self._segments: deque[Segment] = deque()
        self._next_number = 1
        self._active: IO[bytes] | None = None
        self._active_segment: Segment | None = None
        #: Request ids (with their specialist) of adopted records, for the writer's index.
        self.adopted_requests: dict[str, str] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        self.folder = self.root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
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
        for item in _read_lines(path):
            count += 1
            row = item.get("row", {})
            if item.get("table") == RequestRecord.table and "id" in row:
                self.adopted_requests[str(row["id"])] = str(row.get("specialist"))
        if count == 0:
            path.unlink(missing_ok=True)
            return 0
        target = self._new_path()
        os.replace(path, target)
        # Adopted records are numbered 1..n ahead of the new writer's own submissions.
        last_seq = sum(s.count for s in self._segments) + count
        self._segments.append(Segment(path=target, count=count, last_seq=last_seq))
        _fsync_dir(self.folder)
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
        index = 0
        while index < len(entries):
            segment, handle = self._writable()
            room = self.segment_records - segment.count
            chunk = entries[index : index + room]
            lines: list[bytes] = []
            for _, record in chunk:
                try:
                    line = json.dumps(record_to_json(record), separators=(",", ":"))
                except (TypeError, ValueError) as exc:
                    self.reject(record, f"cannot be journaled: {exc}")
                    rejected += 1
                    continue
                lines.append(line.encode("utf-8") + b"\n")
            try:
                handle.write(b"".join(lines))
                handle.flush()
                os.fsync(handle.fileno())
            except OSError:
                self._close_active()  # never append after a torn line
                raise
            segment.count += len(lines)
            segment.last_seq = chunk[-1][0]
            index += len(chunk)
        return rejected

    def _writable(self) -> tuple[Segment, IO[bytes]]:
        segment = self._active_segment
        if segment is not None and self._active is not None:
            if segment.count < self.segment_records:
                return segment, self._active
            self._close_active()
        path = self._new_path()
        self._active = open(path, "ab")  # noqa: SIM115 - kept open across appends
        _fsync_dir(self.folder)
        segment = Segment(path=path)
        self._active_segment = segment
        self._segments.append(segment)
        return segment, self._active

    def _new_path(self) -> Path:
        path = self.folder / f"{self._next_number:012d}{SEGMENT_SUFFIX}"
        self._next_number += 1
        return path

    def _close_active(self) -> None:
        if self._active is not None:
            self._active.close()
        self._active = None
        self._active_segment = None

    def oldest(self) -> Segment | None:
        """The segment to replay next, its records loaded (``segment.cache``)."""
        if not self._segments:
            return None
        segment = self._segments[0]
        if segment is self._active_segment:
            self._close_active()  # later appends start a new segment
        if segment.cache is None:
            segment.cache = list(_records(segment.path))
            # A torn append may leave more (or fewer) readable lines than were counted.
            segment.count = len(segment.cache)
            segment.done = min(segment.done, segment.count)
        return segment

    def remove(self, segment: Segment) -> None:
        """Delete a segment whose records are all in the database."""
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
            handle.write(json.dumps(line, separators=(",", ":")).encode("utf-8") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())

    def close(self) -> None:
        """Release the folder: removed when empty, else left (locked no more) for adoption."""
        self._close_active()
        with self._guard():
            if not self._segments:
                (self.folder / LOCK_NAME).unlink(missing_ok=True)
                with suppress(OSError):
                    self.folder.rmdir()
            self._lock.close()

    def segment_paths(self) -> list[Path]:
        """Paths of the segments still held (for tests and diagnostics)."""
        return [s.path for s in self._segments]
