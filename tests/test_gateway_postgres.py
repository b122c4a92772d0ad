"""The gateway with its traffic store on the real PostgreSQL: an outage under load loses nothing.

The SQLite twin (a locked database) is ``test_gateway.py``'s; a whole server stopped is
PostgreSQL's alone. Each test runs a gateway on a copy of the served home and a database of
its own (``make_database``, PostgreSQL only here).
"""

from __future__ import annotations

import concurrent.futures
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine, make_url

from tests.gateway_harness import RunningGateway, running_gateway
from tests.store_harness import refused_connections
from tests.test_gateway import TOKEN, _settings, _specs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("make_database", ["postgresql"], indirect=True),
]


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


def test_postgres_outage_under_load_loses_no_accepted_request(
    pg_admin: Engine,
    make_database: Callable[[], str],
    own_home: Path,
    shared_host,  # type: ignore[no-untyped-def]
) -> None:
    from lifecycle.serving.app import create_app

    pg_url = make_database()
    name = make_url(pg_url).database
    app = create_app(_settings(own_home, traffic_db_url=pg_url), _specs(), host=shared_host)
    accepted: list[str] = []
    labelled: list[str] = []

    def burst(client_id: int, n: int) -> list[str]:
        return _burst(gw, f"client {client_id}", n)

    with running_gateway(app, token=TOKEN) as gw:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for ids in pool.map(burst, range(4), [10] * 4):
                accepted += ids
        gw.gw.writer.flush(timeout=30)
        with refused_connections(pg_admin, name):
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
                ready = client.get("/readyz").json()
            time.sleep(0.5)
            assert gw.gw.writer.healthy is False
            assert ready["traffic_store_up"] is False
        assert gw.gw.writer.flush(timeout=60) == "database"
        window = gw.gw.writer.store.window("tiny", with_embeddings=False)
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
        for _ in range(60):
            if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode == 0:
                break
            time.sleep(0.5)


def test_postgres_stopped_under_load_loses_no_accepted_request(
    make_database: Callable[[], str],
    own_home: Path,
    shared_host,  # type: ignore[no-untyped-def]
) -> None:
    from lifecycle.serving.app import create_app

    pg_url = make_database()
    app = create_app(_settings(own_home, traffic_db_url=pg_url), _specs(), host=shared_host)
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
