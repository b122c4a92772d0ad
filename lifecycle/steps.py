"""The closed loop's steps as plain functions: retrain from traffic, gate a challenger,
guard a fresh promotion.

Each step reads the traffic store and the MLflow registry, applies the pure rules of
``lifecycle.training.retraining`` and ``lifecycle.promotion.gate``, moves aliases and returns
what it did.
Prefect flows (``flows/``) call them as tasks and add retries, events, alerts and logging;
the steps themselves run (and are tested) without Prefect.

Idempotence is part of each step, since a flow retried after a crash runs it again:
a retrain for a champion that already has a challenger trained from it does nothing; a
gate on a challenger that is no longer the challenger does nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from lifecycle.registry.models import CHALLENGER, CHAMPION, PREVIOUS, PROMOTED_AT, TAG

#: On a challenger trained from traffic: how many people's labels it learnt from, and the
#: moment the traffic was read (labels after it are new to it). The gate's supersede rule.
TRAINED_LABELS_TAG = f"{TAG}trained_labels"
LABELS_UNTIL_TAG = f"{TAG}labels_until"
SUPERSEDED_TAG = f"{TAG}superseded"
#: On a retrained candidate: why it did not become challenger (it did not beat the champion
#: on the held-out drifted rows); and, on every retrained version, the outcome of that check.
REJECTED_REASON_TAG = f"{TAG}rejected_reason"
CANDIDATE_CHECK_TAG = f"{TAG}candidate_check"

if TYPE_CHECKING:
    import pandas as pd

    from lifecycle.config.settings import Settings
    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.model.host import AdapterHost
    from lifecycle.model.latency import LatencyComparison
    from lifecycle.promotion.gate import GateDecision, GuardrailDecision
    from lifecycle.registry.models import Registry
    from lifecycle.store import TrafficStore

logger = logging.getLogger(__name__)

GUARD_TAG = f"{TAG}guardrail"


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
    labels_until = datetime.now(timezone.utc)
    window = store.window(spec.name, since=since, with_embeddings=False)
    champion_info = registry.get_version(spec.name, champion)
    labels_known = json.loads(champion_info.lineage.get("labels", "[]"))
    # The champion's own training rows to replay, its reference (validation rows it never
    # trained on) to hold out; a champion logged before training sets were kept: the spec's.
    champion_train = registry.training_set(spec.name, champion)
    if champion_train is None:
        reference, replay = load_training_data(spec), None
    else:
        reference, replay = registry.reference(spec.name, champion)[0], champion_train
    plan = plan_retraining(
        window,
        reference=reference,
        labels_known=labels_known,
        min_labels=spec.monitoring.min_labels,
        replay_ratio=spec.training.replay_ratio,
        min_examples_per_label=spec.training.min_examples_per_label,
        replay=replay,
        replay_rows=spec.training.replay_rows,
        recent_since=datetime.fromtimestamp(champion_info.created_ms / 1000, tz=timezone.utc),
        recent_weight=spec.training.recent_weight,
        wait_share=spec.training.wait_share,
        seed=seed,
    )
    if not plan.ready:
        return RetrainOutcome(
            "needs_labels",
            plan.reason,
            champion_version=champion,
            missing=plan.missing,
            plan=plan.summary(),
        )
    train = _drop_singletons(plan.train)
    first, last = _span(window)
    trained = train_and_register(
        settings,
        spec,
        data=train[["text", "label"]],
        trigger=trigger,
        data_window=f"{first}..{last}",
        alias=CHALLENGER,
        assign_alias=False,
        extra_tags={
            TRAINED_LABELS_TAG: str(plan.counts.human),
            LABELS_UNTIL_TAG: labels_until.isoformat(),
        },
    )
    evaluation = _compare_on_holdouts(
        registry, spec, trained, champion, plan.holdout_new, plan.holdout_old
    )
    if evaluation:
        registry.client.log_batch(
            trained.version.run_id or "",
            metrics=_metrics(evaluation),
        )
    check = judge_candidate(
        evaluation, holdout_rows=len(plan.holdout_new), min_rows=spec.training.min_holdout_rows
    )
    version = str(trained.version.version)
    registry.tag_version(spec.name, version, CANDIDATE_CHECK_TAG, check.reason)
    trained_on = (
        f"trained on {plan.counts.human} people's and {plan.counts.fallback} fallback labels "
        f"plus {int((plan.train['source'] == 'replay').sum())} replayed rows"
    )
    if not check.accepted:
        registry.tag_version(spec.name, version, REJECTED_REASON_TAG, check.reason)
        logger.warning(
            "%s: candidate v%s not made challenger: %s", spec.name, version, check.reason
        )
        return RetrainOutcome(
            "rejected",
            f"candidate v{version} {trained_on}; {check.reason}",
            champion_version=champion,
            challenger_version=trained.version.version,
            plan=plan.summary(),
            evaluation=evaluation,
        )
    registry.set_alias(spec.name, CHALLENGER, trained.version.version)
    logger.info(
        "%s: challenger v%d registered from %d labelled requests (%s; %s)",
        spec.name,
        trained.version.version,
        plan.counts.usable,
        ", ".join(f"{k} {v:.3f}" for k, v in evaluation.items()),
        check.reason,
    )
    return RetrainOutcome(
        "registered",
        f"{trained_on}; {check.reason}",
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
            texts = frame["text"].tolist()
            truth = frame["label"].tolist()
            for who, adapter in (
                ("challenger", trained.result.adapter_id),
                ("champion", champion_id),
            ):
                preds = host.predict(texts, adapter)
                correct = sum(p.label == t for p, t in zip(preds, truth, strict=True))
                out[f"holdout_{tag}.{who}_accuracy"] = correct / len(texts)
    finally:
        host.remove_adapter(champion_id)
    return out


def _metrics(values: dict[str, float]) -> list[Any]:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, v, now, 0) for k, v in values.items()]


# -- the gate ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateOutcome:
    """``action``: promoted, rejected, ready (the gate says promote, ``auto_promote`` is off),
    superseded (retired undecided: enough new labels for a better retrain), waiting, or none
    (no challenger)."""

    action: str
    decision: GateDecision | None
    challenger_version: int | None = None
    champion_version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "challenger_version": self.challenger_version,
            "champion_version": self.champion_version,
            "decision": None if self.decision is None else self.decision.as_dict(),
        }


def gate_challenger(
    settings: Settings,
    spec: SpecialistSpec,
    *,
    store: TrafficStore,
    registry: Registry | None = None,
    now: datetime | None = None,
    host: AdapterHost | None = None,
) -> GateOutcome:
    """Compare the shadowed challenger with the champion on the same requests and act.

    Accuracy is the paired test on labelled shadowed requests; errors are the challenger's
    shadow calls that raised; latency is both models timed side by side on recent texts
    (``lifecycle.model.latency``), measured only when everything else says promote, since it
    loads both adapters (into ``host``, or a fresh one on the spec's base model). A
    challenger that cannot be loaded or cannot answer there is rejected.

    Promotion moves ``champion`` to the challenger and ``previous`` to the old champion (and
    stamps the time, which starts the guardrail); rejection removes the ``challenger`` alias
    and records why on the version. ``auto_promote: false`` stops at the decision: "ready",
    for a person to promote. A challenger the gate leaves undecided while people's labels
    since its training outnumber ``promotion.supersede_factor`` times those it learnt from
    is superseded: alias removed, why on the version (``lifecycle.superseded``), so that the
    next retrain (which a waiting challenger blocks) trains on all of them.
    """
    from lifecycle.promotion.gate import gate
    from lifecycle.registry.models import Registry

    registry = registry or Registry(settings)
    aliases = registry.aliases(spec.name)
    challenger, champion = aliases.get(CHALLENGER), aliases.get(CHAMPION)
    if challenger is None:
        return GateOutcome("none", None, champion_version=champion)
    pairs = store.shadow_pairs(spec.name, challenger_version=challenger)
    if champion is not None:
        pairs = pairs[pairs["champion_version"] == champion]
    errors = store.shadow_failure_count(spec.name, challenger_version=challenger)
    trained_labels, new_labels = _labels_since_training(registry, store, spec.name, challenger)
    decision = gate(
        pairs,
        spec.promotion,
        shadow_errors=errors,
        trained_labels=trained_labels,
        new_labels=new_labels,
    )
    if decision.decision == "promote" and champion is not None:
        try:
            timing = _time_side_by_side(
                settings, spec, registry, store, champion, challenger, host=host
            )
        except Exception as exc:
            logger.warning("%s: timing challenger v%s failed: %s", spec.name, challenger, exc)
            decision = dataclasses.replace(
                decision,
                decision="reject",
                reasons=[
                    *decision.reasons,
                    f"vetoed: the challenger could not be loaded or run beside the champion "
                    f"({type(exc).__name__}: {str(exc)[:300]})",
                ],
            )
        else:
            decision = gate(
                pairs,
                spec.promotion,
                shadow_errors=errors,
                latency_ms=(timing.champion_ms, timing.challenger_ms),
                trained_labels=trained_labels,
                new_labels=new_labels,
            )
    common = {"challenger_version": challenger, "champion_version": champion}
    if decision.decision == "promote":
        if not spec.promotion.auto_promote:
            return GateOutcome("ready", decision, **common)
        registry.promote(spec.name, reason="gate", at=now)
        registry.tag_version(spec.name, challenger, f"{TAG}gate", "; ".join(decision.reasons))
        return GateOutcome("promoted", decision, **common)
    if decision.decision == "reject":
        registry.retire_challenger(
            spec.name, challenger, f"{TAG}rejected", "; ".join(decision.reasons)
        )
        return GateOutcome("rejected", decision, **common)
    if decision.decision == "supersede":
        registry.retire_challenger(
            spec.name, challenger, SUPERSEDED_TAG, "; ".join(decision.reasons)
        )
        return GateOutcome("superseded", decision, **common)
    return GateOutcome("waiting", decision, **common)


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
    trained, since = _labels_since_training(registry, store, spec.name, last.version)
    if trained is None or since is None or since >= spec.monitoring.min_labels:
        return None
    return (
        f"candidate v{last.version} from champion v{champion} was not promoted and only "
        f"{since} people's labels arrived since it trained ({spec.monitoring.min_labels} "
        "needed for another try; lifecycle retrain --trigger manual does not wait)"
    )


def _labels_since_training(
    registry: Registry, store: TrafficStore, name: str, version: int
) -> tuple[int | None, int | None]:
    """(people's labels the version trained on, those that arrived since), or (None, None)
    for a version not trained from traffic (no ``lifecycle.trained_labels`` tag): the rule
    has nothing to compare then. One count query on the feedback table."""
    info = registry.get_version(name, version)
    trained = info.tags.get(TRAINED_LABELS_TAG, "")
    if not trained.isdigit():
        return None, None
    until = info.tags.get(LABELS_UNTIL_TAG, "")
    # Without the read time, the registration's: labels from training's minutes are missed.
    since = (
        datetime.fromisoformat(until)
        if until
        else datetime.fromtimestamp(info.created_ms / 1000, tz=timezone.utc)
    )
    return int(trained), store.labels_since(name, since=since)


def _time_side_by_side(
    settings: Settings,
    spec: SpecialistSpec,
    registry: Registry,
    store: TrafficStore,
    champion: int,
    challenger: int,
    *,
    host: AdapterHost | None,
    n_texts: int = 128,
) -> LatencyComparison:
    """Both versions timed on the champion's latest texts (its reference where none are
    stored, e.g. with ``store_text`` off), in a host of their own or the one given."""
    from lifecycle.model.host import AdapterHost
    from lifecycle.model.latency import compare_latency

    recent = store.window(spec.name, model_version=champion, last=n_texts, with_embeddings=False)
    texts = [t for t in recent["text"].tolist() if isinstance(t, str) and t.strip()]
    if len(texts) < 16:
        texts = registry.reference(spec.name, champion)[0]["text"].head(n_texts).tolist()
    host = host or AdapterHost(spec.base_model, device=settings.device)
    ids = [f"{spec.name}@v{champion}_timing", f"{spec.name}@v{challenger}_timing"]
    loaded: list[str] = []
    try:
        for version, adapter_id in zip((champion, challenger), ids, strict=True):
            registry.load(host, spec.name, version, adapter_id=adapter_id)
            loaded.append(adapter_id)
        timing = compare_latency(host, texts, ids[0], ids[1])
    finally:
        for adapter_id in loaded:
            host.remove_adapter(adapter_id)
    logger.info(
        "%s: v%s %.1f ms vs v%s %.1f ms per batch (ratio %.2f)",
        spec.name,
        challenger,
        timing.challenger_ms,
        champion,
        timing.champion_ms,
        timing.ratio,
    )
    return timing


# -- the guardrail -------------------------------------------------------------------------------


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
    from lifecycle.promotion.gate import guardrail
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
