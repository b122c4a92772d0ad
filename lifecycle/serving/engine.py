"""The model side of the gateway: model workers, a micro-batcher, a routing table.

A model worker is one copy of the base model with every served adapter, and the one
thread that runs it: all its model work (forward passes, loading and unloading adapters)
happens there, so that peft's adapter state is never touched by two threads at once and
the event loop never waits on torch. On a CPU, two workers with one torch thread each
outrun one worker with two (no barrier between threads on every operation, and a busy
event loop or writer stalls one pass, not both). Requests are gathered into batches that
may mix specialists and adapters; shadow work rides in a bounded queue. With a shadow
worker (a copy of the base model for shadow work only) champions keep every other worker;
without one, a worker serves shadow work only when no champion work waits. Either way,
while a champion pass runs, a shadow pass waits between encoder layers (``priority``), so
that it takes no CPU from that answer.

Every shadow text the engine accepts ends one way, counted in ``shadow_stats``: scored,
failed, or discarded at a stop (queued or mid-pass when the drain time ran out). The
queue and those fates are ``shadow``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from lifecycle.model.artifacts import Prediction
from lifecycle.serving.batching import Job, take_similar
from lifecycle.serving.priority import ChampionFirst, lowest_cpu_priority
from lifecycle.serving.shadow import ShadowQueue, ShadowStats

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


# Fewest texts a worker takes for itself when more wait: splitting a smaller batch between
# workers costs more in per-pass overhead than the idle worker would gain.
MIN_SHARE = 16


class ModelEngine:
    """Runs predictions for the gateway; see the module docstring for the threading model."""

    def __init__(
        self,
        host: Any,
        *,
        replicas: Sequence[Any] = (),
        shadow_hosts: Sequence[Any] = (),
        max_batch_size: int = 32,
        max_wait_ms: float = 2.0,
        shadow_queue_size: int = 10_000,
        shadow_batch_size: int = 8,
        shadow_max_delay_s: float = 1.0,
        forward_batch_size: int = 64,
        piggyback_shadow: bool = False,
        shadow_drain_s: float = 5.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        #: The first worker's host: what is loaded is the same in every worker.
        self.host = host
        self.hosts = [host, *replicas, *shadow_hosts]
        #: Workers that answer champions (the shadow workers come after them in ``hosts``).
        self.workers = 1 + len(replicas)
        self.forward_batch_size = forward_batch_size
        self.piggyback_shadow = piggyback_shadow
        self._primary_texts = 0
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.routes: dict[str, Route] = {}
        self._executors = [
            ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"model{k}" if k < self.workers else f"shadow{k}",
                initializer=None if k < self.workers else lowest_cpu_priority,
            )
            for k in range(len(self.hosts))
        ]
        self._primary: asyncio.Queue[Job] | None = None
        self._shadows = ShadowQueue(
            size=shadow_queue_size,
            batch_size=shadow_batch_size,
            max_delay_s=shadow_max_delay_s,
            wake=self._wake,
        )
        #: Queue shadow work (``ShadowQueue.put``); run when no champion waits.
        self.shadow = self._shadows.put
        self._wakeup: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._on_batch = on_batch
        self.priority = ChampionFirst()
        self.shadow_drain_s = shadow_drain_s
        #: Per worker, the jobs of the pass it runs: a stop that cancels the pass must still
        #: account for their shadow work.
        self._running: dict[int, list[Job]] = {}

    @property
    def shadow_stats(self) -> ShadowStats:
        return self._shadows.stats

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        self._primary = asyncio.Queue()
        self._shadows.start()
        self._wakeup = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._loop(k), name=f"batcher{k}") for k in range(self.workers)
        ] + [
            asyncio.create_task(self._shadow_loop(k), name=f"shadow{k}")
            for k in range(self.workers, len(self.hosts))
        ]

    async def stop(self, *, drain_s: float | None = None) -> None:
        """Stop the workers, after running queued shadow work for at most ``drain_s``
        seconds (default ``shadow_drain_s``; 0 for none).

        Shadow work still unscored then (queued, or in a pass the stop cuts short) is
        discarded: counted in ``shadow_stats`` and told to its ``on_discard``, never lost
        silently. Champion work still queued fails with an error rather than hang.
        """
        wait = self.shadow_drain_s if drain_s is None else drain_s
        if self._tasks and wait > 0:
            assert self._wakeup is not None
            self._shadows.draining = True  # every worker helps, without waiting for batches
            self._wakeup.set()
            await self._shadows.drain(wait)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # No await from here on: shadow work arriving later is discarded as it comes.
        self._shadows.closed = True
        self._settle_leftovers()
        for executor in self._executors:
            executor.shutdown(wait=True, cancel_futures=True)

    def _settle_leftovers(self) -> None:
        left = [job for jobs in self._running.values() for job in jobs]
        self._running.clear()
        while self._primary is not None and not self._primary.empty():
            left.append(self._primary.get_nowait())
        for job in [*left, *self._shadows.take_all()]:
            if job.future is None:
                self._shadows.discard(job)
            elif not job.future.done():
                job.future.set_exception(RuntimeError("the model engine stopped"))

    async def run_on_model_thread(self, func: Callable[..., T], *args: Any, worker: int = 0) -> T:
        """Run ``func`` on a worker's model thread, between its batches."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executors[worker], func, *args)

    # -- adapters (every worker holds the same ones) ---------------------------------

    def has_adapter(self, adapter_id: str) -> bool:
        return adapter_id in self.host.adapter_ids

    def meta(self, adapter_id: str) -> Any:
        return self.host.meta(adapter_id)

    async def load_adapter(
        self, adapter_id: str, folder: Any, *, probe_texts: Sequence[str] | None = None
    ) -> Any:
        """Load an adapter into every worker (each on its own thread); its metadata.

        A worker that fails unloads it from the others again: all or none serve it.
        ``probe_texts`` are passed on (int8 agreement, ``AdapterHost.load_adapter``).
        """
        results = await asyncio.gather(
            *(
                self.run_on_model_thread(
                    functools.partial(h.load_adapter, probe_texts=probe_texts),
                    adapter_id,
                    folder,
                    worker=k,
                )
                for k, h in enumerate(self.hosts)
            ),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            for k, (h, r) in enumerate(zip(self.hosts, results, strict=True)):
                if not isinstance(r, BaseException):
                    await self.run_on_model_thread(h.remove_adapter, adapter_id, worker=k)
            raise failed[0]
        return results[0]

    @property
    def runtime(self) -> str:
        """What the champions' workers run in (``AdapterHost.runtime``; ``fp32`` for a host
        that does not say)."""
        return str(getattr(self.host, "runtime", "fp32"))

    async def remove_adapter(self, adapter_id: str) -> None:
        await asyncio.gather(
            *(
                self.run_on_model_thread(h.remove_adapter, adapter_id, worker=k)
                for k, h in enumerate(self.hosts)
                if adapter_id in h.adapter_ids
            )
        )

    # -- work -----------------------------------------------------------------------

    async def predict(self, texts: Sequence[str], adapter_ids: Sequence[str]) -> list[Prediction]:
        """Predictions for a request's texts, batched with whatever else is waiting.

        With several workers a request of more than one forward pass of texts is cut into
        one part per worker, so that a lone big request uses every worker rather than one.
        """
        assert self._primary is not None and self._wakeup is not None, "engine not started"
        loop = asyncio.get_running_loop()
        step = len(texts)
        if self.workers > 1 and len(texts) > MIN_SHARE:
            step = max(MIN_SHARE, math.ceil(len(texts) / self.workers))
        futures: list[asyncio.Future[list[Prediction]]] = []
        for start in range(0, len(texts), step):
            future: asyncio.Future[list[Prediction]] = loop.create_future()
            part = list(texts[start : start + step])
            self._primary.put_nowait(Job(part, list(adapter_ids[start : start + step]), future))
            self._primary_texts += len(part)
            futures.append(future)
        self._wakeup.set()
        if len(futures) == 1:
            return await futures[0]
        return [p for part in await asyncio.gather(*futures) for p in part]

    @property
    def queue_depths(self) -> dict[str, int]:
        return {
            "primary": self._primary.qsize() if self._primary else 0,
            "shadow": self._shadows.depth,
        }

    @property
    def shadow_workers(self) -> int:
        return len(self.hosts) - self.workers

    async def _shadow_loop(self, worker: int) -> None:
        """A shadow worker: shadow batches only, as soon as one is ready."""
        assert self._wakeup is not None
        while True:
            if not self._shadows.ready():
                self._wakeup.clear()
                wait = None if self._shadows.empty() else self._shadows.wait_s()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=wait)
                continue
            jobs = self._shadows.take_batch()
            self._running[worker] = jobs
            ran = await self._run_jobs(jobs, worker)
            if ran is not None:
                self._deliver(*ran)
            del self._running[worker]

    async def _loop(self, worker: int) -> None:
        assert self._primary is not None and self._wakeup is not None
        while True:
            if self._primary.empty() and not self._shadow_available():
                self._wakeup.clear()
                # A timeout means the oldest shadow work has waited long enough: run what there is.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wakeup.wait(),
                        timeout=None if self.shadow_workers else self._shadows.wait_s(),
                    )
            jobs = await self._gather(worker)
            if not jobs:
                self._running.pop(worker, None)
                continue
            shadow_only = all(job.future is None for job in jobs)
            if shadow_only:
                self._shadows.busy = True
            self._running[worker] = jobs
            try:
                ran = await self._run_jobs(jobs, worker)
            finally:
                if shadow_only:
                    self._shadows.busy = False
                    self._wakeup.set()  # the shadow work left is free for any worker now
            if ran is not None:
                self._deliver(*ran)
            del self._running[worker]

    def _deliver(self, jobs: list[Job], predictions: list[Prediction]) -> None:
        offset = 0
        for job in jobs:
            part = predictions[offset : offset + len(job.texts)]
            offset += len(job.texts)
            if job.future is not None:
                if not job.future.done():
                    job.future.set_result(part)
            else:
                self._shadows.scored(job, part)

    async def _run_jobs(
        self, jobs: list[Job], worker: int
    ) -> tuple[list[Job], list[Prediction]] | None:
        """Run one batch; on failure, tell every job, and answer the champions without shadow.

        A batch that mixes shadow and champion work (piggybacking) and fails is run again
        with the champion jobs only: a broken challenger must never cost a client an answer.
        """
        texts = [t for job in jobs for t in job.texts]
        ids = [a for job in jobs for a in job.adapter_ids]
        started = time.perf_counter()
        try:
            shadow_only = all(job.future is None for job in jobs)
            predictions = await self.run_on_model_thread(
                self._run, texts, ids, worker, shadow_only, worker=worker
            )
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
                self._shadows.failed(job, exc)
            if shadows and champions:
                return await self._run_jobs(champions, worker)
            for job in champions:
                assert job.future is not None
                if not job.future.done():
                    job.future.set_exception(exc)
            return None
        if self._on_batch is not None:
            self._on_batch(len(texts), time.perf_counter() - started)
        return jobs, predictions

    async def _gather(self, worker: int) -> list[Job]:
        """Champion jobs up to the batch size, waiting at most max_wait for more; when more
        waits than that, the oldest job and those nearest it in text length.

        Shadow jobs fill a batch only when no champion job is waiting.
        """
        assert self._primary is not None
        jobs: list[Job] = []
        # Jobs taken off the queue are the worker's before any await: a stop that cancels
        # the wait for more finds them there and fails them (``_settle_leftovers``), where a
        # local list would leave their clients waiting forever.
        self._running[worker] = jobs
        size = 0
        deadline = time.perf_counter() + self.max_wait_s
        # With several workers, one takes its share of what waits, so that the others get
        # work too (taking it all would leave them idle until its answers bring new requests).
        limit = self.max_batch_size
        if self.workers > 1:
            share = math.ceil(self._primary_texts / self.workers)
            limit = min(limit, max(MIN_SHARE, share))
        if self._primary_texts > limit:
            jobs.extend(take_similar(self._primary, limit))
            size = sum(len(job.texts) for job in jobs)
            self._primary_texts -= size
        while size < limit:
            if not self._primary.empty():
                job = self._primary.get_nowait()
            elif jobs and time.perf_counter() < deadline and self.max_wait_s > 0:
                try:
                    job = await asyncio.wait_for(
                        self._primary.get(), timeout=max(0.0, deadline - time.perf_counter())
                    )
                except TimeoutError:
                    break
            elif not jobs and self._shadow_available():
                # A full (or old) shadow batch, never waiting: champions may come any moment.
                return self._shadows.take_batch()
            else:
                break
            jobs.append(job)
            size += len(job.texts)
            self._primary_texts -= len(job.texts)
        if (
            self.piggyback_shadow
            and not self.shadow_workers
            and jobs
            and jobs[0].future is not None
        ):
            # Shadow work of requests already answered rides along in a small champion batch:
            # on a CPU a few more rows cost little, a batch of its own would block the model.
            room = min(self._shadows.batch_size, self.forward_batch_size - size)
            while room > 0 and not self._shadows.empty():
                job = self._shadows.take()
                jobs.append(job)
                room -= len(job.texts)
        return jobs

    def _shadow_available(self) -> bool:
        """Shadow work ready for a champion worker: none when shadow workers take it all,
        and with several workers one always stays free for champions."""
        if self._shadows.draining:
            return self._shadows.ready()  # no champion comes any more: every worker helps
        if self.shadow_workers:
            return False
        return not (self._shadows.busy and self.workers > 1) and self._shadows.ready()

    def _run(
        self, texts: list[str], adapter_ids: list[str], worker: int, shadow_only: bool
    ) -> list[Prediction]:
        # The host sorts the batch by length and runs it in passes of forward_batch_size,
        # packed on a CPU: one padded pass over a mixed-length micro-batch wastes a third
        # of the work or more.
        host = self.hosts[worker]
        if shadow_only:
            return host.predict(
                texts, adapter_ids, batch_size=self.forward_batch_size, pause=self.priority.pause
            )
        with self.priority.champion():
            return host.predict(texts, adapter_ids, batch_size=self.forward_batch_size)
