"""Benchmark: the closed loop on Banking77, with held-out intents released as the drift.

    .venv/bin/python bench/loop.py [--data ../shared/data/banking77] [--holdout 5]

Five intents are held out of the first champion's training data and make up 20% of the
traffic after the onset. The loop runs as in ``lifecycle demo`` (real gateway, real
Prefect flow runs, labels for half of the requests arriving late). Printed side by side:

- detection delay: requests after the onset until the monitor asked for retraining;
- minutes from the onset to the promotion, on this machine;
- accuracy after the promotion divided by the oracle's on the same requests, where the
  oracle is a specialist trained up front on the reference plus other rows of the held-out
  intents (the best the loop could hope to reach).

The held-out intents' train rows are split in two: one half (with their test rows) feeds
the traffic, the other only the oracle, so no request the loop is scored on was trained on
by the oracle. Accuracy after the promotion is that of the last promoted champion on the
drifted traffic it answered (the loop keeps retraining on a schedule after a promotion).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

N_BEFORE, N_AFTER, RELEASE = 600, 2600, 0.2


def build(table: Any, test: Any, holdout: int, seed: int) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    from lifecycle.data import stratified_split

    labels = sorted(table["label"].unique())
    held = sorted(random.Random(seed).sample(labels, holdout))
    kept_rows = table[~table["label"].isin(held)]
    held_rows = table[table["label"].isin(held)]
    reference, kept_pool = stratified_split(kept_rows, fraction=0.3, seed=seed)
    # Half the held-out intents' train rows (and their test rows) feed the traffic; the
    # other half only the oracle.
    held_stream, held_oracle = stratified_split(held_rows, fraction=0.5, seed=seed)
    held_stream = pd.concat([held_stream, test[test["label"].isin(held)]])
    rng = np.random.default_rng(seed)
    n_release = round(RELEASE * N_AFTER)
    kept_pool = kept_pool.sample(frac=1.0, random_state=seed)
    before = kept_pool.iloc[:N_BEFORE].assign(phase="before")
    after_kept = kept_pool.iloc[N_BEFORE : N_BEFORE + N_AFTER - n_release]
    after_held = held_stream.sample(n=min(n_release, len(held_stream)), random_state=seed)
    after = pd.concat([after_kept, after_held]).assign(phase="after")
    after = after.iloc[rng.permutation(len(after))]
    stream = pd.concat([before, after], ignore_index=True)[["text", "label", "phase"]]
    return {
        "held": held,
        "reference": reference[["text", "label"]].reset_index(drop=True),
        "oracle_data": pd.concat([reference, held_oracle])[["text", "label"]],
        "stream": stream,
        "onset": len(before),
        "labels": labels,
    }


def oracle_accuracy(parts: dict[str, Any], rows: Any, epochs: int) -> tuple[float, float]:
    from lifecycle.spec import SpecialistSpec
    from lifecycle.train import train_specialist

    spec = SpecialistSpec(
        name="oracle",
        labels=parts["labels"],
        training={"epochs": epochs, "batch_size": 32, "max_length": 64},
    )
    started = time.perf_counter()
    result = train_specialist(spec, parts["oracle_data"], progress=False)
    seconds = time.perf_counter() - started
    preds = result.host.predict(rows["text"].tolist(), result.adapter_id)
    correct = sum(p.label == t for p, t in zip(preds, rows["label"], strict=True))
    return correct / len(rows), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--data", type=Path, default=root.parent / "shared" / "data" / "banking77")
    parser.add_argument("--holdout", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="lifecycle-bench-loop-"))
    os.environ["LIFECYCLE_HOME"] = str(home)
    os.environ["LIFECYCLE_SPECIALISTS_FILE"] = str(home / "demo-specialists.yaml")
    os.environ.setdefault("LIFECYCLE_PROGRESS", "false")
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    (home / "prefect").mkdir(parents=True, exist_ok=True)

    from flows.demo import run_loop
    from lifecycle.data import load_table

    table = load_table(args.data / "train.csv", label_column="category")
    test = load_table(args.data / "test.csv", label_column="category")
    parts = build(table, test, args.holdout, args.seed)
    print(
        f"held out {parts['held']}; reference {len(parts['reference'])} rows; "
        f"stream {len(parts['stream'])} requests, onset at {parts['onset']}",
        flush=True,
    )
    result = run_loop(
        home,
        reference=parts["reference"],
        stream=parts["stream"],
        onset=parts["onset"],
        labels=parts["labels"],
        epochs=args.epochs,
        retrain_every=400,
    )
    out: dict[str, Any] = {
        "held_out": parts["held"],
        "reference_rows": len(parts["reference"]),
        "accuracy_before": result.before.value,
        "accuracy_during": result.during.value,
        "accuracy_after": result.after.value,
        "detection_delay_requests": result.detection_delay,
        "promoted_version": result.promoted_version,
        "wall_minutes": result.seconds / 60,
    }
    onset_s, promoted_s = result.seconds_at("drift onset"), result.seconds_at("promoted")
    if onset_s is not None and promoted_s is not None:
        out["minutes_onset_to_promotion"] = (promoted_s - onset_s) / 60
    if result.promoted_at is not None:
        served = parts["stream"].iloc[result.promoted_at :]
        served = served[served["phase"] == "after"]
        oracle, seconds = oracle_accuracy(parts, served, args.epochs)
        out["oracle_accuracy"] = oracle
        out["oracle_train_seconds"] = seconds
        out["after_over_oracle"] = result.after.value / oracle
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
