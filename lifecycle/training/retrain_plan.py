"""What every task kind's retraining plan shares: its result type and the rules around it.

A plan (:class:`RetrainPlan`) is built from a traffic window's labelled rows in the same way
for a classifier (``lifecycle.training.retraining``) and an extractor
(``lifecycle.training.retraining_extraction``): proposed labels short of examples are held
back, the plan waits for labels it lacks, the new rows and the reference are split into
training rows and holdouts, the champion's data is replayed and recent rows are weighted.
Only how labelled rows are read from the window and what a row holds differ; those live in
the kind's module, the rest here. Pure functions of data frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lifecycle.training.data import replay_mix, stratified_split

if TYPE_CHECKING:
    from datetime import datetime

    import pandas as pd


@dataclass(frozen=True, slots=True)
class LabelCounts:
    """Usable labels by source, and labelled rows dropped because the store kept no text."""

    human: int = 0
    fallback: int = 0
    dropped_no_text: int = 0
    #: Rows of proposed labels with fewer than ``min_examples_per_label`` examples: kept out
    #: of this training (not counted in ``usable``), used once their label has enough.
    held_back: int = 0

    @property
    def usable(self) -> int:
        return self.human + self.fallback


@dataclass(frozen=True)
class RetrainPlan:
    """Either the data of a retrain (``ready``) or why it cannot happen yet.

    ``train`` has columns text, label, label_source ("human", "fallback" or "reference"),
    request_id (None for replayed rows) and source ("new" or "replay", from
    :func:`~lifecycle.training.data.replay_mix`): pass it to training as the data, with no further
    replay. ``holdout_new`` is a held-out slice of the new labelled rows (same columns less
    ``source``), ``holdout_old`` a slice of the reference that no replayed row comes from.
    An extractor's frames also have ``entities`` (per row a list of ``{label, start, end,
    text}`` dicts; ``label`` is their summary, ``date+order_id``).
    When not ready, the three frames are empty and ``missing`` says how many more labels
    would make it ready.
    """

    ready: bool
    reason: str
    counts: LabelCounts
    train: pd.DataFrame
    holdout_new: pd.DataFrame
    holdout_old: pd.DataFrame
    missing: int = 0
    #: Labels in the traffic that the champion does not know and that train (the head grows
    #: a row for each), sorted. An extractor's are entity labels.
    new_labels: list[str] = field(default_factory=list)
    #: Proposed labels left out for want of examples: label -> usable examples so far.
    short_labels: dict[str, int] = field(default_factory=dict)
    #: The examples a proposed label needs before it trains.
    min_examples_per_label: int = 1
    #: Usable labels per class in the new data (an extractor's: rows holding each entity label).
    label_counts: dict[str, int] = field(default_factory=dict)
    #: Things a person should know that do not block the plan.
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Plain numbers and strings for MLflow params, a log line or an event payload."""
        replayed = int((self.train["source"] == "replay").sum()) if "source" in self.train else 0
        recent = int((self.train["source"] == "recent").sum()) if "source" in self.train else 0
        return {
            "ready": self.ready,
            "reason": self.reason,
            "missing": self.missing,
            "human_labels": self.counts.human,
            "fallback_labels": self.counts.fallback,
            "dropped_no_text": self.counts.dropped_no_text,
            "train_rows": len(self.train),
            "replay_rows": replayed,
            "recent_copies": recent,
            "holdout_new_rows": len(self.holdout_new),
            "holdout_old_rows": len(self.holdout_old),
            "new_labels": list(self.new_labels),
            "held_back_rows": self.counts.held_back,
            "labels_short": self.labels_short(),
            "warnings": list(self.warnings),
        }

    def labels_short(self) -> dict[str, int]:
        """Each proposed label left out, with how many more labels it needs to train."""
        need = self.min_examples_per_label
        return {label: need - n for label, n in sorted(self.short_labels.items())}

    def short_line(self) -> str:
        """'label x needs 3 more, label y needs 9 more' (empty when none is short)."""
        return ", ".join(f"{label!r} needs {n} more" for label, n in self.labels_short().items())


