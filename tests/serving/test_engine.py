"""The model engine with two model workers (two copies of the real base model)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lifecycle.serving.engine import ModelEngine
from tests.gateway_harness import SharedHost
from tests.waits import until

TEXTS = [
    "I lost my card at the station",
    "refund my last order please",
    "the app keeps crashing when I log in",
    "how do I change my address",
]


class Counting(SharedHost):
    """The host as the engine sees it, counting the texts each worker ran."""

    def __init__(self, host: Any, counts: Counter[str], name: str) -> None:
        super().__init__(host)
        self.counts, self.name = counts, name

    def predict(self, texts: Any, adapter_ids: Any, **kwargs: Any) -> Any:
        self.counts[self.name] += len(texts)
        return super().predict(texts, adapter_ids, **kwargs)


class BrokenLoad(SharedHost):
    def load_adapter(self, adapter_id: str, folder: Any, *, probe_texts: Any = None) -> Any:
        raise RuntimeError("disk full")


@pytest.fixture(scope="module")
def second_base() -> Any:
    from lifecycle.model.host import AdapterHost

    return AdapterHost("minilm", device="cpu")


@pytest.fixture(scope="module")
def folder(trained: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(trained.host.save_adapter(trained.adapter_id, tmp_path_factory.mktemp("a") / "a"))


def test_two_workers_share_the_load_and_answer_alike(
    host: Any, second_base: Any, folder: Path, trained: Any
) -> None:
    counts: Counter[str] = Counter()
    expected = [p.label for p in trained.host.predict(TEXTS, trained.adapter_id)]

    async def scenario() -> list[list[str]]:
        with Counting(host, counts, "a") as a, Counting(second_base, counts, "b") as b:
            engine = ModelEngine(a, replicas=[b], max_batch_size=8, max_wait_ms=5)
            await engine.start()
            try:
                meta = await engine.load_adapter("tiny@v1", folder)
                assert engine.workers == 2 and engine.has_adapter("tiny@v1")
                assert a.adapter_ids == b.adapter_ids == ["tiny@v1"]
                assert engine.meta("tiny@v1").labels == meta.labels
                answers = await asyncio.gather(
                    *(engine.predict(TEXTS, ["tiny@v1"] * len(TEXTS)) for _ in range(40))
                )
                await engine.remove_adapter("tiny@v1")
                assert a.adapter_ids == b.adapter_ids == []
            finally:
                await engine.stop()
        return [[p.label for p in answer] for answer in answers]

    answers = asyncio.run(scenario())
    assert all(labels == expected for labels in answers)
    assert counts["a"] + counts["b"] == 40 * len(TEXTS)
    assert counts["a"] > 0 and counts["b"] > 0, counts  # both workers answered


def test_an_adapter_that_fails_to_load_in_one_worker_is_in_none(
    host: Any, second_base: Any, folder: Path
) -> None:
    async def scenario() -> None:
        with SharedHost(host) as a, BrokenLoad(second_base) as b:
            engine = ModelEngine(a, replicas=[b])
            await engine.start()
            try:
                with pytest.raises(RuntimeError, match="disk full"):
                    await engine.load_adapter("tiny@v1", folder)
                assert not engine.has_adapter("tiny@v1") and a.adapter_ids == []
            finally:
                await engine.stop()

    asyncio.run(scenario())


class HangingShadow(SharedHost):
    """Fault injection: a forward pass that includes the challenger (v2) hangs until released."""

    def __init__(self, host: Any, hung: Any, release: Any) -> None:
        super().__init__(host)
        self.hung, self.release = hung, release

    def predict(self, texts: Any, adapter_ids: Any, **kwargs: Any) -> Any:
        if any(a.endswith("tiny@v2") for a in adapter_ids):
            self.hung.set()
            assert self.release.wait(timeout=120), "never released"
        return super().predict(texts, adapter_ids, **kwargs)


def test_a_hanging_shadow_holds_up_no_answer(host: Any, second_base: Any, folder: Path) -> None:
    """One worker stuck in a challenger's forward pass: the other answers every request."""
    hung, release = threading.Event(), threading.Event()
    finished: list[int] = []

    async def scenario() -> tuple[int, bool]:
        with (
            HangingShadow(host, hung, release) as a,
            HangingShadow(second_base, hung, release) as b,
        ):
            engine = ModelEngine(a, replicas=[b], shadow_batch_size=2, shadow_max_delay_s=0.01)
            await engine.start()
            try:
                await engine.load_adapter("tiny@v1", folder)
                await engine.load_adapter("tiny@v2", folder)
                assert engine.shadow(TEXTS[:2], "tiny@v2", lambda o, p: finished.append(len(p)))
                await asyncio.to_thread(hung.wait, 30)
                assert hung.is_set(), "the shadow batch never started"
                answers = await asyncio.gather(
                    *(engine.predict(TEXTS, ["tiny@v1"] * len(TEXTS)) for _ in range(30))
                )
                still_hung = not release.is_set() and not finished
                release.set()
                await until(lambda: bool(finished))
            finally:
                release.set()
                await engine.stop()
        return sum(len(a) for a in answers), still_hung

    answered, still_hung = asyncio.run(scenario())
    assert answered == 30 * len(TEXTS)
    assert still_hung  # every answer came while the shadow was stuck
    assert finished == [2]  # and the shadow work completed once released


