"""Which feedback labels are accepted: one pure check shared by the gateway and the CLI.

``POST /v1/specialists/{name}/feedback`` and ``lifecycle feedback --file`` both call
:func:`check_feedback`, so a label file and a client see the same rules:

- a label is 1-100 printable characters (no control characters) with no leading or trailing
  whitespace (:func:`label_problem`);
- under ``labels_policy: closed`` it must be in the specialist's set (the champion's, the
  challenger's, the spec's ``labels`` and ``out_of_scope_label``); under ``open`` (the default)
  any other label is a *proposed label*: stored like any label, and the next retrain grows the
  head for it once it has ``training.min_examples_per_label`` examples;
- the request id must name a stored request of this specialist;
- distinct proposed labels per specialist are capped (``LIFECYCLE_MAX_PROPOSED_LABELS``): a
  flood of made-up labels is refused rather than stored.

An extraction specialist's feedback is a list of spans instead of one label
(:func:`check_entity_feedback`): each span's label follows the rules above (and holds no ``+``,
which joins labels in a request's summary), and the spans must fit the request's text the way
training data must (``lifecycle.extraction.data.validate_entities``): offsets inside the text,
``start < end``, a given ``text`` equal to the characters it points at, no two spans sharing a
character. The stored label is the spans' summary (``date+order_id``, or ``(none)``).

Nothing here reads a database or raises an HTTP error: callers bring what the store says and
decide what a rejected row means (the route refuses the whole call; the CLI reports per row).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from lifecycle.extraction.spans import NO_ENTITY, Entity, summary

#: Longest label accepted (the store's column holds 256; 100 keeps tables and alerts readable).
LABEL_MAX_CHARS = 100
#: Printable: no C0 control character and no DEL. Whitespace at the ends is refused apart.
LABEL_PATTERN = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")
REQUEST_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")

#: Status of a row, as the route would answer it.
ACCEPTED = 202
INVALID = 422
UNKNOWN_REQUEST = 404
TOO_MANY_PROPOSED = 429


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot be a label, or None when it can."""
    if not isinstance(label, str) or not label.strip():
        return "the label is blank"
    if len(label) > LABEL_MAX_CHARS:
        return f"the label is {len(label)} characters long; the limit is {LABEL_MAX_CHARS}"
    if label != label.strip():
        return "the label starts or ends with whitespace"
    if not LABEL_PATTERN.fullmatch(label):
        return "the label holds control characters"
    try:
        label.encode("utf-8")
    except UnicodeEncodeError:
        return "the label holds unpaired surrogates"
    return None


@dataclass(frozen=True, slots=True)
class LabelSet:
    """What a specialist's feedback is checked against.

    ``known``: labels accepted under any policy (champion's, challenger's, declared, the
    out-of-scope label). ``stored_proposed``: distinct labels outside ``known`` already in the
    store (or accepted but not yet written), which count against ``max_proposed``.
    """

    specialist: str
    known: frozenset[str]
    open: bool
    stored_proposed: frozenset[str] = frozenset()
    max_proposed: int = 50


@dataclass(frozen=True, slots=True)
class RowCheck:
    """One feedback row's fate: ``status`` 202 (accepted), 422, 404 or 429 with a reason."""

    row: int
    request_id: str
    label: str
    status: int
    reason: str | None = None
    #: The label is outside the specialist's known set (accepted under the open policy).
    proposed: bool = False
    #: An extractor's row: its spans, checked (``text`` filled in from the request's text
    #: where the store keeps it), and their labels outside the known set. ``label`` is then
    #: the spans' summary and ``proposed`` says whether ``new_labels`` is non-empty.
    entities: tuple[Entity, ...] | None = None
    new_labels: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED


def check_feedback(
    items: Sequence[tuple[str, str]],
    *,
    labels: LabelSet,
    owners: Mapping[str, str | None],
    first_row: int = 1,
) -> list[RowCheck]:
    """Check (request_id, label) rows; one ``RowCheck`` per row, in order.

    ``owners`` maps each request id to the specialist that answered it (None or absent: no
    such request). A row's first problem is its reason, checked in this order: the request
    id's form, the label's form, the closed set (422), the request's owner (404), then the cap
    on distinct proposed labels (429): new proposed labels take the room left in order of first
    appearance, and rows of those past it are refused. Rows are numbered from ``first_row``.
    """
    out: list[RowCheck] = []
    room = _Room(labels)
    for offset, (request_id, label) in enumerate(items):
        proposed = isinstance(label, str) and label not in labels.known
        problem = _row_problem(request_id, label, proposed=proposed, labels=labels, owners=owners)
        if problem is None and proposed:
            problem = room.refusal([label], entity=False)
        status, reason = problem or (ACCEPTED, None)
        out.append(
            RowCheck(first_row + offset, str(request_id), str(label), status, reason, proposed)
        )
    return out


