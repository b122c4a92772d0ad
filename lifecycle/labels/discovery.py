"""Intent discovery: what the out-of-scope requests of one window are about.

The open-world detector says *that* requests fall outside the champion's labels; this module
says *what* they are, so that a person can name new intents from a handful of groups instead
of reading hundreds of requests. Input: the flagged rows of one window (texts, possibly
withheld by the store policy, and the champion's L2-normalised embeddings), and the
champion's known labels with one centroid each. Output: a ``Discovery`` with clusters sorted
by size, each with c-TF-IDF terms, representative examples and the nearest known label.

Method, and why (``bench/discovery_probe.py`` measures it on Banking77 + SNIPS windows: 10
unseen intents of 40-80 requests, 100 SNIPS queries, 25 known-intent false alarms):

- Agglomerative clustering (scikit-learn), average linkage on cosine distance, cut where
  members are on average ``THRESHOLD`` apart; groups under ``min_cluster_size`` are noise.
  A fixed similarity cut asks the question we mean ("which requests say the same thing?")
  whatever the density of the rest of the window. Over 10 windows, an unseen intent got a
  cluster of purity >= 0.8 covering >= 50% of it 96/100 times on the open-world champion's
  embeddings, 76/100 on the base MiniLM (whose misses are near-synonymous intent pairs, e.g.
  card_arrival / card_delivery_estimate). HDBSCAN did worse on the same windows: 90 and 65
  with eom selection, 48 and 51 with leaf: it cuts an intent into dense cores and a fringe
  of noise, so coverage falls. A cut at 0.45 scored 87/80 (champion/base), 0.55 97/70.
- At most ``MAX_CLUSTERED`` rows are clustered (a seeded sample, under a second); every
  other row joins the cluster it is most similar to on average if that passes the same
  cut (the test average linkage applies), else it stays noise. 10k rows: about 1 s.
- A new intent that the champion answers confidently as a known one is not flagged and lies
  among that label's rows: no cut parts it from them. What gives it away is the label's
  share of the answers (``lifecycle.labels.requests.surging_labels``); the caller hands those
  answers in as a ``hidden`` group, described like a cluster and marked ``hidden_under``.
- Terms: BERTopic's class-based TF-IDF, each cluster's texts joined as one document, with
  the unclustered texts as one more document so that words common to all traffic sink.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Rows clustered at most (about 0.8 s on one core); the others join the clusters found.
MAX_CLUSTERED = 4000
#: Average-linkage cut: a cluster's members are, on average, at most this cosine distance
#: apart (mean similarity >= 0.5). Measured on Banking77: 0.5 balances purity and coverage.
THRESHOLD = 0.5


@dataclass(frozen=True, slots=True)
class Cluster:
    """One group of similar out-of-scope requests."""

    id: int
    size: int
    share: float
    top_terms: tuple[str, ...]
    examples: tuple[str, ...]
    nearest_label: str | None
    nearest_distance: float | None
    members: tuple[int, ...]
    #: Set for a group handed in whole (``discover``'s ``hidden``): requests answered
    #: confidently as this known label, beyond its usual share, not a cluster of flagged rows.
    hidden_under: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("top_terms", "examples", "members"):
            data[key] = list(data[key])
        return data


@dataclass(frozen=True, slots=True)
class Discovery:
    """The clusters among one window's out-of-scope rows, and what was left out.

    ``rows`` = sum of the cluster sizes + ``unclustered`` + ``excluded`` (rows without a
    usable embedding); ``withheld`` counts rows whose text the store policy kept back.
    """

    clusters: tuple[Cluster, ...]
    rows: int
    window_rows: int
    unclustered: int
    excluded: int
    withheld: int
    notes: tuple[str, ...] = ()

    def assignments(self) -> list[int]:
        """Each input row's cluster id, -1 for rows in none."""
        out = [-1] * self.rows
        for c in self.clusters:
            for m in c.members:
                out[m] = c.id
        return out

    def headline(self) -> str:
        """One line for an alert: how many clusters, what the largest looks like, and the
        largest group hiding under a known label."""
        found = [c for c in self.clusters if c.hidden_under is None]
        hidden = [c for c in self.clusters if c.hidden_under is not None]
        if not found:
            line = (
                f"no clusters among {self.rows - sum(c.size for c in hidden)} out-of-scope requests"
            )
        else:
            n = len(found)
            line = f"{n} cluster{'s' if n != 1 else ''} of new traffic, largest: "
            line += f"{found[0].size} requests{_looks(found[0])}"
        if hidden:
            top = max(hidden, key=lambda c: c.size)
            line += (
                f"; {top.size} requests answered {top.hidden_under!r} beyond its usual share "
                f"may be a new intent{_looks(top)}"
            )
        return line

    def as_dict(self) -> dict[str, Any]:
        return {
            "clusters": [c.as_dict() for c in self.clusters],
            "rows": self.rows,
            "window_rows": self.window_rows,
            "unclustered": self.unclustered,
            "excluded": self.excluded,
            "withheld": self.withheld,
            "notes": list(self.notes),
            "headline": self.headline(),
        }