def test_shadow_passes_wait_between_layers_while_champions_run(
    host: Any, second_base: Any, folder: Path, trained: Any
) -> None:
    """Two workers: one on shadow work, one answering. The shadow yields the CPU at layer
    boundaries whenever a champion pass runs, and still completes."""
    expected = [p.label for p in trained.host.predict(TEXTS, trained.adapter_id)]
    shadowed: list[int] = []

    async def scenario() -> tuple[list[list[str]], int]:
        with SharedHost(host) as a, SharedHost(second_base) as b:
            engine = ModelEngine(a, replicas=[b], shadow_batch_size=8, shadow_max_delay_s=0.01)
            await engine.start()
            try:
                await engine.load_adapter("tiny@v1", folder)
                await engine.load_adapter("tiny@v2", folder)
                assert engine.shadow(TEXTS * 16, "tiny@v2", lambda o, p: shadowed.append(len(p)))
                answers = []
                while sum(shadowed) < 64 and len(answers) < 2000:
                    answers.append(await engine.predict(TEXTS, ["tiny@v1"] * len(TEXTS)))
                await until(lambda: sum(shadowed) == 64)
            finally:
                await engine.stop()
        return [[p.label for p in answer] for answer in answers], engine.priority.pauses

    answers, pauses = asyncio.run(scenario())
    assert answers and all(labels == expected for labels in answers)
    assert sum(shadowed) == 64  # every shadow text scored
    assert pauses > 0  # and the shadow passes gave way to champion passes


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_a_shadow_worker_takes_all_shadow_work_and_no_champion_work(
    host: Any, second_base: Any, folder: Path, trained: Any
) -> None:
    counts: Counter[str] = Counter()
    expected = [p.label for p in trained.host.predict(TEXTS, trained.adapter_id)]
    shadowed: list[int] = []

    async def scenario() -> list[list[str]]:
        with Counting(host, counts, "champion") as a, Counting(second_base, counts, "shadow") as b:
            engine = ModelEngine(a, shadow_hosts=[b], shadow_batch_size=4, shadow_max_delay_s=0.01)
            assert engine.workers == 1 and engine.shadow_workers == 1
            await engine.start()
            try:
                await engine.load_adapter("tiny@v1", folder)
                await engine.load_adapter("tiny@v2", folder)
                assert a.adapter_ids == b.adapter_ids == ["tiny@v1", "tiny@v2"]
                # the shadow worker's thread runs at the lowest CPU priority, champions' not
                base = os.getpriority(os.PRIO_PROCESS, 0)
                assert await engine.run_on_model_thread(_nice, worker=0) == base
                assert await engine.run_on_model_thread(_nice, worker=1) == 19
                answers = []
                for _ in range(10):
                    answers.append(await engine.predict(TEXTS, ["tiny@v1"] * len(TEXTS)))
                    engine.shadow(TEXTS[:3], "tiny@v2", lambda o, p: shadowed.append(len(p)))
                await until(lambda: sum(shadowed) == 30)
            finally:
                await engine.stop()
        return [[p.label for p in answer] for answer in answers]

    answers = asyncio.run(scenario())
    assert all(labels == expected for labels in answers)
    assert sum(shadowed) == 30
    assert counts == {"champion": 40, "shadow": 30}  # each worker did only its own kind


# -- a graceful stop accounts for every shadow text -------------------------------------