@dataclass(frozen=True)
class PlanRules:
    """The knobs of a plan (``plan_retraining``'s keywords), checked on construction."""

    min_labels: int
    replay_ratio: float
    min_examples_per_label: int = 1
    holdout_fraction: float = 0.2
    replay_rows: int = 0
    recent_since: datetime | None = None
    recent_weight: float = 1.0
    wait_share: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.replay_ratio < 0:
            raise ValueError(f"replay_ratio must be >= 0, got {self.replay_ratio}")
        if self.min_labels < 0:
            raise ValueError(f"min_labels must be >= 0, got {self.min_labels}")
        if self.recent_weight < 1:
            raise ValueError(f"recent_weight must be >= 1, got {self.recent_weight}")
        if self.min_examples_per_label < 1:
            raise ValueError(
                f"min_examples_per_label must be >= 1, got {self.min_examples_per_label}"
            )
        if not 0.0 <= self.wait_share <= 1.0:
            raise ValueError(f"wait_share must be within [0, 1], got {self.wait_share}")


def proposed_split(
    label_counts: Mapping[str, int], known: Collection[str], *, min_examples: int
) -> tuple[list[str], dict[str, int]]:
    """(proposed labels that train, proposed labels short of ``min_examples`` -> count)."""
    proposed = sorted(label for label in label_counts if label not in set(known))
    short = {k: label_counts[k] for k in proposed if label_counts[k] < min_examples}
    return [label for label in proposed if label not in short], short


def short_text(short: Mapping[str, int], min_examples: int) -> str:
    return ", ".join(f"{k!r} needs {min_examples - n} more" for k, n in sorted(short.items()))


@dataclass(frozen=True)
class RowKind:
    """What a task kind brings to the shared plan: how it reads labelled rows, and its words.

    ``read(window)`` gives the new labelled rows (``columns``, oldest first, a
    ``label_source`` column among them), the usable rows per label, how many labelled rows
    had no text, and warnings of its own (they follow the shared ones). ``holds(rows,
    short)`` marks the rows that hold a proposed label short of examples: they are held
    back whole. ``reference(frame, what)`` reads a reference or a replay in the rows' form.
    ``noun`` names the labelled requests in a warning, ``short_warning`` is the warning on
    short labels (a template of ``need``, ``held`` and ``short``), and ``sources(counts)``
    says where the usable labels came from, for the reason.
    """

    columns: list[str]
    read: Callable[[pd.DataFrame], tuple[pd.DataFrame, dict[str, int], int, list[str]]]
    holds: Callable[[pd.DataFrame, Collection[str]], pd.Series]
    reference: Callable[[pd.DataFrame, str], pd.DataFrame]
    noun: str
    short_warning: str
    sources: Callable[[LabelCounts], str]
    single_row_warning: bool = True


def plan(
    window: pd.DataFrame,
    kind: RowKind,
    *,
    reference: pd.DataFrame,
    labels_known: Collection[str],
    rules: PlanRules,
    replay: pd.DataFrame | None = None,
) -> RetrainPlan:
    """A task kind's retrain plan (``plan_retraining`` calls it): the kind's labelled rows
    less those holding a proposed label short of examples, then :func:`assemble`."""
    rows, label_counts, dropped, notes = kind.read(window)
    need = rules.min_examples_per_label
    new_labels, short = proposed_split(label_counts, labels_known, min_examples=need)
    held = kind.holds(rows, short)
    rows = rows[~held].reset_index(drop=True)
    counts = LabelCounts(
        human=int((rows["label_source"] == "human").sum()),
        fallback=int((rows["label_source"] == "fallback").sum()),
        dropped_no_text=dropped,
        held_back=int(held.sum()),
    )
    warnings: list[str] = []
    if short:
        text = short_text(short, need)
        warnings.append(kind.short_warning.format(need=need, held=counts.held_back, short=text))
    if dropped:
        warnings.append(
            f"{dropped} {kind.noun} requests have no stored text (the store keeps hashes only) "
            "and cannot be used"
        )
    return assemble(
        window,
        rows,
        rules=rules,
        counts=counts,
        label_counts=label_counts,
        new_labels=new_labels,
        short=short,
        warnings=[*warnings, *notes],
        old=kind.reference(reference, "reference"),
        pool=None if replay is None else kind.reference(replay, "replay"),
        columns=kind.columns,
        sources=kind.sources(counts),
        single_row_warning=kind.single_row_warning,
    )


