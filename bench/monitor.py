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
    spec = SpecialistSpec(
        name="banking77-holdout",
        training={"epochs": 2, "validation_fraction": 0.1, "evals_per_epoch": 2},
        lora={"r": 16, "alpha": 32, "target_modules": ["query", "key", "value"]},
        monitoring={"window_size": WINDOW},
        escalation={"confidence_threshold": 0.5},
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
    args = parser.parse_args()

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
    errors = [
        abs(v["estimated"] - v["accuracy"])
        for k, v in results.items()
        if isinstance(v, dict) and v.get("estimated") is not None
    ]
    if errors:
        results["estimate.mean_abs_error"] = statistics.fmean(errors)
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
