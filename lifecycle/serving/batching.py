"""Which waiting requests go into the next micro-batch.

On a CPU a forward pass costs about as much per row as its longest row: a batch of random
lengths pays for padding. When more texts wait than one batch takes, the batch is the
oldest request and those closest to it in length, so that the padding shrinks while no
request can be passed over for long (the oldest is always taken).
"""

from __future__ import annotations

from collections.abc import Sequence


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
