"""Benchmark: monitoring checks, their cost by window size and their verdicts on scenarios.

    .venv/bin/python bench/monitor.py [--home DIR] [--data ../shared/data/banking77]
                                      [--sizes 1000,10000,100000] [--stationary 50]

1. Cost: one ``run_check`` (store read, Evidently on eight signals, quality, the HTML report
   and the MLflow logging) over windows of 1k, 10k and 100k logged requests, with the
   seconds per 1,000 rows side by side so growth against linear reads off directly.
   Thresholds are calibrated before (once per champion, timed apart).
2. Scenarios from the ticket generator, on the default specialist (2,000 tickets): 50
   stationary windows (false alarms), and the first full window after the onset of a new
   intent, a vocabulary shift and a label-prior shift, each with and without labels.
3. The same on Banking77 with 5 intents held out of training and released as 30% of
   traffic after the onset (``--skip-banking77`` to leave out; ~5 min of training).
4. An extraction specialist on SNIPS (``--skip-snips`` to leave out, ``--only snips`` to run
   it alone; ~10 min of training on 2 busy cores): GetWeather and the slot types only it has
   held out of training and released as 40% of traffic after the onset; entity micro-F1
   (exact spans, against the data's gold spans) beside its label-free estimate.

Estimated accuracy (no labels) is printed beside the real accuracy of every window.
The last line is JSON with every figure; bench/RESULTS.md keeps them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

WINDOW = 500
PARTS = ("generator", "cost", "banking77", "snips")


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores"


def champion(settings: Any, spec: Any, data: pd.DataFrame | None = None) -> tuple[Any, str, Any]:
    """The spec's champion (trained and registered on first run), loaded in a host."""
    from lifecycle.registry.models import Registry
    from lifecycle.training.pipeline import train_and_register

    registry = Registry(settings)
    if not registry.has_model(spec.name) or "champion" not in registry.aliases(spec.name):
        started = time.perf_counter()
        trained = train_and_register(settings, spec, data=data, alias="champion")
        print(f"trained {spec.name} in {time.perf_counter() - started:.0f} s")
        host = trained.result.host
    else:
        from lifecycle.model.host import AdapterHost

        host = AdapterHost(spec.base_model)
    adapter_id, info = registry.load(host, spec.name, "champion")
    return host, adapter_id, info


