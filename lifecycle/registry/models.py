"""The MLflow registry: one registered model per specialist, aliases, lineage.

Each training is an MLflow run (params, metrics, confusion matrix, the
validation set as the monitoring reference, the adapter as safetensors) and a
version of the registered model named after the specialist. Promotion moves
aliases (``champion``, ``challenger``, ``previous``); there are no stages.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifecycle.config.errors import RegistryError
from lifecycle.config.settings import Settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.model.host import AdapterHost
    from lifecycle.training.train import TrainResult

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)
TRIGGERS = ("initial", "drift", "schedule", "manual")
#: Artifact folders inside a training run.
ADAPTER_PATH = "specialist"
REFERENCE_PATH = "reference"
#: The rows a version trained on (text, label; validation rows excluded): what a retrain
#: replays so that the challenger keeps what the champion learnt.
TRAINING_PATH = "training"
TRAINING_FILE = "train.parquet"
TAG = "lifecycle."
#: When a version became champion (ISO time): where the guardrail's "after" begins.
PROMOTED_AT = f"{TAG}promoted_at"


@dataclass(frozen=True)
class VersionInfo:
    """A registered version, normalised (MLflow gives int from sqlite, str over REST)."""

    name: str
    version: int
    run_id: str | None
    source: str
    aliases: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)
    created_ms: int = 0

    @property
    def lineage(self) -> dict[str, str]:
        return {k[len(TAG) :]: v for k, v in self.tags.items() if k.startswith(TAG)}


class Registry:
    """A thin layer over ``MlflowClient`` with the project's names and checks."""

    def __init__(self, settings: Settings) -> None:
        from mlflow import MlflowClient

        self.settings = settings
        if settings.tracking_uri.startswith("sqlite:"):
            settings.ensure_home()
        _set_fluent_tracking_uri(settings.tracking_uri)
        self.client = MlflowClient(
            tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri
        )

    # -- writing ------------------------------------------------------------------

    def experiment_id(self, name: str, *, kind: str = "training") -> str:
        """The experiment of a specialist's trainings (or monitoring runs), created on first use."""
        experiment_name = f"lifecycle/{name}/{kind}"
        found = self.client.get_experiment_by_name(experiment_name)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self._local_store():
            # Without an explicit location, artifacts land in ./mlruns of whatever folder runs us.
            location = (self.settings.artifact_root / name / kind).as_uri()
        return str(self.client.create_experiment(experiment_name, artifact_location=location))

    def log_training(
        self,
        spec: SpecialistSpec,
        result: TrainResult,
        *,
        trigger: str = "manual",
        parent_version: int | None = None,
        data_window: str = "",
        extra_tags: Mapping[str, str] | None = None,
        extra_artifacts: Mapping[str, Path] | None = None,
    ) -> VersionInfo:
        """Log a training run and register it as a new version of the specialist's model."""
        import mlflow

        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}")
        lineage = {
            f"{TAG}trigger": trigger,
            f"{TAG}parent_version": str(parent_version) if parent_version is not None else "",
            f"{TAG}data_window": data_window,
            f"{TAG}training_set_hash": result.dataset_hash,
            f"{TAG}base_model": spec.base_model,
            f"{TAG}labels": json.dumps(list(result.meta.labels)),
            f"{TAG}n_labels": str(len(result.meta.labels)),
            **dict(extra_tags or {}),
        }
        experiment_id = self.experiment_id(spec.name)
        with (
            mlflow.start_run(experiment_id=experiment_id, run_name=f"{spec.name}-{trigger}") as run,
            tempfile.TemporaryDirectory() as tmp,
        ):
            mlflow.set_tags({**lineage, "mlflow.note.content": _run_note(spec, result, trigger)})
            mlflow.log_params({k: _param(v) for k, v in result.params.items()})
            metrics = {
                **result.evaluation.metrics("val."),
                "train.seconds": result.seconds,
                "train.examples_per_second": result.examples_per_second,
                "train.steps": float(result.steps),
            }
            mlflow.log_metrics(metrics)
            for point in result.history:
                mlflow.log_metrics(
                    {f"curve.{k}": v for k, v in point.items() if k != "step"},
                    step=int(point["step"]),
                )
            mlflow.log_figure(_confusion_figure(result), "evaluation/confusion_matrix.png")
            mlflow.log_dict(_evaluation_dict(result), "evaluation/evaluation.json")
            folder = result.host.save_adapter(result.adapter_id, Path(tmp) / ADAPTER_PATH)
            mlflow.log_artifacts(str(folder), ADAPTER_PATH)
            reference = _write_reference(result, Path(tmp) / REFERENCE_PATH)
            mlflow.log_artifacts(str(reference), REFERENCE_PATH)
            training = _write_training_set(result, Path(tmp) / TRAINING_PATH)
            mlflow.log_artifacts(str(training), TRAINING_PATH)
            for artifact_path, local in (extra_artifacts or {}).items():
                mlflow.log_artifact(str(local), artifact_path)
            run_id = run.info.run_id
        self._ensure_model(spec)
        version = self.client.create_model_version(
            name=spec.name,
            source=f"runs:/{run_id}/{ADAPTER_PATH}",
            run_id=run_id,
            tags=lineage,
            description=f"{trigger} training; val accuracy {result.evaluation.accuracy:.4f}",
        )
        info = self.get_version(spec.name, int(version.version))
        logger.info("registered %s version %d (run %s)", spec.name, info.version, run_id)
        return info

    def set_alias(self, name: str, alias: str, version: int) -> None:
        if alias not in ALIASES:
            raise RegistryError(f"alias must be one of {', '.join(ALIASES)}, not {alias!r}")
        self.get_version(name, version)
        self.client.set_registered_model_alias(name, alias, str(version))

    def tag_version(self, name: str, version: int | str, key: str, value: str) -> None:
        """Set one tag on a version (values are cut to MLflow's 5,000-character limit)."""
        self.client.set_model_version_tag(name, str(version), key, value[:5000])

    def retire_challenger(self, name: str, version: int | str, key: str, reason: str) -> None:
        """The challenger alias goes; the version keeps why, under tag ``key``."""
        self.client.delete_registered_model_alias(name, CHALLENGER)
        self.tag_version(name, version, key, reason)

    def delete_alias(self, name: str, alias: str) -> None:
        if self.alias_version(name, alias) is not None:
            self.client.delete_registered_model_alias(name, alias)

    def promote(
        self,
        name: str,
        *,
        reason: str = "manual",
        version: int | None = None,
        at: datetime | None = None,
    ) -> dict[str, int]:
        """Challenger (or ``version``, e.g. one the gate rejected) becomes champion, the old
        champion becomes previous.

        The aliases move in the order that leaves a champion in place at every instant, so a
        gateway polling mid-move never finds none. The time is stamped on the version
        (``lifecycle.promoted_at``): the guardrail watches every promotion from then on,
        forced ones included.
        """
        aliases = self.aliases(name)
        if version is None and CHALLENGER not in aliases:
            raise RegistryError(f"{name} has no challenger to promote ({_alias_text(aliases)})")
        new, old = (version or aliases[CHALLENGER]), aliases.get(CHAMPION)
        if version is not None:
            self.get_version(name, version)  # a clear error for a version that does not exist
        if new == old:
            raise RegistryError(f"{name} v{new} is the champion already")
        stamp = (at or datetime.now(timezone.utc)).isoformat()
        self.client.set_model_version_tag(name, str(new), PROMOTED_AT, stamp)
        self.client.set_model_version_tag(name, str(new), f"{TAG}promoted", reason)
        if old is not None:
            self.client.set_registered_model_alias(name, PREVIOUS, str(old))
        self.client.set_registered_model_alias(name, CHAMPION, str(new))
        if aliases.get(CHALLENGER) == new:
            self.client.delete_registered_model_alias(name, CHALLENGER)
        return self.aliases(name)

    def rollback(self, name: str, *, reason: str = "manual") -> dict[str, int]:
        """The previous version becomes champion again; the rolled-back one is tagged."""
        aliases = self.aliases(name)
        if PREVIOUS not in aliases:
            raise RegistryError(
                f"{name} has no previous version to roll back to ({_alias_text(aliases)})"
            )
        bad = aliases.get(CHAMPION)
        self.client.set_registered_model_alias(name, CHAMPION, str(aliases[PREVIOUS]))
        self.client.delete_registered_model_alias(name, PREVIOUS)
        if bad is not None:
            self.client.set_model_version_tag(name, str(bad), f"{TAG}rolled_back", reason)
        return self.aliases(name)

    # -- reading ------------------------------------------------------------------

    def specialists(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models())

    def has_model(self, name: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            return False
        return True

    def aliases(self, name: str) -> dict[str, int]:
        self._require_model(name)
        model = self.client.get_registered_model(name)
        return {alias: int(v) for alias, v in (model.aliases or {}).items()}

    def alias_version(self, name: str, alias: str) -> int | None:
        return self.aliases(name).get(alias)

    def versions(self, name: str) -> list[VersionInfo]:
        self._require_model(name)
        found = self.client.search_model_versions(f"name = '{name}'")
        # Search results leave aliases out; the registered model has them.
        by_version: dict[int, list[str]] = {}
        for alias, version in self.aliases(name).items():
            by_version.setdefault(version, []).append(alias)
        infos = (_info(v, aliases=by_version.get(int(v.version), [])) for v in found)
        return sorted(infos, key=lambda v: v.version)

    def get_version(self, name: str, version: int) -> VersionInfo:
        from mlflow.exceptions import MlflowException

        self._require_model(name)
        try:
            return _info(self.client.get_model_version(name, str(version)))
        except MlflowException:
            known = ", ".join(str(v.version) for v in self.versions(name)) or "none"
            raise RegistryError(f"{name} has no version {version}; versions: {known}") from None

    def resolve(self, name: str, ref: str | int) -> VersionInfo:
        """A version by number (``3``), alias (``champion``) or ``latest``."""
        self._require_model(name)
        text = str(ref)
        if text.isdigit():
            return self.get_version(name, int(text))
        if text == "latest":
            versions = self.versions(name)
            if not versions:
                raise RegistryError(
                    f"{name} has no versions yet; run `lifecycle train --specialist {name}`"
                )
            return versions[-1]
        aliases = self.aliases(name)
        if text not in aliases:
            raise RegistryError(
                f"{name} has no version with alias {text!r} ({_alias_text(aliases)})"
            )
        return self.get_version(name, aliases[text])

    def run_metrics(self, run_id: str | None) -> dict[str, float]:
        if not run_id:
            return {}
        return dict(self.client.get_run(run_id).data.metrics)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """Every ``(step, value)`` a run logged for ``key``, by step (empty if never logged)."""
        points = self.client.get_metric_history(run_id, key)
        return sorted((int(m.step), float(m.value)) for m in points)

    def log_figure(self, run_id: str, figure: Any, path: str) -> None:
        """A matplotlib figure as an image artifact of the run (format from the suffix)."""
        self.client.log_figure(run_id, figure, path)

    def download(self, name: str, ref: str | int) -> tuple[VersionInfo, Path]:
        """The version's adapter folder, fetched once into a cache (versions never change)."""
        import mlflow

        info = self.resolve(name, ref)
        cache = self.settings.home / "cache" / name / f"v{info.version}"
        folder = cache / ADAPTER_PATH
        if not (folder / "specialist.json").is_file():
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                got = Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=info.source,
                        dst_path=tmp,
                        tracking_uri=self.settings.tracking_uri,
                    )
                )
                try:
                    got.rename(folder)
                except OSError:
                    # Another process (a second gateway) filled the cache first.
                    if not (folder / "specialist.json").is_file():
                        raise
        return info, folder

    def load(
        self, host: AdapterHost, name: str, ref: str | int, *, adapter_id: str | None = None
    ) -> tuple[str, VersionInfo]:
        """Load a version into ``host`` under a versioned id (``name@v3`` by default)."""
        info, folder = self.download(name, ref)
        adapter_id = adapter_id or f"{name}@v{info.version}"
        host.load_adapter(adapter_id, folder)
        return adapter_id, info

    def reference(self, name: str, ref: str | int) -> tuple[pd.DataFrame, np.ndarray]:
        """The version's monitoring reference: its validation rows with its own predictions."""
        import mlflow
        import pandas as pd
        from safetensors.numpy import load_file

        info = self.resolve(name, ref)
        if not info.run_id:
            raise RegistryError(f"{name} v{info.version} has no training run, hence no reference")
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=info.run_id,
                    artifact_path=REFERENCE_PATH,
                    dst_path=tmp,
                    tracking_uri=self.settings.tracking_uri,
                )
            )
            frame = pd.read_parquet(local / "validation.parquet")
            embeddings = load_file(str(local / "embeddings.safetensors"))["embeddings"]
        return frame, embeddings

    def training_set(self, name: str, ref: str | int) -> pd.DataFrame | None:
        """The (text, label) rows the version trained on, or None for a version logged
        before training sets were kept (``training/train.parquet`` absent)."""
        import mlflow
        import pandas as pd

        info = self.resolve(name, ref)
        if not info.run_id:
            return None
        artifacts = {
            a.path for a in self.client.list_artifacts(info.run_id, TRAINING_PATH) if not a.is_dir
        }
        if f"{TRAINING_PATH}/{TRAINING_FILE}" not in artifacts:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=info.run_id,
                artifact_path=f"{TRAINING_PATH}/{TRAINING_FILE}",
                dst_path=tmp,
                tracking_uri=self.settings.tracking_uri,
            )
            return pd.read_parquet(local)

    # -- internals ----------------------------------------------------------------

    def _local_store(self) -> bool:
        return self.settings.tracking_uri.startswith(("sqlite:", "file:", "/"))

    def _ensure_model(self, spec: SpecialistSpec) -> None:
        if not self.has_model(spec.name):
            self.client.create_registered_model(
                spec.name,
                tags={f"{TAG}specialist": "true", f"{TAG}base_model": spec.base_model},
                description=spec.description or f"LoRA specialist {spec.name}",
            )

    def _require_model(self, name: str) -> None:
        if not self.has_model(name):
            raise RegistryError(
                f"no registered model named {name!r} at {self.settings.tracking_uri}; "
                f"train it first: lifecycle train --specialist {name}"
            )


