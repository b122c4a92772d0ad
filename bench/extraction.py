"""Benchmark: an extraction specialist on SNIPS, trained on 2 CPU cores and scored on the
official test file.

    .venv/bin/python bench/extraction.py [--data ../shared/data/snips] [--epochs 3] [--r 16]

Trains MiniLM + LoRA (BIO tags on word pieces, ``lifecycle.training.extraction``) on the
13,784 training utterances, the 39 slot types declared by nothing but the data, then scores
the 700 test utterances through ``AdapterHost.predict``, the path the gateway serves:

- entity micro-F1 and macro-F1 on exact spans, exact match per request, and F1 per slot
  label next to its support;
- the training time with the base model's load;
- how far the calibrated confidences are from the truth: mean confidence of a request
  (probability that the whole answer is right) against its exact match, and mean entity
  confidence against entity precision.

The answers are checked against the gold spans the data gives (the scores are the check);
it exits 1 when a floor of the extraction issue is missed: micro-F1 >= 0.93, exact match
>= 0.85, training <= 15 minutes. Results go to ``bench/extraction_results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"micro_f1": 0.93, "exact_match": 0.85, "train_minutes": 15.0, "mixed_ratio": 0.8}


def default_data() -> Path:
    for candidate in (ROOT.parent / "shared" / "data" / "snips", Path("/work/shared/data/snips")):
        if (candidate / "train.jsonl").is_file():
            return candidate
    return ROOT.parent / "shared" / "data" / "snips"


def read(path: Path) -> Any:
    import pandas as pd

    return pd.read_json(path, lines=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--targets", default="query,key,value,dense")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--head-lr", type=float, default=5e-3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rows", type=int, default=0, help="Train on this many rows (0: all).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--mixed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also measure mixed extraction + classification passes against each alone.",
    )
    parser.add_argument(
        "--save", type=Path, default=None, help="Also save the trained adapter folder here."
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "extraction_results.json")
    args = parser.parse_args(argv)

    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.extraction.metrics import evaluate_entities
    from lifecycle.extraction.spans import keys
    from lifecycle.training.train import train_specialist

    train = read(args.data / "train.jsonl")
    test = read(args.data / "test.jsonl")
    if args.rows:
        train = train.sample(n=min(args.rows, len(train)), random_state=0)
    spec = SpecialistSpec.model_validate(
        {
            "name": "snips-slots",
            "task": "extraction",
            "lora": {"r": args.r, "alpha": 2 * args.r, "target_modules": args.targets.split(",")},
            "training": {
                "epochs": args.epochs,
                "batch_size": args.batch,
                "learning_rate": args.lr,
                "head_learning_rate": args.head_lr,
                "validation_fraction": 0.05,
                "evals_per_epoch": 2,
                "patience": 2,
            },
        }
    )
    started = time.perf_counter()
    result = train_specialist(
        spec, train[["text", "entities"]], threads=args.threads, progress=False
    )
    train_seconds = time.perf_counter() - started
    if args.save is not None:
        result.host.save_adapter(result.adapter_id, args.save)
    predictions = result.host.predict(test["text"].tolist(), result.adapter_id, batch_size=64)
    gold = [keys(e) for e in test["entities"]]
    found = [keys(p.entities or ()) for p in predictions]
    ev = evaluate_entities(gold, found)
    # Calibration: the request confidence estimates exact match, entity confidence precision.
    exact = [sorted(g) == sorted(f) for g, f in zip(gold, found, strict=True)]
    mean_conf = sum(p.confidence for p in predictions) / len(predictions)
    entity_conf = [e.confidence for p in predictions for e in p.entities or ()]
    gold_sets = [set(g) for g in gold]
    entity_right = [
        e.key() in gold_sets[i] for i, p in enumerate(predictions) for e in p.entities or ()
    ]
    figures: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} torch threads",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "n_train": len(train),
        "n_test": len(test),
        "n_labels": len(result.meta.labels),
        "train_seconds_with_load": round(train_seconds, 1),
        "train_examples_per_second": round(result.examples_per_second, 1),
        "steps": result.steps,
        "val_micro_f1": round(float(getattr(result.evaluation, "micro_f1", 0.0)), 4),
        "micro_f1": round(ev.micro_f1, 4),
        "macro_f1": round(ev.macro_f1, 4),
        "exact_match": round(ev.exact_match, 4),
        "request_confidence_mean": round(mean_conf, 4),
        "request_exact_share": round(sum(exact) / len(exact), 4),
        "entity_confidence_mean": round(sum(entity_conf) / max(1, len(entity_conf)), 4),
        "entity_precision": round(sum(entity_right) / max(1, len(entity_right)), 4),
        "per_label": ev.table(),
    }
    misses = []
    if ev.micro_f1 < FLOORS["micro_f1"]:
        misses.append(f"micro-F1 {ev.micro_f1:.4f} < {FLOORS['micro_f1']}")
    if ev.exact_match < FLOORS["exact_match"]:
        misses.append(f"exact match {ev.exact_match:.4f} < {FLOORS['exact_match']}")
    if train_seconds / 60 > FLOORS["train_minutes"]:
        misses.append(f"training {train_seconds / 60:.1f} min > {FLOORS['train_minutes']}")
    if args.mixed:
        figures["mixed"] = mixed_throughput(result, train, test, threads=args.threads)
        if figures["mixed"]["ratio"] < FLOORS["mixed_ratio"]:
            misses.append(f"mixed ratio {figures['mixed']['ratio']:.3f} < {FLOORS['mixed_ratio']}")
        if figures["mixed"]["mismatches"]:
            misses.append(f"{figures['mixed']['mismatches']} mixed answers differ from alone")
    figures["floors_missed"] = misses
    print(json.dumps({k: v for k, v in figures.items() if k != "per_label"}, indent=2))
    print(f"{'label':28} {'P':>6} {'R':>6} {'F1':>6} {'n':>5}")
    for row in ev.table():
        print(
            f"{row['label']:28} {row['precision']:6.3f} {row['recall']:6.3f} "
            f"{row['f1']:6.3f} {row['support']:5d}"
        )
    history = json.loads(args.out.read_text()) if args.out.is_file() else []
    history.append(figures)
    args.out.write_text(json.dumps(history, indent=1) + "\n")
    for miss in misses:
        print(f"FLOOR MISSED: {miss}", file=sys.stderr)
    return 1 if misses else 0


def mixed_throughput(result: Any, train: Any, test: Any, *, threads: int) -> dict[str, Any]:
    """Texts/s of the extractor alone, an intent classifier alone (trained here on the same
    utterances' intents, one epoch) and both mixed in the same calls, side by side on one
    host: rounds alternate the three so that a busy machine slows each alike; best round
    each. Every mixed answer is checked against the same text's answer alone."""
    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.extraction.spans import keys
    from lifecycle.training.train import train_specialist

    host = result.host
    intents = (
        train[["text", "intent"]]
        .rename(columns={"intent": "label"})
        .sample(n=min(3000, len(train)), random_state=1)
    )
    spec = SpecialistSpec(name="snips-intents", training={"epochs": 1})
    classifier = train_specialist(spec, intents, host=None, threads=threads, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        folder = classifier.host.save_adapter(classifier.adapter_id, Path(tmp) / "intents")
        host.load_adapter("intents", folder)
    texts = test["text"].tolist()
    ex, cl = result.adapter_id, "intents"
    mixed_ids = [ex if i % 2 else cl for i in range(len(texts))]
    alone_ex = host.predict(texts, ex, batch_size=64)
    alone_cl = host.predict(texts, cl, batch_size=64)
    mixed = host.predict(texts, mixed_ids, batch_size=64)
    mismatches = 0
    for i, pred in enumerate(mixed):
        ref = alone_ex[i] if mixed_ids[i] == ex else alone_cl[i]
        same = (
            keys(pred.entities or ()) == keys(ref.entities or ())
            if mixed_ids[i] == ex
            else pred.label == ref.label
        )
        mismatches += not same
    best = {"extraction": 0.0, "classification": 0.0, "mixed": 0.0}
    for _ in range(3):
        for name, ids in (("extraction", ex), ("classification", cl), ("mixed", mixed_ids)):
            started = time.perf_counter()
            host.predict(texts, ids, batch_size=64)
            best[name] = max(best[name], len(texts) / (time.perf_counter() - started))
    slower = min(best["extraction"], best["classification"])
    return {
        "texts": len(texts),
        "texts_per_second": {k: round(v, 1) for k, v in best.items()},
        "ratio": round(best["mixed"] / slower, 3),
        "mismatches": mismatches,
    }


if __name__ == "__main__":
    sys.exit(main())
