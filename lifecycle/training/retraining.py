"""The training set of a retrain, built from the labelled traffic of a window.

Pure functions of data frames: the retrain flow reads a window from the traffic store and the
champion's reference table, calls :func:`plan_retraining`, and either trains on ``train`` or
reports how many labels are still missing.

Where labels come from, best first: a person's label; else the fallback's (the effective
label with source "fallback", or the ``fallback_label`` of an escalated row that has no
feedback row). Fallback labels are kept but marked, because they exist only for
low-confidence rows and can be wrong: ``label_source`` lets training weigh them and lets
evaluation report the two kinds apart. A store that keeps hashes instead of texts gives rows
without text; they cannot train anything and are dropped and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

from lifecycle.training.data import replay_mix, stratified_split

if TYPE_CHECKING:
    import pandas as pd

LABELLED_COLUMNS = ["text", "label", "label_source", "request_id"]
_SOURCE_RANK = {"human": 0, "fallback": 1}


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
    #: a row for each), sorted.
    new_labels: list[str] = field(default_factory=list)
    #: Proposed labels left out for want of examples: label -> usable examples so far.
    short_labels: dict[str, int] = field(default_factory=dict)
    #: The examples a proposed label needs before it trains.
    min_examples_per_label: int = 1
    #: Usable labels per class in the new data.
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


def labelled_rows(window: pd.DataFrame) -> pd.DataFrame:
    """One row per labelled request with text: text, label, label_source, request_id.

    Oldest first, as the window. A request that occurs more than once (overlapping windows
    concatenated) keeps its best label: a person's over the fallback's, then the last one.
    How many labelled rows lacked text is in ``.attrs["dropped_no_text"]`` (and in the plan's
    counts).
    """
    rows, dropped = _labelled(window)
    rows.attrs["dropped_no_text"] = dropped
    return rows


def plan_retraining(
    window: pd.DataFrame,
    *,
    reference: pd.DataFrame,
    labels_known: list[str] | tuple[str, ...],
    min_labels: int,
    replay_ratio: float,
    min_examples_per_label: int = 1,
    holdout_fraction: float = 0.2,
    replay: pd.DataFrame | None = None,
    replay_rows: int = 0,
    recent_since: datetime | None = None,
    recent_weight: float = 1.0,
    wait_share: float = 0.0,
    seed: int = 0,
) -> RetrainPlan:
    """Plan a retrain from a traffic window and the champion's reference (text, label).

    Ready once ``min_labels`` usable labels (people's and the fallback's together: both
    train) exist. Then the new rows are split, stratified by label, into training rows and
    ``holdout_new`` (``holdout_fraction`` of them; a label seen once stays in training, since
    one example cannot be on both sides). The reference is split the same way into
    ``holdout_old`` and the rest, and ``replay_ratio`` rows of the rest per new training row
    are replayed, so the old holdout measures forgetting on rows the challenger never saw.
    A proposed label (one not in ``labels_known``) trains, growing the head, only with at least
    ``min_examples_per_label`` usable rows; the rows of one with fewer are held back (counted
    in ``counts.held_back``, named in ``short_labels``) until more arrive. When those held-back
    rows are at least ``wait_share`` of the labelled rows, the plan waits (not ready, ``missing``
    the examples they lack): a new intent that is a real part of the traffic is learned once it
    can be, not left out of a retrain that would then have to be replaced. Deterministic for a
    seed.

    ``replay``, when given, is the champion's own training set (text, label): the replayed
    rows come from it (less any text of ``holdout_old``) instead of the rest of the
    reference, which then only provides ``holdout_old``. The count replayed is
    ``replay_ratio`` per new training row, raised to ``replay_rows`` when that is larger,
    at most the pool. New training rows created at or after ``recent_since`` (the drifted
    traffic since the champion's registration) are duplicated to count ``recent_weight``
    times (rounded; the copies have ``source`` "recent"); replay is sized on the rows before
    duplication.
    """
    import pandas as pd

    if not 0 <= holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    if replay_ratio < 0:
        raise ValueError(f"replay_ratio must be >= 0, got {replay_ratio}")
    if min_labels < 0:
        raise ValueError(f"min_labels must be >= 0, got {min_labels}")

    if recent_weight < 1:
        raise ValueError(f"recent_weight must be >= 1, got {recent_weight}")
    if min_examples_per_label < 1:
        raise ValueError(f"min_examples_per_label must be >= 1, got {min_examples_per_label}")

    rows, dropped = _labelled(window)
    label_counts = {str(k): int(v) for k, v in rows["label"].value_counts().sort_index().items()}
    known = set(labels_known)
    proposed = sorted(label for label in label_counts if label not in known)
    short = {k: label_counts[k] for k in proposed if label_counts[k] < min_examples_per_label}
    new_labels = [label for label in proposed if label not in short]
    if short:
        rows = rows[~rows["label"].isin(list(short))].reset_index(drop=True)
    counts = LabelCounts(
        human=int((rows["label_source"] == "human").sum()),
        fallback=int((rows["label_source"] == "fallback").sum()),
        dropped_no_text=dropped,
        held_back=sum(short.values()),
    )
    warnings: list[str] = []
    short_text = ", ".join(
        f"{k!r} needs {min_examples_per_label - n} more" for k, n in sorted(short.items())
    )
    if short:
        warnings.append(
            f"proposed labels with too few examples ({min_examples_per_label} needed), left "
            f"out of this training: {short_text}"
        )
    if dropped:
        warnings.append(
            f"{dropped} labelled requests have no stored text (the store keeps hashes only) "
            "and cannot be used"
        )

    if not 0.0 <= wait_share <= 1.0:
        raise ValueError(f"wait_share must be within [0, 1], got {wait_share}")
    empty_new = rows.iloc[0:0]
    labelled = counts.usable + counts.held_back
    waits = bool(short) and wait_share > 0 and counts.held_back >= wait_share * labelled
    if counts.usable < min_labels or counts.usable == 0 or waits:
        missing = max(min_labels - counts.usable, 1 if counts.usable == 0 else 0)
        if waits:
            missing = max(missing, sum(min_examples_per_label - n for n in short.values()))
            reason = (
                f"waiting for proposed labels that make {counts.held_back / labelled:.0%} of "
                f"the {labelled} labelled requests (training.wait_share "
                f"{wait_share:g}): {short_text}"
            )
        else:
            reason = (
                f"too few labels to retrain: {counts.usable} usable ({counts.human} human, "
                f"{counts.fallback} fallback), need {max(min_labels, 1)}; "
                f"{missing} more needed"
                + (f"; proposed labels short of examples: {short_text}" if short else "")
            )
        return RetrainPlan(
            ready=False,
            reason=reason,
            counts=counts,
            train=empty_new.assign(source=pd.Series(dtype=object)),
            holdout_new=empty_new,
            holdout_old=_reference_frame(reference).iloc[0:0],
            missing=missing,
            new_labels=new_labels,
            short_labels=short,
            min_examples_per_label=min_examples_per_label,
            label_counts=label_counts,
            warnings=warnings,
        )

    new_train, holdout_new = _split(rows, fraction=holdout_fraction, seed=seed)
    old = _reference_frame(reference)
    old_rest, holdout_old = _split(old, fraction=holdout_fraction, seed=seed)
    if replay is not None:
        pool = _reference_frame(replay)
        old_rest = pool[~pool["text"].isin(set(holdout_old["text"]))].reset_index(drop=True)
    replayed_rows = old_rest.assign(label_source="reference", request_id=None)
    train = replay_mix(
        new_train,
        replayed_rows[LABELLED_COLUMNS],
        ratio=replay_ratio,
        seed=seed,
        at_least=replay_rows,
    )
    copies = _recent_copies(window, train, since=recent_since, weight=recent_weight)
    if len(copies):
        train = pd.concat([train, copies], ignore_index=True)

    singles = sorted(str(label) for label, n in train["label"].value_counts().items() if n < 2)
    if singles:
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
        f"ready: {counts.usable} labels ({counts.human} human, {counts.fallback} fallback); "
        f"{len(new_train)} new (+{len(copies)} recent copies) + {replayed} replayed rows "
        "to train, "
        f"{len(holdout_new)} new and {len(holdout_old)} reference rows held out"
    )
    return RetrainPlan(
        ready=True,
        reason=reason,
        counts=counts,
        train=train,
        holdout_new=holdout_new,
        holdout_old=holdout_old,
        new_labels=new_labels,
        short_labels=short,
        min_examples_per_label=min_examples_per_label,
        label_counts=label_counts,
        warnings=warnings,
    )


def _recent_copies(
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


def _labelled(window: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(labelled rows with text, labelled rows dropped for want of text)."""
    import pandas as pd

    n = len(window)
    if n == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in LABELLED_COLUMNS}), 0

    def column(name: str) -> list[Any]:
        return window[name].tolist() if name in window.columns else [None] * n

    ids = window["id"].tolist() if "id" in window.columns else window.index.tolist()
    records: list[tuple[Any, ...]] = []
    dropped = 0
    for position, (request_id, text, truth, source, escalated, fallback) in enumerate(
        zip(
            ids,
            column("text"),
            column("true_label"),
            column("true_label_source"),
            column("escalated"),
            column("fallback_label"),
            strict=True,
        )
    ):
        label, label_source = _effective(truth, source, escalated, fallback)
        if label is None:
            continue
        if _clean(text, strip=False) is None:
            dropped += 1
            continue
        records.append((text, label, label_source, request_id, position))
    frame = pd.DataFrame(records, columns=[*LABELLED_COLUMNS, "_position"])
    if frame["request_id"].duplicated().any():
        # The best label per request: a person's first, then the latest seen.
        frame["_rank"] = frame["label_source"].map(_SOURCE_RANK)
        frame = frame.sort_values(["_rank", "_position"], ascending=[True, False])
        frame = frame.drop_duplicates("request_id").sort_values("_position")
    frame = frame[LABELLED_COLUMNS].reset_index(drop=True)
    return frame.astype({"text": object, "label": object, "label_source": object}), dropped


