"""Which waiting requests go into the next micro-batch.

On a CPU a forward pass costs about as much per row as its longest row: a batch of random
lengths pays for padding. When more texts wait than one batch takes, the batch is the
oldest request and those closest to it in length, so that the padding shrinks while no
request can be passed over for long (the oldest is always taken). A ``Job`` is what waits:
a champion's texts, or a chunk of shadow work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lifecycle.model.artifacts import Prediction


@dataclass
class Job:
    """Texts for one pass: a champion's (``future`` set) or a chunk of shadow work."""

    texts: list[str]
    adapter_ids: list[str]
    future: asyncio.Future[list[Prediction]] | None
    on_done: Callable[[list[Prediction]], None] | None = None  # shadow: bound to an offset
    on_error: Callable[[BaseException], None] | None = None  # shadow: bound to an offset
    on_discard: Callable[[], None] | None = None  # shadow: bound to an offset and size
    enqueued: float = field(default_factory=time.perf_counter)
    #: A shadow job's fate (scored, failed or discarded) was told: it is never told twice.
    settled: bool = False


def pick_similar(lengths: Sequence[float], sizes: Sequence[int], limit: int) -> list[int]:
    """Indices (in arrival order) of the jobs to take: the first job, then the jobs nearest
    to it in length, until ``limit`` texts are taken (the last one may overshoot it).

    ``lengths[i]`` is job i's typical text length, ``sizes[i]`` its number of texts; job 0
    is the oldest.
    """
    if not lengths:
        return []
    if sum(sizes) <= limit:
        return list(range(len(lengths)))
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    at = order.index(0)
    lo, hi = at, at + 1  # order[lo:hi] is taken
    taken = sizes[0]
    anchor = lengths[0]
    while taken < limit and (lo > 0 or hi < len(order)):
        left = order[lo - 1] if lo > 0 else None
        right = order[hi] if hi < len(order) else None
        if right is None or (
            left is not None and anchor - lengths[left] <= lengths[right] - anchor
        ):
            assert left is not None
            lo -= 1
            taken += sizes[left]
        else:
            hi += 1
            taken += sizes[right]
    return sorted(order[lo:hi])


def take_similar(queue: asyncio.Queue[Job], limit: int) -> list[Job]:
    """More waits in ``queue`` than one batch takes: the oldest job and those nearest it in
    length (``pick_similar``); the rest goes back in arrival order."""
    waiting = [queue.get_nowait() for _ in range(queue.qsize())]
    chosen = pick_similar(
        [sum(map(len, job.texts)) / max(1, len(job.texts)) for job in waiting],
        [len(job.texts) for job in waiting],
        limit,
    )
    taken = set(chosen)
    for k, job in enumerate(waiting):
        if k not in taken:
            queue.put_nowait(job)
    return [waiting[k] for k in chosen]