def discover(
    *,
    texts: Sequence[str | None],
    embeddings: np.ndarray,
    window_rows: int,
    known_labels: Sequence[str],
    known_centroids: np.ndarray,
    min_cluster_size: int = 10,
    examples: int = 5,
    terms: int = 8,
    seed: int = 0,
    hidden: Mapping[str, Sequence[int]] | None = None,
) -> Discovery:
    """Cluster one window's out-of-scope rows and describe each cluster.

    ``texts[i]`` and ``embeddings[i]`` describe row ``i``; a text is None where the store
    policy withheld it (clusters still form, examples and terms come from the rows with
    text). Rows whose embedding holds NaN are excluded and counted. Never raises on odd
    inputs (no rows, too few rows, identical rows): the notes say why nothing was found.

    ``hidden`` maps a known label to rows (positions in ``texts``) that form one group as
    they are, not clustered: a new intent that the model answers confidently as a known one
    lies among that label's rows, where no similarity cut can part it from them. Such a group
    is described like a cluster, after the clusters, with ``hidden_under`` set; one under
    ``min_cluster_size`` usable rows is left out.
    """
    n = len(texts)
    emb = as_matrix(embeddings)
    if len(emb) != n:
        raise ValueError(f"texts has {n} rows but embeddings has {len(emb)}: they must align")
    clean = [t if isinstance(t, str) and t.strip() else None for t in texts]
    withheld = sum(t is None for t in clean)
    with np.errstate(invalid="ignore"):
        norms = np.linalg.norm(emb, axis=1)
    # NaN rows (no embedding stored) and zero rows (no direction) cannot be placed.
    index = np.flatnonzero(np.isfinite(emb).all(axis=1) & (norms > 0))
    notes: list[str] = []
    if n - len(index):
        notes.append(f"{n - len(index)} rows without a usable embedding were left out")
    if n and withheld == n:
        notes.append("every text was withheld: no examples or terms, counts only")
    min_size = max(1, int(min_cluster_size))

    def empty(reason: str) -> Discovery:
        return Discovery((), n, window_rows, len(index), n - len(index), withheld, (*notes, reason))

    if len(index) == 0:
        return empty("no rows to cluster")
    x = emb[index] / norms[index, None]
    group = np.full(len(index), -1)
    group_names: list[str] = []
    for name, rows in (hidden or {}).items():
        chosen = np.isin(index, np.asarray(rows, dtype=int)) & (group == -1)
        if chosen.sum() >= min_size:
            group[chosen] = len(group_names)
            group_names.append(str(name))
        else:  # too small to show, and not the clusterer's to take either
            group[chosen] = -2
    free = np.flatnonzero(group == -1)
    labels = np.full(len(index), -1)
    if len(free) >= min_size:
        labels[free] = _cluster(x[free], min_size=min_size, seed=seed)
    ids = [int(k) for k in np.unique(labels) if k >= 0]
    if not ids and not group_names:
        if len(index) < min_size:
            return empty(f"{len(index)} rows are fewer than min_cluster_size={min_size}")
        return empty("no group of similar rows stood out from the rest")

    # Largest first; ties broken by first member so that ids are stable across runs. The
    # hidden groups follow, in the order given.
    ids.sort(key=lambda k: (-int((labels == k).sum()), int(np.argmax(labels == k))))
    first_group = max(ids, default=-1) + 1
    for g in range(len(group_names)):
        labels[group == g] = first_group + g
        ids.append(first_group + g)
    under: list[str | None] = [None] * (len(ids) - len(group_names)) + list(group_names)
    member_rows = [np.flatnonzero(labels == k) for k in ids]
    centroids = np.stack([_unit(x[m].mean(axis=0)) for m in member_rows])
    term_lists = _c_tf_idf(
        [[clean[i] for i in index[m]] for m in member_rows],
        [clean[i] for i in index[labels < 0]],
        terms,
    )
    nearest: list[tuple[str | None, float | None]] = [(None, None)] * len(ids)
    names, known = usable_centroids(known_labels, known_centroids, x.shape[1])
    if names:
        sims = centroids @ known.T
        best = sims.argmax(axis=1)
        nearest = [(names[b], round(float(1.0 - sims[i, b]), 6)) for i, b in enumerate(best)]
    elif len(known_labels):
        notes.append("known centroids do not match the embeddings: no nearest label")
    clusters = []
    for cid, (m, centroid, top, near, label) in enumerate(
        zip(member_rows, centroids, term_lists, nearest, under, strict=True)
    ):
        order = m[np.argsort(-(x[m] @ centroid), kind="stable")]
        clusters.append(
            Cluster(
                id=cid,
                size=len(m),
                share=len(m) / window_rows if window_rows > 0 else 0.0,
                top_terms=tuple(top),
                examples=_examples([clean[i] for i in index[order]], examples),
                nearest_label=near[0],
                nearest_distance=near[1],
                members=tuple(sorted(int(i) for i in index[m])),
                hidden_under=label,
            )
        )
    unclustered = len(index) - sum(c.size for c in clusters)
    logger.debug("discovery: %d clusters, %d of %d rows unclustered", len(clusters), unclustered, n)
    return Discovery(
        tuple(clusters), n, window_rows, unclustered, n - len(index), withheld, tuple(notes)
    )


