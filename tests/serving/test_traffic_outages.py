"""The gateway's traffic store going away under load: nothing a client was answered for is lost.

One test per kind of outage, on both backends where both can have it (the ``make_database``
fixture: SQLite and the real PostgreSQL). A database that refuses writers is an outage either
backend can have (``outage``: SQLite locked by another connection, PostgreSQL refusing
connections to that database); a whole server stopped is PostgreSQL's alone. Each test runs a
gateway on a copy of the served home and a traffic database of its own.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.gateway_harness import (
    TOKEN,
    RunningGateway,
    gateway_settings,
    running_gateway,
    tiny_specs,
)
from tests.store_harness import outage
from tests.waits import wait_until


@pytest.fixture
def own_home(served_home: Path, tmp_path: Path) -> Path:
    """The served home copied: the gateway's journal goes under it, and the module's fixture
    stays as every test found it."""
    return Path(shutil.copytree(served_home, tmp_path / "home"))


def _burst(gw: RunningGateway, prefix: str, n: int) -> list[str]:
    """``n`` one-text predictions in a row; each must be answered 200. Their request ids."""
    ids = []
    with gw.client() as client:
        for i in range(n):
            r = client.post("/v1/specialists/tiny/predict", json={"texts": [f"{prefix} {i}"]})
            assert r.status_code == 200, r.text
            ids.append(r.json()["predictions"][0]["request_id"])
    return ids


def test_an_outage_under_load_loses_no_accepted_request(
    make_database: Callable[[], str],
    own_home: Path,
    shared_host,  # type: ignore[no-untyped-def]
) -> None:
    """Four clients keep predicting and labelling while the database refuses writers; every
    request answered 200 and every label answered 202 is in the database afterwards."""
    from lifecycle.serving.app import create_app

    app = create_app(
        gateway_settings(own_home, traffic_db_url=make_database()), tiny_specs(), host=shared_host
    )
    accepted: list[str] = []
    labelled: list[str] = []

    def burst(client_id: int, n: int) -> list[str]:
        return _burst(gw, f"client {client_id}", n)

    with running_gateway(app, token=TOKEN) as gw:
        writer = gw.gw.writer
        # The writer migrates the schema on its first write, and a migration waits for a lock
        # far longer than a write does: the outage here is of a store already in use.
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for ids in pool.map(burst, range(4), [10] * 4):
                accepted += ids
        assert writer.flush(timeout=60) == "database"
        with outage(writer.store):
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                for ids in pool.map(burst, range(4, 8), [15] * 4):
                    accepted += ids
            # Feedback for requests still in flight is accepted from the writer's memory.
            labels = gw.gw.engine.routes["tiny"].champion.labels
            with gw.client() as client:
                for request_id in accepted[-5:]:
                    r = client.post(
                        "/v1/specialists/tiny/feedback",
                        json={"request_id": request_id, "label": labels[0]},
                    )
                    assert r.status_code == 202, r.text
                    labelled.append(request_id)
            wait_until(lambda: writer.healthy is False, what="the writer to see the outage")
            with gw.client() as client:
                assert client.get("/readyz").json()["traffic_store_up"] is False
            assert writer.pending_memory + writer.pending_journal > 0
        assert writer.flush(timeout=120) == "database"
        window = writer.store.window("tiny", with_embeddings=False)
    assert len(accepted) == 100 == len(set(accepted))
    assert set(accepted) <= set(window["id"])
    assert (window.set_index("id").loc[labelled, "true_label"] == labels[0]).all()


def _cluster() -> list[str]:
    """``pg_ctlcluster VERSION main`` for the local server (Debian's wrapper), or a failure."""
    assert shutil.which("pg_ctlcluster"), "pg_ctlcluster is needed to stop the local server"
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir())
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main"]


@contextmanager
def stopped_server() -> Iterator[None]:
    """The whole PostgreSQL server stopped (fast shutdown: sessions cut), then started again."""
    subprocess.run([*_cluster(), "stop", "-m", "fast"], check=True, timeout=60)
    try:
        yield
    finally:
        subprocess.run([*_cluster(), "start"], check=True, timeout=60)
        wait_until(
            lambda: subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode == 0,
            what="PostgreSQL back",
        )


@pytest.mark.integration
@pytest.mark.parametrize("make_database", ["postgresql"], indirect=True)
def test_postgres_stopped_under_load_loses_no_accepted_request(
    make_database: Callable[[], str],
    own_home: Path,
    shared_host,  # type: ignore[no-untyped-def]
) -> None:
    """The whole server stopped, not one database refused: the writer's journal holds the
    traffic until the server is back."""
    from lifecycle.serving.app import create_app

    app = create_app(
        gateway_settings(own_home, traffic_db_url=make_database()), tiny_specs(), host=shared_host
    )
    accepted: list[str] = []

    def burst(client_id: int, n: int) -> list[str]:
        return _burst(gw, f"stopped {client_id}", n)

    with running_gateway(app, token=TOKEN) as gw:
        accepted += burst(0, 10)
        assert gw.gw.writer.flush(timeout=30) == "database"
        with stopped_server():
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                for ids in pool.map(burst, range(1, 5), [20] * 4):
                    accepted += ids
            assert gw.gw.writer.flush(timeout=10) == "journal"  # durable, database still down
            with gw.client() as client:
                assert client.get("/readyz").json()["traffic_store_up"] is False
        assert gw.gw.writer.flush(timeout=120) == "database"
        window = gw.gw.writer.store.window("tiny", with_embeddings=False)
    assert len(accepted) == 90 == len(set(accepted))
    assert set(accepted) <= set(window["id"])
