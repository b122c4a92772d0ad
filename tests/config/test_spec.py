"""The specialists file and settings: validation with errors that name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lifecycle.config.errors import ConfigError
from lifecycle.config.settings import load_settings
from lifecycle.config.spec import FileData, GeneratorData, SpecialistsFile, load_specialists

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "specialists.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content), "utf-8")
    return path


def test_shipped_file_is_valid() -> None:
    parsed = load_specialists(REPO / "specialists.yaml")
    spec = parsed.get("support-router")
    assert spec.base_model == "minilm"
    assert isinstance(spec.data, GeneratorData) and spec.data.n == 2000


def test_defaults_fill_everything_but_the_name(tmp_path: Path) -> None:
    spec = load_specialists(_write(tmp_path, {"specialists": [{"name": "a"}]})).get("a")
    assert spec.lora.r == 8 and spec.lora.target_modules == ("query", "value")
    assert 0 < spec.monitoring.false_alarm_rate < 0.5
    assert spec.labels is None


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    first = load_specialists(_write(tmp_path, {"specialists": [{"name": "a", "lora": {"r": 4}}]}))
    dumped = first.model_dump(mode="json")
    again = SpecialistsFile.model_validate(dumped)
    assert again == first


def test_relative_data_path_resolves_against_the_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path, {"specialists": [{"name": "a", "data": {"kind": "file", "path": "d.csv"}}]}
    )
    spec = load_specialists(path).get("a")
    assert isinstance(spec.data, FileData)
    assert spec.data.path == (tmp_path / "d.csv").resolve()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ({"specialists": [{"name": "a", "lora": {"r": 0}}]}, "specialists[0].lora.r"),
        ({"specialists": [{"name": "Bad Name"}]}, "specialists[0].name"),
        ({"specialists": [{"name": "../etc"}]}, "not a valid specialist name"),
        ({"specialists": [{"name": "a", "typo_field": 1}]}, "specialists[0].typo_field"),
        ({"specialists": [{"name": "a", "labels": ["only"]}]}, "at least 2 labels"),
        ({"specialists": [{"name": "a", "labels": ["x", "x"]}]}, "distinct"),
        ({"specialists": [{"name": "a"}, {"name": "a"}]}, "repeated: a"),
        ({"specialists": []}, "specialists"),
        ({"specialists": [{"name": "a", "data": {"kind": "ftp"}}]}, "specialists[0].data"),
        ({"specialists": [{"name": "a", "training": {"epochs": "many"}}]}, "training.epochs"),
        ("specialists: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_bad_files_name_file_and_field(tmp_path: Path, content: object, needle: str) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(ConfigError) as err:
        load_specialists(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value)


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_specialists(tmp_path / "nope.yaml")
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"specialists:\n  - name: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_specialists(path)


def test_unknown_specialist_lists_known_ones(tmp_path: Path) -> None:
    parsed = load_specialists(_write(tmp_path, {"specialists": [{"name": "a"}, {"name": "b"}]}))
    with pytest.raises(ConfigError, match="declares: a, b"):
        parsed.get("c")


def test_settings_defaults_live_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = load_settings()
    assert settings.home == (tmp_path / "state").resolve()
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
    assert settings.traffic_url.endswith(str(tmp_path / "state" / "traffic.db"))
    assert settings.artifact_root.is_relative_to(settings.home)


def test_settings_take_standard_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("LIFECYCLE_DEVICE", "cpu")
    settings = load_settings()
    assert settings.tracking_uri == "http://127.0.0.1:5000"
    assert settings.device == "cpu"


def test_bad_settings_are_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFECYCLE_DEVICE", "tpu")
    with pytest.raises(ConfigError, match="device"):
        load_settings()
