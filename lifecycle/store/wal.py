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

import json
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from lifecycle.store.journal import SEGMENT_SUFFIX, _fsync_dir
from lifecycle.store.records import Record, record_to_json

#: What the gateway waits for before it answers: nothing, the OS, or the storage device.
Durability = Literal["memory", "write", "fsync"]

WAL_PREFIX = "wal-"


@dataclass
class _Segment:
    path: Path
    count: int = 0
    last_seq: int = 0


class WriteAheadLog:
    """Append-only segments of accepted records; not thread-safe (the writer serialises)."""

    def __init__(
        self, folder: Path, *, fsync: bool, segment_records: int = 4096, start_seq: int = 0
    ) -> None:
        self.folder = Path(folder)
        self.fsync = fsync
        self.segment_records = max(int(segment_records), 1)
        self._segments: deque[_Segment] = deque()
        self._active: IO[bytes] | None = None
        self._number = 0
        #: Every record numbered <= this is in the log (or was in the database already).
        self.durable_seq = start_seq

    def append(self, entries: Sequence[tuple[int, Record]], upto: int) -> None:
        """Write ``entries`` (sequence number, record), then count everything <= ``upto`` durable.

        Raises ``OSError`` when the folder cannot be written; nothing is counted then.
        A record that cannot be serialised is skipped here: the writer rejects it later.
        """
        index = 0
        while index < len(entries):
            segment, handle = self._writable()
            chunk = entries[index : index + self.segment_records - segment.count]
            lines = []
            for _, record in chunk:
                try:
                    lines.append(json.dumps(record_to_json(record), separators=(",", ":")))
                except (TypeError, ValueError):
                    continue
            try:
                handle.write(("\n".join(lines) + "\n").encode("utf-8") if lines else b"")
                handle.flush()
                if self.fsync:
                    os.fsync(handle.fileno())
            except OSError:
                self._close_active()  # never append after a torn line
                raise
            segment.count += len(chunk)
            segment.last_seq = chunk[-1][0]
            index += len(chunk)
        self.durable_seq = max(self.durable_seq, upto)

    def release(self, db_seq: int) -> None:
        """Delete the segments whose records are all in the database (``seq <= db_seq``)."""
        while self._segments and self._segments[0].last_seq <= db_seq:
            segment = self._segments[0]
            if len(self._segments) == 1 and self._active is not None:
                self._close_active()  # the next append starts a new segment
            self._segments.popleft()
            segment.path.unlink(missing_ok=True)

    def close(self, *, keep: bool) -> None:
        """Stop appending; delete every segment unless ``keep`` (records not stored elsewhere)."""
        self._close_active()
        if not keep:
            while self._segments:
                self._segments.popleft().path.unlink(missing_ok=True)

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self._segments]

    def _writable(self) -> tuple[_Segment, IO[bytes]]:
        if self._active is not None and self._segments[-1].count < self.segment_records:
            return self._segments[-1], self._active
        self._close_active()
        self._number += 1
        path = self.folder / f"{WAL_PREFIX}{self._number:012d}{SEGMENT_SUFFIX}"
        self._active = open(path, "ab")  # noqa: SIM115 - kept open across appends
        if self.fsync:
            _fsync_dir(self.folder)
        segment = _Segment(path=path)
        self._segments.append(segment)
        return segment, self._active

    def _close_active(self) -> None:
        if self._active is not None:
            self._active.close()
        self._active = None
