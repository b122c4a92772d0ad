"""The guardrail step: roll back a fresh promotion that hurt labelled accuracy (the rule is
:mod:`lifecycle.promotion.guardrail`'s)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lifecycle.registry.models import CHAMPION, PREVIOUS, PROMOTED_AT
from lifecycle.steps.lineage import (
    GUARD_TAG,
)

if TYPE_CHECKING:
    import pandas as pd

    from lifecycle.config.settings import Settings
    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.promotion.guardrail import GuardrailDecision
    from lifecycle.registry.models import Registry
    from lifecycle.store import TrafficStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuardOutcome:
    """``action``: rolled_back, kept, waiting, or none (no fresh promotion to guard)."""

    action: str
    decision: GuardrailDecision | None
    champion_version: int | None = None
    previous_version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "champion_version": self.champion_version,
            "previous_version": self.previous_version,
            "decision": None if self.decision is None else self.decision.as_dict(),
        }


def guard_promotion(
    settings: Settings,
    spec: SpecialistSpec,
    *,
    store: TrafficStore,
    registry: Registry | None = None,
    min_samples: int = 50,
) -> GuardOutcome:
    """After a promotion, compare the new champion's labelled accuracy with the previous
    champion's and roll back a significant drop (beyond the promotion margin).

    Guards until it decides: a kept champion is tagged, and not guarded again.
    """
    from lifecycle.promotion.guardrail import guardrail
    from lifecycle.registry.models import Registry

    registry = registry or Registry(settings)
    aliases = registry.aliases(spec.name)
    champion, previous = aliases.get(CHAMPION), aliases.get(PREVIOUS)
    if champion is None or previous is None:
        return GuardOutcome("none", None, champion, previous)
    info = registry.get_version(spec.name, champion)
    if PROMOTED_AT not in info.tags or GUARD_TAG in info.tags:
        return GuardOutcome("none", None, champion, previous)
    promoted_at = datetime.fromisoformat(info.tags[PROMOTED_AT])
    # The old champion's own answers before the promotion, the new one's after it.
    before = _correctness(
        store.window(spec.name, model_version=previous, until=promoted_at, with_embeddings=False)
    )
    after = _correctness(
        store.window(spec.name, model_version=champion, since=promoted_at, with_embeddings=False)
    )
    decision = guardrail(
        before,
        after,
        alpha=spec.promotion.alpha,
        margin=spec.promotion.margin,
        min_samples=min_samples,
    )
    if decision.rollback:
        registry.rollback(spec.name, reason="guardrail: " + "; ".join(decision.reasons)[:4000])
        return GuardOutcome("rolled_back", decision, champion, previous)
    if decision.action == "keep":
        registry.tag_version(spec.name, champion, GUARD_TAG, "kept")
        return GuardOutcome("kept", decision, champion, previous)
    return GuardOutcome("waiting", decision, champion, previous)


def _correctness(window: pd.DataFrame) -> pd.Series:
    """Per request with a person's label: was the served answer right."""
    human = window[window["true_label_source"] == "human"]
    return human["label"] == human["true_label"]
