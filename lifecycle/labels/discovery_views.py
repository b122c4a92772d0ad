"""Views of a ``Discovery`` for people: a table and a 2-D map, for the check's MLflow folder
and notebooks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from lifecycle.labels.discovery import Discovery, as_matrix, usable_centroids

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

#: Clusters named in the map's legend.
_LEGEND = 12


def discovery_table(d: Discovery) -> pd.DataFrame:
    """One row per cluster, for a report or a notebook."""
    import pandas as pd

    columns = ["id", "size", "share", "top_terms", "nearest_label", "nearest_distance", "example"]
    return pd.DataFrame(
        [
            {
                "id": c.id,
                "size": c.size,
                "share": c.share,
                "top_terms": ", ".join(c.top_terms),
                "nearest_label": c.nearest_label,
                "nearest_distance": c.nearest_distance,
                "example": c.examples[0] if c.examples else None,
            }
            for c in d.clusters
        ],
        columns=columns,
    )


def discovery_map(
    d: Discovery,
    embeddings: np.ndarray,
    known_centroids: np.ndarray,
    known_labels: Sequence[str],
) -> Figure:
    """A 2-D map (PCA) of the rows, coloured by cluster (noise grey), with the known labels'
    centroids as labelled black crosses: where new traffic sits against what the model knows."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.decomposition import PCA

    fig = Figure(figsize=(8, 6))
    # Agg canvas on this figure only: no pyplot, no global backend switch for the process.
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set_title(d.headline(), fontsize=9)
    emb = as_matrix(embeddings)
    rows_ok: np.ndarray = (
        np.isfinite(emb).all(axis=1) if emb.shape[1] else np.zeros(len(emb), dtype=bool)
    )
    names, known = usable_centroids(known_labels, known_centroids, emb.shape[1])
    stacked = np.concatenate([emb[rows_ok], known])
    if len(stacked) < 2 or len(np.unique(stacked.round(5), axis=0)) < 2:
        ax.text(0.5, 0.5, "too few distinct rows to map", ha="center", transform=ax.transAxes)
        return fig
    pca = PCA(n_components=2).fit(stacked)
    xy = np.zeros((len(emb), 2))
    if rows_ok.any():
        xy[rows_ok] = pca.transform(emb[rows_ok])
    assigned = np.array(d.assignments()) if d.rows == len(emb) else np.full(len(emb), -1)
    noise = rows_ok & (assigned < 0)
    ax.scatter(xy[noise, 0], xy[noise, 1], s=6, c="lightgrey", label="unclustered")
    cmap = matplotlib.colormaps["tab20"]
    for c in d.clusters:
        m = rows_ok & (assigned == c.id)
        name = c.top_terms[0] if c.top_terms else f"{c.size} rows"
        # Only the largest clusters get a legend entry: a hundred entries help no one.
        label = f"{c.id}: {name} ({c.size})" if c.id < _LEGEND else None
        ax.scatter(xy[m, 0], xy[m, 1], s=8, color=cmap(c.id % 20), label=label)
    if names:
        k = pca.transform(known)
        ax.scatter(k[:, 0], k[:, 1], marker="x", c="black", s=40)
        for (px, py), name in zip(k, names, strict=True):
            ax.annotate(name, (px, py), fontsize=6)
    ax.legend(fontsize=6, loc="best", markerscale=2)
    return fig
