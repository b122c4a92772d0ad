"""The model side of the gateway: one model thread, a micro-batcher, a routing table.

All model work (forward passes, loading and unloading adapters) runs on one
dedicated thread, so that peft's adapter state is never touched by two threads
at once and the event loop never waits on torch. Requests are gathered into
batches that may mix specialists and adapters; shadow work rides in a bounded
queue that the batcher serves only when no champion work waits, so shadowing
never delays an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lifecycle.schemas import Prediction

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Served:
    """One registered version loaded in the host."""

    version: int
    adapter_id: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    """What answers a specialist now. Replaced whole on a swap, never mutated."""

    specialist: str
    champion: Served
    challenger: Served | None = None


@dataclass
class _Job:
    texts: list[str]
    adapter_ids: list[str]
    future: asyncio.Future[list[Prediction]] | None
    on_done: Callable[[list[Prediction]], None] | None = None  # shadow: bound to an offset
    on_error: Callable[[BaseException], None] | None = None  # shadow: bound to an offset
    enqueued: float = field(default_factory=time.perf_counter)


class ModelEngine:
    """Runs predictions for the gateway; see the module docstring for the threading model."""

    def __init__(
        self,
        host: Any,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 2.0,
        shadow_queue_size: int = 10_000,
        shadow_batch_size: int = 8,
        shadow_max_delay_s: float = 1.0,
        forward_batch_size: int = 16,
        piggyback_shadow: bool = False,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.host = host
        self.forward_batch_size = forward_batch_size
        self.piggyback_shadow = piggyback_shadow
        self.shadow_max_delay_s = shadow_max_delay_s
        self._shadow_texts = 0
        self._shadow_since: float | None = None
        self.shadow_batch_size = shadow_batch_size
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.routes: dict[str, Route] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._primary: asyncio.Queue[_Job] | None = None
        self._shadow: asyncio.Queue[_Job] | None = None
        self._shadow_size = shadow_queue_size
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._on_batch = on_batch

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        self._primary = asyncio.Queue()
        self._shadow = asyncio.Queue(maxsize=self._shadow_size)
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def run_on_model_thread(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func`` on the model thread, between batches (adapter loads and unloads)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, func, *args)

    # -- work -----------------------------------------------------------------------

    async def predict(self, texts: Sequence[str], adapter_ids: Sequence[str]) -> list[Prediction]:
        """Predictions for a request's texts, batched with whatever else is waiting."""
        assert self._primary is not None and self._wakeup is not None, "engine not started"
        future: asyncio.Future[list[Prediction]] = asyncio.get_running_loop().create_future()
        self._primary.put_nowait(_Job(list(texts), list(adapter_ids), future))
        self._wakeup.set()
        return await future

    def shadow(
        self,
        texts: Sequence[str],
        adapter_id: str,
        on_done: Callable[[int, list[Prediction]], None],
        on_error: Callable[[int, int, BaseException], None] | None = None,
    ) -> bool:
        """Queue shadow work; False (and counted) when the queue is full: dropped, not delayed.

        The texts are cut into chunks of ``shadow_batch_size``; chunks wait until a full batch
        of shadow work is there (a batch costs far less per text than single rows) or the
        oldest has waited ``shadow_max_delay_s``, and run only when no champion waits.
        ``on_done`` gets each chunk's offset into ``texts`` and its predictions; ``on_error``
        a failed chunk's offset, its size and the exception.
        """
        assert self._shadow is not None and self._wakeup is not None, "engine not started"
        step = self.shadow_batch_size
        queued_all = True
        for offset in range(0, len(texts), step):
            chunk = list(texts[offset : offset + step])
            job = _Job(
                chunk,
                [adapter_id] * len(chunk),
                None,
                functools.partial(on_done, offset),
                None if on_error is None else functools.partial(on_error, offset, len(chunk)),
            )
            try:
                self._shadow.put_nowait(job)
            except asyncio.QueueFull:
                queued_all = False
                continue
            self._shadow_texts += len(chunk)
            if self._shadow_since is None:
                self._shadow_since = job.enqueued
        self._wakeup.set()
        return queued_all

    @property
    def queue_depths(self) -> dict[str, int]:
        return {
            "primary": self._primary.qsize() if self._primary else 0,
            "shadow": self._shadow.qsize() if self._shadow else 0,
        }

    async def _loop(self) -> None:
        assert self._primary is not None and self._shadow is not None and self._wakeup is not None
        while True:
            if self._primary.empty() and not self._shadow_ready():
                self._wakeup.clear()
                # A timeout means the oldest shadow work has waited long enough: run what there is.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self._shadow_wait())
            jobs = await self._gather()
            if not jobs:
                continue
            ran = await self._run_jobs(jobs)
            if ran is None:
                continue
            jobs, predictions = ran
            offset = 0
            for job in jobs:
                part = predictions[offset : offset + len(job.texts)]
                offset += len(job.texts)
                if job.future is not None:
                    if not job.future.done():
                        job.future.set_result(part)
                elif job.on_done is not None:
                    try:
                        job.on_done(part)
                    except Exception:
                        logger.exception("shadow callback failed")

    async def _run_jobs(self, jobs: list[_Job]) -> tuple[list[_Job], list[Prediction]] | None:
        """Run one batch; on failure, tell every job, and answer the champions without shadow.

        A batch that mixes shadow and champion work (piggybacking) and fails is run again
        with the champion jobs only: a broken challenger must never cost a client an answer.
        """
        texts = [t for job in jobs for t in job.texts]
        ids = [a for job in jobs for a in job.adapter_ids]
        started = time.perf_counter()
        try:
            predictions = await self.run_on_model_thread(self._run, texts, ids)
        except Exception as exc:  # one bad batch must not stop the gateway
            shadows = [job for job in jobs if job.future is None]
            champions = [job for job in jobs if job.future is not None]
            logger.warning(
                "batch of %d texts failed (%d shadow jobs): %s",
                len(texts),
                len(shadows),
                exc,
                exc_info=bool(champions),
            )
            for job in shadows:
                if job.on_error is not None:
                    try:
                        job.on_error(exc)
                    except Exception:
                        logger.exception("shadow error callback failed")
            if shadows and champions:
                return await self._run_jobs(champions)
            for job in champions:
                assert job.future is not None
                if not job.future.done():
                    job.future.set_exception(exc)
            return None
        if self._on_batch is not None:
            self._on_batch(len(texts), time.perf_counter() - started)
        return jobs, predictions

    async def _gather(self) -> list[_Job]:
        """Champion jobs up to the batch size, waiting at most max_wait for more.

        Shadow jobs fill a batch only when no champion job is waiting.
        """
        assert self._primary is not None and self._shadow is not None
        jobs: list[_Job] = []
        size = 0
        deadline = time.perf_counter() + self.max_wait_s
        while size < self.max_batch_size:
            if not self._primary.empty():
                job = self._primary.get_nowait()
            elif jobs and time.perf_counter() < deadline and self.max_wait_s > 0:
                try:
                    job = await asyncio.wait_for(
                        self._primary.get(), timeout=max(0.0, deadline - time.perf_counter())
                    )
                except TimeoutError:
                    break
            elif not jobs and self._shadow_ready():
                # A full (or old) shadow batch, never waiting: champions may come any moment.
                while size < self.shadow_batch_size and not self._shadow.empty():
                    job = self._take_shadow()
                    jobs.append(job)
                    size += len(job.texts)
                break
            else:
                break
            jobs.append(job)
            size += len(job.texts)
        if self.piggyback_shadow and jobs and jobs[0].future is not None:
            # Shadow work of requests already answered rides along in a small champion batch:
            # on a CPU a few more rows cost little, a batch of its own would block the model.
            room = min(self.shadow_batch_size, self.forward_batch_size - size)
            while room > 0 and not self._shadow.empty():
                job = self._take_shadow()
                jobs.append(job)
                room -= len(job.texts)
        return jobs

    def _take_shadow(self) -> _Job:
        assert self._shadow is not None
        job = self._shadow.get_nowait()
        self._shadow_texts -= len(job.texts)
        self._shadow_since = None if self._shadow.empty() else time.perf_counter()
        return job

    def _shadow_ready(self) -> bool:
        """Shadow work runs in full batches (cheap per text), or once its oldest has waited."""
        if self._shadow is None or self._shadow.empty():
            return False
        if self._shadow_texts >= self.shadow_batch_size:
            return True
        since = self._shadow_since or time.perf_counter()
        return time.perf_counter() - since >= self.shadow_max_delay_s

    def _shadow_wait(self) -> float | None:
        if self._shadow is None or self._shadow.empty():
            return None
        since = self._shadow_since or time.perf_counter()
        return max(0.001, self.shadow_max_delay_s - (time.perf_counter() - since))

    def _run(self, texts: list[str], adapter_ids: list[str]) -> list[Prediction]:
        # The host sorts the batch by length and runs it in passes of forward_batch_size:
        # one padded pass over a mixed-length micro-batch wastes a third of the work.
        return self.host.predict(texts, adapter_ids, batch_size=self.forward_batch_size)