def _effective(truth: Any, source: Any, escalated: Any, fallback: Any) -> tuple[str | None, str]:
    """A row's label and where it came from; (None, "") when it has none."""
    label = _clean(truth)
    if label is not None:
        # Only "human" counts as a person; any other source is treated as the fallback's.
        return label, "human" if source == "human" else "fallback"
    fallback_label = _clean(fallback)
    if fallback_label is not None and _truthy(escalated):
        return fallback_label, "fallback"
    return None, ""


def _clean(value: Any, *, strip: bool = True) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if type(value).__name__ in {"NAType", "NaTType"}:
        return None
    text = str(value)
    if not text.strip():
        return None
    return text.strip() if strip else text


def _truthy(value: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(value)


def _reference_frame(reference: pd.DataFrame) -> pd.DataFrame:
    """The reference's text and label, with rows lacking either dropped."""
    import pandas as pd

    if len(reference) == 0 or not {"text", "label"} <= set(reference.columns):
        if len(reference):
            raise ValueError(
                f"reference needs columns 'text' and 'label'; found {list(reference.columns)}"
            )
        return pd.DataFrame({"text": pd.Series(dtype=object), "label": pd.Series(dtype=object)})
    frame = reference[["text", "label"]]
    keep = frame["text"].map(lambda v: _clean(v, strip=False) is not None) & frame["label"].map(
        lambda v: _clean(v) is not None
    )
    return frame[keep].reset_index(drop=True)


def _split(frame: pd.DataFrame, *, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified (rest, held_out); nothing held out for a zero fraction or an empty frame."""
    if fraction == 0 or len(frame) == 0:
        return frame.reset_index(drop=True), frame.iloc[0:0].reset_index(drop=True)
    return stratified_split(frame, fraction=fraction, seed=seed)


@dataclass(frozen=True)
class CandidateCheck:
    """Whether a retrained candidate may become challenger, and why (for a version tag)."""

    accepted: bool
    reason: str
    #: False when too few held-out new rows existed to compare: accepted unchecked.
    checked: bool = True


def judge_candidate(
    evaluation: dict[str, float], *, holdout_rows: int, min_rows: int
) -> CandidateCheck:
    """A candidate beats the champion when its accuracy on the held-out new (drifted)
    labelled rows is strictly higher. With fewer than ``min_rows`` such rows the comparison
    is noise: the candidate is accepted unchecked, and the reason says so."""
    mine = evaluation.get("holdout_new.challenger_accuracy")
    theirs = evaluation.get("holdout_new.champion_accuracy")
    if mine is None or theirs is None or holdout_rows < min_rows:
        return CandidateCheck(
            True,
            f"unchecked: {holdout_rows} held-out drifted rows < {min_rows} needed to compare "
            "with the champion",
            checked=False,
        )
    if mine > theirs:
        return CandidateCheck(
            True,
            f"held-out drifted accuracy {mine:.3f} > champion {theirs:.3f} on {holdout_rows} rows",
        )
    return CandidateCheck(
        False,
        f"held-out drifted accuracy {mine:.3f} <= champion {theirs:.3f} on {holdout_rows} rows",
    )
