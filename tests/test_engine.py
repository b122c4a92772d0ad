"""The model engine with two model workers (two copies of the real base model)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lifecycle.serving.engine import ModelEngine

from .gateway_harness import SharedHost

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


async def _until(done: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait for shadow work the engine runs in the background (the caller asserts after)."""
    for _ in range(int(seconds / 0.05)):
        if done():
            return
        await asyncio.sleep(0.05)


class BrokenLoad(SharedHost):
    def load_adapter(self, adapter_id: str, folder: Any) -> Any:
        raise RuntimeError("disk full")


@pytest.fixture(scope="module")
def second_base() -> Any:
    from lifecycle.model import AdapterHost

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
                await _until(lambda: bool(finished))
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
                await _until(lambda: sum(shadowed) == 64)
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
                await _until(lambda: sum(shadowed) == 30)
            finally:
                await engine.stop()
        return [[p.label for p in answer] for answer in answers]

    answers = asyncio.run(scenario())
    assert all(labels == expected for labels in answers)
    assert sum(shadowed) == 30
    assert counts == {"champion": 40, "shadow": 30}  # each worker did only its own kind
