"""One monitoring check of one specialist: read, measure, decide, record, alert.

This is the I/O shell around the pure parts (frames, drift, thresholds, quality, policy):
it reads the champion's reference and thresholds from MLflow and a window from the traffic
store, logs the verdict's metrics and the Evidently report to the specialist's monitoring
run, and hands an alert to ``lifecycle.notify.alerter``. Flows call ``run_check`` as a task.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifecycle.config.errors import LifecycleError, RegistryError
from monitors.results import Status, Verdict

if TYPE_CHECKING:
    from lifecycle.config.settings import Settings
    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.notify.alerter import AlertOutcome
    from lifecycle.registry.models import Registry, VersionInfo
    from lifecycle.store import TrafficStore
    from monitors.frames import MonitorData
    from monitors.openworld import OpenWorld
    from monitors.thresholds import Thresholds

logger = logging.getLogger(__name__)

THRESHOLDS_PATH = "monitoring/thresholds.json"
MONITORING_TAG = "lifecycle.monitoring"
#: Verdicts worth a person's attention; OK closes an open alert, NEEDS_DATA says nothing.
ALERTING = (Status.WARN, Status.DRIFT, Status.QUALITY_DROP, Status.NEEDS_LABELS)


@dataclass(frozen=True)
class CheckResult:
    verdict: Verdict
    alert: AlertOutcome | None


@dataclass(frozen=True, eq=False)
class Reference:
    """A champion version's monitoring reference, ready for checks."""

    version: VersionInfo
    data: MonitorData
    thresholds: Thresholds
    #: The out-of-scope detector and what it compares with; None without embeddings.
    open_world: OpenWorld | None = None
    #: What the reference was scored in (``monitors.runtime``): fp32, or int8 as served.
    runtime: str = "fp32"


def load_reference(
    registry: Registry, spec: SpecialistSpec, version: VersionInfo, *, settings: Settings
) -> Reference:
    """The version's reference rows, and its thresholds (calibrated and stored on first use)."""
    from monitors.descriptors import tokenizer_vocabulary
    from monitors.kinds import monitor_kind
    from monitors.runtime import served_reference

    reference = registry.reference(spec.name, version.version)
    frame, embeddings, runtime = served_reference(
        registry, spec, version.version, *reference, settings
    )
    data = monitor_kind(spec.task).reference_data(
        frame, embeddings, spec=spec, vocabulary=tokenizer_vocabulary(spec.base_model)
    )
    from lifecycle.model.ood import OutOfScopeDetector
    from monitors.openworld import prepare

    _, folder = registry.download(spec.name, version.version)
    world = prepare(
        data,
        OutOfScopeDetector.load(folder),
        target_rate=spec.monitoring.out_of_scope_rate,
    )
    thresholds = _thresholds(registry, spec, version, data, settings, runtime=runtime)
    return Reference(version, data, thresholds, world, runtime=runtime)


_CACHE: dict[tuple[str, str, int], Reference] = {}


def _cached_reference(
    registry: Registry, spec: SpecialistSpec, version: VersionInfo, settings: Settings
) -> Reference:
    key = (registry.settings.tracking_uri, spec.name, version.version)
    if key not in _CACHE:
        _CACHE[key] = load_reference(registry, spec, version, settings=settings)
    return _CACHE[key]


def _thresholds(
    registry: Registry,
    spec: SpecialistSpec,
    version: VersionInfo,
    data: MonitorData,
    settings: Settings,
    *,
    runtime: str = "fp32",
) -> Thresholds:
    import mlflow

    from monitors.drift import applicable
    from monitors.kinds import monitor_kind
    from monitors.thresholds import Thresholds, calibrate

    assert version.run_id is not None
    kind = monitor_kind(spec.task)
    # An int8 reference is another reference: its thresholds are calibrated and kept apart.
    path = THRESHOLDS_PATH.replace(".json", ".json" if runtime == "fp32" else f"-{runtime}.json")
    try:
        text = mlflow.artifacts.load_text(f"runs:/{version.run_id}/{path}")
        stored = Thresholds.from_json(text)
        # Stored for this rate and metric, and for every signal the reference has now (an
        # extractor's `required` fields may have been declared since).
        if (
            stored.false_alarm_rate == spec.monitoring.false_alarm_rate
            and stored.metric == kind.metric
            and set(applicable(data)) <= set(stored.z) | set(stored.skipped)
        ):
            return stored
    except Exception:
        pass
    logger.info(
        "calibrating %s v%d thresholds (%d reference splits)",
        spec.name,
        version.version,
        settings.calibration_rounds,
    )
    thresholds = calibrate(
        data,
        false_alarm_rate=spec.monitoring.false_alarm_rate,
        rounds=settings.calibration_rounds,
        metric=kind.metric,
        quality=kind.reference_quality(data),
    )
    registry.log_text(version.run_id, thresholds.to_json(), path)
    return thresholds


