"""One settings object, read from the environment.

Variables carry the ``LIFECYCLE_`` prefix, except where the ecosystem has a
standard name (``MLFLOW_TRACKING_URI``). Every piece of state defaults to a
place under ``LIFECYCLE_HOME`` so that one folder holds (and backs up) it all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lifecycle.errors import ConfigError


class Settings(BaseSettings):
    """Process-wide settings; build one per process (CLI command, gateway, flow run)."""

    model_config = SettingsConfigDict(env_prefix="LIFECYCLE_", extra="ignore")

    home: Path = Field(
        default=Path(".lifecycle"),
        description="Folder for all default state: MLflow db and artifacts, traffic db, Prefect.",
    )
    specialists_file: Path = Field(
        default=Path("specialists.yaml"), description="YAML file declaring the specialists."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "LIFECYCLE_MLFLOW_TRACKING_URI"),
        description="MLflow tracking (and registry) URI; default: sqlite db under home.",
    )
    traffic_db_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the traffic store; default: sqlite under home."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where models run: CUDA when present (auto), or forced."
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="CPU threads for torch; default: all cores."
    )
    progress: bool = Field(default=True, description="Show progress bars during training.")

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        # Absolute, so that artifacts do not move with the process's working folder.
        return value.expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        """Where experiments created by this project keep artifacts (local stores only)."""
        return self.home / "mlartifacts"

    @property
    def traffic_url(self) -> str:
        return self.traffic_db_url or f"sqlite:///{self.home / 'traffic.db'}"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    def ensure_home(self) -> None:
        """Create the home folder; a clear error if it cannot be written."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            self.artifact_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"LIFECYCLE_HOME={self.home} cannot be created ({exc.strerror}); "
                "point LIFECYCLE_HOME at a writable folder"
            ) from exc


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI options) on top."""
    from pydantic import ValidationError

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings (environment LIFECYCLE_*): {problems}") from exc
