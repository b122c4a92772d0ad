"""What a training run hands to the registry: the trained specialist still in memory, with
its evaluation and figures (either task kind)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from lifecycle.extraction.metrics import ExtractionEvaluation
    from lifecycle.model.artifacts import SpecialistMeta
    from lifecycle.model.host import AdapterHost
    from lifecycle.training.evaluate import Evaluation


@dataclass
class TrainResult:
    """A trained specialist still in memory, with what the registry needs to log."""

    host: AdapterHost
    adapter_id: str
    meta: SpecialistMeta
    train: pd.DataFrame
    validation: pd.DataFrame
    #: The champion's own view of its validation set: prediction, confidence, embedding.
    validation_predictions: pd.DataFrame
    validation_embeddings: np.ndarray
    evaluation: Evaluation | ExtractionEvaluation
    dataset_hash: str
    seconds: float
    steps: int
    examples_per_second: float
    history: list[dict[str, float]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
