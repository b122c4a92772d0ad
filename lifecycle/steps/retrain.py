"""The retrain step: a challenger from the champion's labelled traffic, checked against the
champion on held-out drifted rows before it is shadowed."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lifecycle.registry.models import CHALLENGER, CHAMPION
from lifecycle.steps.lineage import (
    CANDIDATE_CHECK_TAG,
    LABELS_UNTIL_TAG,
    REJECTED_REASON_TAG,
    TRAINED_LABELS_TAG,
    labels_since_training,
)

if TYPE_CHECKING:
    import pandas as pd

    from lifecycle.config.settings import Settings
    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.registry.models import Registry
    from lifecycle.store import TrafficStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainOutcome:
    """``status``: registered, rejected (recorded as a version without the ``challenger``
    alias: it did not beat the champion on held-out drifted rows), skipped (a challenger
    from this champion exists), or needs_labels (``missing`` more labels would make it
    ready)."""

    status: str
    reason: str
    champion_version: int | None = None
    challenger_version: int | None = None
    missing: int = 0
    plan: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def retrain_from_traffic(
    settings: Settings,
    spec: SpecialistSpec,
    *,
    store: TrafficStore,
    registry: Registry | None = None,
    trigger: str = "drift",
    since: datetime | None = None,
    seed: int = 0,
) -> RetrainOutcome:
    """Train a challenger on the champion's labelled traffic plus a replay of its data.

    People's labels come first, the fallback's where a person's is missing; the new rows
    are split into training rows and a held-out slice, and the challenger and champion are
    both scored on that slice and on held-out reference rows (forgetting). The replay comes
    from the champion's own training set (``Registry.training_set``; the spec's data for a
    champion logged without one), and labels since the champion's registration count
    ``training.recent_weight`` times. The candidate is registered with lineage either way;
    it is aliased ``challenger`` (the gateway then shadows it) only when its accuracy on the
    held-out new rows is strictly higher than the champion's (unchecked with fewer than
    ``training.min_holdout_rows`` of them); otherwise the version is tagged
    ``lifecycle.rejected_reason`` and the outcome is "rejected".

    An extractor (``spec.task`` "extraction") is retrained the same way from people's span
    corrections only (no fallback labels), with entity labels as its labels (a new field
    grows the head), and judged by entity micro-F1 on exact spans instead of accuracy.
    """
    from lifecycle.registry.models import Registry
    from lifecycle.training.pipeline import load_training_data, train_and_register
    from lifecycle.training.retraining import judge_candidate, plan_retraining

    registry = registry or Registry(settings)
    aliases = registry.aliases(spec.name)
    champion = aliases.get(CHAMPION)
    if champion is None:
        return RetrainOutcome("skipped", f"{spec.name} has no champion; train one first")
    existing = aliases.get(CHALLENGER)
    if existing is not None:
        parent = registry.get_version(spec.name, existing).lineage.get("parent_version")
        if parent == str(champion):
            return RetrainOutcome(
                "skipped",
                f"challenger v{existing} was already trained from champion v{champion}; "
                "it is being shadowed",
                champion_version=champion,
                challenger_version=existing,
            )

    if trigger != "manual":
        waiting = _cooling_down(registry, store, spec, champion)
        if waiting is not None:
            return RetrainOutcome("skipped", waiting, champion_version=champion)

    # Every labelled request counts, whichever version answered it: a label is about the
    # text, and the traffic of earlier champions holds most of what people labelled.
    labels_until = datetime.now(UTC)
    window = store.window(spec.name, since=since, with_embeddings=False)
    champion_info = registry.get_version(spec.name, champion)
    labels_known = json.loads(champion_info.lineage.get("labels", "[]"))
    # The champion's own training rows to replay, its reference (validation rows it never
    # trained on) to hold out; a champion logged before training sets were kept: the spec's.
    champion_train = registry.training_set(spec.name, champion)
    if champion_train is None:
        reference, replay = load_training_data(spec), None
    else:
        reference, replay = registry.reference_rows(spec.name, champion), champion_train
    plan = plan_retraining(
        window,
        reference=reference,
        labels_known=labels_known,
        min_labels=spec.monitoring.min_labels,
        replay_ratio=spec.training.replay_ratio,
        min_examples_per_label=spec.training.min_examples_per_label,
        replay=replay,
        replay_rows=spec.training.replay_rows,
        recent_since=datetime.fromtimestamp(champion_info.created_ms / 1000, tz=UTC),
        recent_weight=spec.training.recent_weight,
        wait_share=spec.training.wait_share,
        seed=seed,
        task=spec.task,
    )
    if not plan.ready:
        return RetrainOutcome(
            "needs_labels",
            plan.reason,
            champion_version=champion,
            missing=plan.missing,
            plan=plan.summary(),
        )
    extractor = spec.task == "extraction"
    # An extractor's rows are (text, spans): a rare combination of fields still trains.
    data = (
        plan.train[["text", "entities"]]
        if extractor
        else _drop_singletons(plan.train)[["text", "label"]]
    )
    first, last = _span(window)
    trained = train_and_register(
        settings,
        spec,
        data=data,
        trigger=trigger,
        data_window=f"{first}..{last}",
        alias=CHALLENGER,
        assign_alias=False,
        extra_tags={
            TRAINED_LABELS_TAG: str(plan.counts.human),
            LABELS_UNTIL_TAG: labels_until.isoformat(),
        },
    )
    holdout_new = plan.holdout_new
    if champion_train is not None and len(holdout_new):
        # A champion trained before holdouts were fixed per text may have learnt some of
        # these rows: scored on them, it would look better than it is.
        holdout_new = holdout_new[~holdout_new["text"].isin(set(champion_train["text"]))]
    evaluation = _compare_on_holdouts(
        registry, spec, trained, champion, holdout_new, plan.holdout_old
    )
    if evaluation:
        registry.log_metrics(trained.version.run_id or "", evaluation)
    check = judge_candidate(
        evaluation,
        holdout_rows=len(holdout_new),
        min_rows=spec.training.min_holdout_rows,
        task=spec.task,
    )
    version = str(trained.version.version)
    registry.tag_version(spec.name, version, CANDIDATE_CHECK_TAG, check.reason)
    replayed = int((plan.train["source"] == "replay").sum())
    trained_on = (
        f"trained on {plan.counts.human} people's corrections plus {replayed} replayed rows"
        if extractor
        else f"trained on {plan.counts.human} people's and {plan.counts.fallback} fallback "
        f"labels plus {replayed} replayed rows"
    )
    if not check.accepted:
        registry.tag_version(spec.name, version, REJECTED_REASON_TAG, check.reason)
        logger.warning(
            "%s: candidate v%s not made challenger: %s", spec.name, version, check.reason
        )
        status, reason = "rejected", f"candidate v{version} {trained_on}; {check.reason}"
    else:
        registry.set_alias(spec.name, CHALLENGER, trained.version.version)
        logger.info(
            "%s: challenger v%d registered from %d labelled requests (%s; %s)",
            spec.name,
            trained.version.version,
            plan.counts.usable,
            ", ".join(f"{k} {v:.3f}" for k, v in evaluation.items()),
            check.reason,
        )
        status, reason = "registered", f"{trained_on}; {check.reason}"
    return RetrainOutcome(
        status,
        reason,
        champion_version=champion,
        challenger_version=trained.version.version,
        plan=plan.summary(),
        evaluation=evaluation,
    )


def _drop_singletons(train: pd.DataFrame) -> pd.DataFrame:
    # Training needs two rows of a class (one for validation); one example teaches little.
    counts = train["label"].value_counts()
    return train[train["label"].isin(counts[counts >= 2].index)].reset_index(drop=True)


def _span(window: pd.DataFrame) -> tuple[str, str]:
    if window.empty:
        return "", ""
    return str(window["created_at"].iloc[0].isoformat()), str(
        window["created_at"].iloc[-1].isoformat()
    )


def _compare_on_holdouts(
    registry: Registry,
    spec: SpecialistSpec,
    trained: Any,
    champion: int,
    holdout_new: pd.DataFrame,
    holdout_old: pd.DataFrame,
) -> dict[str, float]:
    host = trained.result.host
    champion_id, _ = registry.load(host, spec.name, champion)
    out: dict[str, float] = {}
    try:
        for tag, frame in (("new", holdout_new), ("old", holdout_old)):
            if frame.empty:
                continue
            for who, adapter in (
                ("challenger", trained.result.adapter_id),
                ("champion", champion_id),
            ):
                for metric, value in _scores(spec, host, adapter, frame).items():
                    out[f"holdout_{tag}.{who}_{metric}"] = value
    finally:
        host.remove_adapter(champion_id)
    return out


def _scores(spec: SpecialistSpec, host: Any, adapter: str, frame: pd.DataFrame) -> dict[str, float]:
    """One model on one holdout: a classifier's accuracy, an extractor's entity micro-F1 and
    exact match on exact spans."""
    preds = host.predict(frame["text"].tolist(), adapter)
    if spec.task != "extraction":
        correct = sum(p.label == t for p, t in zip(preds, frame["label"], strict=True))
        return {"accuracy": correct / len(frame)}
    from lifecycle.extraction.metrics import evaluate_entities
    from lifecycle.extraction.spans import keys

    scored = evaluate_entities(
        [keys(spans) for spans in frame["entities"]], [keys(p.entities or ()) for p in preds]
    )
    return {"micro_f1": scored.micro_f1, "exact_match": scored.exact_match}


def _cooling_down(
    registry: Registry, store: TrafficStore, spec: SpecialistSpec, champion: int
) -> str | None:
    """Why an automatic retrain waits, or None: the newest candidate trained from this
    champion did not become champion (rejected by the candidate check or the gate, or
    superseded) and fewer than ``monitoring.min_labels`` people's labels arrived since its
    training read them. The same labels would train much the same model again; an
    unattended schedule or a drift that persists would otherwise retrain every window."""
    tried = [
        v
        for v in registry.versions(spec.name)
        if v.lineage.get("parent_version") == str(champion) and v.version != champion
    ]
    if not tried:
        return None
    last = tried[-1]
    trained, since = labels_since_training(store, spec.name, last)
    if trained is None or since is None or since >= spec.monitoring.min_labels:
        return None
    return (
        f"candidate v{last.version} from champion v{champion} was not promoted and only "
        f"{since} people's labels arrived since it trained ({spec.monitoring.min_labels} "
        "needed for another try; lifecycle retrain --trigger manual does not wait)"
    )
