"""Shared fixtures: temporary state folders, the real MiniLM base, a tiny trained specialist."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from lifecycle.store import TrafficStore

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LIFECYCLE_PROGRESS", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

REPO = Path(__file__).resolve().parents[1]

#: A specialist small enough to train in seconds on 2 CPU cores.
TINY = {
    "name": "tiny",
    "data": {"kind": "generator", "n": 240, "seed": 5},
    "training": {"epochs": 1, "batch_size": 16, "max_length": 32, "evals_per_epoch": 1},
}


#: An extraction specialist small enough to train in seconds: support tickets with spans.
EXTRACTOR = {
    "name": "tickets",
    "task": "extraction",
    "training": {"epochs": 2, "batch_size": 16, "max_length": 48, "evals_per_epoch": 1},
}
EXTRACTOR_ROWS = 240


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh LIFECYCLE_HOME (sqlite MLflow inside it) for one test."""
    folder = tmp_path / "home"
    monkeypatch.setenv("LIFECYCLE_HOME", str(folder))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    yield folder


@pytest.fixture(scope="session")
def host():  # type: ignore[no-untyped-def]
    """One real MiniLM base model shared by the session's model tests."""
    from lifecycle.model.host import AdapterHost

    return AdapterHost("minilm", device="cpu")


@pytest.fixture(scope="session")
def tiny_spec():  # type: ignore[no-untyped-def]
    from lifecycle.config.spec import SpecialistSpec

    return SpecialistSpec.model_validate(TINY)


@pytest.fixture(scope="session")
def trained(tiny_spec):  # type: ignore[no-untyped-def]
    """A tiny specialist trained once for the session (real peft training on MiniLM)."""
    from lifecycle.training.pipeline import load_training_data
    from lifecycle.training.train import train_specialist

    return train_specialist(tiny_spec, load_training_data(tiny_spec), device="cpu", progress=False)


@pytest.fixture(scope="session")
def extractor_spec():  # type: ignore[no-untyped-def]
    from lifecycle.config.spec import SpecialistSpec

    return SpecialistSpec.model_validate(EXTRACTOR)


@pytest.fixture(scope="session")
def trained_extractor(extractor_spec):  # type: ignore[no-untyped-def]
    """A small extraction specialist trained once for the session on generated tickets (real
    peft training on MiniLM; its spans are rough, but they are spans of the texts)."""
    from lifecycle.synthetic.tickets import generate_tickets
    from lifecycle.training.train import train_specialist

    data = generate_tickets(EXTRACTOR_ROWS, seed=0)
    return train_specialist(extractor_spec, data, device="cpu", progress=False)


@pytest.fixture
def shared_host(host):  # type: ignore[no-untyped-def]
    """The session's host seen under a private prefix; what a test loads is unloaded after it."""
    from tests.gateway_harness import SharedHost

    with SharedHost(host) as shared:
        yield shared


@pytest.fixture(scope="module")
def served_home(tmp_path_factory: pytest.TempPathFactory, trained, tiny_spec) -> Path:  # type: ignore[no-untyped-def]
    """A registry holding the tiny specialist twice: v1 champion, v2 challenger."""
    home = tmp_path_factory.mktemp("gateway") / "home"
    from lifecycle.config.settings import Settings
    from lifecycle.registry.models import CHALLENGER, CHAMPION, Registry

    registry = Registry(Settings(home=home))
    first = registry.log_training(tiny_spec, trained, trigger="initial")
    registry.set_alias("tiny", CHAMPION, first.version)
    second = registry.log_training(tiny_spec, trained, trigger="manual", parent_version=1)
    registry.set_alias("tiny", CHALLENGER, second.version)
    return home


def mlflow_client(registry: Any) -> Any:
    """An MlflowClient of its own on ``registry``'s store: tests look at what MLflow holds
    directly, not through the layer under test (whose client is private)."""
    from mlflow import MlflowClient

    uri = registry.settings.tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """An autocommit pool on the shared PostgreSQL server; fails, never skips, when it is down."""
    from tests.store_harness import admin_engine

    engine = admin_engine()
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def make_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Makes fresh, empty traffic databases on one backend (each param a backend), gone after
    the test. A SQLite file's folder does not exist yet: the store creates it on connect."""
    from tests.store_harness import new_database

    admin = request.getfixturevalue("pg_admin") if request.param == "postgresql" else None
    numbers = count()
    with ExitStack() as dropped:

        def make() -> str:
            if admin is not None:
                return dropped.enter_context(new_database(admin))
            return f"sqlite:///{tmp_path / f'db{next(numbers)}' / 'traffic.db'}"

        yield make


@pytest.fixture
def store(make_database: Callable[[], str]) -> Iterator[TrafficStore]:
    """A migrated, empty traffic store of the test's own, on SQLite and on PostgreSQL.

    Short lock timeouts, so that an outage shows up in milliseconds.
    """
    from lifecycle.store import TrafficStore

    traffic = TrafficStore(make_database(), lock_timeout_ms=50)
    traffic.upgrade()
    yield traffic
    traffic.dispose()