def run_check(
    settings: Settings,
    spec: SpecialistSpec,
    *,
    store: TrafficStore | None = None,
    registry: Registry | None = None,
    last: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    version: int | str = "champion",
    log: bool = True,
    alert: bool = True,
    now: datetime | None = None,
) -> CheckResult:
    """Check the newest window (``last`` requests, default the spec's window size) or a time
    range of the champion's traffic, and record and announce the verdict."""
    from lifecycle.registry.models import Registry
    from lifecycle.store import TrafficStore

    registry = registry or Registry(settings)
    owns_store = store is None
    store = store or TrafficStore(settings.traffic_url)
    now = now or datetime.now(UTC)
    try:
        verdict = _measure(
            settings, spec, store, registry, last=last, since=since, until=until, version=version
        )
        if log:
            verdict = _log(registry, spec, verdict, now=now)
        outcome = _alert(settings, store, spec, verdict, now=now) if alert else None
    finally:
        if owns_store:
            store.dispose()
    return CheckResult(verdict, outcome)


def _measure(
    settings: Settings,
    spec: SpecialistSpec,
    store: TrafficStore,
    registry: Registry,
    *,
    last: int | None,
    since: datetime | None,
    until: datetime | None,
    version: int | str,
) -> Verdict:
    try:
        info = registry.resolve(spec.name, version)
    except RegistryError as exc:
        return _needs_data(spec, None, f"no {version} to check: {exc}")
    if not info.run_id:
        return _needs_data(
            spec, info.version, "the version has no training run, hence no reference"
        )
    try:
        reference = _cached_reference(registry, spec, info, settings)
    except (RegistryError, OSError, LifecycleError) as exc:
        return _needs_data(spec, info.version, f"no reference data: {exc}")
    if len(reference.data) < 20:
        return _needs_data(spec, info.version, f"reference has {len(reference.data)} rows only")

    if last is None and since is None and until is None:
        last = spec.monitoring.window_size
    raw = store.window(spec.name, last=last, since=since, until=until, model_version=info.version)
    verdict = assess(spec, reference, raw, last=last, since=since, until=until)
    return _with_proposed_labels(verdict, store, spec, info)


def _with_proposed_labels(
    verdict: Verdict, store: TrafficStore, spec: SpecialistSpec, info: VersionInfo
) -> Verdict:
    """Add to the window the labels people proposed that the champion does not know, with
    their counts (one grouped query; a store that cannot be read leaves them out)."""
    from lifecycle.labels.feedback import proposed_labels

    try:
        counts = store.label_counts(spec.name)
    except LifecycleError as exc:
        logger.info("proposed labels not read: %s", exc)
        return verdict
    known = json.loads(info.lineage.get("labels", "[]") or "[]")
    proposed = proposed_labels(counts, known)
    if not proposed:
        return verdict
    return _replace(verdict, window={**verdict.window, "proposed_labels": proposed})


def assess(
    spec: SpecialistSpec,
    reference: Reference,
    raw: Any,
    *,
    last: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    report: bool = True,
) -> Verdict:
    """The verdict on one window (a frame shaped like ``TrafficStore.window``'s) against
    a loaded reference: the pure part of a check, used by benchmarks on in-memory windows.
    What differs by task (rows, quality figure, estimate) comes from ``monitors.kinds``."""
    from monitors.descriptors import tokenizer_vocabulary
    from monitors.drift import drift_scores
    from monitors.kinds import monitor_kind
    from monitors.policy import decide
    from monitors.quality import estimated_quality
    from monitors.results import Reason, SignalResult

    kind = monitor_kind(spec.task)
    current = kind.window_data(raw, spec=spec, vocabulary=tokenizer_vocabulary(spec.base_model))
    window = _describe_window(raw, current, last=last, since=since, until=until)
    window.update(kind.describe(current))
    thresholds = reference.thresholds
    min_labels = spec.monitoring.min_labels
    policy: dict[str, Any] = {
        "specialist": spec.name,
        "champion_version": reference.version.version,
        "window": window,
        "quality": kind.measured_quality(current, min_labels=min_labels),
        "reference_accuracy": thresholds.reference_accuracy,
        "reference_confidence": thresholds.reference_confidence,
        "quality_drop": spec.monitoring.quality_drop,
        "min_window": spec.monitoring.min_window,
        "min_labels": spec.monitoring.min_labels,
    }
    if len(current) < spec.monitoring.min_window:
        return decide(signals=(), estimate=None, **policy)

    html = Path(tempfile.mkdtemp(prefix="lifecycle-report-")) / "report.html" if report else None
    wanted = [
        name
        for name in thresholds.z
        if name != "escalation_rate" or spec.escalation.confidence_threshold > 0
    ]
    scores = drift_scores(reference.data, current, signals=tuple(wanted), html=html)
    signals = []
    for name, value in scores.values.items():
        threshold = thresholds.threshold(name, scores.sizes[name])
        if threshold is None:
            continue
        signals.append(
            SignalResult(
                name=name,
                method=_method(name),
                score=value,
                threshold=threshold,
                drifted=value > threshold,
            )
        )
    window["skipped_signals"] = scores.skipped
    window["reports"] = [str(p) for p in scores.reports]
    discovery = None
    if reference.open_world is None:
        estimate = estimated_quality(
            current,
            reference_embeddings=reference.data.embeddings,
            support_similarity=thresholds.support_similarity,
        )
    else:
        from monitors.openworld import assess_open_world

        estimate, discovery = assess_open_world(
            reference.open_world,
            current,
            window,
            min_cluster_size=spec.monitoring.discovery_min_cluster,
            artifacts=report,
            out_of_scope_label=spec.out_of_scope_label,
        )
    estimate = kind.estimate(reference.data, current, base=estimate, min_labels=min_labels)
    verdict = decide(signals=signals, estimate=estimate, **policy)
    verdict = _replace(verdict, discovery=discovery)
    if scores.skipped and verdict.status is Status.OK:
        # Say what could not be checked, without raising the verdict.
        notes = tuple(Reason(k, None, None, f"not checked: {v}") for k, v in scores.skipped.items())
        verdict = _replace(verdict, reasons=verdict.reasons + notes)
    return verdict