def _cluster(x: np.ndarray, *, min_size: int, seed: int) -> np.ndarray:
    """Cluster labels for the unit rows ``x`` (-1: in no cluster of ``min_size`` rows)."""
    from sklearn.cluster import AgglomerativeClustering

    n = len(x)
    labels = np.full(n, -1, dtype=int)
    if n == 1:  # the clusterer needs two rows; one row is a cluster only if one may be
        labels[0] = 0 if min_size <= 1 else -1
        return labels
    rng = np.random.default_rng(seed)
    sample = np.arange(n)
    if n > MAX_CLUSTERED:
        sample = np.sort(rng.choice(n, MAX_CLUSTERED, replace=False))
    found = AgglomerativeClustering(
        n_clusters=None, distance_threshold=THRESHOLD, metric="cosine", linkage="average"
    ).fit_predict(x[sample])
    labels[sample] = found
    rest = np.setdiff1d(np.arange(n), sample)
    if len(rest):
        # A row outside the sample joins the cluster whose members it is most similar to on
        # average, if that average passes the same threshold that built the clusters (the
        # test average linkage would apply to it): sum of unit vectors / n = mean similarity.
        # Clusters too small in the sample to reach min_size after scaling take no one.
        ids, counts = np.unique(found, return_counts=True)
        ids = ids[counts >= max(1, math.ceil(min_size * len(sample) / n))]
        if len(ids):
            means = np.stack([x[sample[found == k]].mean(axis=0) for k in ids])
            sims = x[rest] @ means.T
            best = sims.argmax(axis=1)
            close = 1.0 - sims[np.arange(len(rest)), best] <= THRESHOLD
            labels[rest[close]] = ids[best[close]]
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    labels[np.isin(labels, ids[counts < min_size])] = -1
    return labels


def as_matrix(values: np.ndarray) -> np.ndarray:
    """``values`` as a float32 matrix, one row per item (an empty input of any shape is fine)."""
    array = np.asarray(values, dtype=np.float32)
    if array.size == 0:
        return np.zeros((len(array) if array.ndim else 0, 0), dtype=np.float32)
    return array.reshape(len(array), -1) if array.ndim else array.reshape(1, -1)


