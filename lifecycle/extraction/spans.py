"""Character spans and the word-piece tags an extraction head predicts (pure python).

An extraction specialist tags every word piece of a text with BIO tags: ``O`` outside any
entity, ``B-<label>`` on an entity's first piece and ``I-<label>`` on the pieces after it.
The tokenizer's offset mapping ties each piece to its characters, so training turns the
data's character spans into tags (:func:`align`), and serving turns predicted tags back
into character spans of the caller's own text (:func:`decode`). Every piece of an entity is
tagged (not only a word's first piece), so a span's ends are the first and last piece's
character offsets and a decoded span needs no word splitting of its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

OUTSIDE = "O"
#: The target of a position the loss skips: special tokens ([CLS], [SEP]) and padding.
IGNORE = -100
#: The request summary of an answer with no entity.
NO_ENTITY = "(none)"


@dataclass(frozen=True, slots=True)
class Entity:
    """One extracted span: its label, its characters in the text and its confidence."""

    label: str
    start: int
    end: int
    text: str
    #: Calibrated probability that this exact span with this label is right; None for a
    #: person's label.
    confidence: float | None = None

    def key(self) -> tuple[str, int, int]:
        """What exact-span scoring compares."""
        return (self.label, self.start, self.end)

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        if self.confidence is None:
            del out["confidence"]
        return out


def tags_for(labels: Sequence[str]) -> tuple[str, ...]:
    """The head's rows for an entity label set: ``O`` then ``B-x``, ``I-x`` per label.

    The order is fixed by the label order, so a label set that grows keeps every earlier
    row where it was and a retrain warm-starts them by name.
    """
    return (OUTSIDE, *(f"{prefix}-{label}" for label in labels for prefix in ("B", "I")))


def labels_of(tags: Sequence[str]) -> tuple[str, ...]:
    """The entity labels behind a tag list (inverse of :func:`tags_for`)."""
    return tuple(t[2:] for t in tags if t.startswith("B-"))


def align(
    offsets: Sequence[tuple[int, int]],
    spans: Iterable[Mapping[str, object]],
    tag_index: Mapping[str, int],
) -> list[int]:
    """Per word piece, the index of its tag for the given character spans.

    A piece belongs to a span when their characters overlap; the first such piece gets
    ``B-``, the rest ``I-``. Special tokens (offset ``(0, 0)``) get :data:`IGNORE`. A span
    that truncation cut away entirely simply has no piece.
    """
    targets = [IGNORE if start == end else tag_index[OUTSIDE] for start, end in offsets]
    for span in spans:
        s, e, label = int(span["start"]), int(span["end"]), str(span["label"])  # type: ignore[call-overload]
        first = True
        for i, (start, end) in enumerate(offsets):
            if start == end or end <= s or start >= e:
                continue
            targets[i] = tag_index[f"{'B' if first else 'I'}-{label}"]
            first = False
    return targets


def decode(
    text: str,
    offsets: Sequence[tuple[int, int]],
    tag_ids: Sequence[int],
    probabilities: Sequence[float],
    tags: Sequence[str],
) -> list[Entity]:
    """The spans that predicted tags mark, with their confidences.

    An ``I-x`` that follows nothing of ``x`` starts a span, as a ``B-x`` does: the head's
    best guess at a boundary it was unsure of still marks the piece as part of an entity.
    A span's confidence is the product of its pieces' tag probabilities and of the
    probability that the piece after it does not continue it, so that a span the model
    would have made longer is not reported as sure.
    """
    entities: list[Entity] = []
    current: tuple[str, int, int, float] | None = None  # label, first piece, last piece, prob

    def close(after: int | None) -> None:
        nonlocal current
        if current is None:
            return
        label, first, last, prob = current
        if after is not None:
            continued = tags[tag_ids[after]] == f"I-{label}"
            prob *= 1.0 if continued else probabilities[after]
        start, end = offsets[first][0], offsets[last][1]
        entities.append(Entity(label, start, end, text[start:end], _clip(prob)))
        current = None

    for i, (start, end) in enumerate(offsets):
        if start == end:  # a special token ends whatever was open
            close(None)
            continue
        tag = tags[tag_ids[i]]
        p = float(probabilities[i])
        if tag == OUTSIDE:
            close(i)
            continue
        prefix, label = tag[0], tag[2:]
        if prefix == "I" and current is not None and current[0] == label:
            current = (label, current[1], i, current[3] * p)
            continue
        close(i)
        current = (label, i, i, p)
    close(None)
    return entities


def allowed_transitions(tags: Sequence[str]) -> Any:
    """``[i, j]``: whether tag ``j`` may follow tag ``i`` (an ``I-x`` only after ``B-x`` or
    ``I-x``); the last row is the start of a text, where no ``I-`` may stand."""
    import numpy as np

    n = len(tags)
    allowed = np.ones((n + 1, n), dtype=bool)
    for j, tag in enumerate(tags):
        if tag.startswith("I-"):
            label = tag[2:]
            allowed[:, j] = False
            for i, before in enumerate(tags):
                if before in (f"B-{label}", f"I-{label}"):
                    allowed[i, j] = True
    return allowed


def best_tags(probabilities: Any, allowed: Any) -> list[int]:
    """The most probable tag sequence that is valid BIO (Viterbi over the pieces' log
    probabilities, transitions limited by ``allowed_transitions``).

    Choosing each piece's best tag alone can give an ``I-x`` after an ``O`` or a ``B-y``: a
    span with a broken boundary, which is wrong on exact-span scoring whichever way it is
    read. The constrained path is the best valid reading of the same probabilities.
    """
    import numpy as np

    if len(probabilities) == 0:
        return []
    log_p = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, None))
    n, k = log_p.shape
    penalty = np.where(allowed, 0.0, -np.inf)
    score = log_p[0] + penalty[-1]
    back = np.zeros((n, k), dtype=np.int64)
    for t in range(1, n):
        candidates = score[:, None] + penalty[:-1]
        back[t] = candidates.argmax(axis=0)
        score = candidates.max(axis=0) + log_p[t]
    path = [int(score.argmax())]
    for t in range(n - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]


def _clip(p: float) -> float:
    return 0.0 if not math.isfinite(p) else min(1.0, max(0.0, p))


def summary(entities: Iterable[Entity | Mapping[str, object]]) -> str:
    """A request's answer as one category: its distinct entity labels, sorted, joined by
    ``+`` (``date+order_id``), or ``(none)``. The traffic store keeps it where a classifier
    keeps its label, so prediction drift and the label counts see extraction answers too."""
    labels = sorted({e.label if isinstance(e, Entity) else str(e["label"]) for e in entities})
    return "+".join(labels) if labels else NO_ENTITY


def fields(entities: Iterable[Entity]) -> dict[str, str]:
    """Label -> text of its most confident span (the first one on a tie)."""
    best: dict[str, Entity] = {}
    for entity in entities:
        held = best.get(entity.label)
        if held is None or (entity.confidence or 0.0) > (held.confidence or 0.0):
            best[entity.label] = entity
    return {label: e.text for label, e in best.items()}


def to_json(entities: Iterable[Entity]) -> str:
    """Entities as the traffic store keeps them."""
    return json.dumps([e.as_dict() for e in entities], ensure_ascii=False, separators=(",", ":"))


def from_json(raw: str | None) -> list[Entity]:
    """Entities from :func:`to_json` (an empty list for None or an empty string)."""
    if not raw:
        return []
    return [
        Entity(
            label=str(d["label"]),
            start=int(d["start"]),
            end=int(d["end"]),
            text=str(d.get("text", "")),
            confidence=None if d.get("confidence") is None else float(d["confidence"]),
        )
        for d in json.loads(raw)
    ]


def keys(entities: Iterable[Entity | Mapping[str, object]]) -> list[tuple[str, int, int]]:
    """(label, start, end) of each entity, for the metrics."""
    out = []
    for e in entities:
        if isinstance(e, Entity):
            out.append(e.key())
        else:
            out.append((str(e["label"]), int(e["start"]), int(e["end"])))  # type: ignore[call-overload]
    return out
