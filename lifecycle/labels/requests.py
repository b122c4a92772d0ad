"""Label requests: which of a specialist's recent requests are most worth a person's label.

People label few requests; these are the ones that teach or decide the most:

- **out of scope**: requests the champion's detector flagged (or that score in the top
  ``OOD_TOP_SHARE`` of their window), clustered on their embeddings with
  ``lifecycle.labels.discovery.discover`` and taken round-robin across clusters, so that each group
  of new traffic (each candidate new intent) gets labels, not only the largest;
- **disagreement**: shadowed requests where the challenger's label differs from the
  champion's. Only discordant pairs move the promotion gate's paired test, so a label there
  is worth many on agreeing pairs;
- **low confidence**: the champion's least confident answers (under ``LOW_CONFIDENCE`` or
  the spec's escalation threshold, whichever is higher), least confident first;
- **surge**: requests answered with a label the champion now gives far more often than on its
  own reference rows (:func:`surging_labels`). A new intent close to a known one is answered
  confidently as that one and is neither flagged nor unsure: the only trace it leaves is the
  known label's surge. Its requests are asked most atypical first (highest ``ood_score``),
  as many as the label's excess over its expected count, since beyond that they are mostly
  the label's own traffic.

The four queues are interleaved (one of each in turn) and a request already labelled by a
person is left out. :func:`rank_label_requests` is the pure ranking over data frames;
:func:`label_requests` reads the store and calls it, for the gateway's route and the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from lifecycle.config.spec import SpecialistSpec

OUT_OF_SCOPE = "out_of_scope"
DISAGREEMENT = "disagreement"
LOW_CONFIDENCE_REASON = "low_confidence"
SURGE = "surge"
#: Besides the rows the detector flags, a version's highest-scoring share of the window is a
#: candidate too: a new intent near known ones is only partly flagged.
OOD_TOP_SHARE = 0.05
#: Answers under this confidence (or the spec's escalation threshold, if higher) are asked.
LOW_CONFIDENCE = 0.5
#: A label surges when the window gives it at least ``SURGE_RATIO`` times, and at least
#: ``SURGE_MIN_ROWS`` requests more than, its share of the version's answers on its reference
#: rows, and a Poisson test on that count says p < ``SURGE_ALPHA``: a window of 1,000 holds 77
#: labels' counts, so chance alone must not name one.
SURGE_RATIO = 2.0
SURGE_MIN_ROWS = 10
SURGE_ALPHA = 1e-3
TEXT_WITHHELD_NOTE = (
    "the traffic store keeps no texts (LIFECYCLE_STORE_TEXT={mode}): these are request ids "
    "only; find the texts in your own records to label them"
)


@dataclass(frozen=True, slots=True)
class LabelRequest:
    """One request worth a label, and why."""

    request_id: str
    text: str | None
    reason: str
    detail: str
    predicted: str
    confidence: float
    model_version: int
    challenger_label: str | None = None
    cluster: int | None = None
    ood_score: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LabelRequests:
    """A specialist's ranked label requests; ``text_withheld`` when the store keeps no text."""

    specialist: str
    items: list[LabelRequest] = field(default_factory=list)
    text_withheld: bool = False
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Surge:
    """A label answered far more often than on the version's reference rows."""

    label: str
    observed: int
    expected: float
    p_value: float

    @property
    def excess(self) -> float:
        return self.observed - self.expected

    @property
    def ratio(self) -> float:
        return self.observed / self.expected if self.expected > 0 else math.inf


def reference_shares(reference: pd.DataFrame) -> dict[str, float] | None:
    """Each label's share of a version's own answers on its reference rows (the ``prediction``
    column), the baseline :func:`surging_labels` compares a window with; None without one."""
    if "prediction" not in reference or len(reference) == 0:
        return None
    counts = reference["prediction"].astype(str).value_counts(normalize=True)
    return {str(k): float(v) for k, v in counts.items()}


def surging_labels(
    predicted: Sequence[str],
    expected_shares: Mapping[str, float],
    *,
    ratio: float = SURGE_RATIO,
    min_rows: int = SURGE_MIN_ROWS,
    alpha: float = SURGE_ALPHA,
) -> list[Surge]:
    """The labels of ``predicted`` (a window's answers) that surge against
    ``expected_shares``, the largest excess first. A label the reference never gave has no
    baseline and is left out (a new head row is not a surge)."""
    from collections import Counter

    from scipy.stats import poisson

    n = len(predicted)
    out: list[Surge] = []
    for label, observed in Counter(str(p) for p in predicted).items():
        share = expected_shares.get(label)
        if share is None or share <= 0:
            continue
        expected = share * n
        if observed < ratio * expected or observed - expected < min_rows:
            continue
        p_value = float(poisson.sf(observed - 1, expected))
        if p_value < alpha:
            out.append(Surge(label, observed, expected, p_value))
    return sorted(out, key=lambda s: (-s.excess, s.label))