def usable_centroids(
    labels: Sequence[str], centroids: np.ndarray, dims: int
) -> tuple[list[str], np.ndarray]:
    """The known labels whose centroid is usable, and those centroids as unit rows."""
    matrix = as_matrix(centroids)
    if len(matrix) != len(labels) or matrix.shape[1] != dims:
        return [], np.zeros((0, dims), dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1)
    good: np.ndarray = np.isfinite(matrix).all(axis=1) & (norms > 0)
    names = [str(label) for label, ok in zip(labels, good.tolist(), strict=True) if ok]
    return names, matrix[good] / norms[good, None]


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def _examples(texts: Sequence[str | None], limit: int) -> tuple[str, ...]:
    """Up to ``limit`` distinct texts, in the given (nearest-first) order."""
    seen: set[str] = set()
    out: list[str] = []
    for t in texts:
        if t is None:
            continue
        key = " ".join(t.lower().split())
        if key not in seen:
            seen.add(key)
            out.append(t.strip())
        if len(out) >= limit:
            break
    return tuple(out)


def _c_tf_idf(
    clusters: Sequence[Sequence[str | None]], background: Sequence[str | None], top: int
) -> list[list[str]]:
    """The ``top`` terms of each cluster by class-based TF-IDF (BERTopic's c-TF-IDF).

    Each cluster's texts form one document; the unclustered texts one more (as BERTopic keeps
    its outlier topic), so that words spread over all traffic score low. Weight of term t in
    cluster c: tf(t, c) / words(c) * log(1 + mean words per document / tf(t, all)).
    """
    from sklearn.feature_extraction.text import CountVectorizer

    docs = [" ".join(t for t in texts if t) for texts in clusters]
    extra = " ".join(t for t in background if t)
    if top <= 0 or not any(d.strip() for d in docs):
        return [[] for _ in clusters]
    corpus = [*docs, extra] if extra.strip() else docs
    try:
        counts = CountVectorizer(stop_words="english").fit(corpus)
    except ValueError:  # only stop words or punctuation: no vocabulary at all
        return [[] for _ in clusters]
    tf = counts.transform(corpus).toarray().astype(float)
    words = tf.sum(axis=1, keepdims=True)
    idf = np.log(1.0 + words.mean() / np.maximum(tf.sum(axis=0), 1.0))
    weights = np.divide(tf, words, out=np.zeros_like(tf), where=words > 0) * idf
    vocab = counts.get_feature_names_out()
    out = []
    for row in weights[: len(docs)]:
        order = np.argsort(-row, kind="stable")
        out.append([str(vocab[j]) for j in order[:top] if row[j] > 0])
    return out


def _looks(c: Cluster) -> str:
    if c.examples:
        return f" like {_quote(c.examples[0])}"
    if c.top_terms:
        return f", terms: {', '.join(c.top_terms[:5])}"
    return ""


def _quote(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return f"'{text if len(text) <= limit else text[: limit - 1] + '…'}'"


def purity_coverage(d: Discovery, true_labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per true label: its best cluster (holding most of its rows), that cluster's purity
    (share of its members with the label) and coverage (share of the label's rows in it).

    ``cluster`` is -1 with purity and coverage 0 for a label none of whose rows clustered.
    """
    if len(true_labels) != d.rows:
        raise ValueError(f"{len(true_labels)} labels for {d.rows} rows: they must align")
    assigned = d.assignments()
    sizes = {c.id: c.size for c in d.clusters}
    out: dict[str, dict[str, float]] = {}
    for label in sorted({str(t) for t in true_labels}):
        rows = [a for t, a in zip(true_labels, assigned, strict=True) if str(t) == label]
        counts = {k: rows.count(k) for k in set(rows) if k >= 0}
        if not counts:
            out[label] = {"cluster": -1.0, "rows": float(len(rows)), "purity": 0.0, "coverage": 0.0}
            continue
        best = max(counts, key=lambda k: (counts[k], -k))
        out[label] = {
            "cluster": float(best),
            "rows": float(len(rows)),
            "purity": counts[best] / sizes[best],
            "coverage": counts[best] / len(rows),
        }
    return out