class FakeHost:
    """No model: each pass takes ``seconds``; a pass of ``hang_on`` blocks until ``release``."""

    def __init__(
        self, seconds: float = 0.0, hang_on: threading.Event | None = None, fail: str = ""
    ) -> None:
        self.seconds, self.passes, self.fail = seconds, 0, fail
        self.hang_on, self.release = hang_on, threading.Event()

    def predict(self, texts: Any, adapter_ids: Any, **kwargs: Any) -> Any:
        from lifecycle.model.artifacts import Prediction

        self.passes += 1
        if self.hang_on is not None and not self.hang_on.is_set():
            self.hang_on.set()
            assert self.release.wait(timeout=60), "never released"
        time.sleep(self.seconds)
        if self.fail in texts:
            raise RuntimeError("challenger broke")
        return [Prediction(label="x", confidence=1.0, embedding=None) for _ in texts]


class Ledger:
    """Every shadow text's fate, by its offset: each must end up in exactly one list."""

    def __init__(self) -> None:
        self.scored: list[int] = []
        self.failed: list[int] = []
        self.discarded: list[int] = []

    def done(self, offset: int, predictions: list[Any]) -> None:
        self.scored.extend(range(offset, offset + len(predictions)))

    def error(self, offset: int, count: int, exc: BaseException) -> None:
        self.failed.extend(range(offset, offset + count))

    def discard(self, offset: int, count: int) -> None:
        self.discarded.extend(range(offset, offset + count))

    def shadow(self, engine: ModelEngine, texts: list[str]) -> bool:
        return engine.shadow(texts, "challenger", self.done, self.error, self.discard)

    def assert_each_text_once(self, count: int) -> None:
        fates = self.scored + self.failed + self.discarded
        assert sorted(fates) == list(range(count)), "a shadow text lost or counted twice"


def test_a_graceful_stop_runs_the_shadow_work_still_queued() -> None:
    """Work waiting for a fuller batch (or behind others) is scored before the stop ends."""
    host = FakeHost()
    ledger = Ledger()
    texts = [f"text {i}" for i in range(10)]

    async def scenario() -> ModelEngine:
        # Batches of 4 that wait a minute to fill: 2 texts would never run without the drain.
        engine = ModelEngine(host, shadow_batch_size=4, shadow_max_delay_s=60, shadow_drain_s=30)
        await engine.start()
        assert ledger.shadow(engine, texts)
        await engine.stop()
        return engine

    engine = asyncio.run(scenario())
    assert sorted(ledger.scored) == list(range(10)) and not ledger.discarded
    stats = engine.shadow_stats
    assert (stats.queued, stats.scored, stats.discarded, stats.pending) == (10, 10, 0, 0)


def test_shadow_work_a_stop_cannot_wait_for_is_discarded_and_counted() -> None:
    """A drain too short for the queue: what ran is scored or failed, the rest (the pass the
    stop cut short included) discarded and counted; nothing is unaccounted for."""
    hung = threading.Event()
    host = FakeHost(seconds=0.05, fail="text 3")
    ledger, late = Ledger(), Ledger()
    texts = [f"text {i}" for i in range(400)]

    async def scenario() -> ModelEngine:
        engine = ModelEngine(host, shadow_batch_size=2, shadow_max_delay_s=0.01)
        await engine.start()
        assert ledger.shadow(engine, texts)
        await until(lambda: len(ledger.scored) >= 6)
        host.hang_on = hung  # the next pass hangs: a stop has to cut it short
        await asyncio.to_thread(hung.wait, 30)
        releaser = threading.Timer(0.5, host.release.set)  # once the stop gave up on it
        releaser.start()
        await engine.stop(drain_s=0.2)
        releaser.join()
        # After the stop, shadow work is discarded as it comes, and counted too.
        assert late.shadow(engine, ["late one", "late two"])
        return engine

    engine = asyncio.run(scenario())
    ledger.assert_each_text_once(len(texts))
    assert ledger.scored and ledger.discarded
    assert ledger.failed == [2, 3]  # the failing pass is stored as failed, not lost
    stats = engine.shadow_stats
    assert stats.scored == len(ledger.scored) and stats.failed == 2
    assert late.discarded == [0, 1] and not late.scored
    assert stats.discarded == len(ledger.discarded) + 2
    assert stats.queued == len(texts) + 2 and stats.pending == 0


def test_a_stop_fails_champion_work_still_queued_rather_than_hang() -> None:
    hung = threading.Event()
    host = FakeHost(hang_on=hung)

    async def scenario() -> None:
        engine = ModelEngine(host, max_wait_ms=0)
        await engine.start()
        first = asyncio.ensure_future(engine.predict(["a"], ["champion"]))
        await asyncio.to_thread(hung.wait, 30)
        second = asyncio.ensure_future(engine.predict(["b"], ["champion"]))
        await until(lambda: engine.queue_depths["primary"] == 1, what="the second job queued")
        threading.Timer(0.3, host.release.set).start()
        await engine.stop(drain_s=0)
        for waiting in (first, second):
            with pytest.raises(RuntimeError, match="engine stopped"):
                await asyncio.wait_for(waiting, timeout=5)

    asyncio.run(scenario())


