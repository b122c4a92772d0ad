"""MLflow tracking: experiments, runs, their metrics, tags and artifacts.

The one place (with :mod:`lifecycle.registry.models`) that holds an ``MlflowClient``. It is
opened per registry with explicit URIs and never through MLflow's process-wide fluent state,
so two registries (or a test's and a flow's) in one process never write into each other.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifecycle.config.settings import Settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.training.train import TrainResult

#: Artifact folders inside a training run.
ADAPTER_PATH = "specialist"
REFERENCE_PATH = "reference"
#: The rows a version trained on (text, label; validation rows excluded): what a retrain
#: replays so that the challenger keeps what the champion learnt.
TRAINING_PATH = "training"
#: MLflow's limits per ``log_batch`` call.
_BATCH_METRICS, _BATCH_PARAMS = 1000, 100


class Tracking:
    """Runs and artifacts of a specialist's trainings and monitoring checks."""

    def __init__(self, settings: Settings) -> None:
        from mlflow import MlflowClient

        self.settings = settings
        if settings.tracking_uri.startswith("sqlite:"):
            settings.ensure_home()
        self._client = MlflowClient(
            tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri
        )

    # -- runs -------------------------------------------------------------------------

    def experiment_id(self, name: str, *, kind: str = "training") -> str:
        """The experiment of a specialist's trainings (or monitoring runs), created on first use."""
        experiment_name = f"lifecycle/{name}/{kind}"
        found = self._client.get_experiment_by_name(experiment_name)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self._local_store():
            # Without an explicit location, artifacts land in ./mlruns of whatever folder runs us.
            location = (self.settings.artifact_root / name / kind).as_uri()
        return str(self._client.create_experiment(experiment_name, artifact_location=location))

    def find_or_create_run(
        self, experiment_id: str, *, tag: str, run_name: str, tags: Mapping[str, str]
    ) -> str:
        """The oldest run of the experiment tagged ``tag = 'true'``, created on first use."""
        found = self._client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{tag}` = 'true'",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        if found:
            return str(found[0].info.run_id)
        run = self._client.create_run(
            experiment_id, run_name=run_name, tags={tag: "true", **dict(tags)}
        )
        return str(run.info.run_id)

    def log_training_run(
        self,
        spec: SpecialistSpec,
        result: TrainResult,
        *,
        trigger: str,
        tags: Mapping[str, str],
        extra_artifacts: Mapping[str, Path] | None = None,
    ) -> str:
        """One finished run with a training's params, metrics, curves, figures, adapter,
        reference and training set; its id."""
        from mlflow.entities import Metric, Param, RunStatus
        from mlflow.tracking.context.registry import resolve_tags

        from lifecycle.training import record

        run = self._client.create_run(
            self.experiment_id(spec.name),
            run_name=f"{spec.name}-{trigger}",
            # The fluent API's source, user and git tags, as a run started in code has.
            tags=resolve_tags(
                {**tags, "mlflow.note.content": record.run_note(spec, result, trigger)}
            ),
        )
        run_id = str(run.info.run_id)
        try:
            ms = _now_ms()
            metrics = {
                **result.evaluation.metrics("val."),
                "train.seconds": result.seconds,
                "train.examples_per_second": result.examples_per_second,
                "train.steps": float(result.steps),
            }
            points = [Metric(k, float(v), ms, 0) for k, v in metrics.items()]
            points += [
                Metric(f"curve.{k}", float(v), ms, int(point["step"]))
                for point in result.history
                for k, v in point.items()
                if k != "step"
            ]
            params = [Param(k, record.param_text(v)) for k, v in result.params.items()]
            for i in range(0, len(points), _BATCH_METRICS):
                self._client.log_batch(run_id, metrics=points[i : i + _BATCH_METRICS])
            for i in range(0, len(params), _BATCH_PARAMS):
                self._client.log_batch(run_id, params=params[i : i + _BATCH_PARAMS])
            self._client.log_figure(
                run_id, record.confusion_figure(result), "evaluation/confusion_matrix.png"
            )
            self._client.log_dict(
                run_id, record.evaluation_dict(result), "evaluation/evaluation.json"
            )
            with tempfile.TemporaryDirectory() as tmp:
                folder = result.host.save_adapter(result.adapter_id, Path(tmp) / ADAPTER_PATH)
                self._client.log_artifacts(run_id, str(folder), ADAPTER_PATH)
                reference = record.write_reference(result, Path(tmp) / REFERENCE_PATH)
                self._client.log_artifacts(run_id, str(reference), REFERENCE_PATH)
                training = record.write_training_set(result, Path(tmp) / TRAINING_PATH)
                self._client.log_artifacts(run_id, str(training), TRAINING_PATH)
            for artifact_path, local in (extra_artifacts or {}).items():
                self._client.log_artifact(run_id, str(local), artifact_path)
        except BaseException:
            self._client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        self._client.set_terminated(run_id)
        return run_id

    def log_metrics(
        self,
        run_id: str,
        values: Mapping[str, float],
        *,
        step: int = 0,
        timestamp_ms: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Metrics (and tags) in one call, at ``step`` and ``timestamp_ms`` (default now)."""
        from mlflow.entities import Metric, RunTag

        ms = timestamp_ms if timestamp_ms is not None else _now_ms()
        points = [Metric(k, float(v), ms, step) for k, v in values.items()]
        run_tags = [RunTag(k, v) for k, v in (tags or {}).items()]
        for i in range(0, max(len(points), 1), _BATCH_METRICS):
            self._client.log_batch(
                run_id, metrics=points[i : i + _BATCH_METRICS], tags=run_tags if i == 0 else []
            )

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self._client.log_text(run_id, text, path)

    def log_artifacts(self, run_id: str, paths: Sequence[Path], folder: str) -> None:
        for path in paths:
            self._client.log_artifact(run_id, str(path), folder)

    def log_figure(self, run_id: str, figure: Any, path: str) -> None:
        """A matplotlib figure as an image artifact of the run (format from the suffix)."""
        self._client.log_figure(run_id, figure, path)

    def artifact_uri(self, run_id: str) -> str:
        return str(self._client.get_run(run_id).info.artifact_uri)

    def run_metrics(self, run_id: str | None) -> dict[str, float]:
        if not run_id:
            return {}
        return dict(self._client.get_run(run_id).data.metrics)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self._client.get_run(run_id).data.tags)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """Every ``(step, value)`` a run logged for ``key``, by step (empty if never logged)."""
        points = self._client.get_metric_history(run_id, key)
        return sorted((int(m.step), float(m.value)) for m in points)

    def artifact_files(self, run_id: str, folder: str) -> set[str]:
        """Paths of the files (not folders) directly under ``folder`` of the run."""
        return {a.path for a in self._client.list_artifacts(run_id, folder) if not a.is_dir}

    # -- a training run's reference and training set ----------------------------------

    def run_reference(self, run_id: str) -> tuple[pd.DataFrame, np.ndarray]:
        """A training run's monitoring reference: validation rows with their predictions, and
        their embeddings."""
        import pandas as pd
        from safetensors.numpy import load_file

        with tempfile.TemporaryDirectory() as tmp:
            local = self._download(run_id, REFERENCE_PATH, tmp)
            frame = pd.read_parquet(local / "validation.parquet")
            embeddings = load_file(str(local / "embeddings.safetensors"))["embeddings"]
        return frame, embeddings

    def run_reference_rows(self, run_id: str) -> pd.DataFrame:
        """A training run's reference rows alone: what a caller that needs no embeddings reads
        (the embeddings are most of the reference's bytes)."""
        import pandas as pd

        with tempfile.TemporaryDirectory() as tmp:
            return pd.read_parquet(
                self._download(run_id, f"{REFERENCE_PATH}/validation.parquet", tmp)
            )

    def run_training_set(self, run_id: str) -> pd.DataFrame | None:
        """The (text, label) rows a training run trained on, or None for a run logged before
        training sets were kept."""
        import pandas as pd

        from lifecycle.training.record import TRAINING_FILE

        path = f"{TRAINING_PATH}/{TRAINING_FILE}"
        if path not in self.artifact_files(run_id, TRAINING_PATH):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            return pd.read_parquet(self._download(run_id, path, tmp))

    # -- internals ----------------------------------------------------------------------

    def _download(self, run_id: str, path: str, into: str) -> Path:
        import mlflow

        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=path,
                dst_path=into,
                tracking_uri=self.settings.tracking_uri,
            )
        )

    def _local_store(self) -> bool:
        return self.settings.tracking_uri.startswith(("sqlite:", "file:", "/"))


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
