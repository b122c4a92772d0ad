"""The tags the loop's steps leave on versions, and the label counts read back from them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from lifecycle.registry.models import TAG

if TYPE_CHECKING:
    from lifecycle.registry.models import VersionInfo
    from lifecycle.store import TrafficStore

#: On a challenger trained from traffic: how many people's labels it learnt from, and the
#: moment the traffic was read (labels after it are new to it). The gate's supersede rule.
TRAINED_LABELS_TAG = f"{TAG}trained_labels"
LABELS_UNTIL_TAG = f"{TAG}labels_until"
SUPERSEDED_TAG = f"{TAG}superseded"
#: On a retrained candidate: why it did not become challenger (it did not beat the champion
#: on the held-out drifted rows); and, on every retrained version, the outcome of that check.
REJECTED_REASON_TAG = f"{TAG}rejected_reason"
CANDIDATE_CHECK_TAG = f"{TAG}candidate_check"
GUARD_TAG = f"{TAG}guardrail"


def labels_since_training(
    store: TrafficStore, name: str, info: VersionInfo
) -> tuple[int | None, int | None]:
    """(people's labels the version trained on, those that arrived since), or (None, None)
    for a version not trained from traffic (no ``lifecycle.trained_labels`` tag): the rule
    has nothing to compare then. One count query on the feedback table; ``info`` is the
    version as the caller already read it from the registry."""
    trained = info.tags.get(TRAINED_LABELS_TAG, "")
    if not trained.isdigit():
        return None, None
    until = info.tags.get(LABELS_UNTIL_TAG, "")
    # Without the read time, the registration's: labels from training's minutes are missed.
    since = (
        datetime.fromisoformat(until)
        if until
        else datetime.fromtimestamp(info.created_ms / 1000, tz=UTC)
    )
    return int(trained), store.labels_since(name, since=since)