def test_a_stop_while_a_batch_waits_to_fill_fails_its_jobs_rather_than_lose_them() -> None:
    """The worker has taken a job off the queue and waits up to max_wait for more: a stop
    cancels that wait, and the job must still be answered (with an error), not dropped."""
    host = FakeHost()

    async def scenario() -> None:
        engine = ModelEngine(host, max_wait_ms=60_000, max_batch_size=8)
        await engine.start()
        waiting = asyncio.ensure_future(engine.predict(["a"], ["champion"]))
        # Taken off the queue: the worker ran on to its next await, the wait for more jobs.
        await until(lambda: engine.queue_depths["primary"] == 0)
        await engine.stop(drain_s=0)
        with pytest.raises(RuntimeError, match="engine stopped"):
            await asyncio.wait_for(waiting, timeout=5)

    asyncio.run(scenario())


# -- mixed-adapter passes: two different specialists in one micro-batch -------------------


@pytest.fixture(scope="module")
def two_specialists(host: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two specialists that differ in every part: LoRA rank, target modules and weights
    (seeded noise, as fresh LoRA B is zero), head and label set."""
    import torch

    from lifecycle.config.spec import LoraSpec

    folders = {}
    shapes = {
        "sa": (LoraSpec(), ["x", "y", "z"], 1),
        "sb": (LoraSpec(r=4, alpha=8, target_modules=("query", "key", "dense")), ["p", "q"], 2),
    }
    for name, (lora, labels, seed) in shapes.items():
        adapter_id = f"mix-{name}"
        host.new_adapter(adapter_id, name=name, labels=labels, lora=lora, max_length=64, seed=seed)
        try:
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for _, param in host.lora_parameters(adapter_id):
                    noise = torch.randn(param.shape, generator=generator) * 0.05
                    param.add_(noise)
            folders[name] = Path(
                host.save_adapter(adapter_id, tmp_path_factory.mktemp(name) / name)
            )
        finally:
            host.remove_adapter(adapter_id)
    return folders


def test_two_different_specialists_in_one_micro_batch_answer_as_each_alone(
    host: Any, two_specialists: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import lifecycle.model.forward as model

    mixed_passes: list[int] = []
    token_plan = model.token_plan

    def counting_plan(*args: Any, **kwargs: Any) -> Any:
        mixed_passes.append(1)
        return token_plan(*args, **kwargs)

    monkeypatch.setattr(model, "token_plan", counting_plan)
    batches: list[set[str]] = []

    class Recording(SharedHost):
        def predict(self, texts: Any, adapter_ids: Any, **kwargs: Any) -> Any:
            batches.append(set(adapter_ids))
            return super().predict(texts, adapter_ids, **kwargs)

    texts = TEXTS * 3

    async def scenario() -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        with Recording(host) as a:
            engine = ModelEngine(a, max_wait_ms=200, max_batch_size=64)
            await engine.start()
            try:
                for name, folder in two_specialists.items():
                    await engine.load_adapter(name, folder)
                assert mixed_passes  # each load probed the mixed path
                mixed_passes.clear()
                alone = {n: await engine.predict(texts, [n] * len(texts)) for n in two_specialists}
                assert all(len(b) == 1 for b in batches) and not mixed_passes
                together = await asyncio.gather(
                    *(engine.predict(texts, [n] * len(texts)) for n in two_specialists)
                )
            finally:
                await engine.stop()
        return alone, dict(zip(two_specialists, together, strict=True))

    assert host.packing and host.mixing  # the load-time probes passed
    alone, together = asyncio.run(scenario())
    assert batches[-1] == {"sa", "sb"} and mixed_passes  # one micro-batch, rows mixed by token
    for name in two_specialists:
        for a, b in zip(alone[name], together[name], strict=True):
            assert a.label == b.label
            np.testing.assert_allclose(b.probabilities, a.probabilities, atol=1e-4)
            np.testing.assert_allclose(b.embedding, a.embedding, atol=1e-5)
    # and the two really are different specialists: other label sets, other answers
    assert {p.label for p in alone["sa"]} <= {"x", "y", "z"}
    assert {p.label for p in alone["sb"]} <= {"p", "q"}
