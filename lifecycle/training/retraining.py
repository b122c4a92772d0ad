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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lifecycle.training.retrain_plan import (
    LabelCounts,
    PlanRules,
    RetrainPlan,
    RowKind,
    clean,
    has_rows,
    plan,
    window_columns,
)

if TYPE_CHECKING:
    from collections.abc import Collection
    from datetime import datetime

    import pandas as pd

__all__ = [
    "CandidateCheck",
    "LabelCounts",
    "RetrainPlan",
    "judge_candidate",
    "labelled_rows",
    "plan_retraining",
]

LABELLED_COLUMNS = ["text", "label", "label_source", "request_id"]
_SOURCE_RANK = {"human": 0, "fallback": 1}


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
    task: str = "classification",
) -> RetrainPlan:
    """Plan a retrain from a traffic window and the champion's reference (text, label).

    The one entry point for every task kind: ``task`` "extraction" plans from people's span
    corrections instead (:data:`lifecycle.training.retraining_extraction.EXTRACTION_ROWS`,
    same rules, entity labels for labels).

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
    rules = PlanRules(
        min_labels=min_labels,
        replay_ratio=replay_ratio,
        min_examples_per_label=min_examples_per_label,
        holdout_fraction=holdout_fraction,
        replay_rows=replay_rows,
        recent_since=recent_since,
        recent_weight=recent_weight,
        wait_share=wait_share,
        seed=seed,
    )
    if task == "extraction":
        from lifecycle.training.retraining_extraction import EXTRACTION_ROWS as kind
    elif task == "classification":
        kind = _CLASSIFICATION_ROWS
    else:
        raise ValueError(f"unknown task {task!r}; known: classification, extraction")
    return plan(
        window, kind, reference=reference, labels_known=labels_known, rules=rules, replay=replay
    )


def _read_labelled(window: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int], int, list[str]]:
    """A classifier's ``RowKind.read``: its labelled rows and their count per label."""
    rows, dropped = _labelled(window)
    label_counts = {str(k): int(v) for k, v in rows["label"].value_counts().sort_index().items()}
    return rows, label_counts, dropped, []


def _holds(rows: pd.DataFrame, short: Collection[str]) -> pd.Series:
    return rows["label"].isin(list(short))


def _labelled(window: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(labelled rows with text, labelled rows dropped for want of text)."""
    import pandas as pd

    if len(window) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in LABELLED_COLUMNS}), 0

    columns = window_columns(
        window, "text", "true_label", "true_label_source", "escalated", "fallback_label"
    )
    records: list[tuple[Any, ...]] = []
    dropped = 0
    for position, (request_id, text, truth, source, escalated, fallback) in enumerate(
        zip(*columns, strict=True)
    ):
        label, label_source = _effective(truth, source, escalated, fallback)
        if label is None:
            continue
        if clean(text, strip=False) is None:
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
    label = clean(truth)
    if label is not None:
        # Only "human" counts as a person; any other source is treated as the fallback's.
        return label, "human" if source == "human" else "fallback"
    fallback_label = clean(fallback)
    if fallback_label is not None and _truthy(escalated):
        return fallback_label, "fallback"
    return None, ""


def _truthy(value: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(value)


def _reference_frame(reference: pd.DataFrame, what: str = "reference") -> pd.DataFrame:
    """The reference's (or the replay's) text and label, with rows lacking either dropped.

    ``what`` is not used: a classifier's replay is refused in the reference's words, as it
    always was (``RowKind.reference`` passes it for an extractor's messages).
    """
    import pandas as pd

    if not has_rows(reference, {"text", "label"}, what="reference", needs="'text' and 'label'"):
        return pd.DataFrame({"text": pd.Series(dtype=object), "label": pd.Series(dtype=object)})
    frame = reference[["text", "label"]]
    keep = frame["text"].map(lambda v: clean(v, strip=False) is not None) & frame["label"].map(
        lambda v: clean(v) is not None
    )
    return frame[keep].reset_index(drop=True)


_CLASSIFICATION_ROWS = RowKind(
    columns=LABELLED_COLUMNS,
    read=_read_labelled,
    holds=_holds,
    reference=_reference_frame,
    noun="labelled",
    short_warning=(
        "proposed labels with too few examples ({need} needed), left out of this training: {short}"
    ),
    sources=lambda counts: f"{counts.human} human, {counts.fallback} fallback",
)


@dataclass(frozen=True)
class CandidateCheck:
    """Whether a retrained candidate may become challenger, and why (for a version tag)."""

    accepted: bool
    reason: str
    #: False when too few held-out new rows existed to compare: accepted unchecked.
    checked: bool = True


#: Per task kind: the figure the candidate check compares, and its name in a reason.
_CHECKED = {
    "classification": ("accuracy", "accuracy"),
    "extraction": ("micro_f1", "entity micro-F1"),
}


def judge_candidate(
    evaluation: dict[str, float],
    *,
    holdout_rows: int,
    min_rows: int,
    task: str = "classification",
) -> CandidateCheck:
    """A candidate beats the champion when its score on the held-out new (drifted) labelled
    rows is strictly higher: accuracy for a classifier, entity micro-F1 on exact spans for an
    extractor (``holdout_new.{challenger,champion}_{accuracy,micro_f1}``). With fewer than
    ``min_rows`` such rows the comparison is noise: the candidate is accepted unchecked, and
    the reason says so. The old holdout's figures (forgetting), when given, are quoted in an
    extractor's reason; they are logged for both kinds and veto neither."""
    key, name = _CHECKED[task]
    mine = evaluation.get(f"holdout_new.challenger_{key}")
    theirs = evaluation.get(f"holdout_new.champion_{key}")
    if mine is None or theirs is None or holdout_rows < min_rows:
        return CandidateCheck(
            True,
            f"unchecked: {holdout_rows} held-out drifted rows < {min_rows} needed to compare "
            "with the champion",
            checked=False,
        )
    old_mine = evaluation.get(f"holdout_old.challenger_{key}")
    old_theirs = evaluation.get(f"holdout_old.champion_{key}")
    old = (
        f"; old holdout {old_mine:.3f} vs {old_theirs:.3f}"
        if task != "classification" and old_mine is not None and old_theirs is not None
        else ""
    )
    if mine > theirs:
        return CandidateCheck(
            True,
            f"held-out drifted {name} {mine:.3f} > champion {theirs:.3f} on {holdout_rows} rows"
            + old,
        )
    return CandidateCheck(
        False,
        f"held-out drifted {name} {mine:.3f} <= champion {theirs:.3f} on {holdout_rows} rows" + old,
    )
