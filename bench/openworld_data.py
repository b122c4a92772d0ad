"""The open-world scenario's data: a Banking77 champion trained without 10 intents, and its
view (logits, embeddings) of every pool the open-world benchmarks draw windows from.

    .venv/bin/python bench/openworld_data.py [--home DIR] [--data ../shared/data]

Trains once (about 5-6 min on 2 cores) and caches the champion in an MLflow registry under
``--home``; the pools are scored again from that champion when their cache is missing.
Pools (each a frame of text, label, and the champion's prediction, confidence, logits and
embedding):

- ``fit``: the train rows the champion learnt from (the detector is fitted on these);
- ``validation``: its validation split, the monitoring reference;
- ``in_scope``: 30% of the kept intents' train rows, never trained on: stationary traffic;
- ``test_in``: Banking77's test rows of the kept intents;
- ``held_out``: every train and test row of the 10 held-out intents;
- ``snips``: SNIPS queries (another domain entirely), labelled ``out_of_scope``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

N_HOLDOUT = 10
SEED = 3
NAME = "banking77-openworld"
POOLS = ("fit", "validation", "in_scope", "test_in", "held_out", "snips")


@dataclass(frozen=True)
class Pools:
    frames: dict[str, pd.DataFrame]
    logits: dict[str, np.ndarray]
    embeddings: dict[str, np.ndarray]
    labels: tuple[str, ...]
    held_out: tuple[str, ...]
    temperature: float
    settings: Any
    spec: Any


def _spec() -> Any:
    from lifecycle.config.spec import SpecialistSpec

    return SpecialistSpec(
        name=NAME,
        training={"epochs": 2, "validation_fraction": 0.1, "evals_per_epoch": 2},
        lora={"r": 16, "alpha": 32, "target_modules": ["query", "key", "value"]},
        monitoring={"window_size": 500},
        escalation={"confidence_threshold": 0.5},
    )


def _split(data: Path) -> tuple[dict[str, pd.DataFrame], tuple[str, ...]]:
    import random

    from lifecycle.training.data import load_table, stratified_split

    train = load_table(data / "banking77" / "train.csv", label_column="category")
    test = load_table(data / "banking77" / "test.csv", label_column="category")
    labels = sorted(train["label"].unique())
    held = tuple(sorted(random.Random(SEED).sample(labels, N_HOLDOUT)))
    kept = train[~train["label"].isin(held)]
    fit, in_scope = stratified_split(kept, fraction=0.3, seed=SEED)
    snips = pd.read_json(data / "snips" / "test.jsonl", lines=True)
    snips_train = pd.read_json(data / "snips" / "train.jsonl", lines=True).sample(
        1300, random_state=SEED
    )
    snips = pd.concat([snips, snips_train], ignore_index=True)
    frames = {
        "fit": fit.reset_index(drop=True),
        "in_scope": in_scope.reset_index(drop=True),
        "test_in": test[~test["label"].isin(held)].reset_index(drop=True),
        "held_out": pd.concat(
            [train[train["label"].isin(held)], test[test["label"].isin(held)]], ignore_index=True
        ),
        "snips": pd.DataFrame({"text": snips["text"].str.strip(), "label": "out_of_scope"}),
    }
    return frames, held


def load(home: Path, data: Path) -> Pools:
    """The pools, training the champion and scoring them on first use."""
    os.environ.setdefault("LIFECYCLE_PROGRESS", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from lifecycle.config.settings import load_settings
    from lifecycle.model.host import AdapterHost
    from lifecycle.registry.models import Registry
    from lifecycle.training.pipeline import train_and_register

    settings = load_settings(home=home, specialists_file=Path(__file__).parent / "none.yaml")
    spec = _spec()
    frames, held = _split(data)
    cache = home / "pools.npz"
    registry = Registry(settings)
    if not registry.has_model(NAME) or "champion" not in registry.aliases(NAME):
        started = time.perf_counter()
        train_and_register(settings, spec, data=frames["fit"], alias="champion")
        print(f"trained {NAME} in {time.perf_counter() - started:.0f} s")
        cache.unlink(missing_ok=True)
    ref_frame, _ = registry.reference(NAME, "champion")
    frames["validation"] = ref_frame[["text", "label"]].reset_index(drop=True)
    # The detector learns from the rows trained on, not the validation rows (held out).
    frames["fit"] = frames["fit"][~frames["fit"]["text"].isin(set(ref_frame["text"]))]
    frames["fit"] = frames["fit"].reset_index(drop=True)
    if not cache.exists():
        host = AdapterHost(spec.base_model)
        adapter_id, _ = registry.load(host, NAME, "champion")
        arrays: dict[str, np.ndarray] = {}
        for pool in POOLS:
            started = time.perf_counter()
            logits, emb = host.logits_and_embeddings(
                frames[pool]["text"].tolist(), adapter_id, batch_size=64
            )
            arrays[f"{pool}.logits"] = np.stack(logits).astype(np.float32)
            arrays[f"{pool}.emb"] = emb
            print(f"scored {pool}: {len(emb)} rows in {time.perf_counter() - started:.0f} s")
        meta = host.meta(adapter_id)
        arrays["labels"] = np.array(meta.labels)
        arrays["temperature"] = np.array(meta.temperature)
        np.savez_compressed(cache, **arrays)
    stored = np.load(cache)
    return Pools(
        frames=frames,
        logits={p: stored[f"{p}.logits"] for p in POOLS},
        embeddings={p: stored[f"{p}.emb"] for p in POOLS},
        labels=tuple(str(x) for x in stored["labels"]),
        held_out=held,
        temperature=float(stored["temperature"]),
        settings=settings,
        spec=spec,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument(
        "--home", type=Path, default=Path(tempfile.gettempdir()) / "lifecycle-bench-openworld"
    )
    parser.add_argument("--data", type=Path, default=root.parent / "shared" / "data")
    args = parser.parse_args()
    pools = load(args.home, args.data)
    for pool in POOLS:
        print(pool, len(pools.frames[pool]), pools.embeddings[pool].shape)
    print("held out:", ", ".join(pools.held_out))


if __name__ == "__main__":
    main()