def assemble(
    window: pd.DataFrame,
    rows: pd.DataFrame,
    *,
    rules: PlanRules,
    counts: LabelCounts,
    label_counts: dict[str, int],
    new_labels: list[str],
    short: dict[str, int],
    warnings: list[str],
    old: pd.DataFrame,
    pool: pd.DataFrame | None,
    columns: list[str],
    sources: str,
    single_row_warning: bool = True,
) -> RetrainPlan:
    """The plan from the kind's labelled ``rows`` (held-back rows already out) and its
    reference ``old`` and replay ``pool`` (None: the rest of ``old``) in the rows' form.

    ``columns`` are the new rows' columns (replayed rows get the same); ``sources`` says where
    the usable labels came from, for the reason ("30 human, 7 fallback").
    """
    import pandas as pd

    need = rules.min_examples_per_label
    # What either outcome says about the labels; the frames and the verdict come below.
    known = RetrainPlan(
        ready=False,
        reason="",
        counts=counts,
        train=rows.iloc[0:0],
        holdout_new=rows.iloc[0:0],
        holdout_old=old.iloc[0:0],
        new_labels=new_labels,
        short_labels=short,
        min_examples_per_label=need,
        label_counts=label_counts,
        warnings=warnings,
    )
    empty_new = rows.iloc[0:0]
    labelled = counts.usable + counts.held_back
    waits = bool(short) and rules.wait_share > 0 and counts.held_back >= rules.wait_share * labelled
    if counts.usable < rules.min_labels or counts.usable == 0 or waits:
        missing = max(rules.min_labels - counts.usable, 1 if counts.usable == 0 else 0)
        if waits:
            missing = max(missing, sum(need - n for n in short.values()))
            reason = (
                f"waiting for proposed labels that make {counts.held_back / labelled:.0%} of "
                f"the {labelled} labelled requests (training.wait_share "
                f"{rules.wait_share:g}): {short_text(short, need)}"
            )
        else:
            reason = (
                f"too few labels to retrain: {counts.usable} usable ({sources}), "
                f"need {max(rules.min_labels, 1)}; {missing} more needed"
            )
            if short:
                reason += f"; proposed labels short of examples: {short_text(short, need)}"
        return replace(
            known,
            reason=reason,
            train=empty_new.assign(source=pd.Series(dtype=object)),
            missing=missing,
        )

    # The new rows' holdout is fixed per text, not drawn again from the grown rows: a
    # champion from an earlier retrain would otherwise be scored on rows it trained on.
    new_train, holdout_new = stable_split(rows, fraction=rules.holdout_fraction)
    old_rest, holdout_old = split(old, fraction=rules.holdout_fraction, seed=rules.seed)
    if pool is not None:
        old_rest = pool[~pool["text"].isin(set(holdout_old["text"]))].reset_index(drop=True)
    replayed_rows = old_rest.assign(label_source="reference", request_id=None)
    train = replay_mix(
        new_train,
        replayed_rows[columns],
        ratio=rules.replay_ratio,
        seed=rules.seed,
        at_least=rules.replay_rows,
    )
    copies = recent_copies(window, train, since=rules.recent_since, weight=rules.recent_weight)
    if len(copies):
        train = pd.concat([train, copies], ignore_index=True)

    singles = sorted(str(label) for label, n in train["label"].value_counts().items() if n < 2)
    if singles and single_row_warning:
        warnings.append(
            f"labels with a single training row: {', '.join(map(str, singles))} "
            "(training refuses classes with fewer than 2 rows: collect more or drop them)"
        )
    if new_labels:
        warnings.append(
            f"labels the champion does not know: {', '.join(new_labels)} "
            "(the challenger's head grows to include them)"
        )
    replayed = int((train["source"] == "replay").sum())
    reason = (
        f"ready: {counts.usable} labels ({sources}); "
        f"{len(new_train)} new (+{len(copies)} recent copies) + {replayed} replayed rows "
        "to train, "
        f"{len(holdout_new)} new and {len(holdout_old)} reference rows held out"
    )
    return replace(
        known,
        ready=True,
        reason=reason,
        train=train,
        holdout_new=holdout_new,
        holdout_old=holdout_old,
    )


