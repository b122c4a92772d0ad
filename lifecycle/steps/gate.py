"""The gate step: compare a shadowed challenger with the champion and promote, reject,
supersede or wait (the rules are :mod:`lifecycle.promotion.gate`'s)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lifecycle.registry.models import CHALLENGER, CHAMPION, TAG
from lifecycle.steps.lineage import (
    SUPERSEDED_TAG,
    labels_since_training,
)

if TYPE_CHECKING:
    from lifecycle.config.settings import Settings
    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.model.host import AdapterHost
    from lifecycle.model.latency import LatencyComparison
    from lifecycle.promotion.gate import GateDecision
    from lifecycle.registry.models import Registry
    from lifecycle.store import TrafficStore

logger = logging.getLogger(__name__)


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

    Quality is the paired sequential test on labelled shadowed requests, by the spec's
    task: paired correctness for a classifier, paired per-request F1 of the stored entities
    for an extractor (``lifecycle.promotion.gate.gate(task=...)``); errors are the challenger's
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
    trained_labels, new_labels = labels_since_training(
        store, spec.name, registry.get_version(spec.name, challenger)
    )
    decision = gate(
        pairs,
        spec.promotion,
        shadow_errors=errors,
        trained_labels=trained_labels,
        new_labels=new_labels,
        task=spec.task,
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
                task=spec.task,
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
        texts = registry.reference_rows(spec.name, champion)["text"].head(n_texts).tolist()
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
