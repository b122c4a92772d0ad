"""Extraction: character-span entities per text, from a linear head over every word piece.

The head predicts a BIO tag per piece (``lifecycle.extraction.spans``); the answer is the
decoded spans, their summary as the request's label, and the probability that every piece's
tag is right as the request's confidence (an estimate of exact match).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lifecycle.extraction.spans import (
    IGNORE,
    allowed_transitions,
    best_tags,
    decode,
    summary,
    tags_for,
)
from lifecycle.tasks.base import Answer, Reading

if TYPE_CHECKING:
    import numpy as np
    import torch


class Extraction:
    name = "extraction"
    token_level = True

    def head_rows(self, labels: Sequence[str]) -> tuple[str, ...]:
        return tags_for(labels)

    def answer(self, logits: np.ndarray, reading: Reading) -> Answer:
        from lifecycle.model.calibration import softmax

        offsets = reading.offsets
        if offsets is None or len(offsets) != len(logits):
            raise ValueError("an extractor's answer needs one character offset per token")
        import numpy as np

        tags = tags_for(reading.labels)
        probs = softmax(logits, reading.temperature)
        real = [i for i, (s, e) in enumerate(offsets) if s != e]
        tag_ids = np.zeros(len(offsets), dtype=np.int64)  # special tokens: O, skipped by decode
        if real:
            tag_ids[real] = best_tags(probs[real], _allowed(tags))
        best = probs[np.arange(len(offsets)), tag_ids]
        entities = decode(reading.text, offsets, tag_ids.tolist(), best.tolist(), tags)
        chosen = [float(best[i]) for i in real]
        confidence = math.exp(sum(math.log(max(p, 1e-12)) for p in chosen)) if chosen else 1.0
        return Answer(label=summary(entities), confidence=confidence, entities=tuple(entities))

    def loss(self, logits: Sequence[torch.Tensor], targets: Sequence[Any]) -> torch.Tensor:
        """Token-level cross-entropy over every piece of every text (special tokens skipped)."""
        import torch

        flat = torch.cat([t.float() for t in logits])
        wanted = torch.cat([torch.as_tensor(t, dtype=torch.long) for t in targets]).to(flat.device)
        return torch.nn.functional.cross_entropy(flat, wanted, ignore_index=IGNORE)


@functools.lru_cache(maxsize=64)
def _allowed(tags: tuple[str, ...]) -> Any:
    return allowed_transitions(tags)


KIND = Extraction()
