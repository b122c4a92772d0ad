"""The fallback model's prompt, and its free-text answer read back as one label of the set.

Models answer "Refund.", "**refund**", ``{"label": "refund"}`` or "The label is: refund":
``match_label`` accepts each of those and refuses to guess between two labels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

_SEPARATORS = re.compile(r"[\s_\-]+")
_EDGE_NOISE = " \t\r\n\"'`*.,;:!?()[]{}<>"
_FENCE = re.compile(r"^```[A-Za-z]*\s*|\s*```$")


def _loose(text: str) -> str:
    """Casefolded, edge quotes/punctuation stripped, runs of ``_``/``-``/space as one space."""
    return _SEPARATORS.sub(" ", text.strip(_EDGE_NOISE).casefold()).strip()


def _json_label(answer: str) -> str | None:
    """The ``label`` of a JSON object answer (code fences allowed), else None."""
    body = _FENCE.sub("", answer)
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        data = json.loads(body[start : end + 1])
    except ValueError:
        return None
    value = data.get("label") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _whole_word(answer: str, labels: Sequence[str]) -> str | None:
    """The one label that occurs as a whole word in ``answer``.

    A label found only inside a longer found one ("card" in "lost card") does not
    count; two or more distinct labels make the answer ambiguous (None).
    """
    text = answer.casefold()
    spans: dict[str, list[tuple[int, int]]] = {}
    for label in labels:
        parts = [re.escape(p) for p in _SEPARATORS.split(label.casefold()) if p]
        if parts:
            pattern = r"(?<!\w)" + r"[\s_\-]+".join(parts) + r"(?!\w)"
            if found := [m.span() for m in re.finditer(pattern, text)]:
                spans[label] = found
    longer = [span for found in spans.values() for span in found]

    def covered(span: tuple[int, int]) -> bool:
        return any(o[0] <= span[0] and span[1] <= o[1] and o != span for o in longer)

    kept = [label for label, found in spans.items() if not all(map(covered, found))]
    return kept[0] if len(kept) == 1 else None


def match_label(answer: str, labels: Sequence[str]) -> str | None:
    """Map a model's free-text answer to one label of ``labels``, or None.

    In order: exact match; match ignoring case, whitespace, quotes, edge punctuation
    and ``_``/``-``/space differences; a JSON ``{"label": ...}`` answer; else the one
    label that appears as a whole word. Ambiguity gives None rather than a guess.
    """
    stripped = answer.strip()
    if stripped in labels:
        return stripped
    by_loose: dict[str, list[str]] = {}
    for label in labels:
        by_loose.setdefault(_loose(label), []).append(label)

    def loose(text: str) -> str | None:
        found = by_loose.get(_loose(text), [])
        return found[0] if len(found) == 1 else None

    if (hit := loose(stripped)) is not None:
        return hit
    if (value := _json_label(stripped)) is not None:
        return value.strip() if value.strip() in labels else loose(value)
    return _whole_word(stripped, labels)


def build_messages(
    text: str, *, labels: Sequence[str], specialist: str, description: str = ""
) -> list[dict[str, str]]:
    """The chat messages: a system message listing the labels (one ``- label`` line
    each) and asking for exactly one of them, then the text as the user message."""
    about = f" {description.strip()}" if description.strip() else ""
    listing = "\n".join(f"- {label}" for label in labels)
    system = (
        f'You classify texts for the "{specialist}" specialist.{about}\n'
        f"Allowed labels, one per line:\n{listing}\n"
        "Answer with exactly one label from this list, spelled exactly as listed, "
        "and nothing else: no explanation, no quotes, no punctuation."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": text}]
