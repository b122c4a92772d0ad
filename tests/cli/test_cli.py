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
from tests.conftest import TINY

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
        "heavy = [m for m in ('torch', 'transformers', 'mlflow', 'evidently', 'prefect', 'pandas', "
        "'rich') if m in sys.modules]; "
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
    # Piped, not a terminal: aligned by rich, in plain text.
    assert "\x1b" not in table.stdout and "─" in table.stdout
    assert "version" in table.stdout and "accuracy" in table.stdout and "initial" in table.stdout


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


def test_tables_are_laid_out_by_rich_in_plain_text() -> None:
    """Every table the CLI prints goes through one helper: rich aligns the columns, and the
    text has no escape codes where stdout is no terminal (a pipe, CliRunner)."""
    from lifecycle.cli.models import _versions_table

    versions = [
        {
            "version": 1,
            "task": "classification",
            "aliases": ["previous"],
            "trigger": "initial",
            "parent": "",
            "n_labels": "4",
            "val_accuracy": 0.875,
            "val_macro_f1": 0.86,
            "calibration_error": 0.0412,
        },
        {
            "version": 12,
            "task": "classification",
            "aliases": ["champion", "[bold]shadow[/bold]"],  # literal text, not rich markup
            "trigger": "drift",
            "parent": "1",
            "n_labels": "5",
            "val_accuracy": None,
            "val_macro_f1": 0.9,
            "calibration_error": 0.03,
        },
    ]
    text = _versions_table(versions)
    assert "\x1b" not in text
    lines = text.splitlines()
    header, rule, first, second = lines
    assert header.split() == ["version", "aliases", "trigger", "parent", "labels", "accuracy",
                              "macro-F1", "ECE"]  # fmt: skip
    assert set(rule.strip()) <= {"─", " "} and "─" in rule
    assert first.split() == ["1", "previous", "initial", "-", "4", "0.8750", "0.8600", "0.0412"]
    assert second.split() == [
        "12", "champion,[bold]shadow[/bold]", "drift", "1", "5", "-", "0.9000", "0.0300"
    ]  # fmt: skip
    # Aligned: numbers end under the right edge of their header, words start under its left.
    for row in (first, second):
        assert row.index("initial" if row is first else "drift") == header.index("trigger")
        assert row.rindex("0.0") + len("0.0412") == header.index("ECE") + len("ECE")
        assert not row.endswith(" ")
    assert all(line.startswith("  ") for line in lines)


def test_a_long_cell_folds_instead_of_being_cut() -> None:
    from monitors.table import render_table

    word = "x" * 150
    text = render_table(("name", "value"), [("a", word)], width=60)
    assert "…" not in text and "x" * 150 in text.replace("\n", "").replace(" ", "")
    assert max(len(line) for line in text.splitlines()) <= 60
