"""Shadow work between a request's answer and the challenger's pass: the bounded queue the
engine's workers take it from, and the fate of every text in it.

Shadow texts wait in chunks until a full batch is there (a batch costs far less per text
than single rows) or the oldest has waited ``max_delay_s``. A full queue drops new work
rather than delay anything. Every text the queue accepts ends one way, counted in
``ShadowStats`` and told to its job's callback once: scored, failed, or discarded at a stop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lifecycle.model.artifacts import Prediction
from lifecycle.serving.batching import Job

logger = logging.getLogger(__name__)


@dataclass
class ShadowStats:
    """Shadow texts by fate since start. ``queued`` = ``scored + failed + discarded`` once
    the engine has stopped; ``dropped`` texts never entered the queue (it was full)."""

    queued: int = 0
    scored: int = 0
    failed: int = 0
    dropped: int = 0
    discarded: int = 0

    @property
    def pending(self) -> int:
        return self.queued - self.scored - self.failed - self.discarded


class ShadowQueue:
    """The engine's shadow work: what waits, when it is due, and how each chunk ended."""

    def __init__(
        self, *, size: int, batch_size: int, max_delay_s: float, wake: Callable[[], None]
    ) -> None:
        self.batch_size = batch_size
        self.max_delay_s = max_delay_s
        self.stats = ShadowStats()
        #: A champion worker runs a batch of shadow work only: no other champion worker may.
        self.busy = False
        #: The engine is stopping: queued work runs at once, on every worker.
        self.draining = False
        #: The engine has stopped: work is discarded as it comes.
        self.closed = False
        self._size = size
        self._wake = wake
        self._queue: asyncio.Queue[Job] | None = None
        self._texts = 0
        self._since: float | None = None

    def start(self) -> None:
        """Create the queue (in the event loop that will use it)."""
        self._queue = asyncio.Queue(maxsize=self._size)

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    def empty(self) -> bool:
        return self._queue is None or self._queue.empty()

    def put(
        self,
        texts: Sequence[str],
        adapter_id: str,
        on_done: Callable[[int, list[Prediction]], None],
        on_error: Callable[[int, int, BaseException], None] | None = None,
        on_discard: Callable[[int, int], None] | None = None,
    ) -> bool:
        """Queue shadow work; False (and counted) when the queue is full: dropped, not delayed.

        The texts are cut into chunks of ``batch_size``; chunks wait until a full batch of
        shadow work is there (a batch costs far less per text than single rows) or the oldest
        has waited ``max_delay_s``, and run only when no champion waits. ``on_done`` gets each
        chunk's offset into ``texts`` and its predictions; ``on_error`` a failed chunk's
        offset, its size and the exception; ``on_discard`` the offset and size of a chunk a
        stop left unscored (after the stop has begun discarding, at once).
        """
        assert self._queue is not None, "engine not started"
        step = self.batch_size
        queued_all = True
        for offset in range(0, len(texts), step):
            chunk = list(texts[offset : offset + step])
            job = Job(
                chunk,
                [adapter_id] * len(chunk),
                None,
                functools.partial(on_done, offset),
                None if on_error is None else functools.partial(on_error, offset, len(chunk)),
                None if on_discard is None else functools.partial(on_discard, offset, len(chunk)),
            )
            if self.closed:
                self.stats.queued += len(chunk)
                self.discard(job)
                continue
            try:
                self._queue.put_nowait(job)
            except asyncio.QueueFull:
                self.stats.dropped += len(chunk)
                queued_all = False
                continue
            self.stats.queued += len(chunk)
            self._texts += len(chunk)
            if self._since is None:
                self._since = job.enqueued
        self._wake()
        return queued_all

    def take(self) -> Job:
        assert self._queue is not None
        job = self._queue.get_nowait()
        self._texts -= len(job.texts)
        self._since = None if self._queue.empty() else time.perf_counter()
        return job

    def take_batch(self) -> list[Job]:
        jobs: list[Job] = []
        size = 0
        while size < self.batch_size and not self.empty():
            job = self.take()
            jobs.append(job)
            size += len(job.texts)
        return jobs

    def take_all(self) -> list[Job]:
        """What is left at a stop, to be discarded."""
        left: list[Job] = []
        while self._queue is not None and not self._queue.empty():
            left.append(self._queue.get_nowait())
        return left

    def ready(self) -> bool:
        """Shadow work runs in full batches (cheap per text), or once its oldest has waited."""
        if self.empty():
            return False
        if self._texts >= self.batch_size or self.draining:
            return True
        since = self._since or time.perf_counter()
        return time.perf_counter() - since >= self.max_delay_s

    def wait_s(self) -> float | None:
        """How long a worker may sleep before old shadow work is due (None: until woken)."""
        if self.empty() or self.busy:
            return None
        since = self._since or time.perf_counter()
        return max(0.001, self.max_delay_s - (time.perf_counter() - since))

    async def drain(self, seconds: float) -> None:
        """Wait at most ``seconds`` for the workers to run what is queued or running (the
        engine sets ``draining`` and wakes them first)."""
        started = time.perf_counter()
        pending = self.stats.pending
        while self.stats.pending > 0:
            if time.perf_counter() - started >= seconds:
                logger.warning(
                    "shadow drain stopped after %.1f s with %d texts unscored: they are "
                    "discarded (LIFECYCLE_SHADOW_DRAIN_S)",
                    seconds,
                    self.stats.pending,
                )
                return
            await asyncio.sleep(0.01)
        if pending:
            logger.info(
                "shadow drain ran the %d texts left in %.1f s",
                pending,
                time.perf_counter() - started,
            )

    # -- fates: each told once --------------------------------------------------------

    def scored(self, job: Job, predictions: list[Prediction]) -> None:
        if _settle(job):
            self.stats.scored += len(job.texts)
            _tell(job.on_done, "shadow callback failed", predictions)

    def failed(self, job: Job, exc: BaseException) -> None:
        if _settle(job):
            self.stats.failed += len(job.texts)
            _tell(job.on_error, "shadow error callback failed", exc)

    def discard(self, job: Job) -> None:
        if _settle(job):
            self.stats.discarded += len(job.texts)
            _tell(job.on_discard, "shadow discard callback failed")


def _settle(job: Job) -> bool:
    """Mark the job's fate told; False when it was told already."""
    if job.settled:
        return False
    job.settled = True
    return True


def _tell(callback: Callable[..., None] | None, failure: str, *args: Any) -> None:
    """A callback that raises is logged: it must not stop a worker."""
    if callback is None:
        return
    try:
        callback(*args)
    except Exception:
        logger.exception(failure)
