"""Out-of-scope texts at the gateway: the answer's fields, escalation.on_out_of_scope, the store
and the counter, against a real uvicorn, a real MLflow registry and a real trained specialist.

Which texts are flagged is made certain with a detector built here and attached to the loaded
champion: its only training embedding is the in-scope text's own, so that text lies at
distance ~0 and any other text far past the threshold. The real detector trained with the
specialist is checked as it comes from the registry.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lifecycle.config.settings import Settings
from lifecycle.config.spec import SpecialistsFile
from lifecycle.model.ood import OOD_FILE, OutOfScopeDetector
from lifecycle.registry.models import Registry
from tests.conftest import TINY
from tests.fakes.openai_server import FakeOpenAI
from tests.gateway_harness import RunningGateway, SharedHost, running_gateway

TOKEN = "s3cret-admin-token-for-tests"
IN_SCOPE = "I lost my card at the station"
ELSEWHERE = "play some jazz by miles davis on spotify"
#: Above the float noise of one text embedded twice, far below the distance of two texts.
THRESHOLD = 1e-3


class ScopedHost(SharedHost):
    """The session's host under a private prefix, whose adapters' detectors a test can set."""

    def set_detector(self, adapter_id: str, detector: Any) -> None:
        self._host.set_detector(self._prefix + adapter_id, detector)

    def detector(self, adapter_id: str) -> Any:
        return self._host.detector(self._prefix + adapter_id)


def _settings(home: Path) -> Settings:
    return Settings(home=home, admin_token=TOKEN, registry_poll_s=0)


def _specs(**escalation: Any) -> SpecialistsFile:
    return SpecialistsFile.model_validate({"specialists": [{**TINY, "escalation": escalation}]})


def _one_text_detector(host: ScopedHost, adapter_id: str, text: str) -> OutOfScopeDetector:
    """A kNN detector whose training set is ``text``'s embedding alone (under ``adapter_id``),
    scored by distance only: ``text`` is in scope, everything else out of it."""
    embedding = np.asarray(host.predict([text], [adapter_id])[0].embedding, dtype=np.float32)
    return OutOfScopeDetector(
        method="knn",
        transform=(embedding / np.linalg.norm(embedding))[None, :],
        centers=np.zeros((0, embedding.shape[0]), dtype=np.float32),
        threshold=THRESHOLD,
        target_rate=0.05,
        calibrated_rate=0.05,
        fit_rows=1,
        calibration_rows=1,
        origin="test",
    )


@pytest.fixture
def scoped_host(host: Any) -> Iterator[ScopedHost]:
    with ScopedHost(host) as scoped:
        yield scoped


def _start(served_home: Path, host: ScopedHost, specs: SpecialistsFile, **kwargs: Any) -> Any:
    """A gateway whose champion flags every text but ``IN_SCOPE``."""
    from lifecycle.serving.app import create_app

    app = create_app(_settings(served_home), specs, host=host, **kwargs)
    return running_gateway(app, token=TOKEN)


def _force_detector(gw: RunningGateway, host: ScopedHost) -> str:
    adapter_id = gw.gw.engine.routes["tiny"].champion.adapter_id
    host.set_detector(adapter_id, _one_text_detector(host, adapter_id, IN_SCOPE))
    return adapter_id


def _predict(gw: RunningGateway, texts: list[str]) -> list[dict[str, Any]]:
    with gw.client() as client:
        response = client.post("/v1/specialists/tiny/predict", json={"texts": texts})
    assert response.status_code == 200, response.text
    preds: list[dict[str, Any]] = response.json()["predictions"]
    return preds


def _rows(gw: RunningGateway, ids: list[str]) -> Any:
    gw.gw.writer.flush(timeout=30)
    frame = gw.gw.writer.store.window("tiny", with_embeddings=False)
    return frame.set_index("id").loc[ids]


def _review_queue(gw: RunningGateway) -> set[str]:
    with gw.client() as client:
        queue = client.get("/v1/specialists/tiny/review", headers=gw.admin_headers())
    assert queue.status_code == 200, queue.text
    return {item["request_id"] for item in queue.json()["items"]}


def _counter(gw: RunningGateway) -> float:
    with gw.client() as client:
        text = client.get("/metrics").text
    for line in text.splitlines():
        if line.startswith('lifecycle_out_of_scope_total{specialist="tiny"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_champions_own_detector_answers_and_is_stored(
    served_home: Path, scoped_host: ScopedHost
) -> None:
    """As registered: with a detector in the adapter folder, every answer has a verdict and a
    score; without one, both are None. The store keeps what the client was told."""
    _, folder = Registry(_settings(served_home)).download("tiny", 1)
    has_detector = (folder / OOD_FILE).is_file()
    with _start(served_home, scoped_host, _specs()) as gw:
        preds = _predict(gw, [IN_SCOPE, ELSEWHERE])
        rows = _rows(gw, [p["request_id"] for p in preds])
        flagged = _counter(gw)
    for pred, (_, row) in zip(preds, rows.iterrows(), strict=True):
        assert {"out_of_scope", "ood_score"} <= set(pred)
        if has_detector:
            assert isinstance(pred["out_of_scope"], bool)
            assert isinstance(pred["ood_score"], float) and math.isfinite(pred["ood_score"])
            assert row["ood_score"] == pytest.approx(pred["ood_score"])
            assert bool(row["out_of_scope"]) is pred["out_of_scope"]
        else:
            assert pred["out_of_scope"] is None and pred["ood_score"] is None
            assert math.isnan(row["ood_score"]) and row["out_of_scope"] is pd.NA
    assert flagged == sum(1 for p in preds if p["out_of_scope"])
    if has_detector:
        # Another domain entirely lies far from a support-ticket specialist's training data.
        assert preds[1]["ood_score"] > preds[0]["ood_score"]
        assert preds[1]["out_of_scope"] is True


def test_a_version_without_a_detector_answers_none(
    served_home: Path, scoped_host: ScopedHost
) -> None:
    with _start(served_home, scoped_host, _specs()) as gw:
        scoped_host.set_detector(gw.gw.engine.routes["tiny"].champion.adapter_id, None)
        preds = _predict(gw, [IN_SCOPE, ELSEWHERE])
        rows = _rows(gw, [p["request_id"] for p in preds])
        flagged = _counter(gw)
    assert all(p["out_of_scope"] is None and p["ood_score"] is None for p in preds)
    assert all(p["escalated"] is False for p in preds)
    assert rows["ood_score"].isna().all() and rows["out_of_scope"].isna().all()
    assert flagged == 0


def test_on_out_of_scope_none_answers_as_usual_but_says_so(
    served_home: Path, scoped_host: ScopedHost
) -> None:
    with _start(served_home, scoped_host, _specs(fallback="review")) as gw:
        _force_detector(gw, scoped_host)
        preds = _predict(gw, [IN_SCOPE, ELSEWHERE, ELSEWHERE])
        rows = _rows(gw, [p["request_id"] for p in preds])
        queue = _review_queue(gw)
        flagged = _counter(gw)
    inside, *outside = preds
    assert inside["out_of_scope"] is False and inside["ood_score"] < THRESHOLD
    for pred in outside:
        assert pred["out_of_scope"] is True and pred["ood_score"] > THRESHOLD
        assert pred["escalated"] is False and pred["source"] == "specialist"
    assert not queue & {p["request_id"] for p in preds}
    assert list(rows["out_of_scope"]) == [False, True, True]
    np.testing.assert_allclose(rows["ood_score"], [p["ood_score"] for p in preds], rtol=1e-9)
    assert not rows["escalated"].any()
    assert flagged == 2


def test_on_out_of_scope_fallback_asks_the_fallback(
    served_home: Path, scoped_host: ScopedHost
) -> None:
    from lifecycle.serving.fallback import OpenAIFallback

    with FakeOpenAI() as fake:
        fake.mode = "echo_label"
        fallback = OpenAIFallback(base_url=fake.base_url, model="big", timeout_s=5.0, max_retries=0)
        # Threshold 0: only the detector can send a text to the fallback.
        specs = _specs(confidence_threshold=0.0, fallback="openai", on_out_of_scope="fallback")
        with _start(served_home, scoped_host, specs, fallbacks={"tiny": fallback}) as gw:
            _force_detector(gw, scoped_host)
            labels = gw.gw.engine.routes["tiny"].champion.labels
            inside, outside = _predict(gw, [IN_SCOPE, ELSEWHERE])
            rows = _rows(gw, [inside["request_id"], outside["request_id"]])
            flagged = _counter(gw)
        asked = [" ".join(m["content"] for m in r.body["messages"]) for r in fake.requests]
    assert inside["escalated"] is False and inside["out_of_scope"] is False
    assert outside["escalated"] is True and outside["source"] == "openai"
    assert outside["out_of_scope"] is True and outside["label"] in labels
    assert len(asked) == 1 and ELSEWHERE in asked[0]
    row = rows.loc[outside["request_id"]]
    assert row["fallback_source"] == "openai" and bool(row["out_of_scope"])
    assert row["true_label"] == outside["label"] and row["true_label_source"] == "fallback"
    assert flagged == 1


def test_on_out_of_scope_fallback_without_a_fallback_answers_as_usual(
    served_home: Path, scoped_host: ScopedHost
) -> None:
    with _start(served_home, scoped_host, _specs(on_out_of_scope="fallback")) as gw:
        _force_detector(gw, scoped_host)
        (outside,) = _predict(gw, [ELSEWHERE])
        flagged = _counter(gw)
    assert outside["out_of_scope"] is True
    assert outside["escalated"] is False and outside["source"] == "specialist"
    assert flagged == 1


@pytest.mark.parametrize("fallback", ["openai", "none"])
def test_on_out_of_scope_review_queues_it_for_people(
    served_home: Path, scoped_host: ScopedHost, fallback: str
) -> None:
    """Whatever the specialist's own fallback, a flagged text waits for a person's label; an
    in-scope text still follows the confidence threshold (0 here: answered)."""
    from lifecycle.serving.fallback import OpenAIFallback

    with FakeOpenAI() as fake:
        fallbacks = (
            {"tiny": OpenAIFallback(base_url=fake.base_url, model="big", max_retries=0)}
            if fallback == "openai"
            else None
        )
        specs = _specs(fallback=fallback, on_out_of_scope="review")
        with _start(served_home, scoped_host, specs, fallbacks=fallbacks) as gw:
            _force_detector(gw, scoped_host)
            inside, outside = _predict(gw, [IN_SCOPE, ELSEWHERE])
            rows = _rows(gw, [inside["request_id"], outside["request_id"]])
            queue = _review_queue(gw)
            with gw.client() as client:
                metrics = client.get("/metrics").text
            flagged = _counter(gw)
        assert fake.requests == []  # the openai fallback was never asked
    assert inside["escalated"] is False and inside["out_of_scope"] is False
    assert outside["escalated"] is True and outside["out_of_scope"] is True
    assert outside["source"] == "specialist" and outside["flagged"] is False
    assert outside["request_id"] in queue and inside["request_id"] not in queue
    row = rows.loc[outside["request_id"]]
    assert row["fallback_source"] == "review" and bool(row["escalated"])
    assert bool(row["out_of_scope"]) and row["ood_score"] > THRESHOLD
    queued = 'lifecycle_escalations_total{outcome="queued",source="review",specialist="tiny"} 1.0'
    assert queued in metrics
    assert flagged == 1


def test_openapi_documents_the_fields(served_home: Path, scoped_host: ScopedHost) -> None:
    with _start(served_home, scoped_host, _specs()) as gw, gw.client() as client:
        spec = client.get("/openapi.json").json()
    fields = spec["components"]["schemas"]["PredictionOut"]["properties"]
    for name in ("out_of_scope", "ood_score"):
        assert "no detector" in fields[name]["description"]
    assert "out-of-scope" in spec["paths"]["/v1/specialists/{name}/predict"]["post"]["description"]
