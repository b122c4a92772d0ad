"""Classification: one label per text, from a linear head over the pooled text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lifecycle.tasks.base import Answer, Reading

if TYPE_CHECKING:
    import numpy as np
    import torch


class Classification:
    name = "classification"
    token_level = False

    def head_rows(self, labels: Sequence[str]) -> tuple[str, ...]:
        return tuple(labels)

    def answer(self, logits: np.ndarray, reading: Reading) -> Answer:
        from lifecycle.model.calibration import softmax

        probs = softmax(logits[None, :], reading.temperature)[0]
        best = int(probs.argmax())
        return Answer(
            label=reading.labels[best], confidence=float(probs[best]), probabilities=probs.tolist()
        )

    def loss(self, logits: Sequence[torch.Tensor], targets: Sequence[Any]) -> torch.Tensor:
        import torch

        stacked = torch.stack(list(logits)).float()
        return torch.nn.functional.cross_entropy(
            stacked, torch.as_tensor(list(targets), dtype=torch.long, device=stacked.device)
        )


KIND = Classification()
