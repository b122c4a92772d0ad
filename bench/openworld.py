"""Benchmark: open-world monitoring. Out-of-scope detection, the accuracy estimate when new
intents arrive, false alarms, and intent discovery, each checked against the truth.

    .venv/bin/python bench/openworld.py [--home DIR] [--data ../shared/data] [--quick]

Specialists: a Banking77 champion trained without 10 intents (bench/openworld_data.py), and
the default generated-ticket specialist (support-router). Windows are real predictions of
those champions, judged by the real check (``monitors.check.assess``: Evidently drift,
the open-world estimate, discovery) against each champion's registered reference.

1. Detector: AUROC of held-out-intent rows (and SNIPS rows) against in-scope test rows for
   the shipped detector, with Mahalanobis, energy and max-softmax beside it; the in-scope
   flag rate at the calibrated threshold against its target.
2. Estimate: the per-window table (real accuracy, estimate with no labels, with 10% labels,
   interval coverage) over the generator's scenarios, the Banking77 release of 10 held-out
   intents as 40% of traffic, and SNIPS queries against the Banking77 champion; then the
   smallest label share at which the worst window is within 3 points.
3. False alarms: 50 disjoint stationary windows of the generator specialist, and as many
   disjoint windows as Banking77's unseen in-scope rows allow.
4. Discovery: windows of 1,000 requests with the held-out intents as 40%; per intent with
   >= 30 requests, purity and coverage of its best cluster.

Every figure is computed against known labels; the last line is JSON (bench/RESULTS.md).
Exit status 1 when a floor of the issue is missed, so the bench can gate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

WINDOW = 500
LABEL_SHARES = (0.1, 0.2, 0.3, 0.5, 0.75)


def raw_window(
    texts: Any, truth: Any, pred: Any, conf: Any, emb: np.ndarray, *, keep: float, seed: int
) -> pd.DataFrame:
    """A frame shaped like ``TrafficStore.window``'s, with people's labels on ``keep``."""
    labelled = np.random.default_rng(seed).random(len(texts)) < keep
    return pd.DataFrame(
        {
            "text": list(texts),
            "label": list(pred),
            "confidence": np.asarray(conf, dtype=float),
            "embedding": list(emb),
            "true_label": np.where(labelled, np.asarray(truth, dtype=object), None),
            "true_label_source": np.where(labelled, "human", None),
        }
    )


class Scored:
    """One pool of rows with the champion's answers: text, truth, prediction, confidence,
    embedding."""

    def __init__(self, texts: Any, truth: Any, pred: Any, conf: Any, emb: np.ndarray) -> None:
        self.texts = np.asarray(list(texts), dtype=object)
        self.truth = np.asarray(list(truth), dtype=object)
        self.pred = np.asarray(list(pred), dtype=object)
        self.conf = np.asarray(conf, dtype=float)
        self.emb = np.asarray(emb, dtype=np.float32)

    def take(self, index: np.ndarray) -> Scored:
        return Scored(
            self.texts[index],
            self.truth[index],
            self.pred[index],
            self.conf[index],
            self.emb[index],
        )

    @staticmethod
    def concat(parts: list[Scored]) -> Scored:
        return Scored(
            np.concatenate([p.texts for p in parts]),
            np.concatenate([p.truth for p in parts]),
            np.concatenate([p.pred for p in parts]),
            np.concatenate([p.conf for p in parts]),
            np.concatenate([p.emb for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.texts)

    def accuracy(self) -> float:
        return float((self.pred == self.truth).mean())

    def raw(self, keep: float, seed: int) -> pd.DataFrame:
        return raw_window(
            self.texts, self.truth, self.pred, self.conf, self.emb, keep=keep, seed=seed
        )


def from_host(host: Any, adapter_id: str, frame: pd.DataFrame) -> Scored:
    preds = host.predict(frame["text"].tolist(), adapter_id)
    return Scored(
        frame["text"],
        frame["label"],
        [p.label for p in preds],
        [p.confidence for p in preds],
        np.stack([p.embedding for p in preds]),
    )


def from_pools(pools: Any, name: str) -> Scored:
    from lifecycle.model.calibration import softmax

    probs = softmax(pools.logits[name].astype(float), pools.temperature)
    labels = np.array(pools.labels, dtype=object)
    frame = pools.frames[name]
    return Scored(
        frame["text"], frame["label"], labels[probs.argmax(1)], probs.max(1), pools.embeddings[name]
    )


def mix(parts: list[tuple[Scored, int]], rng: np.random.Generator) -> Scored:
    chosen = [p.take(rng.choice(len(p), n, replace=False)) for p, n in parts if n]
    both = Scored.concat(chosen)
    return both.take(rng.permutation(len(both)))


# -- 1. detector ---------------------------------------------------------------------------


def detector_part(pools: Any) -> dict[str, Any]:
    from lifecycle.model.calibration import softmax
    from lifecycle.model.ood import auroc, fit_detector

    e, lg, f = pools.embeddings, pools.logits, pools.frames
    conf = {p: softmax(lg[p].astype(float), pools.temperature).max(1) for p in e}
    labels = f["fit"]["label"].tolist()
    out: dict[str, Any] = {}
    for method in ("knn", "mahalanobis"):
        det = fit_detector(
            embeddings=e["fit"],
            labels=labels,
            calibration=e["validation"],
            calibration_confidence=conf["validation"],
            target_rate=0.05,
            method=method,
        )
        s = {p: det.score(e[p], conf[p]) for p in e}
        held_labels = f["held_out"]["label"].to_numpy()
        per_intent = {}
        for intent in sorted(set(held_labels)):
            rows = held_labels == intent
            # The kept intent the champion confuses it with most: why it is hard to see.
            preds = np.array(pools.labels)[lg["held_out"][rows].argmax(1)]
            values, counts = np.unique(preds, return_counts=True)
            per_intent[intent] = {
                "auroc": auroc(s["test_in"], s["held_out"][rows]),
                "flagged": float(det.flags(s["held_out"][rows]).mean()),
                "answered_as": str(values[counts.argmax()]),
                "answered_as_share": float(counts.max() / rows.sum()),
            }
        out[method] = {
            "per_intent": per_intent,
            "auroc_held_out": auroc(s["test_in"], s["held_out"]),
            "auroc_snips": auroc(s["test_in"], s["snips"]),
            "flag_rate_test_in": float(det.flags(s["test_in"]).mean()),
            "flag_rate_in_scope": float(det.flags(s["in_scope"]).mean()),
            "flag_rate_held_out": float(det.flags(s["held_out"]).mean()),
            "flag_rate_snips": float(det.flags(s["snips"]).mean()),
        }
    t = pools.temperature
    for name, fn in {
        "max_softmax": lambda x: -softmax(x, t).max(1),
        "energy": lambda x: (
            -t * np.log(np.exp(x / t - (x / t).max(1, keepdims=True)).sum(1)) - x.max(1)
        ),
    }.items():
        s = {p: fn(lg[p].astype(float)) for p in ("test_in", "held_out", "snips")}
        out[name] = {
            "auroc_held_out": auroc(s["test_in"], s["held_out"]),
            "auroc_snips": auroc(s["test_in"], s["snips"]),
        }
    for intent, r in out["knn"]["per_intent"].items():
        print(
            f"  held-out {intent:<32} AUROC {r['auroc']:.3f}, flagged {r['flagged']:.2f}, "
            f"answered as {r['answered_as']} ({r['answered_as_share']:.0%})"
        )
    for name, r in out.items():
        flags = (
            f" | flagged: in-scope test {r['flag_rate_test_in']:.3f}, held-out "
            f"{r['flag_rate_held_out']:.3f}, SNIPS {r['flag_rate_snips']:.3f}"
            if "flag_rate_test_in" in r
            else ""
        )
        print(
            f"detector {name:<12} AUROC held-out {r['auroc_held_out']:.3f}, SNIPS "
            f"{r['auroc_snips']:.3f}{flags}"
        )
    return out


# -- 2/3. estimate and false alarms -----------------------------------------------------------


def judge(spec: Any, reference: Any, window: Scored, *, seed: int) -> dict[str, Any]:
    from monitors.check import assess

    row: dict[str, Any] = {"rows": len(window), "accuracy": window.accuracy()}
    verdict = assess(spec, reference, window.raw(0.0, seed), report=False)
    est = verdict.estimate
    row["verdict"] = verdict.status.value
    row["drifted"] = list(verdict.drifted)
    row["estimate"] = est.accuracy if est else None
    row["interval"] = [est.accuracy_low, est.accuracy_high] if est else None
    row["in_scope_share"] = 1 - est.out_of_support if est else None
    row["error"] = abs(est.accuracy - row["accuracy"]) if est else None
    for share in LABEL_SHARES:
        v = assess(spec, reference, window.raw(share, seed + 1), report=False)
        e = v.estimate
        assert e is not None
        truth = row["accuracy"]
        row[f"labels_{share}"] = {
            "estimate": e.accuracy,
            "interval": [e.accuracy_low, e.accuracy_high],
            "labels": e.labels_used,
            "error": abs(e.accuracy - truth),
            "covered": bool(e.accuracy_low <= truth <= (e.accuracy_high or e.accuracy)),
        }
    return row


def estimate_windows(
    spec: Any, reference: Any, streams: dict[str, list[Scored]], *, tag: str
) -> list[dict[str, Any]]:
    rows = []
    for name, windows in streams.items():
        for k, window in enumerate(windows):
            row = {
                "specialist": tag,
                "scenario": name,
                "window": k,
                **judge(spec, reference, window, seed=k),
            }
            rows.append(row)
            ten = row["labels_0.1"]
            print(
                f"{tag:<10} {name:<22} #{k} acc {row['accuracy']:.3f} | no labels "
                f"{row['estimate']:.3f} (err {row['error']:.3f}) | 10% labels "
                f"{ten['estimate']:.3f} "
                f"[{ten['interval'][0]:.3f}, {ten['interval'][1]:.3f}] (err {ten['error']:.3f}) | "
                f"{row['verdict']}"
            )
    return rows


def false_alarms(spec: Any, reference: Any, pool: Scored, n: int, *, tag: str) -> dict[str, Any]:
    from monitors.check import assess

    windows = min(n, len(pool) // WINDOW)
    alarms, signals = 0, {}
    errors = []
    for k in range(windows):
        w = pool.take(np.arange(k * WINDOW, (k + 1) * WINDOW))
        v = assess(spec, reference, w.raw(0.0, k), report=False)
        alarms += v.status.value != "OK"
        for s in v.drifted:
            signals[s] = signals.get(s, 0) + 1
        if v.estimate is not None:
            errors.append(abs(v.estimate.accuracy - w.accuracy()))
        if v.status.value != "OK":
            print(
                f"  {tag} stationary window {k}: {v.status.value} {[r.signal for r in v.reasons]}"
            )
    print(f"{tag}: {alarms} false alarm(s) in {windows} disjoint stationary windows of {WINDOW}")
    return {
        "windows": windows,
        "false_alarms": alarms,
        "signals": signals,
        "max_estimate_error": max(errors, default=float("nan")),
    }


# -- 4. discovery -------------------------------------------------------------------------


def _rank(purity_coverage: tuple[float, float]) -> tuple[bool, float, float]:
    purity, coverage = purity_coverage
    return (purity >= 0.8 and coverage >= 0.5, coverage, purity)


def discovery_part(reference: Any, pools: Any, n_windows: int) -> dict[str, Any]:
    from monitors.frames import window_data
    from monitors.openworld import discover_new_traffic, surges_of
    from monitors.openworld import estimate as estimate_open_world

    world = reference.open_world
    assert world is not None
    held, kept = from_pools(pools, "held_out"), from_pools(pools, "test_in")
    rng = np.random.default_rng(11)
    per_intent: dict[str, list[tuple[float, float]]] = {}
    # Windows where the passing group was a surging label's answers, not a cluster.
    via_surge: dict[str, int] = {}
    passed = failed = 0
    seconds = []
    for k in range(n_windows):
        w = mix([(held, 400), (kept, 600)], rng)
        data = window_data(w.raw(0.0, k), vocabulary=(), escalation_threshold=0.5)
        started = time.perf_counter()
        result, scores = estimate_open_world(world, data)
        found, _, rows = discover_new_traffic(
            world,
            data,
            scores,
            min_cluster_size=10,
            surges=surges_of(world, data),
            in_scope_share=1.0 if result is None else 1.0 - result.out_of_support,
        )
        seconds.append(time.perf_counter() - started)
        for intent in pools.held_out:
            total = int((w.truth == intent).sum())
            if total < 30:
                continue
            best, best_hidden = (0.0, 0.0), False
            for c in found.clusters:
                members = rows[list(c.members)]
                hits = int((w.truth[members] == intent).sum())
                if hits == 0:
                    continue
                cand = (hits / len(members), hits / total)
                # A cluster that passes beats one that covers more but is not pure.
                if _rank(cand) > _rank(best):
                    best, best_hidden = cand, c.hidden_under is not None
            per_intent.setdefault(intent, []).append(best)
            ok = best[0] >= 0.8 and best[1] >= 0.5
            via_surge[intent] = via_surge.get(intent, 0) + (ok and best_hidden)
            passed += ok
            failed += not ok
    summary = {
        intent: {
            "windows": len(v),
            "purity_min": min(p for p, _ in v),
            "purity_mean": statistics.fmean(p for p, _ in v),
            "coverage_min": min(c for _, c in v),
            "coverage_mean": statistics.fmean(c for _, c in v),
            "passed": sum(p >= 0.8 and c >= 0.5 for p, c in v),
            "passed_by_surge_group": via_surge.get(intent, 0),
        }
        for intent, v in sorted(per_intent.items())
    }
    for intent, r in summary.items():
        print(
            f"discovery {intent:<32} purity {r['purity_mean']:.2f} (min {r['purity_min']:.2f}) "
            f"coverage {r['coverage_mean']:.2f} (min {r['coverage_min']:.2f}) "
            f"passed {r['passed']}/{r['windows']} ({r['passed_by_surge_group']} by a surge group)"
        )
    print(
        f"discovery: {passed} of {passed + failed} (intent, window) pairs pass; "
        f"{statistics.fmean(seconds):.2f} s per window of 1,000"
    )
    return {
        "per_intent": summary,
        "passed": passed,
        "failed": failed,
        "seconds_per_window": statistics.fmean(seconds),
    }


# -- setup ----------------------------------------------------------------------------------


def generator_setup(home: Path, quick: bool) -> tuple[Any, Any, dict[str, list[Scored]], Scored]:
    from monitor import champion  # bench/monitor.py

    from lifecycle.config.settings import load_settings
    from lifecycle.config.spec import load_specialists
    from lifecycle.registry.models import Registry
    from lifecycle.synthetic.scenarios import build_scenario, generate_tickets
    from monitors.check import load_reference

    root = Path(__file__).resolve().parents[1]
    settings = load_settings(home=home / "generator", specialists_file=root / "specialists.yaml")
    spec = load_specialists(settings.specialists_file).get("support-router")
    host, adapter_id, info = champion(settings, spec)
    reference = load_reference(Registry(settings), spec, info, settings=settings)
    streams: dict[str, list[Scored]] = {}
    for name in ("new_intent", "vocabulary_shift", "prior_shift", "stationary"):
        sc = build_scenario(name, n_before=0, n_after=WINDOW * 2, seed=7)
        scored = from_host(host, adapter_id, sc.stream.reset_index(drop=True))
        streams[name] = [scored.take(np.arange(i * WINDOW, (i + 1) * WINDOW)) for i in range(2)]
    n_stationary = 10 if quick else 50
    pool = from_host(host, adapter_id, generate_tickets(n_stationary * WINDOW, seed=4321))
    return spec, reference, streams, pool


def banking77_setup(home: Path, data: Path) -> tuple[Any, Any, Any]:
    from openworld_data import load

    from lifecycle.registry.models import Registry
    from monitors.check import load_reference

    pools = load(home, data)
    registry = Registry(pools.settings)
    info = registry.resolve(pools.spec.name, "champion")
    reference = load_reference(registry, pools.spec, info, settings=pools.settings)
    return pools, reference, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument(
        "--home", type=Path, default=Path(tempfile.gettempdir()) / "lifecycle-bench-openworld"
    )
    parser.add_argument("--data", type=Path, default=root.parent / "shared" / "data")
    parser.add_argument("--quick", action="store_true", help="fewer stationary windows")
    args = parser.parse_args()
    os.environ.setdefault("LIFECYCLE_PROGRESS", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(root))

    results: dict[str, Any] = {}
    pools, b_ref, _ = banking77_setup(args.home, args.data)
    results["detector"] = detector_part(pools)
    rng = np.random.default_rng(5)
    held, test_in = from_pools(pools, "held_out"), from_pools(pools, "test_in")
    in_scope, snips = from_pools(pools, "in_scope"), from_pools(pools, "snips")
    b_streams = {
        "release_40pct_held_out": [mix([(held, 200), (test_in, 300)], rng) for _ in range(6)],
        "snips_30pct": [mix([(snips, 150), (in_scope, 350)], rng) for _ in range(4)],
        "in_scope_test": [mix([(test_in, WINDOW)], rng) for _ in range(2)],
    }
    rows = estimate_windows(pools.spec, b_ref, b_streams, tag="banking77")
    results["banking77.false_alarms"] = false_alarms(
        pools.spec, b_ref, in_scope.take(rng.permutation(len(in_scope))), 50, tag="banking77"
    )
    results["discovery"] = discovery_part(b_ref, pools, 4 if args.quick else 8)

    g_spec, g_ref, g_streams, g_pool = generator_setup(args.home, args.quick)
    rows += estimate_windows(g_spec, g_ref, g_streams, tag="generator")
    results["generator.false_alarms"] = false_alarms(
        g_spec, g_ref, g_pool, 10 if args.quick else 50, tag="generator"
    )

    errors = [r["error"] for r in rows]
    results["windows"] = rows
    results["estimate.windows"] = len(rows)
    results["estimate.no_labels.mae"] = statistics.fmean(errors)
    results["estimate.no_labels.max"] = max(errors)
    sweep = {}
    for share in LABEL_SHARES:
        key = f"labels_{share}"
        sweep[share] = {
            "max_error": max(r[key]["error"] for r in rows),
            "mae": statistics.fmean(r[key]["error"] for r in rows),
            "coverage": statistics.fmean(r[key]["covered"] for r in rows),
        }
    results["estimate.label_sweep"] = sweep
    enough = [s for s, v in sweep.items() if v["max_error"] <= 0.03 and v["coverage"] >= 0.9]
    results["estimate.label_share_for_3_points"] = min(enough) if enough else None
    print(
        f"estimate over {len(rows)} windows, no labels: MAE {results['estimate.no_labels.mae']:.3f}"
        f", max {results['estimate.no_labels.max']:.3f}"
    )
    for share, v in sweep.items():
        print(
            f"  {share:.0%} labels: max {v['max_error']:.3f}, MAE {v['mae']:.3f}, "
            f"intervals cover {v['coverage']:.0%}"
        )
    det = results["detector"]["knn"]
    floors = {
        "detector AUROC >= 0.90": det["auroc_held_out"] >= 0.90,
        "in-scope flag rate within 2 points of 5%": abs(det["flag_rate_test_in"] - 0.05) <= 0.02,
        "no-label MAE <= 0.03": results["estimate.no_labels.mae"] <= 0.03,
        "no-label max <= 0.05": results["estimate.no_labels.max"] <= 0.05,
        "10% labels max <= 0.03": sweep[0.1]["max_error"] <= 0.03,
        "10% labels coverage >= 0.9": sweep[0.1]["coverage"] >= 0.9,
        "false alarms <= 1 in 50 (generator)": results["generator.false_alarms"]["false_alarms"]
        <= 1,
        "discovery: every intent >= 30 passes": results["discovery"]["failed"] == 0,
    }
    results["floors"] = floors
    for name, ok in floors.items():
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    print(json.dumps(results, default=str))
    sys.exit(0 if all(floors.values()) else 1)


if __name__ == "__main__":
    main()
