"""LIFECYCLE_OOD_SCORES: the out-of-scope score can be switched off, on the host and at the
gateway (which builds its own hosts from the setting), and is on by default.

The gateway tests start the real thing with ``host=None``, so that the hosts under test are the
ones ``lifecycle serve`` would build, loading the tiny specialist (whose training fitted a
detector) from a real registry.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from lifecycle.config.settings import Settings
from lifecycle.config.spec import SpecialistsFile
from tests.conftest import TINY
from tests.gateway_harness import running_gateway

TEXTS = ["I lost my card at the station", "play some jazz by miles davis on spotify"]


def test_the_setting_is_on_by_default_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LIFECYCLE_OOD_SCORES", raising=False)
    assert Settings().ood_scores is True
    monkeypatch.setenv("LIFECYCLE_OOD_SCORES", "false")
    assert Settings().ood_scores is False


def test_the_host_scores_only_while_switched_on(trained: Any) -> None:
    host, adapter_id = trained.host, trained.adapter_id
    assert host.detector(adapter_id) is not None, "training fits a detector"
    assert host.score_out_of_scope is True
    try:
        host.score_out_of_scope = False
        off = host.predict(TEXTS, adapter_id)
    finally:
        host.score_out_of_scope = True  # the session's host is shared
    on = host.predict(TEXTS, adapter_id)
    assert all(p.ood_score is None and p.out_of_scope is None for p in off)
    assert all(isinstance(p.ood_score, float) and math.isfinite(p.ood_score) for p in on)
    assert all(isinstance(p.out_of_scope, bool) for p in on)
    # Switching the score off changes nothing else of the answer.
    assert [p.label for p in off] == [p.label for p in on]
    assert [p.confidence for p in off] == pytest.approx([p.confidence for p in on])


@pytest.mark.parametrize("enabled", [False, True])
def test_the_gateway_honours_the_setting(served_home: Path, enabled: bool) -> None:
    from lifecycle.serving.app import create_app

    settings = Settings(
        home=served_home,
        admin_token="s3cret-admin-token-for-tests",
        registry_poll_s=0,
        ood_scores=enabled,
        # One host of its own is enough; the setting reaches every host it builds alike.
        model_workers=1,
        shadow_worker=False,
    )
    specs = SpecialistsFile.model_validate({"specialists": [TINY]})
    with running_gateway(create_app(settings, specs)) as gw:
        hosts = gw.gw.engine.hosts
        with gw.client() as client:
            response = client.post("/v1/specialists/tiny/predict", json={"texts": TEXTS})
    assert response.status_code == 200, response.text
    preds = response.json()["predictions"]
    assert all(h.score_out_of_scope is enabled for h in hosts)
    if enabled:
        assert all(isinstance(p["ood_score"], float) for p in preds)
        assert all(isinstance(p["out_of_scope"], bool) for p in preds)
    else:
        assert all(p["ood_score"] is None and p["out_of_scope"] is None for p in preds)


def test_a_host_given_threads_gives_numpys_blas_as_many() -> None:
    """The detector's product runs on numpy's BLAS: its own thread pool, on the cores the
    model workers use, stalled each batch by 10-20 ms on a busy machine (bench/RESULTS.md)."""
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    from lifecycle.model.host import AdapterHost

    torch_threads = torch.get_num_threads()
    # Both limits are process-wide: the context restores BLAS's, the finally torch's.
    with threadpool_limits(limits=2, user_api="blas"):
        try:
            AdapterHost("minilm", device="cpu", threads=1)
            blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        finally:
            torch.set_num_threads(torch_threads)
    assert blas and all(n == 1 for n in blas)
