"""Int8 linear layers (LIFECYCLE_QUANTIZE): the switch, the agreement rule, the host, the gateway
and the monitors' reference scored the way the gateway serves.

Real MiniLM, the real tiny specialist trained for the session, a real registry and gateway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lifecycle.config.errors import ConfigError
from lifecycle.config.settings import Settings, load_settings
from lifecycle.config.spec import SpecialistsFile, SpecialistSpec
from lifecycle.model.int8 import Int8Linears, agreement, int8_wanted
from tests.conftest import TINY
from tests.gateway_harness import gateway_settings, running_gateway

TEXTS = [
    "I lost my card at the station",
    "how do I reset my password",
    "my package never arrived and I want a refund",
    "what time do you open on sundays",
    "ok",
]


@pytest.fixture(scope="module")
def saved(trained: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny specialist as an artifact folder, to load into hosts of this module."""
    return Path(trained.host.save_adapter(trained.adapter_id, tmp_path_factory.mktemp("tiny")))


def _pooled(encoder: Any, tokenizer: Any) -> Any:
    import torch

    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)


def test_the_switch_changes_the_pass_a_little_and_back_exactly() -> None:
    import torch

    from lifecycle.model.base import load_base

    base = load_base("minilm", device="cpu")
    int8 = Int8Linears(base.encoder)
    assert len(int8) == 36, "6 layers x (query, key, value, attention out, FFN in, FFN out)"
    exact = _pooled(base.encoder, base.tokenizer)
    int8.on = True
    quick = _pooled(base.encoder, base.tokenizer)
    with int8.suspended():
        inside = _pooled(base.encoder, base.tokenizer)
    assert int8.on, "suspended() restores the state it found"
    int8.on = False
    again = _pooled(base.encoder, base.tokenizer)
    assert torch.equal(exact, again), "switched off, the float pass is bit for bit the same"
    assert torch.equal(exact, inside)
    assert not torch.allclose(exact, quick, atol=1e-4), "int8 is a different pass"
    cosine = torch.nn.functional.cosine_similarity(exact, quick)
    assert float(cosine.min()) > 0.9, cosine
    # The layers keep their type and float weights: peft still wraps plain linear layers.
    assert all(type(m) is torch.nn.Linear for m, _ in int8._twins)


def test_agreement_and_the_rule_that_decides_int8() -> None:
    assert agreement([], []) == 1.0
    assert agreement(["a", "b", "c", "d"], ["a", "b", "c", "x"]) == 0.75
    with pytest.raises(ValueError):
        agreement(["a"], [])
    assert int8_wanted("int8", {}, 0.995) is True
    assert int8_wanted("off", {"a": 1.0}, 0.995) is False
    assert int8_wanted("auto", {}, 0.995) is False, "nothing loaded, nothing measured"
    assert int8_wanted("auto", {"a": 1.0, "b": 0.995}, 0.995) is True
    assert int8_wanted("auto", {"a": 1.0, "b": 0.99}, 0.995) is False, "one below holds all"
    assert int8_wanted("auto", {"a": 1.0, "b": None}, 0.995) is False, "unprobed is not proof"


def test_the_settings_validate_the_mode_and_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIFECYCLE_QUANTIZE", raising=False)
    assert Settings().quantize == "off"
    monkeypatch.setenv("LIFECYCLE_QUANTIZE", "auto")
    assert Settings().quantize == "auto"
    monkeypatch.setenv("LIFECYCLE_QUANTIZE", "int4")
    with pytest.raises(ConfigError, match="quantize"):
        load_settings()
    monkeypatch.setenv("LIFECYCLE_QUANTIZE", "int8")
    monkeypatch.setenv("LIFECYCLE_QUANTIZE_MIN_AGREEMENT", "1.5")
    with pytest.raises(ConfigError, match="quantize_min_agreement"):
        load_settings()


def test_an_int8_host_keeps_packed_and_mixed_passes_and_answers_like_float(
    trained: Any, saved: Path
) -> None:
    from lifecycle.model.host import AdapterHost

    host = AdapterHost("minilm", device="cpu", quantize="int8")
    assert host.runtime == "int8"
    # The load-time probes compare float passes: int8's batch-dependent rounding does not
    # switch off the fast paths.
    assert host.packing
    host.load_adapter("one", saved)
    host.load_adapter("two", saved, probe_texts=TEXTS)
    assert host.mixing
    assert host.agreements["one"] is None and 0.0 <= (host.agreements["two"] or 0.0) <= 1.0
    assert host.runtime == "int8", "int8 mode does not depend on the probe"
    ours = host.predict(TEXTS, "one")
    theirs = trained.host.predict(TEXTS, trained.adapter_id)
    same = agreement([p.label for p in theirs], [p.label for p in ours])
    assert same >= 0.8, same
    assert [p.confidence for p in ours] != pytest.approx(
        [p.confidence for p in theirs], abs=1e-6
    ), "the answers come from the int8 pass"
    # Training needs float gradients: a host that trains is built without quantize.
    assert AdapterHost.__init__.__kwdefaults__["quantize"] == "off"