class _Room:
    """The room left under the cap on distinct proposed labels, shared by both checks: new
    proposed labels take it in order of first appearance (a label admitted once is free for
    later rows, as is one already stored)."""

    def __init__(self, labels: LabelSet) -> None:
        self.labels = labels
        self.left = max(labels.max_proposed - len(labels.stored_proposed), 0)
        self.admitted: set[str] = set()

    def refusal(self, new: Sequence[str], *, entity: bool) -> tuple[int, str] | None:
        """None when the row's proposed labels ``new`` fit (they are admitted), else its 429
        (status, reason); ``entity``: an extractor's row (its reason lists the labels)."""
        stored = self.labels.stored_proposed
        fresh = [n for n in new if n not in stored and n not in self.admitted]
        if len(self.admitted) + len(fresh) <= self.left:
            self.admitted.update(fresh)
            return None
        refused, instead = (str(fresh), "entity labels") if entity else (repr(fresh[0]), "labels")
        return (
            TOO_MANY_PROPOSED,
            f"{self.labels.specialist!r} already has {len(stored)} proposed labels and this "
            f"would add more than the {self.labels.max_proposed} allowed "
            f"(LIFECYCLE_MAX_PROPOSED_LABELS): {refused} refused; label with known {instead}, "
            "or retrain first",
        )


def _row_problem(
    request_id: str,
    label: str,
    *,
    proposed: bool,
    labels: LabelSet,
    owners: Mapping[str, str | None],
) -> tuple[int, str] | None:
    """A row's first problem short of the cap: (status, reason), or None."""
    if not isinstance(request_id, str) or not REQUEST_ID_PATTERN.fullmatch(request_id):
        return INVALID, f"{request_id!r} is not a request id (32 hex digits)"
    problem = label_problem(label)
    if problem is not None:
        return INVALID, f"{problem}: {_show(label)}"
    if proposed and not labels.open:
        return (
            INVALID,
            f"label {label!r} is not in {labels.specialist!r}'s label set (labels_policy: closed)",
        )
    if owners.get(request_id) != labels.specialist:
        return UNKNOWN_REQUEST, f"no request {request_id} for specialist {labels.specialist!r}"
    return None


def check_entity_feedback(
    items: Sequence[tuple[str, Sequence[Mapping[str, object]]]],
    *,
    labels: LabelSet,
    owners: Mapping[str, str | None],
    texts: Mapping[str, str | None],
    first_row: int = 1,
) -> list[RowCheck]:
    """Check (request_id, spans) rows of an extractor's feedback; one ``RowCheck`` per row.

    A span is a mapping with ``label``, ``start``, ``end`` and optionally ``text``. ``texts``
    maps a request id to its stored text; a request absent there (or None: the store keeps no
    text) is checked without it: offsets, order and overlaps only. The checks and their order
    are :func:`check_feedback`'s, with the spans' problems where the label's form is checked.
    A row's label is the spans' summary; ``[]`` (a text with no entity) is a valid row.
    """
    out: list[RowCheck] = []
    room = _Room(labels)
    for offset, (request_id, spans) in enumerate(items):
        row = first_row + offset
        text = texts.get(request_id)
        entities, problem = _checked_spans(spans, text)
        label = summary(entities or ())
        new = tuple(sorted({e.label for e in entities or () if e.label not in labels.known}))
        status_reason: tuple[int, str] | None = None
        if not isinstance(request_id, str) or not REQUEST_ID_PATTERN.fullmatch(request_id):
            status_reason = INVALID, f"{request_id!r} is not a request id (32 hex digits)"
        elif problem is not None:
            status_reason = INVALID, f"request {request_id}: {problem}"
        elif new and not labels.open:
            status_reason = (
                INVALID,
                f"entity label(s) {list(new)} not in {labels.specialist!r}'s entity set "
                f"{sorted(labels.known)} (labels_policy: closed)",
            )
        elif owners.get(request_id) != labels.specialist:
            status_reason = (
                UNKNOWN_REQUEST,
                f"no request {request_id} for specialist {labels.specialist!r}",
            )
        else:
            status_reason = room.refusal(new, entity=True)
        status, reason = status_reason or (ACCEPTED, None)
        out.append(
            RowCheck(
                row,
                str(request_id),
                label,
                status,
                reason,
                proposed=bool(new),
                entities=tuple(entities) if entities is not None else None,
                new_labels=new,
            )
        )
    return out


