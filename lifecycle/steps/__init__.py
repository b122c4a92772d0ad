"""The closed loop's steps as plain functions: retrain from traffic, gate a challenger,
guard a fresh promotion.

Each step reads the traffic store and the MLflow registry, applies the pure rules of
``lifecycle.training.retraining`` and ``lifecycle.promotion``, moves aliases and returns
what it did. Prefect flows (``flows/``) call them as tasks and add retries, events, alerts
and logging; the steps themselves run (and are tested) without Prefect.

Idempotence is part of each step, since a flow retried after a crash runs it again:
a retrain for a champion that already has a challenger trained from it does nothing; a
gate on a challenger that is no longer the challenger does nothing.
"""

from lifecycle.steps.gate import GateOutcome, gate_challenger
from lifecycle.steps.guard import GuardOutcome, guard_promotion
from lifecycle.steps.lineage import (
    CANDIDATE_CHECK_TAG,
    GUARD_TAG,
    LABELS_UNTIL_TAG,
    REJECTED_REASON_TAG,
    SUPERSEDED_TAG,
    TRAINED_LABELS_TAG,
)
from lifecycle.steps.retrain import RetrainOutcome, retrain_from_traffic

__all__ = [
    "CANDIDATE_CHECK_TAG",
    "GUARD_TAG",
    "LABELS_UNTIL_TAG",
    "REJECTED_REASON_TAG",
    "SUPERSEDED_TAG",
    "TRAINED_LABELS_TAG",
    "GateOutcome",
    "GuardOutcome",
    "RetrainOutcome",
    "gate_challenger",
    "guard_promotion",
    "retrain_from_traffic",
]
