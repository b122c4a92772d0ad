"""Self-training at a retrain: unlabelled traffic labelled by a first candidate.

People label a share of the traffic; a new intent they named ten times is also in the
unlabelled requests, tens of times more. A retrain trains a first candidate on the people's
labels, lets it answer the unlabelled requests since the champion's registration, keeps the
answers it gives with at least ``training.self_training_confidence`` (calibrated), and
trains the candidate again from the parent with those rows added (Lee, 2013: pseudo-labels;
measured on Banking77 in bench/RESULTS.md). Pure functions of data frames and arrays: the
retrain step reads the window and runs the two trainings.

What stays out: requests with a label (theirs is better), texts a retrain holds out to judge
the candidate (the judge must not have seen them), texts the store did not keep, and
duplicates. Self-labelled rows train only: they are never validation rows (the reference
and the calibration stay people's and the champion's rows), and the retrain does not replay
them later (``source`` "pseudo" in the training set).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from lifecycle.training.retrain_plan import clean, held_out_text, window_columns

if TYPE_CHECKING:
    from datetime import datetime

    import numpy as np
    import pandas as pd

#: The ``source`` of a self-labelled training row.
PSEUDO = "pseudo"


def unlabelled_texts(
    window: pd.DataFrame,
    *,
    since: datetime | None,
    holdout_fraction: float,
    exclude: Collection[str] = (),
) -> list[str]:
    """The window's distinct texts without any label (no person's, no fallback's), created at
    or after ``since``, that :func:`~lifecycle.training.retrain_plan.stable_split` would not
    hold out at ``holdout_fraction`` and that are not in ``exclude``; oldest first."""
    import pandas as pd

    if len(window) == 0:
        return []
    _, texts, truths, escalated, fallbacks, created = window_columns(
        window, "text", "true_label", "escalated", "fallback_label", "created_at"
    )
    after = (
        [True] * len(window)
        if since is None or "created_at" not in window.columns
        else (pd.to_datetime(pd.Series(created), utc=True) >= pd.Timestamp(since)).tolist()
    )
    excluded = set(exclude)
    seen: set[str] = set()
    out: list[str] = []
    for text, truth, was_escalated, fallback, recent in zip(
        texts, truths, escalated, fallbacks, after, strict=True
    ):
        body = clean(text, strip=False)
        if body is None or not recent or clean(truth) is not None:
            continue
        if clean(fallback) is not None and bool(was_escalated):
            continue  # the fallback's answer is a label: the retrain already has it
        if body in seen or body in excluded or held_out_text(body, holdout_fraction):
            continue
        seen.add(body)
        out.append(body)
    return out


def pseudo_labelled(
    texts: Sequence[str],
    probabilities: np.ndarray,
    labels: Sequence[str],
    *,
    threshold: float,
    max_rows: int,
) -> pd.DataFrame:
    """(text, label, source "pseudo") for each text whose most probable label has at least
    ``threshold`` probability: the ``max_rows`` most confident, in the texts' order."""
    import numpy as np
    import pandas as pd

    empty = pd.DataFrame(
        {"text": pd.Series(dtype=object), "label": pd.Series(dtype=object)}
    ).assign(source=pd.Series(dtype=object))
    if len(texts) == 0 or max_rows == 0 or threshold <= 0:
        return empty
    if probabilities.shape != (len(texts), len(labels)):
        raise ValueError(
            f"probabilities of shape {probabilities.shape} for {len(texts)} texts and "
            f"{len(labels)} labels"
        )
    confidence = probabilities.max(axis=1)
    picked = np.flatnonzero(confidence >= threshold)
    if len(picked) > max_rows:
        # Most confident first; ties by position, so the pick is deterministic.
        order = np.lexsort((picked, -confidence[picked]))
        picked = np.sort(picked[order[:max_rows]])
    if len(picked) == 0:
        return empty
    best = probabilities.argmax(axis=1)
    return pd.DataFrame(
        {
            "text": [texts[i] for i in picked.tolist()],
            "label": [labels[int(best[i])] for i in picked.tolist()],
            "source": PSEUDO,
        }
    )