def _method(name: str) -> str:
    from monitors.drift import BY_NAME

    return BY_NAME[name].method


def _describe_window(
    raw: Any,
    current: MonitorData,
    *,
    last: int | None,
    since: datetime | None,
    until: datetime | None,
) -> dict[str, Any]:
    frame = current.frame
    created = raw["created_at"] if len(raw) and "created_at" in raw else None
    info: dict[str, Any] = {
        "rows": len(frame),
        "last": last,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "first_request": created.iloc[0].isoformat() if created is not None else None,
        "last_request": created.iloc[-1].isoformat() if created is not None else None,
        "labelled": int(frame["true_label"].notna().sum()),
        "missing_text": int(frame["text"].isna().sum()),
    }
    if len(frame):
        info["mean_confidence"] = float(frame["confidence"].mean())
        info["escalation_rate"] = float((frame["below_threshold"] == "yes").mean())
        info["predicted_classes"] = int(frame["prediction"].nunique())
    return info


def _needs_data(spec: SpecialistSpec, version: int | None, why: str) -> Verdict:
    from monitors.results import Reason

    return Verdict(
        specialist=spec.name,
        status=Status.NEEDS_DATA,
        reasons=(Reason("reference", None, None, why),),
        champion_version=version,
        window={"rows": 0},
    )


def _replace(verdict: Verdict, **changes: Any) -> Verdict:
    from dataclasses import replace

    return replace(verdict, **changes)


# -- recording ------------------------------------------------------------------------------


def monitoring_run_id(registry: Registry, name: str) -> str:
    """The specialist's one long-lived monitoring run (created on first use)."""
    return registry.find_or_create_run(
        registry.experiment_id(name, kind="monitoring"),
        tag=MONITORING_TAG,
        run_name=f"{name}-monitoring",
        tags={"lifecycle.specialist": name},
    )


def _log(registry: Registry, spec: SpecialistSpec, verdict: Verdict, *, now: datetime) -> Verdict:
    """Append the verdict to the monitoring run: metrics (step = the check's number, time =
    the check's), report, JSON, and the figure of the recent checks (monitors/history.py)."""
    from monitors.history import CHECKS_TAG, check_number, log_history_figure

    run_id = monitoring_run_id(registry, spec.name)
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    step = check_number(registry, run_id)  # 1, 2, 3...: the UI's x-axis counts checks
    ms = int(now.timestamp() * 1000)
    values = verdict.metrics()
    if verdict.champion_version is not None:
        values["champion_version"] = float(verdict.champion_version)
    registry.log_metrics(
        run_id,
        values,
        step=step,
        timestamp_ms=ms,
        tags={
            "lifecycle.last_status": verdict.status.value,
            "lifecycle.last_check": now.isoformat(),
            CHECKS_TAG: str(step),
        },
    )
    folder = f"checks/{stamp}"
    log_history_figure(registry, run_id, specialist=spec.name, step=step, folder=folder)
    reports = [Path(p) for p in verdict.window.get("reports", [])]
    registry.log_artifacts(run_id, reports, folder)
    extra = [Path(p) for p in verdict.window.get("artifacts", [])]
    registry.log_artifacts(run_id, extra, folder)
    for path in extra:
        path.unlink(missing_ok=True)
    report_uri = None
    if reports:
        artifact_uri = registry.artifact_uri(run_id)
        report_uri = f"{artifact_uri}/{folder}/{reports[0].name}"
    verdict = _replace(verdict, report_uri=report_uri, run_id=run_id)
    registry.log_text(
        run_id, json.dumps(verdict.as_dict(), indent=2, default=str), f"{folder}/verdict.json"
    )
    for path in reports:
        path.unlink(missing_ok=True)
    return verdict


def _alert(
    settings: Settings,
    store: TrafficStore,
    spec: SpecialistSpec,
    verdict: Verdict,
    *,
    now: datetime,
) -> AlertOutcome | None:
    if verdict.status is not Status.OK and verdict.status not in ALERTING:
        return None
    from lifecycle.notify.alerter import Alerter
    from monitors.message import alert_message

    return Alerter(settings, store).notify(alert_message(spec, verdict), now=now)
