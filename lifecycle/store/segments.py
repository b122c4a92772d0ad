"""Segmented JSON-lines logs of traffic records: the format the journal and the WAL share.

A log is a folder of append-only segment files (``<prefix><n>.jsonl``, numbered from 1, one
JSON record per line, as ``records.record_to_json`` writes it), oldest first. A new segment
starts when the active one holds ``segment_records`` lines. The journal (records the database
could not take yet) and the write-ahead log (records acknowledged to clients) both append
through ``SegmentLog``, so the journal can adopt and replay either kind of file.

Readers skip torn or corrupt lines with a warning: a process killed mid-append leaves a
partial last line, which must not stop the replay of the lines before it.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lifecycle.store.records import Record, record_from_json, record_to_json

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".jsonl"


@dataclass
class Segment:
    """One segment file: how many records it holds, and what the journal's replay needs."""

    path: Path
    count: int = 0
    #: Writer sequence number of its newest record (adopted records are numbered 1..n).
    last_seq: int = 0
    #: Records at its head already written to the database (kept across retries).
    done: int = 0
    cache: list[Record] | None = field(default=None, repr=False)


def json_line(item: dict[str, Any]) -> bytes:
    """One compact JSON line, newline included."""
    return json.dumps(item, separators=(",", ":")).encode("utf-8") + b"\n"


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a new or renamed file) durable; a no-op where unsupported."""
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


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
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


def read_records(path: Path) -> Iterator[Record]:
    """The records of a segment; lines that are not valid records are logged and skipped."""
    for item in read_lines(path):
        try:
            yield record_from_json(item)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("journal %s: a line is not a valid record (%s); skipped", path, exc)


class SegmentLog:
    """Append-only segment files in one folder, oldest first; not thread-safe.

    With ``fsync`` each append is forced to the device, and so is each new segment's folder
    entry; without it appends reach the operating system only (they survive the process, not
    a power cut). Segments written or adopted are in ``segments``; the active one is the last.
    """

    def __init__(
        self, folder: Path, *, fsync: bool, segment_records: int = 4096, prefix: str = ""
    ) -> None:
        self.folder = Path(folder)
        self.fsync = fsync
        self.segment_records = max(int(segment_records), 1)
        self.prefix = prefix
        self.segments: deque[Segment] = deque()
        self._active: IO[bytes] | None = None
        self._next_number = 1

    @property
    def active(self) -> Segment | None:
        """The segment appends go to, or None when the next append starts a new one."""
        return self.segments[-1] if self._active is not None else None

    def new_path(self) -> Path:
        """The path of the next segment (also used for files adopted into this folder)."""
        path = self.folder / f"{self.prefix}{self._next_number:012d}{SEGMENT_SUFFIX}"
        self._next_number += 1
        return path

    def append(
        self,
        entries: Sequence[tuple[int, Record]],
        *,
        unserialisable: Callable[[Record, Exception], None] | None = None,
    ) -> None:
        """Append ``(seq, record)`` pairs in order, one line each.

        A record that cannot be serialised is handed to ``unserialisable`` (skipped when None)
        and not written. Raises ``OSError`` when the folder cannot be written; the active
        segment is closed then, so that no append follows a torn line.
        """
        index = 0
        while index < len(entries):
            segment, handle = self._writable()
            chunk = entries[index : index + self.segment_records - segment.count]
            lines: list[bytes] = []
            for _, record in chunk:
                try:
                    lines.append(json_line(record_to_json(record)))
                except (TypeError, ValueError) as exc:
                    if unserialisable is not None:
                        unserialisable(record, exc)
            try:
                handle.write(b"".join(lines))
                handle.flush()
                if self.fsync:
                    os.fsync(handle.fileno())
            except OSError:
                self.close_active()
                raise
            segment.count += len(lines)
            segment.last_seq = chunk[-1][0]
            index += len(chunk)

    def close_active(self) -> None:
        """Close the active segment's file: the next append starts a new segment."""
        if self._active is not None:
            self._active.close()
        self._active = None

    def _writable(self) -> tuple[Segment, IO[bytes]]:
        handle = self._active
        if handle is not None and self.segments[-1].count < self.segment_records:
            return self.segments[-1], handle
        self.close_active()
        path = self.new_path()
        handle = open(path, "ab")  # noqa: SIM115 - kept open across appends
        self._active = handle
        if self.fsync:
            fsync_dir(self.folder)
        segment = Segment(path=path)
        self.segments.append(segment)
        return segment, handle
