"""Training steps composed: data for a spec, train, register, set aliases.

The CLI and the retrain flow call these; they hold no framework glue.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lifecycle.config.settings import Settings
from lifecycle.config.spec import FileData, GeneratorData, SpecialistSpec
from lifecycle.registry.models import CHALLENGER, CHAMPION, Registry, VersionInfo

if TYPE_CHECKING:
    import pandas as pd

    from lifecycle.training.train import TrainResult

logger = logging.getLogger(__name__)


def load_training_data(spec: SpecialistSpec) -> pd.DataFrame:
    """The spec's declared training data: generated tickets or a file of (text, label), or
    of (text, entities) for an extractor."""
    if spec.task == "extraction":
        return _extraction_data(spec)
    if isinstance(spec.data, GeneratorData):
        from lifecycle.synthetic.scenarios import generate_tickets

        return generate_tickets(spec.data.n, seed=spec.data.seed)
    assert isinstance(spec.data, FileData)
    from lifecycle.training.data import load_table

    return load_table(
        spec.data.path, text_column=spec.data.text_column, label_column=spec.data.label_column
    )


def _extraction_data(spec: SpecialistSpec) -> pd.DataFrame:
    if isinstance(spec.data, GeneratorData):
        from lifecycle.synthetic.tickets import generate_tickets

        frame = generate_tickets(spec.data.n, seed=spec.data.seed, labels=spec.entities)
        return frame[["text", "entities"]]
    assert isinstance(spec.data, FileData)
    from lifecycle.extraction.data import load_extraction_table

    return load_extraction_table(
        spec.data.path, text_column=spec.data.text_column, entities_column=spec.data.entities_column
    )


def check_training_data(spec: SpecialistSpec, frame: pd.DataFrame) -> None:
    """Refuse data its task cannot train on, before anything is written."""
    if spec.task == "extraction":
        from lifecycle.extraction.data import validate_entities

        closed = spec.labels_policy == "closed" and spec.entities is not None
        validate_entities(frame, labels=spec.entities, closed=closed)
        return
    from lifecycle.training.data import validate_training_table

    validate_training_table(frame)


@dataclass(frozen=True)
class Trained:
    version: VersionInfo
    result: TrainResult
    alias: str


def train_and_register(
    settings: Settings,
    spec: SpecialistSpec,
    *,
    data: pd.DataFrame | None = None,
    trigger: str = "manual",
    data_window: str = "",
    alias: str | None = None,
    extra_tags: Mapping[str, str] | None = None,
    assign_alias: bool = True,
) -> Trained:
    """Train ``spec`` and register the result.

    The first version of a specialist becomes ``champion``; later ones become
    ``challenger`` (unless ``alias`` says otherwise) and wait for the promotion
    gate. Data and the registry are checked before training starts, and nothing
    is written to the registry unless training succeeded. ``extra_tags`` go on the
    version beside the lineage tags. ``assign_alias=False`` registers without moving any
    alias (``Trained.alias`` is then the alias it would have had): the retrain sets it only
    once the candidate beats the champion.
    """
    from lifecycle.model.base import resolve_base_model
    from lifecycle.training.train import train_specialist

    resolve_base_model(spec.base_model)  # fail on a missing path before touching the registry
    frame = data if data is not None else load_training_data(spec)
    check_training_data(spec, frame)
    registry = Registry(settings)
    parent = registry.alias_version(spec.name, CHAMPION) if registry.has_model(spec.name) else None
    parent_folder = registry.download(spec.name, parent)[1] if parent is not None else None
    result = train_specialist(
        spec,
        frame,
        parent=parent_folder,
        device=settings.device,
        threads=settings.torch_threads,
        progress=settings.progress,
    )
    version = registry.log_training(
        spec,
        result,
        trigger="initial" if parent is None and trigger == "manual" else trigger,
        parent_version=parent,
        data_window=data_window,
        extra_tags=extra_tags,
    )
    chosen = alias or (CHAMPION if parent is None else CHALLENGER)
    if assign_alias:
        registry.set_alias(spec.name, chosen, version.version)
    return Trained(
        version=registry.get_version(spec.name, version.version), result=result, alias=chosen
    )
