"""The CLI as a user runs it: real commands, real MLflow, clear errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lifecycle.cli.main import app

from .conftest import TINY

runner = CliRunner()


def _spec_file(folder: Path, **overrides: object) -> Path:
    path = folder / "specialists.yaml"
    path.write_text(yaml.safe_dump({"specialists": [{**TINY, **overrides}]}), "utf-8")
    return path


def _registry_is_empty(home: Path) -> bool:
    from lifecycle.config.settings import load_settings
    from lifecycle.registry.models import Registry

    if not (home / "mlflow.db").exists():
        return True
    return Registry(load_settings()).specialists() == []


def test_help_lists_the_contract_verbs() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in (
        "demo",
        "train",
        "serve",
        "monitor",
        "retrain",
        "promote",
        "rollback",
        "status",
        "deploy",
        "simulate",
    ):
        assert verb in result.output


def test_cli_starts_without_heavy_imports() -> None:
    code = (
        "import sys, lifecycle.cli; "
        "heavy = [m for m in ('torch', 'transformers', 'mlflow', 'evidently', 'prefect', 'pandas') "
        "if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_loop_verbs_check_their_arguments_before_starting_anything() -> None:
    bad_scenario = runner.invoke(app, ["demo", "--scenario", "nonsense"])
    assert bad_scenario.exit_code == 2 and "new_intent" in bad_scenario.output
    no_name = runner.invoke(app, ["retrain"])
    assert no_name.exit_code == 2 and "--specialist" in no_name.output
    for verb in ("demo", "retrain", "deploy"):
        shown = runner.invoke(app, [verb, "--help"])
        assert shown.exit_code == 0 and "not ready" not in shown.output


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "not found"),
        (b"", "empty"),
        (b"words,category\nhello,a\nbye,b\n", "text"),
        (b"text,label\nhello,a\nhi there,a\nhey,a\n", "one class"),
        (b"text,label\ncaf\xe9 please,a\nbye,b\n", "UTF-8"),
    ],
)
def test_bad_data_files_fail_clearly_and_write_nothing(
    home: Path, tmp_path: Path, content: bytes | None, needle: str
) -> None:
    data = tmp_path / "data.csv"
    if content is not None:
        data.write_bytes(content)
    spec = _spec_file(tmp_path)
    result = runner.invoke(app, ["train", "-f", str(spec), "-s", "tiny", "--data", str(data)])
    assert result.exit_code == 1, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert _registry_is_empty(home)


def test_missing_base_model_path_fails_before_training(home: Path, tmp_path: Path) -> None:
    spec = _spec_file(tmp_path, base_model=str(tmp_path / "no-such-model"))
    result = runner.invoke(app, ["train", "-f", str(spec)])
    assert result.exit_code == 1
    assert "does not exist" in result.output
    assert _registry_is_empty(home)


def test_unknown_specialist_and_alias(home: Path, tmp_path: Path) -> None:
    spec = _spec_file(tmp_path)
    result = runner.invoke(app, ["train", "-f", str(spec), "-s", "ghost"])
    assert result.exit_code == 1 and "no specialist named 'ghost'" in result.output
    result = runner.invoke(app, ["train", "-f", str(spec), "--alias", "production"])
    assert result.exit_code == 2 and "must be one of" in result.output
    assert _registry_is_empty(home)


def test_status_before_any_training(home: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", "-f", str(_spec_file(tmp_path)), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)[0]["note"] == "not trained yet"


def test_train_then_status_as_a_user_would(home: Path, tmp_path: Path) -> None:
    """The installed console script, in a subprocess, as the README runs it."""
    spec = _spec_file(tmp_path)
    exe = Path(sys.executable).with_name("lifecycle")
    env = {**os.environ, "LIFECYCLE_HOME": str(home)}
    first = subprocess.run(
        [str(exe), "train", "-f", str(spec)], capture_output=True, text=True, env=env
    )
    assert first.returncode == 0, first.stderr
    assert "registered version 1 as champion" in first.stdout
    second = subprocess.run(
        [str(exe), "train", "-f", str(spec)], capture_output=True, text=True, env=env
    )
    assert second.returncode == 0, second.stderr
    assert "registered version 2 as challenger" in second.stdout
    status = subprocess.run(
        [str(exe), "status", "-f", str(spec), "--json"], capture_output=True, text=True, env=env
    )
    report = json.loads(status.stdout)
    versions = report[0]["versions"]
    assert [v["aliases"] for v in versions] == [["champion"], ["challenger"]]
    assert versions[1]["parent"] == "1"
    assert versions[0]["trigger"] == "initial"
    assert 0.0 < versions[0]["val_accuracy"] <= 1.0
    table = subprocess.run(
        [str(exe), "status", "-f", str(spec)], capture_output=True, text=True, env=env
    )
    assert "champion" in table.stdout and "challenger" in table.stdout


def test_serve_bounds_mlflow_retries_unless_the_user_set_them(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    seen: dict[str, object] = {}

    def fake_run(app: object, **kwargs: object) -> None:
        seen["retries"] = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        seen["timeout"] = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT")
        seen["title"] = getattr(app, "title", None)
        seen["keep_alive"] = kwargs.get("timeout_keep_alive")

    monkeypatch.setattr(uvicorn, "run", fake_run)
    # setenv first, so that monkeypatch also removes what `serve` sets there.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "unset")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    monkeypatch.setenv("LIFECYCLE_INSECURE_DEV", "true")
    monkeypatch.setenv("LIFECYCLE_KEEP_ALIVE_S", "90")
    result = runner.invoke(app, ["serve", "-f", str(_spec_file(tmp_path))])
    assert result.exit_code == 0, result.output
    assert seen == {"retries": "2", "timeout": "3", "title": "lifecycle gateway", "keep_alive": 90}