def _info(version: Any, *, aliases: list[str] | None = None) -> VersionInfo:
    return VersionInfo(
        name=version.name,
        version=int(version.version),
        run_id=version.run_id or None,
        source=version.source,
        aliases=tuple(sorted(aliases if aliases is not None else (version.aliases or []))),
        tags=dict(version.tags or {}),
        created_ms=int(version.creation_timestamp or 0),
    )


def _param(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return text[:500]


def _run_note(spec: SpecialistSpec, result: TrainResult, trigger: str) -> str:
    ev = result.evaluation
    return (
        f"**{spec.name}** ({trigger} training) on `{spec.base_model}`: "
        f"{len(result.meta.labels)} labels, {len(result.train)} training rows. "
        f"Validation accuracy {ev.accuracy:.3f}, macro-F1 {ev.macro_f1:.3f}, "
        f"calibration error {ev.calibration_error:.3f} (temperature {result.meta.temperature:.2f})."
    )


def _evaluation_dict(result: TrainResult) -> dict[str, Any]:
    ev = result.evaluation
    return {
        "n": ev.n,
        "accuracy": ev.accuracy,
        "macro_f1": ev.macro_f1,
        "calibration_error": ev.calibration_error,
        "temperature": result.meta.temperature,
        "labels": list(ev.labels),
        "confusion_matrix": ev.confusion.tolist(),
        "per_class": {k: vars(v) for k, v in ev.per_class.items()},
    }


def _confusion_figure(result: TrainResult) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = result.evaluation
    size = min(24.0, 3.0 + 0.3 * len(ev.labels))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(ev.confusion, cmap="Blues")
    ax.set_xticks(range(len(ev.labels)), ev.labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(ev.labels)), ev.labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{result.meta.name}: validation accuracy {ev.accuracy:.3f}")
    fig.tight_layout()
    plt.close(fig)
    return fig


def _set_fluent_tracking_uri(uri: str) -> None:
    """Point MLflow's fluent API (``mlflow.start_run``) at ``uri`` without touching the env.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into ``os.environ``, and
    our settings read that variable: every ``load_settings()`` later in the process would then
    follow the first registry opened instead of its own ``LIFECYCLE_HOME``.
    """
    import os

    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def _write_reference(result: TrainResult, folder: Path) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    result.validation_predictions.to_parquet(folder / "validation.parquet", index=False)
    save_file({"embeddings": result.validation_embeddings}, str(folder / "embeddings.safetensors"))
    return folder


def _write_training_set(result: TrainResult, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame = result.train[["text", "label"]].astype({"text": str, "label": str})
    frame.reset_index(drop=True).to_parquet(folder / TRAINING_FILE, index=False)
    return folder


def _alias_text(aliases: Mapping[str, int]) -> str:
    return ", ".join(f"{a}=v{v}" for a, v in sorted(aliases.items())) or "no aliases"
