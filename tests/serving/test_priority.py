"""Champion passes first: a shadow pass waits between layers while a champion pass runs."""

from __future__ import annotations

import threading
import time

from lifecycle.serving.priority import ChampionFirst


def test_pause_returns_at_once_with_no_champion_running() -> None:
    gate = ChampionFirst(max_pause_s=5.0)
    started = time.perf_counter()
    for _ in range(100):
        gate.pause()
    assert time.perf_counter() - started < 1.0
    assert gate.pauses == 0 and gate.running == 0


def test_pause_waits_until_the_last_champion_pass_ends() -> None:
    gate = ChampionFirst(max_pause_s=10.0)
    resumed = threading.Event()

    def shadow() -> None:
        gate.pause()
        resumed.set()

    with gate.champion():
        with gate.champion():
            thread = threading.Thread(target=shadow)
            thread.start()
            assert not resumed.wait(0.2)  # two champion passes running
        assert gate.running == 1
        assert not resumed.wait(0.2)  # still one
    assert resumed.wait(5.0)  # the last one ended: the shadow goes on
    thread.join()
    assert gate.pauses == 1 and gate.running == 0


def test_pause_is_bounded_so_shadow_moves_under_endless_champion_load() -> None:
    gate = ChampionFirst(max_pause_s=0.05)
    with gate.champion():
        started = time.perf_counter()
        gate.pause()
        waited = time.perf_counter() - started
    assert 0.04 <= waited < 2.0
    assert gate.pauses == 1


def test_a_champion_pass_that_raises_still_releases_the_shadow() -> None:
    gate = ChampionFirst(max_pause_s=10.0)
    try:
        with gate.champion():
            raise ValueError("batch failed")
    except ValueError:
        pass
    assert gate.running == 0
    started = time.perf_counter()
    gate.pause()
    assert time.perf_counter() - started < 1.0