def out_of_scope_candidates(window: pd.DataFrame, *, top_share: float = OOD_TOP_SHARE) -> Any:
    """Boolean mask of the window's out-of-scope candidates: flagged by the detector, or in the
    top ``top_share`` of their own version's ``ood_score`` (scores compare within a version)."""
    import numpy as np
    import pandas as pd

    if len(window) == 0:
        return pd.Series([], dtype=bool)
    flagged = window["out_of_scope"].astype("boolean").fillna(False).astype(bool)
    scores = pd.to_numeric(window["ood_score"], errors="coerce")
    high = pd.Series(False, index=window.index)
    for _, group in scores.groupby(window["model_version"]):
        finite = group[np.isfinite(group)]
        if len(finite) >= 2:
            cut = float(finite.quantile(1.0 - top_share))
            high.loc[finite.index] = finite >= cut
    return flagged | high


def rank_label_requests(
    window: pd.DataFrame,
    *,
    clusters: Mapping[str, int],
    shadow: pd.DataFrame | None = None,
    limit: int = 100,
    low_confidence: float = LOW_CONFIDENCE,
    top_share: float = OOD_TOP_SHARE,
    expected_shares: Mapping[str, float] | None = None,
) -> list[LabelRequest]:
    """The ranked queue over one window (``TrafficStore.window``'s columns).

    ``clusters`` maps each out-of-scope candidate's request id to its cluster (-1 or absent:
    in none); ``shadow`` is ``TrafficStore.shadow_pairs``'s frame (None: no challenger);
    ``expected_shares`` is :func:`reference_shares` of the window's version (None: no surge
    queue). Requests with a person's label are left out; each request appears once, under its
    first reason in the interleaving.
    """
    import pandas as pd

    if limit <= 0 or len(window) == 0:
        return []
    unlabelled = window[window["true_label_source"].astype(object) != "human"]
    rows = {str(r["id"]): r for r in unlabelled.to_dict("records")}

    def item(rid: str, reason: str, detail: str, **extra: Any) -> LabelRequest:
        r = rows[rid]
        text = r.get("text")
        return LabelRequest(
            request_id=rid,
            text=text if isinstance(text, str) else None,
            reason=reason,
            detail=detail,
            predicted=str(r["label"]),
            confidence=float(r["confidence"]),
            model_version=int(r["model_version"]),
            ood_score=_number(r.get("ood_score")),
            **extra,
        )

    # (a) out of scope, round-robin across clusters (largest first, unclustered last).
    mask = out_of_scope_candidates(unlabelled, top_share=top_share)
    candidates = unlabelled[mask.to_numpy()] if len(unlabelled) else unlabelled
    by_cluster: dict[int, list[tuple[float, str]]] = {}
    for r in candidates.to_dict("records"):
        rid = str(r["id"])
        k = int(clusters.get(rid, -1))
        by_cluster.setdefault(k, []).append((-(_number(r.get("ood_score")) or 0.0), rid))
    order = sorted(by_cluster, key=lambda k: (k < 0, k))
    queues = [[rid for _, rid in sorted(by_cluster[k])] for k in order]
    out_of_scope = [
        item(
            rid,
            OUT_OF_SCOPE,
            f"out of scope, cluster {clusters[rid]}"
            if clusters.get(rid, -1) >= 0
            else "out of scope, in no cluster",
            cluster=clusters[rid] if clusters.get(rid, -1) >= 0 else None,
        )
        for rid in _round_robin(queues)
    ]

    # (b) champion/challenger disagreements in shadow, least confident champion first.
    disagreements: list[LabelRequest] = []
    if shadow is not None and len(shadow):
        split = shadow[
            (shadow["challenger_label"] != shadow["champion_label"])
            & (shadow["true_label_source"].astype(object) != "human")
        ].sort_values("champion_confidence", kind="stable")
        for r in split.to_dict("records"):
            rid = str(r["request_id"])
            if rid in rows:
                disagreements.append(
                    item(
                        rid,
                        DISAGREEMENT,
                        f"champion says {r['champion_label']!r}, challenger "
                        f"v{int(r['challenger_version'])} says {r['challenger_label']!r}",
                        challenger_label=str(r["challenger_label"]),
                    )
                )

    # (c) low confidence, least confident first.
    unsure = unlabelled[unlabelled["confidence"].astype(float) < low_confidence]
    unsure = unsure.sort_values("confidence", kind="stable")
    low = [
        item(str(rid), LOW_CONFIDENCE_REASON, f"confidence {conf:.2f} < {low_confidence:.2f}")
        for rid, conf in zip(unsure["id"], unsure["confidence"].astype(float), strict=True)
    ]

    # (d) surges: each surging label in turn, largest excess first.
    surges: list[LabelRequest] = []
    if expected_shares:
        per_label = []
        for surge in surging_labels(window["label"].astype(str).tolist(), expected_shares):
            mine = unlabelled[unlabelled["label"].astype(str) == surge.label]
            scores = pd.to_numeric(mine["ood_score"], errors="coerce").fillna(-math.inf)
            mine = mine.assign(_score=scores.to_numpy()).sort_values(
                "_score", ascending=False, kind="stable"
            )
            detail = (
                f"answered {surge.label!r} {surge.ratio:.1f}x as often as on its reference "
                f"rows ({surge.observed} against {surge.expected:.0f} expected): a new intent "
                "may hide in it"
            )
            take = mine["id"].head(math.ceil(surge.excess))
            per_label.append([item(str(rid), SURGE, detail) for rid in take])
        surges = list(_round_robin(per_label))

    ranked: list[LabelRequest] = []
    seen: set[str] = set()
    for one in _round_robin([out_of_scope, disagreements, low, surges]):
        if one.request_id not in seen:
            seen.add(one.request_id)
            ranked.append(one)
            if len(ranked) == limit:
                break
    return ranked