def _checked_spans(
    spans: Sequence[Mapping[str, object]], text: str | None
) -> tuple[list[Entity] | None, str | None]:
    """The spans as entities sorted by position, or None and the first problem found."""
    entities: list[Entity] = []
    for k, span in enumerate(spans, 1):
        where = f"entity {k}"
        label, start, end = span.get("label"), span.get("start"), span.get("end")
        given = span.get("text")
        if not isinstance(label, str):
            return None, f"{where}: label {label!r} is not a string"
        problem = label_problem(label)
        if problem is not None:
            return None, f"{where}: {problem}: {_show(label)}"
        if "+" in label:
            return None, f"{where}: label {label!r} holds '+', which joins labels in a summary"
        if not isinstance(start, int) or not isinstance(end, int):
            return None, f"{where}: start and end must be integer character offsets"
        if isinstance(start, bool) or isinstance(end, bool):
            return None, f"{where}: start and end must be integer character offsets"
        if start < 0:
            return None, f"{where}: start {start} is negative"
        if start >= end:
            return None, f"{where}: start {start} >= end {end}; a span needs end > start"
        if given is not None and not isinstance(given, str):
            return None, f"{where}: text {given!r} is not a string"
        if text is not None:
            if end > len(text):
                return None, (
                    f"{where}: end {end} is past the end of the text ({len(text)} characters)"
                )
            covered = text[start:end]
            if given is not None and given != covered:
                return None, (
                    f"{where}: text {_show(given)} differs from the text at {start}:{end}, "
                    f"{_show(covered)}; offsets count characters (not bytes) from 0, end "
                    "exclusive"
                )
            given = covered
        entities.append(Entity(label, start, end, given or ""))
    entities.sort(key=lambda e: (e.start, e.end, e.label))
    for first, second in itertools.pairwise(entities):
        if second.start < first.end:
            return None, (
                f"{_describe(first)} and {_describe(second)} overlap; spans of one text must "
                "not share characters"
            )
    return entities, None


def _describe(entity: Entity) -> str:
    return f"{entity.label} {entity.start}:{entity.end}"


def entity_label_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """Per entity label, requests whose feedback summary holds it: an extractor's stored
    labels are summaries (``date+order_id``), and its label set is of entity labels."""
    out: dict[str, int] = {}
    for key, n in counts.items():
        if key == NO_ENTITY:
            continue
        for label in key.split("+"):
            out[label] = out.get(label, 0) + int(n)
    return out


def refusal(checks: Sequence[RowCheck]) -> tuple[int, str] | None:
    """The one (status, message) a call that must be all-or-nothing answers, or None when every
    row is accepted. Malformed or out-of-set labels (422) outrank unknown requests (404), which
    outrank the cap (429): fix the data before worrying about room."""
    failed = [c for c in checks if not c.accepted]
    if not failed:
        return None
    status = min(
        (c.status for c in failed), key=[INVALID, UNKNOWN_REQUEST, TOO_MANY_PROPOSED].index
    )
    worst = [c for c in failed if c.status == status]
    reasons = list(dict.fromkeys(c.reason or "" for c in worst))
    more = f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else ""
    return status, "; ".join(reasons[:3]) + more


def proposed_labels(counts: Mapping[str, int], known: Iterable[str]) -> dict[str, int]:
    """The labels of ``counts`` outside ``known``, most used first (ties by name)."""
    known_set = set(known)
    found = [(label, int(n)) for label, n in counts.items() if label not in known_set]
    return dict(sorted(found, key=lambda item: (-item[1], item[0])))


def known_labels(
    *,
    champion: Collection[str],
    challenger: Collection[str] = (),
    declared: Collection[str] | None = None,
    out_of_scope_label: str | None = None,
) -> frozenset[str]:
    """The labels accepted under either policy: served versions' and the spec's."""
    known = set(champion) | set(challenger) | set(declared or ())
    if out_of_scope_label:
        known.add(out_of_scope_label)
    return frozenset(known)


def _show(label: object) -> str:
    text = repr(label)
    return text if len(text) <= 60 else text[:57] + "..."
