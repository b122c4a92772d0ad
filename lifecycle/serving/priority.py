"""Champion passes before shadow passes, across model workers.

With several model workers on a CPU, a shadow pass on one worker and a champion pass on
another share the cores with the event loop and the traffic writer: the champion's answer
slows down by the shadow's share. A shadow pass therefore waits between encoder layers for
as long as any champion pass runs, so that it only uses CPU time champions leave idle.
The wait is bounded per layer, so that shadow work still moves (slowly) under a load that
never pauses; what it cannot keep up with overflows the bounded shadow queue, counted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class ChampionFirst:
    """Counts champion passes in flight; ``pause`` blocks a shadow pass while there are any."""

    def __init__(self, max_pause_s: float = 0.05) -> None:
        self.max_pause_s = max_pause_s
        self._running = 0
        self._idle = threading.Condition()
        #: Pauses that found a champion pass running (for tests and metrics).
        self.pauses = 0

    @contextmanager
    def champion(self) -> Iterator[None]:
        with self._idle:
            self._running += 1
        try:
            yield
        finally:
            with self._idle:
                self._running -= 1
                if self._running == 0:
                    self._idle.notify_all()

    def pause(self) -> None:
        with self._idle:
            if self._running:
                self.pauses += 1
                self._idle.wait_for(lambda: self._running == 0, timeout=self.max_pause_s)

    @property
    def running(self) -> int:
        return self._running


def lowest_cpu_priority() -> None:
    """A shadow worker's thread yields every core to champions, the event loop and the
    writer: its tokenising and post-processing too, which the layer pauses do not cover."""
    import os

    with suppress(AttributeError, OSError):  # not Linux, or not allowed
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
