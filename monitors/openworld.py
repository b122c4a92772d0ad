"""The open-world part of a check: out-of-scope scores, the estimate that survives new
intents, and the clusters of new traffic.

The champion's detector comes with its artifact folder (fitted at training time); a version
trained before detectors existed gets one fitted from its registered reference, and the
check says so. The scores are recomputed here from the window's stored embeddings and
confidences with the same numbers the gateway used, so a window logged before the gateway
scored requests is judged the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from monitors.results import Estimate

if TYPE_CHECKING:
    from lifecycle.labels.discovery import Discovery
    from lifecycle.model.ood import OutOfScopeDetector
    from monitors.frames import MonitorData

logger = logging.getLogger(__name__)

#: Discovery looks at rows scoring above this quantile of the reference's in-scope scores.
DISCOVERY_QUANTILE = 0.8


@dataclass(frozen=True, eq=False)
class OpenWorld:
    """A champion's detector and what the checks compare with: its in-scope score
    distribution on the reference and one centroid per known label."""

    detector: OutOfScopeDetector
    reference_scores: np.ndarray
    labels: tuple[str, ...]
    centroids: np.ndarray
    #: Set when the detector was not stored with the version (fitted from the reference).
    note: str = ""
    #: Each label's share of the version's answers on its reference (surges compare with it).
    shares: dict[str, float] = field(default_factory=dict)


def prepare(
    reference: MonitorData, detector: OutOfScopeDetector | None, *, target_rate: float
) -> OpenWorld | None:
    """Ready the open-world part from the reference rows; None without embeddings."""
    from lifecycle.labels.requests import reference_shares
    from lifecycle.model.ood import fit_from_reference

    emb = reference.embeddings
    if emb is None:
        return None
    ok = np.isfinite(emb).all(axis=1)
    truth = reference.frame["true_label"].astype(str).to_numpy()
    conf = reference.frame["confidence"].to_numpy(dtype=float)
    note = ""
    held_out = np.flatnonzero(ok)
    if detector is None:
        if ok.sum() < 20:
            return None
        detector, half = fit_from_reference(
            emb[ok], list(truth[ok]), conf[ok], target_rate=target_rate
        )
        held_out = held_out[half]
        note = (
            "no out-of-scope detector stored with this version (trained before detectors): "
            f"fitted one from its {int(ok.sum())} reference rows, weaker than one fitted at "
            "training time; retrain to store one"
        )
    labels = tuple(sorted(set(truth[ok].tolist())))
    centroids = np.stack([_unit(emb[ok][truth[ok] == label].mean(axis=0)) for label in labels])
    return OpenWorld(
        detector=detector,
        reference_scores=detector.score(emb[held_out], conf[held_out]),
        labels=labels,
        centroids=centroids,
        note=note,
        shares=reference_shares(reference.frame) or {},
    )


def estimate(
    world: OpenWorld, current: MonitorData, *, out_of_scope_label: str | None = None
) -> tuple[Estimate | None, np.ndarray]:
    """The window's accuracy estimate, and each row's out-of-scope score. Rows the model
    answered with the spec's ``out_of_scope_label`` count by their confidence: "not mine"
    is the right answer for out-of-scope traffic."""
    from monitors.estimate import estimate_accuracy

    frame = current.frame
    conf = frame["confidence"].to_numpy(dtype=float)
    if current.embeddings is None:
        scores = np.full(len(frame), np.nan)
    else:
        scores = world.detector.score(current.embeddings, conf)
    truth = frame["true_label"]
    correct = np.where(
        truth.notna().to_numpy(),
        (truth.astype(str) == frame["prediction"].astype(str)).to_numpy(dtype=float),
        np.nan,
    )
    result = estimate_accuracy(
        confidence=conf,
        scores=scores,
        reference_scores=world.reference_scores,
        threshold=world.detector.threshold,
        correct=correct,
        predicted_out_of_scope=None
        if out_of_scope_label is None
        else (frame["prediction"].astype(str) == out_of_scope_label).to_numpy(),
    )
    if result is None:
        return None, scores
    return (
        Estimate(
            accuracy=result.accuracy,
            accuracy_low=result.interval[0],
            accuracy_high=result.interval[1],
            out_of_support=1.0 - result.in_scope_share,
            out_of_scope=result.flagged_share,
            labels_used=result.labels_used,
            method=result.method,
            label_free=result.label_free,
            assumptions=result.assumptions,
        ),
        scores,
    )


def discover_new_traffic(
    world: OpenWorld,
    current: MonitorData,
    scores: np.ndarray,
    *,
    min_cluster_size: int,
    surges: Sequence[dict[str, Any]] = (),
    in_scope_share: float = 1.0,
) -> tuple[Discovery, np.ndarray, np.ndarray]:
    """Clusters of the window's flagged rows, plus one group per surging label (its hidden
    new intent, :func:`hidden_rows`); those rows' embeddings (for the map) and their
    positions in the window (what a cluster's ``members`` index)."""
    from lifecycle.labels.discovery import discover

    flagged = candidates(world, scores)
    groups = hidden_rows(world, current, scores, flagged, surges, in_scope_share)
    rows = np.concatenate([np.flatnonzero(flagged), *groups.values()]).astype(int)
    start = int(flagged.sum())
    hidden: dict[str, list[int]] = {}
    for label, members in groups.items():
        hidden[label] = list(range(start, start + len(members)))
        start += len(members)
    emb = (
        current.embeddings[rows]
        if current.embeddings is not None
        else np.zeros((0, world.centroids.shape[1]), dtype=np.float32)
    )
    texts: Sequence[str | None] = [
        t if isinstance(t, str) else None for t in current.frame["text"].iloc[rows]
    ]
    found = discover(
        texts=texts,
        embeddings=emb,
        window_rows=len(current),
        known_labels=world.labels,
        known_centroids=world.centroids,
        min_cluster_size=min_cluster_size,
        hidden=hidden,
    )
    return found, emb, rows


def hidden_rows(
    world: OpenWorld,
    current: MonitorData,
    scores: np.ndarray,
    flagged: np.ndarray,
    surges: Sequence[dict[str, Any]],
    in_scope_share: float = 1.0,
) -> dict[str, np.ndarray]:
    """Per surging label, the window positions of its unflagged answers beyond the count its
    reference share predicts, most atypical (highest score) first.

    The label's usual traffic is its reference share of the window's in-scope rows (the
    estimate's ``in_scope_share``: new traffic displaces known traffic, so a share of the whole
    window would overcount it), and ``DISCOVERY_QUANTILE`` of those rows stay unflagged; the
    rest of its unflagged answers, the excess, are where a new intent hides. Which of them are the
    intruders no score tells well (the detector is blind there), so the most atypical are
    taken: an ordering that helps a little and costs nothing.
    """
    if current.embeddings is None:
        return {}
    predicted = current.frame["prediction"].astype(str).to_numpy()
    usable = np.isfinite(np.asarray(scores, dtype=float))
    out: dict[str, np.ndarray] = {}
    for surge in surges:
        mine = np.flatnonzero((predicted == surge["label"]) & ~flagged & usable)
        usual = float(surge["expected"]) * min(max(in_scope_share, 0.0), 1.0)
        take = len(mine) - round(usual * DISCOVERY_QUANTILE)
        if take <= 0:
            continue
        order = mine[np.argsort(-np.asarray(scores, dtype=float)[mine], kind="stable")]
        out[str(surge["label"])] = np.sort(order[:take])
    return out


def candidates(world: OpenWorld, scores: np.ndarray) -> np.ndarray:
    """Rows discovery clusters: past the ``DISCOVERY_QUANTILE`` of in-scope scores, a looser
    cut than the flag's. A new intent near known ones is only partly flagged; its other rows
    score high too, while the in-scope rows let in are spread thin over every known label,
    too few per label to form a cluster of their own."""
    ref = world.reference_scores[np.isfinite(world.reference_scores)]
    cut = float(np.quantile(ref, DISCOVERY_QUANTILE)) if len(ref) else world.detector.threshold
    cut = min(cut, world.detector.threshold)
    return np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf) > cut


