"""The gate's health checks on the real registry, store and models: errors, latency, artifacts.

v1 (champion) and v2 (challenger) hold the same weights, so with a non-inferiority margin
the accuracy test says promote (60 ties are enough sequential evidence at a margin of 0.1,
not at 0.05); each test then breaks one thing about the challenger and
checks that the gate refuses it, and why.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lifecycle.config.settings import Settings
from lifecycle.config.spec import PromotionSpec, SpecialistSpec
from lifecycle.registry.models import CHALLENGER, CHAMPION, TAG, Registry
from tests.gateway_harness import SharedHost


class Env:
    def __init__(self, settings: Settings, spec: SpecialistSpec, registry: Registry, store: Any):
        self.settings, self.spec, self.registry, self.store = settings, spec, registry, store

    def gate(self, host: Any) -> Any:
        from lifecycle.steps import gate_challenger

        return gate_challenger(
            self.settings, self.spec, store=self.store, registry=self.registry, host=host
        )

    def rejected_because(self) -> str:
        return self.registry.get_version("tiny", 2).tags.get(f"{TAG}rejected", "")


@pytest.fixture
def env(tmp_path: Path, trained: Any, tiny_spec: SpecialistSpec) -> Iterator[Env]:
    from lifecycle.store import TrafficStore
    from lifecycle.synthetic.replay import record_shadow, record_traffic
    from lifecycle.synthetic.scenarios import generate_tickets

    spec = tiny_spec.model_copy(
        update={"promotion": PromotionSpec(min_samples=40, margin=0.1, alpha=0.05)}
    )
    settings = Settings(home=tmp_path / "home")
    registry = Registry(settings)
    registry.set_alias("tiny", CHAMPION, registry.log_training(spec, trained).version)
    registry.set_alias(
        "tiny", CHALLENGER, registry.log_training(spec, trained, parent_version=1).version
    )
    store = TrafficStore(settings.traffic_url)
    store.upgrade()
    host, adapter = trained.host, trained.adapter_id
    frame = generate_tickets(60, seed=21)
    served = record_traffic(
        store, host, adapter, specialist="tiny", model_version=1, frame=frame, label_share=1.0
    )
    record_shadow(
        store,
        host,
        adapter,
        specialist="tiny",
        model_version=2,
        request_ids=served.request_ids,
        texts=frame["text"].tolist(),
    )
    yield Env(settings, spec, registry, store)
    store.dispose()


def test_a_healthy_challenger_is_promoted_with_latency_and_errors_measured(
    env: Env, shared_host: Any
) -> None:
    outcome = env.gate(shared_host)
    assert outcome.action == "promoted", outcome.decision.reasons
    d = outcome.decision
    assert d.shadow_errors == 0
    assert d.champion_latency_ms > 0 and d.challenger_latency_ms > 0
    assert any(r.startswith("latency:") for r in d.reasons)
    assert env.registry.aliases("tiny")[CHAMPION] == 2
    # The timing adapters are gone again: the host is left as it was found.
    assert shared_host.adapter_ids == []


def test_a_challenger_whose_shadow_calls_fail_is_rejected(env: Env, shared_host: Any) -> None:
    from lifecycle.store import ShadowFailureRecord

    failures = [
        ShadowFailureRecord(
            request_id=f"failed-{i}", specialist="tiny", model_version=2, error="RuntimeError: x"
        )
        for i in range(5)
    ]
    env.store.write(failures)
    outcome = env.gate(shared_host)
    assert outcome.action == "rejected"
    assert outcome.decision.shadow_errors == 5
    assert "5 of 65 shadow calls failed" in env.rejected_because()
    assert CHALLENGER not in env.registry.aliases("tiny")


class SlowChallenger(SharedHost):
    """Fault injection: the challenger's forward pass runs three times (a fixed sleep is a
    smaller share of a pass on a busy machine, where the ratio it gives fell under the
    veto's 1.5; three passes give about 3x however busy the machine is)."""

    def predict(self, texts: Any, adapter_ids: Any, **kwargs: Any) -> Any:
        if any("@v2" in a for a in adapter_ids):
            for _ in range(2):
                super().predict(texts, adapter_ids, **kwargs)
        return super().predict(texts, adapter_ids, **kwargs)


def test_a_slower_challenger_is_vetoed(env: Env, host: Any) -> None:
    with SlowChallenger(host) as slow:
        outcome = env.gate(slow)
    assert outcome.action == "rejected"
    d = outcome.decision
    assert d.challenger_latency_ms > env.spec.promotion.max_latency_ratio * d.champion_latency_ms
    assert "latency" in env.rejected_because()
    assert env.registry.aliases("tiny")[CHAMPION] == 1


def test_a_challenger_with_a_corrupt_artifact_is_rejected(env: Env, shared_host: Any) -> None:
    from lifecycle.model.artifacts import ADAPTER_WEIGHTS

    _, folder = env.registry.download("tiny", 2)
    (folder / ADAPTER_WEIGHTS).write_bytes(b"\x00not safetensors at all")
    outcome = env.gate(shared_host)
    assert outcome.action == "rejected"
    assert "could not be loaded" in env.rejected_because()
    assert env.registry.aliases("tiny")[CHAMPION] == 1
    assert shared_host.adapter_ids == []


def test_with_auto_promote_off_a_passing_challenger_waits_for_a_person(
    env: Env, shared_host: Any
) -> None:
    env.spec = env.spec.model_copy(
        update={"promotion": env.spec.promotion.model_copy(update={"auto_promote": False})}
    )
    outcome = env.gate(shared_host)
    assert outcome.action == "ready" and outcome.decision.promote
    assert env.registry.aliases("tiny") == {CHAMPION: 1, CHALLENGER: 2}
