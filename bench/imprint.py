"""Benchmark: new head rows started at their examples (imprinting) against a random start.

A warm-started retrain that grows the head for new labels (``lifecycle.training.imprint``)
is run twice on the same data, once as shipped and once with the new rows left at their
random start (the code before imprinting), side by side in one run. Banking77: a parent
trained on ``--per-intent`` rows of each of 67 intents (10 held out, chosen by ``--seed``),
then for each ``--shots`` N a retrain on N rows of each held-out intent plus about 1.5x as
many rows of kept intents (at least 2 each; traffic the parent did not train on),
replaying the parent's own training rows at the spec's ratio, as a retrain does. Scored on
Banking77's test rows: the new intents, the kept ones, and a 40/60 mix (the loop bench's
release share).

Checks (exit 1 when one fails): every model beats chance on the kept intents by far (> 0.5),
the parent scores 0 on the new intents (it has no row for them), both retrains score on
them above chance, and both runs of a pair trained on the same rows (same data hash).

Command: ``.venv/bin/python bench/imprint.py`` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = 10
RELEASE = 0.4


def accuracy(result: Any, frame: Any) -> float:
    import numpy as np

    from lifecycle.training.train import predict_probabilities

    if len(frame) == 0:
        return float("nan")
    probs = predict_probabilities(result.host, result.adapter_id, frame["text"].tolist())
    labels = np.array(result.meta.labels)[probs.argmax(axis=1)]
    return float((labels == frame["label"].to_numpy()).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-intent", type=int, default=40)
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="Also write the JSON figures to this file.")
    args = parser.parse_args()

    import pandas as pd

    import lifecycle.training.train as train_module
    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.training.data import load_table
    from lifecycle.training.train import train_specialist

    table = load_table(args.data / "train.csv", label_column="category")
    test = load_table(args.data / "test.csv", label_column="category")
    intents = sorted(table["label"].unique())
    held = sorted(random.Random(args.seed).sample(intents, HOLDOUT))
    kept = table[~table["label"].isin(held)].sample(frac=1.0, random_state=args.seed)
    parent_rows = kept.groupby("label", group_keys=False).head(args.per_intent)
    kept_pool = kept.drop(parent_rows.index)
    held_pool = table[table["label"].isin(held)].sample(frac=1.0, random_state=args.seed)
    test_new, test_kept = test[test["label"].isin(held)], test[~test["label"].isin(held)]

    spec = SpecialistSpec.model_validate(
        {
            "name": "imprint-bench",
            "training": {"epochs": args.epochs, "batch_size": 32, "max_length": 64},
        }
    )
    started = time.perf_counter()
    parent = train_specialist(spec, parent_rows[["text", "label"]], device="cpu", progress=False)
    figures: dict[str, Any] = {
        "seed": args.seed,
        "held_out": held,
        "parent_rows": len(parent_rows),
        "parent": {"kept": accuracy(parent, test_kept), "new": accuracy(parent, test_new)},
        "runs": [],
    }
    failures: list[str] = []
    if not figures["parent"]["kept"] > 0.5 or figures["parent"]["new"] != 0.0:
        failures.append(f"parent: {figures['parent']}")
    imprint = train_module._imprint_new_labels
    with tempfile.TemporaryDirectory() as tmp:
        folder = parent.host.save_adapter(parent.adapter_id, Path(tmp) / "parent")
        for shots in args.shots:
            new_rows = held_pool.groupby("label", group_keys=False).head(shots)
            # Kept intents' traffic, about 1.5x the new rows, at least 2 rows of each intent
            # (a class needs 2 to be split into training and validation rows).
            each = max(2, round(1.5 * len(new_rows) / kept_pool["label"].nunique()))
            more = kept_pool.groupby("label", group_keys=False).head(each)
            more = more[more.groupby("label")["label"].transform("size") >= 2]
            data = pd.concat([new_rows, more])[["text", "label"]].reset_index(drop=True)
            pair: dict[str, Any] = {"shots": shots, "rows": len(data)}
            for name, hook in (("imprinted", imprint), ("random start", None)):
                train_module._imprint_new_labels = hook or (lambda *a, **k: None)  # type: ignore[assignment]
                try:
                    result = train_specialist(
                        spec,
                        data,
                        parent=folder,
                        replay=parent_rows[["text", "label"]],
                        device="cpu",
                        progress=False,
                    )
                finally:
                    train_module._imprint_new_labels = imprint  # type: ignore[assignment]
                new, old = accuracy(result, test_new), accuracy(result, test_kept)
                pair[name] = {
                    "new": new,
                    "kept": old,
                    "mix": RELEASE * new + (1 - RELEASE) * old,
                    "hash": result.dataset_hash,
                }
                if not old > 0.5 or not new > 1.0 / len(result.meta.labels):
                    failures.append(f"{shots} shots, {name}: new {new:.3f}, kept {old:.3f}")
            if pair["imprinted"]["hash"] != pair["random start"]["hash"]:
                failures.append(f"{shots} shots: the two runs trained on different rows")
            figures["runs"].append(pair)
    figures["seconds"] = time.perf_counter() - started

    print(f"parent: kept {figures['parent']['kept']:.3f}, new {figures['parent']['new']:.3f}")
    print("| shots per new intent | start | new intents | kept intents | 40/60 mix |")
    print("| --- | --- | --- | --- | --- |")
    for pair in figures["runs"]:
        for name in ("imprinted", "random start"):
            f = pair[name]
            print(
                f"| {pair['shots']} | {name} | {f['new']:.3f} | {f['kept']:.3f} | {f['mix']:.3f} |"
            )
    print(json.dumps(figures))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1) + "\n")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