def write_artifacts(
    world: OpenWorld, found: Discovery, embeddings: np.ndarray, folder: Path
) -> list[Path]:
    """The clusters as a table (CSV) and a 2-D map (PNG), for the check's MLflow folder."""
    from lifecycle.labels.discovery_views import discovery_map, discovery_table

    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "discovery.csv"
    discovery_table(found).to_csv(table, index=False)
    paths = [table]
    if found.clusters:
        try:
            figure = discovery_map(found, embeddings, world.centroids, world.labels)
            image = folder / "discovery.png"
            figure.savefig(image, dpi=110)
            paths.append(image)
        except Exception:  # a figure must never cost the check its verdict
            logger.exception("could not draw the discovery map")
    return paths


def window_figures(world: OpenWorld, scores: np.ndarray) -> dict[str, Any]:
    """What the window's JSON says about the detector and its flags."""
    flagged = world.detector.flags(scores)
    usable = np.isfinite(scores)
    return {
        "out_of_scope": int(flagged.sum()),
        "out_of_scope_share": float(flagged.mean()) if len(flagged) else 0.0,
        "unscored": int((~usable).sum()),
        "detector": {**world.detector.describe(), **({"note": world.note} if world.note else {})},
    }


def assess_open_world(
    world: OpenWorld,
    current: MonitorData,
    window: dict[str, Any],
    *,
    min_cluster_size: int,
    artifacts: bool,
    out_of_scope_label: str | None = None,
) -> tuple[Estimate | None, dict[str, Any]]:
    """The estimate and the discovery's JSON for one window; adds the detector's figures
    (and, with ``artifacts``, the paths of the table and map to log) to ``window``."""
    import tempfile

    result, scores = estimate(world, current, out_of_scope_label=out_of_scope_label)
    window.update(window_figures(world, scores))
    surges = surges_of(world, current)
    found, embeddings, _ = discover_new_traffic(
        world,
        current,
        scores,
        min_cluster_size=min_cluster_size,
        surges=surges,
        in_scope_share=1.0 if result is None else 1.0 - result.out_of_support,
    )
    if artifacts:
        folder = Path(tempfile.mkdtemp(prefix="lifecycle-discovery-"))
        window["artifacts"] = [str(p) for p in write_artifacts(world, found, embeddings, folder)]
    found_dict = found.as_dict()
    for cluster in found_dict.get("clusters", []):
        cluster.pop("members", None)  # row positions: for tests and benches, not the JSON
    found_dict["surges"] = surges
    if surges:
        # The detector's blind spot, said: a new intent close to a known one is answered
        # confidently as that one, unflagged, and counted right by the estimate.
        line = surge_line(surges)
        found_dict["headline"] += f"; {line}"
        if result is not None:
            result = replace(
                result,
                assumptions=(
                    *result.assumptions,
                    f"{line}: a new intent hiding in those answers is counted right",
                ),
            )
    return result, found_dict


def surges_of(world: OpenWorld, current: MonitorData) -> list[dict[str, Any]]:
    """The labels the window gives far more often than the reference (``surging_labels``)."""
    from lifecycle.labels.requests import surging_labels

    if not world.shares:
        return []
    found = surging_labels(current.frame["prediction"].astype(str).tolist(), world.shares)
    return [
        {
            "label": s.label,
            "observed": s.observed,
            "expected": round(s.expected, 1),
            "ratio": round(s.ratio, 2),
            "p_value": s.p_value,
        }
        for s in found
    ]


def surge_line(surges: Sequence[dict[str, Any]]) -> str:
    """One line naming the surging labels, largest excess first."""
    named = ", ".join(f"{s['label']} ({s['ratio']:.1f}x)" for s in surges[:3])
    more = f" and {len(surges) - 3} more" if len(surges) > 3 else ""
    return f"answered far more often than on the reference: {named}{more}"


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v