def label_requests(
    store: Any,
    spec: SpecialistSpec,
    *,
    champion_version: int | None,
    challenger_version: int | None = None,
    store_text: str = "full",
    limit: int = 100,
    last: int | None = None,
    expected_shares: Mapping[str, float] | None = None,
) -> LabelRequests:
    """A specialist's ranked label requests over its newest window (``last`` requests of the
    champion, default the spec's ``monitoring.window_size``), read from the traffic store.
    ``expected_shares``: the champion's :func:`reference_shares` (None: no surge queue).

    Blocking (store reads, and clustering of up to a few thousand rows, about a second): the
    gateway calls it in a thread.
    """
    window = store.window(
        spec.name,
        last=last or spec.monitoring.window_size,
        model_version=champion_version,
        with_embeddings=True,
    )
    shadow = None
    if challenger_version is not None and len(window):
        shadow = store.shadow_pairs(
            spec.name,
            challenger_version=challenger_version,
            since=window["created_at"].iloc[0].to_pydatetime(),
        )
    clusters = cluster_candidates(window, min_cluster_size=spec.monitoring.discovery_min_cluster)
    items = rank_label_requests(
        window,
        clusters=clusters,
        shadow=shadow,
        limit=limit,
        low_confidence=max(LOW_CONFIDENCE, spec.escalation.confidence_threshold),
        expected_shares=expected_shares if spec.task == "classification" else None,
    )
    if store_text != "full":
        # The policy holds for rows stored before it was set, too: no text leaves the store.
        items = [replace(i, text=None) for i in items]
    withheld = store_text != "full" or any(i.text is None for i in items)
    note = TEXT_WITHHELD_NOTE.format(mode=store_text) if withheld else None
    return LabelRequests(spec.name, items, text_withheld=withheld, note=note)


def cluster_candidates(window: pd.DataFrame, *, min_cluster_size: int) -> dict[str, int]:
    """Each out-of-scope candidate's cluster (``lifecycle.labels.discovery.discover``), by
    request id.

    Rows without a stored embedding are in no cluster (they are still asked, last).
    """
    import numpy as np

    from lifecycle.labels.discovery import discover

    if len(window) == 0 or "embedding" not in window:
        return {}
    candidates = window[out_of_scope_candidates(window).to_numpy()]
    if len(candidates) == 0:
        return {}
    vectors = [e for e in candidates["embedding"] if e is not None]
    if not vectors:
        return {}
    dims = len(vectors[0])
    matrix = np.full((len(candidates), dims), np.nan, dtype=np.float32)
    for i, e in enumerate(candidates["embedding"]):
        if e is not None and len(e) == dims:
            matrix[i] = e
    texts = [t if isinstance(t, str) else None for t in candidates["text"]]
    found = discover(
        texts=texts,
        embeddings=matrix,
        window_rows=len(window),
        known_labels=[],
        known_centroids=np.zeros((0, dims), dtype=np.float32),
        min_cluster_size=min_cluster_size,
        examples=0,
        terms=0,
    )
    ids = [str(i) for i in candidates["id"]]
    return {ids[i]: k for i, k in enumerate(found.assignments())}


def _round_robin(queues: Sequence[Sequence[Any]]) -> Iterable[Any]:
    """One from each queue in turn until all are empty."""
    for depth in range(max((len(q) for q in queues), default=0)):
        for q in queues:
            if depth < len(q):
                yield q[depth]


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number