def test_auto_runs_int8_only_while_every_loaded_version_passed_its_probe(saved: Path) -> None:
    from lifecycle.model.host import AdapterHost

    host = AdapterHost("minilm", device="cpu", quantize="auto", min_agreement=0.0)
    assert host.runtime == "fp32", "nothing loaded yet"
    host.load_adapter("probed", saved, probe_texts=TEXTS)
    assert host.runtime == "int8"
    host.load_adapter("unprobed", saved)
    assert host.runtime == "fp32", "a version with no probe keeps the host in float"
    host.remove_adapter("unprobed")
    assert host.runtime == "int8"
    host.min_agreement = 1.01  # no version can reach it
    host.load_adapter("strict", saved, probe_texts=TEXTS)
    assert host.runtime == "fp32"
    off = AdapterHost("minilm", device="cpu")
    off.load_adapter("x", saved, probe_texts=TEXTS)
    assert off.runtime == "fp32" and off.int8_agreement("x", TEXTS) == 1.0


def test_the_gateway_serves_int8_and_says_so(served_home: Path) -> None:
    from lifecycle.serving.app import create_app

    settings = gateway_settings(
        served_home,
        quantize="auto",
        quantize_min_agreement=0.0,
        quantize_probe_rows=64,
        model_workers=1,
        shadow_worker=False,
    )
    specs = SpecialistsFile.model_validate({"specialists": [TINY]})
    with running_gateway(create_app(settings, specs)) as gw:
        hosts = gw.gw.engine.hosts
        with gw.client() as client:
            ready = client.get("/readyz").json()
            response = client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS})
    assert response.status_code == 200, response.text
    assert ready["runtime"] == "int8", ready
    # Champion and challenger, each probed at load on its version's own reference rows.
    assert all(h.runtime == "int8" and set(h.agreements) == {"tiny@v1", "tiny@v2"} for h in hosts)
    assert all(isinstance(a, float) for h in hosts for a in h.agreements.values())
    assert len(response.json()["predictions"]) == len(TEXTS)
    # The probe's read of the reference rows also gave each version's surge baseline.
    assert set(gw.gw.sync._shares) == {("tiny", 1), ("tiny", 2)}
    assert all(abs(sum(s.values()) - 1.0) < 1e-6 for s in gw.gw.sync._shares.values())


def test_the_monitors_score_their_reference_as_the_gateway_serves(served_home: Path) -> None:
    from lifecycle.registry.models import Registry
    from monitors.runtime import served_reference

    registry = Registry(Settings(home=served_home))
    frame, embeddings = registry.reference("tiny", 1)
    off = Settings(home=served_home)
    spec = SpecialistSpec.model_validate(TINY)
    same = served_reference(registry, spec, 1, frame, embeddings, off)
    assert same[0] is frame and same[1] is embeddings and same[2] == "fp32"
    on = Settings(home=served_home, quantize="int8")
    new_frame, new_embeddings, runtime = served_reference(registry, spec, 1, frame, embeddings, on)
    assert runtime == "int8"
    assert new_embeddings.shape == embeddings.shape
    assert not np.allclose(new_embeddings, embeddings, atol=1e-5)
    cosine = (new_embeddings * embeddings).sum(axis=1)  # both are unit vectors
    assert float(cosine.min()) > 0.9, float(cosine.min())
    # People's labels and the texts stay; the model's columns are the int8 answers.
    assert new_frame["text"].tolist() == frame["text"].tolist()
    assert new_frame["label"].tolist() == frame["label"].tolist()
    assert agreement(frame["prediction"].tolist(), new_frame["prediction"].tolist()) > 0.8
    assert not np.allclose(new_frame["confidence"], frame["confidence"], atol=1e-6)


def test_rescored_refuses_a_prediction_count_that_does_not_match() -> None:
    import pandas as pd

    from monitors.runtime import rescored

    with pytest.raises(ValueError, match="one prediction per reference row"):
        rescored(pd.DataFrame({"text": ["a", "b"]}), [])


def test_an_int8_reference_keeps_thresholds_of_its_own(served_home: Path) -> None:
    from lifecycle.registry.models import Registry
    from monitors.check import THRESHOLDS_PATH, load_reference

    settings = Settings(home=served_home, quantize="int8", calibration_rounds=10)
    registry = Registry(settings)
    spec = SpecialistSpec.model_validate(TINY)
    version = registry.resolve("tiny", 1)
    reference = load_reference(registry, spec, version, settings=settings)
    assert reference.runtime == "int8"
    assert version.run_id is not None
    stored = registry.artifact_files(version.run_id, "monitoring")
    assert "monitoring/thresholds-int8.json" in stored, stored
    assert THRESHOLDS_PATH.endswith("thresholds.json")