def recent_copies(
    window: pd.DataFrame, train: pd.DataFrame, *, since: datetime | None, weight: float
) -> pd.DataFrame:
    """Extra copies of the new training rows created at or after ``since``: ``round(weight)``
    rows each in all (so ``round(weight) - 1`` copies), marked ``source`` "recent"."""
    import pandas as pd

    extra = round(weight) - 1
    if since is None or extra < 1 or "created_at" not in window.columns or len(window) == 0:
        return train.iloc[0:0]
    ids = window["id"] if "id" in window.columns else pd.Series(window.index)
    created = pd.to_datetime(window["created_at"], utc=True)
    cut = pd.Timestamp(since)
    cut = cut.tz_localize("UTC") if cut.tzinfo is None else cut.tz_convert("UTC")
    recent_ids = set(ids[(created >= cut).to_numpy()].tolist())
    new = train[(train["source"] == "new") & train["request_id"].isin(recent_ids)]
    if new.empty:
        return train.iloc[0:0]
    return pd.concat([new] * extra, ignore_index=True).assign(source="recent")


def split(frame: pd.DataFrame, *, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified (rest, held_out); nothing held out for a zero fraction or an empty frame."""
    if fraction == 0 or len(frame) == 0:
        return frame.reset_index(drop=True), frame.iloc[0:0].reset_index(drop=True)
    return stratified_split(frame, fraction=fraction, seed=seed)


def stable_split(frame: pd.DataFrame, *, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, held_out): a row is held out when a hash of its text falls under ``fraction``.

    Unlike a seeded random split, a text is on the same side at every retrain, so the rows
    one retrain held out were never trained on by the champion an earlier retrain made, and
    copies of one text are never on both sides. A label with a single row stays in ``rest``.
    """
    import hashlib

    import numpy as np

    if fraction == 0 or len(frame) == 0:
        return frame.reset_index(drop=True), frame.iloc[0:0].reset_index(drop=True)
    cut = int(fraction * 2**64)
    held = np.array(
        [
            int.from_bytes(hashlib.blake2b(str(t).encode(), digest_size=8).digest(), "big") < cut
            for t in frame["text"]
        ],
        dtype=bool,
    )
    if "label" in frame.columns:
        counts = frame["label"].map(frame["label"].value_counts()).to_numpy()
        held &= counts > 1
    return frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)


def window_columns(window: pd.DataFrame, *names: str) -> list[list[Any]]:
    """The window's request ids (its ``id`` column, else its index), then each named column,
    as lists; a column the window lacks reads as None on every row."""
    ids = window["id"].tolist() if "id" in window.columns else window.index.tolist()
    return [
        ids,
        *(window[n].tolist() if n in window.columns else [None] * len(window) for n in names),
    ]


def has_rows(frame: pd.DataFrame, columns: Collection[str], *, what: str, needs: str) -> bool:
    """Whether ``frame`` (a reference or a replay) has rows to read. A frame with rows but
    without ``columns`` is refused with a ValueError saying what ``what`` ``needs``; an
    empty one, whatever its columns, only has nothing to give."""
    if len(frame) and not set(columns) <= set(frame.columns):
        raise ValueError(f"{what} needs columns {needs}; found {list(frame.columns)}")
    return len(frame) > 0


def clean(value: Any, *, strip: bool = True) -> str | None:
    """A cell as a non-blank string, or None (None, NaN, pandas' NA, blank)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if type(value).__name__ in {"NAType", "NaTType"}:
        return None
    text = str(value)
    if not text.strip():
        return None
    return text.strip() if strip else text
