"""Shared fixtures: temporary state folders, the real MiniLM base, a tiny trained specialist."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

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
