"""Side-by-side model time of two adapters on the same texts, for the promotion gate.

The gateway's own latencies cannot compare a champion with its challenger: shadow work
waits for idle turns and runs in other batch sizes, so its end-to-end time says more about
the queue than about the model. Here both adapters run on the same base, on the same
texts, in the same batches, alternating (the order flips every round, so a warming cache
or a noisy neighbour does not favour one side), and each side's median time per batch is
kept. A challenger with a bigger rank or more target modules shows up as slower; two
adapters of the same shape come out within noise of each other.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: Batch shapes timed: a lone request (what a quiet gateway serves) and a full forward pass
#: (what a busy one serves).
BATCH_SIZES: tuple[int, ...] = (1, 16)


@dataclass(frozen=True, slots=True)
class LatencyComparison:
    """Median model time per batch (ms) at each batch size, and the summary the gate uses.

    ``champion_ms`` and ``challenger_ms`` are the medians at the batch size where the
    challenger is relatively slowest, so the gate sees the worst case of the two shapes.
    """

    texts: int
    by_batch: dict[int, tuple[float, float]]
    champion_ms: float
    challenger_ms: float

    @property
    def ratio(self) -> float:
        return self.challenger_ms / self.champion_ms if self.champion_ms > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["by_batch"] = {str(k): list(v) for k, v in self.by_batch.items()}
        data["ratio"] = self.ratio
        return data


def compare_latency(
    host: Any,
    texts: Sequence[str],
    champion_id: str,
    challenger_id: str,
    *,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    rounds: int = 3,
    max_batches: int = 16,
) -> LatencyComparison:
    """Time ``host.predict`` for both adapters on the same batches of ``texts``.

    Each batch size takes up to ``max_batches`` consecutive batches of the texts, each run
    ``rounds`` times per adapter after one untimed warm-up. Raises what the adapters raise:
    a challenger that cannot answer is the caller's verdict to give.
    """
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError("no texts to time the models on")
    for adapter in (champion_id, challenger_id):
        warm = texts[: max(batch_sizes)]
        host.predict(warm, [adapter] * len(warm), batch_size=max(batch_sizes))
    by_batch: dict[int, tuple[float, float]] = {}
    for size in batch_sizes:
        batches = [texts[i : i + size] for i in range(0, len(texts), size)][:max_batches]
        times: dict[str, list[float]] = {champion_id: [], challenger_id: []}
        for r in range(rounds):
            order = (champion_id, challenger_id) if r % 2 == 0 else (challenger_id, champion_id)
            for batch in batches:
                for adapter in order:
                    started = time.perf_counter()
                    host.predict(batch, [adapter] * len(batch), batch_size=size)
                    times[adapter].append((time.perf_counter() - started) * 1000.0)
        by_batch[size] = (
            statistics.median(times[champion_id]),
            statistics.median(times[challenger_id]),
        )
    worst = max(by_batch, key=lambda s: by_batch[s][1] / max(by_batch[s][0], 1e-9))
    champion_ms, challenger_ms = by_batch[worst]
    return LatencyComparison(
        texts=len(texts),
        by_batch=by_batch,
        champion_ms=champion_ms,
        challenger_ms=challenger_ms,
    )
