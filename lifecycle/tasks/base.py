"""The interface every task kind implements (``lifecycle.tasks``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass(frozen=True)
class Answer:
    """One text's answer as a kind reads it from its head's logits."""

    #: A classifier's label; an extractor's summary of its spans (``date+order_id``).
    label: str
    #: Calibrated probability that the answer is right (the whole answer, for an extractor).
    confidence: float
    #: A classifier's calibrated probabilities in label order; empty for an extractor.
    probabilities: list[float] = field(default_factory=list)
    #: An extractor's spans (``lifecycle.extraction.spans.Entity``); None for a classifier.
    entities: tuple[Any, ...] | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """What a head's logits are read with: the adapter's labels and temperature, and the text
    with each token's characters (a token-level head's spans need them; None otherwise)."""

    labels: Sequence[str]
    temperature: float
    text: str
    offsets: Sequence[tuple[int, int]] | None = None


class TaskKind(Protocol):
    """What a task kind supplies to the model, training and the gate."""

    name: str
    #: Whether the head reads every token's last hidden state (else the pooled row).
    token_level: bool

    def head_rows(self, labels: Sequence[str]) -> tuple[str, ...]:
        """Names of the head's output rows for a label set."""
        ...

    def answer(self, logits: np.ndarray, reading: Reading) -> Answer:
        """One text's answer from its head's raw logits, read as ``reading`` says."""
        ...

    def loss(self, logits: Sequence[torch.Tensor], targets: Sequence[Any]) -> torch.Tensor:
        """Training loss of a batch: one logits tensor and one target per text."""
        ...
