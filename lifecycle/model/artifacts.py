"""Plain data shared by training, the registry and serving (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lifecycle.config.spec import LoraSpec, TaskName

#: Files of a specialist artifact folder; nothing else is loaded from it.
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
HEAD_WEIGHTS = "head.safetensors"
META_FILE = "specialist.json"
#: Suffixes of files that would be unpickled by some loader: refused outright.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"})


class SpecialistMeta(BaseModel):
    """What a specialist artifact needs besides its weights; stored as ``specialist.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = 1
    name: str
    #: An artifact of one kind is refused where the other is expected (``check_task``).
    task: TaskName = "classification"
    #: Intents of a classifier, entity labels of an extractor (its head's rows are the BIO
    #: tags of these, ``lifecycle.extraction.spans.tags_for``).
    labels: tuple[str, ...] = Field(min_length=1)
    base_model: str = Field(description="The base model reference as the spec gave it.")
    max_length: int
    temperature: float = Field(default=1.0, gt=0, description="Fitted on validation logits.")
    pooling: str = "mean"
    lora: LoraSpec

    @model_validator(mode="after")
    def _enough_labels(self) -> SpecialistMeta:
        if self.task == "classification" and len(self.labels) < 2:
            raise ValueError("a classifier needs at least 2 labels")
        return self

    @property
    def head_rows(self) -> tuple[str, ...]:
        """The names of the head's output rows: the labels, or an extractor's BIO tags."""
        from lifecycle.tasks import task_kind

        return task_kind(self.task).head_rows(self.labels)


@dataclass(frozen=True)
class Prediction:
    """One text's answer: the label, its calibrated confidence and the text's embedding."""

    label: str
    confidence: float
    #: L2-normalised mean-pooled last hidden state (float32 array), from the same forward pass.
    embedding: Any = field(repr=False)
    #: Calibrated probabilities in the order of the specialist's labels.
    probabilities: list[float] = field(repr=False, default_factory=list)
    #: The version's out-of-scope score (higher: less like its training data) and whether it
    #: passes the version's threshold; None for a version without a detector.
    ood_score: float | None = None
    out_of_scope: bool | None = None
    #: An extractor's spans (``lifecycle.extraction.spans.Entity``); None for a classifier,
    #: whose ``label`` is its answer. An extractor's ``label`` is the spans' summary
    #: (``date+order_id``) and ``confidence`` the probability that the whole answer is right.
    entities: tuple[Any, ...] | None = None
