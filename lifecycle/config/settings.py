"""One settings object, read from the environment.

Variables carry the ``LIFECYCLE_`` prefix, except where the ecosystem has a
standard name (``MLFLOW_TRACKING_URI``). Every piece of state defaults to a
place under ``LIFECYCLE_HOME`` so that one folder holds (and backs up) it all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lifecycle.config.errors import ConfigError


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

    # -- gateway ----------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Address the gateway listens on.")
    port: int = Field(default=8080, ge=1, le=65535)
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token for /v1/admin routes; required unless insecure_dev."
    )
    insecure_dev: bool = Field(
        default=False, description="Allow admin routes without a token (development only)."
    )
    max_batch_size: int = Field(
        default=256, ge=1, le=1024, description="Most texts gathered for one turn of the model."
    )
    model_workers: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Copies of the base model, each on its own thread; default: 2 on a CPU "
        "with 2+ cores (one torch thread each, see torch_threads), 1 on a GPU.",
    )
    forward_batch_size: int = Field(
        default=64,
        ge=1,
        le=1024,
        description="Texts per forward pass (packed end to end on a CPU).",
    )
    max_wait_ms: float = Field(
        default=2.0, ge=0, le=1000, description="Longest a text waits for its batch to fill."
    )
    max_texts_per_request: int = Field(default=256, ge=1, le=10000)
    max_text_chars: int = Field(default=4000, ge=1, le=1_000_000)
    max_body_bytes: int = Field(default=2_000_000, ge=1024)
    keep_alive_s: float = Field(
        default=75.0,
        gt=0,
        le=3600,
        description="Seconds an idle client connection is kept open. Longer than clients' and "
        "load balancers' own idle timeouts (httpx 5 s, most 60 s), so that the client, never "
        "the gateway, closes an idle connection: else a request sent as the gateway closes "
        "it fails.",
    )
    registry_poll_s: float = Field(
        default=10.0, ge=0, description="Seconds between alias checks; 0 turns polling off."
    )
    shadow_queue_size: int = Field(
        default=10_000, ge=1, description="Shadow work past this is dropped."
    )
    shadow_batch_size: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Texts per shadow batch: shadow work waits for a full one (cheaper per text).",
    )
    shadow_max_delay_s: float = Field(
        default=1.0, gt=0, le=3600, description="Longest shadow work waits for its batch to fill."
    )
    shadow_drain_s: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="On a graceful stop, the longest the gateway keeps scoring queued shadow "
        "work (on every model worker) before it exits; what is still unscored then is "
        "discarded and counted (lifecycle_shadow_discarded_total, and a log line of each "
        "specialist's scored/failed/dropped/discarded counts). 0 discards at once.",
    )
    shadow_worker: bool | None = Field(
        default=None,
        description="One more copy of the base model that runs only shadow work, so that "
        "shadowing never takes a model worker from champions; default: on with 2+ model "
        "workers (a CPU), off otherwise.",
    )
    shadow_piggyback: bool = Field(
        default=False,
        description="Let shadow work of answered requests ride along in small champion batches.",
    )
    ood_scores: bool = Field(
        default=True,
        description="Score every text with its version's out-of-scope detector (ood_score, "
        "out_of_scope in each answer); off answers None for both and nothing is escalated or "
        "counted as out of scope.",
    )
    quantize: Literal["off", "int8", "auto"] = Field(
        default="off",
        description="Int8 linear layers in the base encoder on a CPU (dynamic int8 weights, "
        "LoRA and heads in float32; about 1.5x the texts/s of float32 on an AVX2 core): "
        "'int8' always; 'auto' while every served version's labels agree with float32 on "
        "its reference rows at quantize_min_agreement, checked as each version loads; "
        "'off' float32 only. The monitors score their reference with the same setting, so "
        "that int8's small shift of the embeddings does not read as drift. Ignored on a GPU.",
    )
    quantize_min_agreement: float = Field(
        default=0.995,
        ge=0,
        le=1,
        description="Under quantize=auto: the least share of a version's reference rows whose "
        "int8 label equals the float32 one.",
    )
    quantize_probe_rows: int = Field(
        default=512,
        ge=1,
        le=100_000,
        description="Under quantize=auto: reference rows each version is probed on at load "
        "(float32 and int8, on every model worker).",
    )
    traffic_durability: Literal["memory", "write", "fsync"] = Field(
        default="write",
        description="What an answer waits for: 'write' puts the request's records in a log on "
        "disk first, so a killed gateway loses no answered request; 'fsync' also survives a "
        "power cut (slower); 'memory' answers first (a crash loses the last ~50 ms).",
    )
    store_text: Literal["full", "hash", "none"] = Field(
        default="full", description="What the traffic store keeps of each text (privacy)."
    )
    specialist_price_per_1k: float = Field(
        default=0.002, ge=0, description="Estimated serving cost of 1,000 specialist requests."
    )
    fallback_price_per_1k: float = Field(
        default=0.5, ge=0, description="Estimated cost of 1,000 fallback (big model) calls."
    )
    max_proposed_labels: int = Field(
        default=50,
        ge=0,
        le=100_000,
        description="Most distinct proposed labels (feedback labels the champion does not "
        "know, under labels_policy: open) one specialist may have in the traffic store; "
        "feedback that would add more is refused (429).",
    )
    fallback_accuracy: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Assumed accuracy of the fallback's answers, for the cost per correct "
        "answer until enough escalated requests have a person's label to measure it.",
    )

    # -- monitoring and alerts ---------------------------------------------------------
    alert_webhooks: list[str] = Field(
        default_factory=list,
        description="Slack-compatible webhook URLs alerts are posted to (JSON list in the env).",
    )
    alert_cooldown_s: float = Field(
        default=3600.0, ge=0, description="The same alert is not sent again within this time."
    )
    alert_timeout_s: float = Field(default=5.0, gt=0, description="Per webhook attempt.")
    alert_retries: int = Field(default=3, ge=0, le=10, description="Retries of a failed webhook.")
    calibration_rounds: int = Field(
        default=40,
        ge=10,
        le=1000,
        description="Reference resamples used to calibrate a champion's drift thresholds.",
    )

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
