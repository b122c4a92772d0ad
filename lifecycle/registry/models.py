"""The MLflow model registry: one registered model per specialist, aliases, lineage.

Each training is an MLflow run (:mod:`lifecycle.registry.tracking`: params, metrics,
confusion matrix, the validation set as the monitoring reference, the adapter as
safetensors) and a version of the registered model named after the specialist. Promotion
moves aliases (``champion``, ``challenger``, ``previous``); there are no stages.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifecycle.config.errors import RegistryError
from lifecycle.registry.tracking import ADAPTER_PATH, Tracking

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


class Registry(Tracking):
    """The project's names and checks over MLflow's model registry, and (inherited) the
    tracking of the runs behind each version."""

    # -- writing ------------------------------------------------------------------

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

        from lifecycle.training.record import headline

        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}")
        lineage = {
            f"{TAG}trigger": trigger,
            f"{TAG}parent_version": str(parent_version) if parent_version is not None else "",
            f"{TAG}data_window": data_window,
            f"{TAG}training_set_hash": result.dataset_hash,
            f"{TAG}base_model": spec.base_model,
            f"{TAG}task": result.meta.task,
            f"{TAG}labels": json.dumps(list(result.meta.labels)),
            f"{TAG}n_labels": str(len(result.meta.labels)),
            **dict(extra_tags or {}),
        }
        run_id = self.log_training_run(
            spec, result, trigger=trigger, tags=lineage, extra_artifacts=extra_artifacts
        )
        self._ensure_model(spec)
        version = self._client.create_model_version(
            name=spec.name,
            source=f"runs:/{run_id}/{ADAPTER_PATH}",
            run_id=run_id,
            tags=lineage,
            description=f"{trigger} training; {headline(result)}",
        )
        info = self.get_version(spec.name, int(version.version))
        logger.info("registered %s version %d (run %s)", spec.name, info.version, run_id)
        return info

    def set_alias(self, name: str, alias: str, version: int) -> None:
        if alias not in ALIASES:
            raise RegistryError(f"alias must be one of {', '.join(ALIASES)}, not {alias!r}")
        self.get_version(name, version)
        self._client.set_registered_model_alias(name, alias, str(version))

    def tag_version(self, name: str, version: int | str, key: str, value: str) -> None:
        """Set one tag on a version (values are cut to MLflow's 5,000-character limit)."""
        self._client.set_model_version_tag(name, str(version), key, value[:5000])

    def retire_challenger(self, name: str, version: int | str, key: str, reason: str) -> None:
        """The challenger alias goes; the version keeps why, under tag ``key``."""
        self._client.delete_registered_model_alias(name, CHALLENGER)
        self.tag_version(name, version, key, reason)

    def delete_alias(self, name: str, alias: str) -> None:
        if self.alias_version(name, alias) is not None:
            self._client.delete_registered_model_alias(name, alias)

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
        stamp = (at or datetime.now(UTC)).isoformat()
        self._client.set_model_version_tag(name, str(new), PROMOTED_AT, stamp)
        self._client.set_model_version_tag(name, str(new), f"{TAG}promoted", reason)
        if old is not None:
            self._client.set_registered_model_alias(name, PREVIOUS, str(old))
        self._client.set_registered_model_alias(name, CHAMPION, str(new))
        if aliases.get(CHALLENGER) == new:
            self._client.delete_registered_model_alias(name, CHALLENGER)
        return self.aliases(name)

    def rollback(self, name: str, *, reason: str = "manual") -> dict[str, int]:
        """The previous version becomes champion again; the rolled-back one is tagged."""
        aliases = self.aliases(name)
        if PREVIOUS not in aliases:
            raise RegistryError(
                f"{name} has no previous version to roll back to ({_alias_text(aliases)})"
            )
        bad = aliases.get(CHAMPION)
        self._client.set_registered_model_alias(name, CHAMPION, str(aliases[PREVIOUS]))
        self._client.delete_registered_model_alias(name, PREVIOUS)
        if bad is not None:
            self._client.set_model_version_tag(name, str(bad), f"{TAG}rolled_back", reason)
        return self.aliases(name)

    # -- reading ------------------------------------------------------------------

    def specialists(self) -> list[str]:
        return sorted(m.name for m in self._client.search_registered_models())

    def has_model(self, name: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_registered_model(name)
        except MlflowException:
            return False
        return True

    def aliases(self, name: str) -> dict[str, int]:
        self._require_model(name)
        model = self._client.get_registered_model(name)
        return {alias: int(v) for alias, v in (model.aliases or {}).items()}

    def alias_version(self, name: str, alias: str) -> int | None:
        return self.aliases(name).get(alias)

    def versions(self, name: str) -> list[VersionInfo]:
        self._require_model(name)
        found = self._client.search_model_versions(f"name = '{name}'")
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
            return _info(self._client.get_model_version(name, str(version)))
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
        return self.run_reference(self._reference_run(name, ref))

    def reference_rows(self, name: str, ref: str | int) -> pd.DataFrame:
        """The version's reference rows without their embeddings (texts, labels, its own
        predictions): for probes and baselines that read no embedding."""
        return self.run_reference_rows(self._reference_run(name, ref))

    def training_set(self, name: str, ref: str | int) -> pd.DataFrame | None:
        """The (text, label) rows the version trained on, or None for a version logged
        before training sets were kept (``training/train.parquet`` absent)."""
        info = self.resolve(name, ref)
        return self.run_training_set(info.run_id) if info.run_id else None

    # -- internals ----------------------------------------------------------------

    def _reference_run(self, name: str, ref: str | int) -> str:
        """The training run that holds the version's reference."""
        info = self.resolve(name, ref)
        if not info.run_id:
            raise RegistryError(f"{name} v{info.version} has no training run, hence no reference")
        return info.run_id

    def _ensure_model(self, spec: SpecialistSpec) -> None:
        if not self.has_model(spec.name):
            self._client.create_registered_model(
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


def _alias_text(aliases: Mapping[str, int]) -> str:
    return ", ".join(f"{a}=v{v}" for a, v in sorted(aliases.items())) or "no aliases"
