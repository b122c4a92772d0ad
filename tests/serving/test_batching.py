"""Picking a micro-batch of similar lengths out of what waits (pure; no model)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lifecycle.serving.batching import pick_similar


def test_everything_is_taken_when_it_fits() -> None:
    assert pick_similar([50, 10, 90], [1, 1, 1], limit=3) == [0, 1, 2]
    assert pick_similar([], [], limit=16) == []


def test_the_oldest_and_its_nearest_lengths_are_taken() -> None:
    lengths = [40, 10, 41, 90, 39, 12, 88, 42]
    picked = pick_similar(lengths, [1] * len(lengths), limit=4)
    assert picked == [0, 2, 4, 7]  # 40 with 41, 39, 42; not the short or long ones
    # a short oldest takes the other short ones
    assert pick_similar([11, 90, 10, 88, 12, 50], [1] * 6, limit=3) == [0, 2, 4]


def test_sizes_count_texts_and_a_big_oldest_job_goes_alone() -> None:
    assert pick_similar([30, 31, 29], [20, 1, 1], limit=16) == [0]
    assert pick_similar([30, 31, 80, 29], [2, 8, 1, 8], limit=16) == [0, 1, 3]


@given(
    st.lists(st.tuples(st.integers(1, 500), st.integers(1, 20)), min_size=1, max_size=60),
    st.integers(1, 64),
)
def test_properties(jobs: list[tuple[int, int]], limit: int) -> None:
    lengths = [float(length) for length, _ in jobs]
    sizes = [size for _, size in jobs]
    picked = pick_similar(lengths, sizes, limit)
    assert picked == sorted(set(picked))  # arrival order, no repeats
    assert 0 in picked  # the oldest is never passed over
    taken = sum(sizes[i] for i in picked)
    assert taken >= min(limit, sum(sizes))  # a full batch when there is one
    # it stops as soon as the batch is full: before the last job was added, it was not
    assert len(picked) == 1 or taken - max(sizes[i] for i in picked[1:]) < limit
    # the picked lengths are a contiguous run of the sorted lengths (no gaps to pad for)
    rest = [lengths[i] for i in range(len(jobs)) if i not in picked]
    lo, hi = min(lengths[i] for i in picked), max(lengths[i] for i in picked)
    assert not [x for x in rest if lo < x < hi]
