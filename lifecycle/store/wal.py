"""The pre-acknowledgement log: accepted records on disk before the client hears "accepted".

The traffic writer keeps records in memory until its thread writes them to the database
(tens of milliseconds). A process killed in that gap (SIGKILL, the OOM killer, a node
drained hard) would lose requests that were already answered. With a write-ahead log the
gateway appends the records of a request here before it answers, so an answered request is
on disk whatever happens to the process afterwards.

Segments live in the writer's journal folder as ``wal-<n>.jsonl``, in the journal's own line
format, so a writer that starts after a crash adopts and replays them with the journal
(inserts are idempotent: records that had also reached the database are not doubled). A
segment is deleted once every record in it is in the database.

Appends are group commits: callers that arrive while one append is writing wait for the lock
and then find their records written by it, or write everything waiting in one go. ``write``
mode hands the bytes to the operating system, which survives the death of the process;
``fsync`` mode also forces them to the device, which survives a power cut at the price of a
device flush per group.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from lifecycle.store.records import Record
from lifecycle.store.segments import SegmentLog

#: What the gateway waits for before it answers: nothing, the OS, or the storage device.
Durability = Literal["memory", "write", "fsync"]

WAL_PREFIX = "wal-"


class WriteAheadLog:
    """Append-only segments of accepted records; not thread-safe (the writer serialises)."""

    def __init__(
        self, folder: Path, *, fsync: bool, segment_records: int = 4096, start_seq: int = 0
    ) -> None:
        self.folder = Path(folder)
        self.fsync = fsync
        self._log = SegmentLog(
            self.folder, fsync=fsync, segment_records=segment_records, prefix=WAL_PREFIX
        )
        #: Every record numbered <= this is in the log (or was in the database already).
        self.durable_seq = start_seq

    def append(self, entries: Sequence[tuple[int, Record]], upto: int) -> None:
        """Write ``entries`` (sequence number, record), then count everything <= ``upto`` durable.

        Raises ``OSError`` when the folder cannot be written; nothing is counted then.
        A record that cannot be serialised is skipped here: the writer rejects it later.
        """
        self._log.append(entries)
        self.durable_seq = max(self.durable_seq, upto)

    def release(self, db_seq: int) -> None:
        """Delete the segments whose records are all in the database (``seq <= db_seq``)."""
        segments = self._log.segments
        while segments and segments[0].last_seq <= db_seq:
            if segments[0] is self._log.active:
                self._log.close_active()  # the next append starts a new segment
            segments.popleft().path.unlink(missing_ok=True)

    def close(self, *, keep: bool) -> None:
        """Stop appending; delete every segment unless ``keep`` (records not stored elsewhere)."""
        self._log.close_active()
        if not keep:
            while self._log.segments:
                self._log.segments.popleft().path.unlink(missing_ok=True)

    @property
    def paths(self) -> list[Path]:
        """Paths of the segments still held (for tests and diagnostics)."""
        return [s.path for s in self._log.segments]