def predict_frame(host: Any, adapter_id: str, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (text, label) as a window shaped like ``TrafficStore.window``'s, fully
    labelled; ``hide_labels`` takes the truth away again."""
    preds = host.predict(frame["text"].tolist(), adapter_id)
    return pd.DataFrame(
        {
            "text": frame["text"].to_numpy(),
            "label": [p.label for p in preds],
            "confidence": [p.confidence for p in preds],
            "embedding": [p.embedding for p in preds],
            "true_label": frame["label"].to_numpy(),
            "true_label_source": "human",
        }
    )


def hide_labels(window: pd.DataFrame, keep: float = 0.0, seed: int = 0) -> pd.DataFrame:
    out = window.copy()
    drop = np.random.default_rng(seed).random(len(out)) >= keep
    out.loc[drop, "true_label"] = np.nan
    out.loc[drop, "true_label_source"] = np.nan
    return out


def judge(spec: Any, reference: Any, window: pd.DataFrame) -> dict[str, Any]:
    from monitors.check import assess

    unlabelled = assess(spec, reference, hide_labels(window), report=False)
    labelled = assess(spec, reference, hide_labels(window, keep=0.3), report=False)
    accuracy = float((window["label"] == window["true_label"]).mean())
    est = unlabelled.estimate
    return {
        "verdict": unlabelled.status.value,
        "verdict_30pct_labels": labelled.status.value,
        "drifted": list(unlabelled.drifted),
        "accuracy": accuracy,
        "estimated": est.accuracy if est else None,
        "estimated_low": est.accuracy_low if est else None,
        "out_of_support": est.out_of_support if est else None,
    }


def scenarios(
    settings: Any,
    spec: Any,
    host: Any,
    adapter_id: str,
    reference: Any,
    streams: dict[str, tuple[pd.DataFrame, int]],
    stationary: pd.DataFrame,
    n_stationary: int,
    tag: str,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pool = predict_frame(host, adapter_id, stationary)
    alarms, errors = 0, []
    alarm_signals: dict[str, int] = {}
    rng = np.random.default_rng(0)
    disjoint = len(pool) >= n_stationary * WINDOW
    for k in range(n_stationary):
        if disjoint:
            rows = np.arange(k * WINDOW, (k + 1) * WINDOW)
        else:  # a small pool: each window a fresh random subset (no repeats inside one)
            rows = rng.choice(len(pool), WINDOW, replace=False)
        result = judge(spec, reference, pool.iloc[rows].reset_index(drop=True))
        alarms += result["verdict"] != "OK"
        for signal in result["drifted"]:
            alarm_signals[signal] = alarm_signals.get(signal, 0) + 1
        errors.append(abs(result["estimated"] - result["accuracy"]))
    out[f"{tag}.stationary.windows"] = n_stationary
    out[f"{tag}.stationary.false_alarms"] = alarms
    out[f"{tag}.stationary.disjoint_windows"] = disjoint
    out[f"{tag}.stationary.max_estimate_error"] = max(errors, default=float("nan"))
    out[f"{tag}.stationary.alarm_signals"] = alarm_signals
    print(f"{tag} stationary: {alarms} false alarm(s) in {n_stationary} windows of {WINDOW}")
    for name, (stream, onset) in streams.items():
        window = predict_frame(host, adapter_id, stream.iloc[onset : onset + WINDOW])
        before = predict_frame(host, adapter_id, stream.iloc[max(onset - WINDOW, 0) : onset])
        first, last_before = judge(spec, reference, window), judge(spec, reference, before)
        out[f"{tag}.{name}.before"] = last_before
        out[f"{tag}.{name}.first_window_after"] = first
        print(
            f"{tag} {name}: before onset {last_before['verdict']}, first window after "
            f"{first['verdict']} ({first['verdict_30pct_labels']} with 30% labels) | "
            f"accuracy {first['accuracy']:.3f}, estimated {first['estimated']:.3f} "
            f"(bound {first['estimated_low']:.3f}) | drifted {', '.join(first['drifted'])}"
        )
    return out


def generator_part(settings: Any, n_stationary: int) -> tuple[dict[str, Any], Any, str, Any]:
    from lifecycle.config.spec import load_specialists
    from lifecycle.registry.models import Registry
    from lifecycle.synthetic.scenarios import build_scenario, generate_tickets
    from monitors.check import load_reference

    spec = load_specialists(settings.specialists_file).get("support-router")
    host, adapter_id, info = champion(settings, spec)
    started = time.perf_counter()
    reference = load_reference(Registry(settings), spec, info, settings=settings)
    calibration = time.perf_counter() - started
    print(f"generator: reference {len(reference.data)} rows, calibrated in {calibration:.0f} s")
    streams = {}
    for name in ("new_intent", "vocabulary_shift", "prior_shift"):
        sc = build_scenario(name, n_before=WINDOW, n_after=WINDOW, seed=7)
        streams[name] = (sc.stream, sc.onset)
    stationary = generate_tickets(n_stationary * WINDOW, seed=1234)
    out = scenarios(
        settings, spec, host, adapter_id, reference, streams, stationary, n_stationary, "generator"
    )
    out["generator.calibration_seconds"] = calibration
    out["generator.reference_rows"] = len(reference.data)
    return out, host, adapter_id, (spec, info)


def banking77_part(settings: Any, folder: Path, n_stationary: int) -> dict[str, Any]:
    """Banking77's train set only: its test set is balanced while train is not, so windows
    from test would be a real label-prior shift against a train-based reference, not the
    stationary traffic this part needs."""
    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.registry.models import Registry
    from lifecycle.synthetic.scenarios import holdout_scenario
    from lifecycle.training.data import load_table, stratified_split
    from monitors.check import load_reference

    train = load_table(folder / "train.csv", label_column="category")
    sc = holdout_scenario(
        train, n_holdout=5, n_before=WINDOW, n_after=WINDOW, release_share=0.3, seed=3
    )
    # The champion trains on 70% of the reference intents' rows; the rest is stationary
    # traffic from the same distribution as its validation set (the monitoring reference).
    fit, unseen = stratified_split(sc.reference, fraction=0.3, seed=3)
    spec = SpecialistSpec.model_validate(
        {
            "name": "banking77-holdout",
            "training": {"epochs": 2, "validation_fraction": 0.1, "evals_per_epoch": 2},
            "lora": {"r": 16, "alpha": 32, "target_modules": ["query", "key", "value"]},
            "monitoring": {"window_size": WINDOW},
            "escalation": {"confidence_threshold": 0.5},
        }
    )
    host, adapter_id, info = champion(settings, spec, data=fit)
    started = time.perf_counter()
    reference = load_reference(Registry(settings), spec, info, settings=settings)
    calibration = time.perf_counter() - started
    held = sorted(set(sc.labels_after) - set(sc.labels_before))
    print(f"banking77: held out {held}; reference {len(reference.data)} rows")
    out = scenarios(
        settings,
        spec,
        host,
        adapter_id,
        reference,
        {"holdout_release": (sc.stream, sc.onset)},
        unseen.reset_index(drop=True),
        n_stationary,
        "banking77",
    )
    out["banking77.held_out"] = held
    out["banking77.calibration_seconds"] = calibration
    out["banking77.stationary_pool_rows"] = len(unseen)
    return out


SNIPS_FIT_ROWS = 2000
SNIPS_MAX_WINDOW = 250


def extraction_frame(host: Any, adapter_id: str, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (text, entities: the gold spans) as an extractor's window shaped like
    ``TrafficStore.window``'s, fully corrected; ``hide_labels`` takes the truth away again."""
    from lifecycle.extraction.spans import summary, to_json

    preds = host.predict(frame["text"].tolist(), adapter_id, batch_size=64)
    gold = frame["entities"].tolist()
    return pd.DataFrame(
        {
            "text": frame["text"].to_numpy(),
            "label": [p.label for p in preds],
            "confidence": [p.confidence for p in preds],
            "embedding": [p.embedding for p in preds],
            "entities": [to_json(p.entities or ()) for p in preds],
            "true_label": [summary(g) for g in gold],
            "true_entities": [json.dumps(g, ensure_ascii=False) for g in gold],
            "true_label_source": "human",
        }
    )


def real_entity_f1(window: pd.DataFrame) -> float:
    """Exact-span micro-F1 of the window's answers against the gold spans, counted by
    ``lifecycle.extraction.metrics``, not by the monitors' code the bench checks."""
    from lifecycle.extraction.metrics import evaluate_entities
    from lifecycle.extraction.spans import from_json, keys

    gold = [keys(json.loads(t)) for t in window["true_entities"]]
    found = [keys(from_json(e)) for e in window["entities"]]
    return float(evaluate_entities(gold, found).micro_f1)


def judge_extraction(spec: Any, reference: Any, window: pd.DataFrame) -> dict[str, Any]:
    """One window's verdicts (no labels; 30% corrected), its real F1 and the estimate.
    The monitors' own span counts must give the same F1 as the metrics module."""
    from monitors.check import assess
    from monitors.entities import parse, truth_columns
    from monitors.entity_quality import f1_of

    unlabelled = assess(spec, reference, hide_labels(window), report=False)
    labelled = assess(spec, reference, hide_labels(window, keep=0.3), report=False)
    real = real_entity_f1(window)
    counts = truth_columns(window["entities"].tolist(), window["true_entities"].tolist())
    predicted = sum(len(parse(e) or ()) for e in window["entities"])
    theirs = float(f1_of(counts["correct_count"].sum(), predicted, counts["gold_count"].sum()))
    assert abs(theirs - real) < 1e-9, f"monitors count F1 {theirs}, metrics {real}"
    est, quality = unlabelled.estimate, labelled.quality
    return {
        "verdict": unlabelled.status.value,
        "verdict_30pct_labels": labelled.status.value,
        "drifted": list(unlabelled.drifted),
        "drifted_30pct_labels": list(labelled.drifted),
        "f1": real,
        "estimated": est.accuracy if est else None,
        "estimated_low": est.accuracy_low if est else None,
        "estimated_high": est.accuracy_high if est else None,
        "measured_30pct": quality.entity_f1 if quality else None,
        "labelled_30pct": quality.labelled if quality else 0,
    }


def snips_part(
    settings: Any, folder: Path, n_stationary: int, *, fit_rows: int = SNIPS_FIT_ROWS
) -> dict[str, Any]:
    """An extractor on SNIPS with GetWeather (and the slot types only it has) held out.

    The champion trains on ``fit_rows`` of the scenario's reference (the kept intents' train
    rows); its validation share is the monitoring reference. The kept intents' rows it never
    saw are the stationary pool, shuffled and cut into ``n_stationary`` windows without
    overlap: the window is the largest size (at most ``SNIPS_MAX_WINDOW``) for which they fit.
    """
    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.registry.models import Registry
    from lifecycle.synthetic.extraction_scenarios import snips_holdout_scenario
    from monitors.check import load_reference

    sc = snips_holdout_scenario(folder, n_before=SNIPS_MAX_WINDOW, n_after=SNIPS_MAX_WINDOW, seed=3)
    # The reference is in file order (grouped by intent): draw at random.
    order = np.random.default_rng(3).permutation(len(sc.reference))
    fit = sc.reference.iloc[order[:fit_rows]].reset_index(drop=True)
    pool = sc.reference.iloc[order[fit_rows:]].reset_index(drop=True)
    window = min(SNIPS_MAX_WINDOW, len(pool) // max(n_stationary, 1))
    labels = sorted({str(e["label"]) for ents in fit["entities"] for e in ents})
    spec = SpecialistSpec.model_validate(
        {
            "name": "snips-holdout-extractor",
            "task": "extraction",
            "entities": labels,
            "lora": {"r": 16, "alpha": 32, "target_modules": ["query", "key", "value", "dense"]},
            "training": {
                "epochs": 3,
                "validation_fraction": 0.25,
                "evals_per_epoch": 1,
                "patience": 2,
            },
            # 30% of a window corrected must be enough to measure F1 on.
            "monitoring": {
                "window_size": window,
                "min_window": min(100, window),
                "min_labels": max(10, int(0.2 * window)),
            },
        }
    )
    host, adapter_id, info = champion(settings, spec, data=fit[["text", "entities"]])
    started = time.perf_counter()
    reference = load_reference(Registry(settings), spec, info, settings=settings)
    calibration = time.perf_counter() - started
    thresholds = reference.thresholds
    print(
        f"snips: held out GetWeather, new labels {list(sc.new_labels)}; champion on "
        f"{len(fit)} rows, reference {len(reference.data)} rows (F1 "
        f"{thresholds.reference_accuracy:.3f}, estimated {thresholds.reference_confidence:.3f}); "
        f"pool {len(pool)} rows, {n_stationary} windows of {window}"
    )
    started = time.perf_counter()
    # The answers of one champion do not change: kept beside it, a rerun (after a change
    # in monitors/) skips the slowest step on a busy machine.
    cache = Path(settings.home) / f"snips-pool-v{info.version}-{n_stationary}x{window}.pkl"
    if cache.is_file():
        predicted = pd.read_pickle(cache)
    else:
        predicted = extraction_frame(host, adapter_id, pool.iloc[: n_stationary * window])
        predicted.to_pickle(cache)
    print(f"snips: {len(predicted)} pool rows predicted in {time.perf_counter() - started:.0f} s")
    out: dict[str, Any] = {
        "snips.held_out": "GetWeather",
        "snips.new_labels": list(sc.new_labels),
        "snips.fit_rows": len(fit),
        "snips.reference_rows": len(reference.data),
        "snips.reference_f1": thresholds.reference_accuracy,
        "snips.reference_estimated_f1": thresholds.reference_confidence,
        "snips.stationary_pool_rows": len(pool),
        "snips.window": window,
        "snips.calibration_seconds": calibration,
        "snips.thresholds_z": thresholds.z,
    }
    windows: list[dict[str, Any]] = []
    alarm_signals: dict[str, int] = {}
    for k in range(n_stationary):
        rows = predicted.iloc[k * window : (k + 1) * window].reset_index(drop=True)
        result = judge_extraction(spec, reference, rows)
        windows.append(result)
        for signal in result["drifted"]:
            alarm_signals[signal] = alarm_signals.get(signal, 0) + 1
        print(
            f"snips stationary {k:2d}: F1 {result['f1']:.3f} estimated {result['estimated']:.3f} "
            f"[{result['estimated_low']:.3f}, {result['estimated_high']:.3f}] "
            f"{result['verdict']} / {result['verdict_30pct_labels']} {result['drifted']}"
        )
    errors = [abs(w["estimated"] - w["f1"]) for w in windows]
    alarms = sum(w["verdict"] != "OK" for w in windows)
    out["snips.stationary.windows"] = n_stationary
    out["snips.stationary.false_alarms"] = alarms
    out["snips.stationary.false_alarms_30pct_labels"] = sum(
        w["verdict_30pct_labels"] != "OK" for w in windows
    )
    out["snips.stationary.alarm_signals"] = alarm_signals
    out["snips.stationary.max_estimate_error"] = max(errors)
    out["snips.stationary.mean_estimate_error"] = statistics.fmean(errors)
    out["snips.stationary.mean_signed_error"] = statistics.fmean(
        w["estimated"] - w["f1"] for w in windows
    )
    out["snips.stationary.per_window"] = windows
    print(
        f"snips stationary: {alarms} false alarm(s) in {n_stationary} windows of {window} "
        f"({alarm_signals}); |estimate - F1| max {max(errors):.3f}, "
        f"mean {statistics.fmean(errors):.3f}"
    )
    # After the onset: the first full window, then each later full one the stream holds.
    stream, onset = sc.stream, sc.onset
    after = [
        judge_extraction(
            spec, reference, extraction_frame(host, adapter_id, stream.iloc[s : s + window])
        )
        for s in range(onset, len(stream) - window + 1, window)
    ]
    before = judge_extraction(
        spec,
        reference,
        extraction_frame(host, adapter_id, stream.iloc[max(onset - window, 0) : onset]),
    )
    drift_errors = [abs(w["estimated"] - w["f1"]) for w in after]
    first = after[0]
    out["snips.holdout_release.before"] = before
    out["snips.holdout_release.first_window_after"] = first
    out["snips.holdout_release.windows_after"] = after
    out["snips.drifted.max_estimate_error"] = max(drift_errors)
    out["snips.drifted.mean_estimate_error"] = statistics.fmean(drift_errors)
    print(
        f"snips holdout_release: before onset {before['verdict']} (F1 {before['f1']:.3f}, "
        f"estimated {before['estimated']:.3f}); first window after {first['verdict']} "
        f"({first['verdict_30pct_labels']} with 30% labels) | F1 {first['f1']:.3f}, "
        f"estimated {first['estimated']:.3f} [{first['estimated_low']:.3f}, "
        f"{first['estimated_high']:.3f}] | drifted {', '.join(first['drifted'])}; "
        f"{len(after)} window(s) after: |estimate - F1| max {max(drift_errors):.3f}"
    )
    return out


def cost_part(
    settings: Any, sizes: list[int], host: Any, adapter_id: str, spec_info: Any
) -> dict[str, Any]:
    """Seconds of one check by window size: rows are real predictions of 5,000 generated
    tickets, drawn with replacement up to the size (the model is not what is timed)."""
    from lifecycle.store import RequestRecord, TrafficStore
    from lifecycle.synthetic.scenarios import generate_tickets
    from monitors.check import run_check

    spec, info = spec_info
    pool = predict_frame(host, adapter_id, generate_tickets(5000, seed=99))
    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    per_1k: list[float] = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store = TrafficStore(f"sqlite:///{tmp}/traffic.db")
            store.upgrade()
            rows = pool.iloc[rng.integers(0, len(pool), size)]
            start = pd.Timestamp.now(tz="UTC") - timedelta(hours=1)
            for offset in range(0, size, 5000):
                chunk = rows.iloc[offset : offset + 5000]
                store.write(
                    [
                        RequestRecord(
                            specialist=spec.name,
                            model_version=info.version,
                            text=r.text,
                            label=r.label,
                            confidence=r.confidence,
                            embedding=r.embedding,
                            latency_ms=1.0,
                            created_at=(start + timedelta(milliseconds=offset + i)).to_pydatetime(),
                        )
                        for i, r in enumerate(chunk.itertuples())
                    ]
                )
            times = []
            for _ in range(2):
                started = time.perf_counter()
                result = run_check(settings, spec, store=store, last=size, alert=False)
                times.append(time.perf_counter() - started)
            store.dispose()
        seconds = min(times)
        per_1k.append(seconds / size * 1000)
        out[f"check.{size}.seconds"] = seconds
        out[f"check.{size}.seconds_per_1k"] = per_1k[-1]
        print(
            f"check of {size:>7,} requests: {seconds:6.1f} s ({per_1k[-1]:.3f} s per 1k) "
            f"verdict {result.verdict.status.value}"
        )
    out["check.growth_per_1k_ratio_last_vs_first"] = per_1k[-1] / per_1k[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument(
        "--home", type=Path, default=Path(tempfile.gettempdir()) / "lifecycle-bench-monitor"
    )
    parser.add_argument("--data", type=Path, default=root.parent / "shared" / "data" / "banking77")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--stationary", type=int, default=50)
    parser.add_argument("--skip-banking77", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-generator", action="store_true", help="(cost still needs it)")
    parser.add_argument("--skip-snips", action="store_true")
    parser.add_argument(
        "--snips-data", type=Path, default=root.parent / "shared" / "data" / "snips"
    )
    parser.add_argument(
        "--only",
        choices=PARTS,
        help="Run this part alone (the cost part still trains the generator's champion).",
    )
    parser.add_argument("--out", type=Path, help="Also write the JSON figures to this file.")
    args = parser.parse_args()
    if args.only:
        for name in PARTS:
            setattr(args, f"skip_{name}", name != args.only)

    os.environ.setdefault("LIFECYCLE_PROGRESS", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from lifecycle.config.settings import load_settings

    settings = load_settings(home=args.home, specialists_file=root / "specialists.yaml")
    results: dict[str, Any] = {"machine": _machine()}
    if not (args.skip_generator and args.skip_cost):
        part, host, adapter_id, spec_info = generator_part(
            settings, 0 if args.skip_generator else args.stationary
        )
        results.update(part)
    if not args.skip_cost:
        sizes = [int(s) for s in args.sizes.split(",")]
        results.update(cost_part(settings, sizes, host, adapter_id, spec_info))
    if not args.skip_banking77:
        results.update(banking77_part(settings, args.data, args.stationary))
    if not args.skip_snips:
        results.update(snips_part(settings, args.snips_data, args.stationary))
    errors = [
        abs(v["estimated"] - v["accuracy"])
        for k, v in results.items()
        if isinstance(v, dict) and v.get("estimated") is not None and "accuracy" in v
    ]
    if errors:
        results["estimate.mean_abs_error"] = statistics.fmean(errors)
    print(json.dumps(results, default=str))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
