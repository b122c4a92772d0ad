"""Benchmark: LoRA training on Banking77 (77 intents, full train set, official test set).

Prints test accuracy, macro-F1, training time and examples/s, and writes a JSON
line to stdout's last line so that bench/RESULTS.md can be refreshed from it.

    .venv/bin/python bench/train.py [--data ../shared/data/banking77] [--epochs 4]

The second part trains the default specialist on 2,000 generated tickets and
scores it on 2,000 held-out generated tickets (another seed), the core issue's
acceptance check, timed end to end including the base model load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def _machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, {device}"


def banking77(folder: Path, epochs: int) -> dict[str, float]:
    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.training.data import load_table
    from lifecycle.training.evaluate import evaluate
    from lifecycle.training.train import predict_probabilities, train_specialist

    train = load_table(folder / "train.csv", label_column="category")
    test = load_table(folder / "test.csv", label_column="category")
    spec = SpecialistSpec(
        name="banking77",
        training={
            "epochs": epochs,
            "validation_fraction": 0.1,
            "evals_per_epoch": 2,
            "max_length": 64,
        },
        lora={"r": 16, "alpha": 32, "target_modules": ["query", "key", "value"]},
    )
    started = time.perf_counter()
    result = train_specialist(spec, train, progress=True)
    wall = time.perf_counter() - started
    t0 = time.perf_counter()
    probs = predict_probabilities(result.host, result.adapter_id, test["text"].tolist())
    predict_seconds = time.perf_counter() - t0
    ev = evaluate(test["label"].tolist(), probs, result.meta.labels)
    return {
        "banking77.test_accuracy": ev.accuracy,
        "banking77.test_macro_f1": ev.macro_f1,
        "banking77.test_calibration_error": ev.calibration_error,
        "banking77.train_rows": float(len(result.train)),
        "banking77.train_seconds": result.seconds,
        "banking77.wall_seconds": wall,
        "banking77.examples_per_second": result.examples_per_second,
        "banking77.steps": float(result.steps),
        "banking77.test_sequences_per_second": len(test) / predict_seconds,
    }


def generated() -> dict[str, float]:
    from lifecycle.config.spec import load_specialists
    from lifecycle.synthetic.scenarios import generate_tickets
    from lifecycle.training.evaluate import evaluate
    from lifecycle.training.train import predict_probabilities, train_specialist

    spec = load_specialists(Path(__file__).resolve().parents[1] / "specialists.yaml").specialists[0]
    started = time.perf_counter()
    result = train_specialist(spec, generate_tickets(2000, seed=spec.data.seed), progress=False)
    wall = time.perf_counter() - started
    held_out = generate_tickets(2000, seed=1234)
    probs = predict_probabilities(result.host, result.adapter_id, held_out["text"].tolist())
    ev = evaluate(held_out["label"].tolist(), probs, result.meta.labels)
    return {
        "generated.held_out_accuracy": ev.accuracy,
        "generated.wall_seconds_incl_model_load": wall,
        "generated.train_seconds": result.seconds,
        "generated.steps": float(result.steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--data", type=Path, default=root.parent / "shared" / "data" / "banking77")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--skip-banking77", action="store_true")
    args = parser.parse_args()
    np.set_printoptions(precision=4)
    results: dict[str, float | str] = {"machine": _machine()}
    results.update(generated())
    print(json.dumps(results, indent=2), flush=True)
    if not args.skip_banking77:
        results.update(banking77(args.data, args.epochs))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
