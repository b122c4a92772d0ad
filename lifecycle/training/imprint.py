"""Head rows for new labels that start where their examples are (weight imprinting).

A retrain that grows the head for a proposed label used to start that row at random: a
vector about a third as long as the trained rows, pointing nowhere in particular. Warm
started, the run is short (a few epochs over a few hundred rows, 10-30 of them for each new
label), and the new rows stay behind: in bench/loop.py's first grown head they ended at a
norm of 1.1-1.3 where the rows the parent had trained sat at ~1.9, so a new intent lost
close calls to its known neighbours.

Imprinting (Qi, Brown and Lowe, "Low-Shot Learning with Imprinted Weights", CVPR 2018)
starts a new class's row at its examples' mean embedding. Here the head is a plain linear
layer, so a row is split as trained rows are: the part every trained row shares (their
mean), which softmax ignores but which keeps the new row's logits on the same footing, plus
a class part, the direction from the mean of all training rows' embeddings to the mean of
the new label's, as long as the trained rows' own class parts are on average. The bias is
the trained rows' mean. Training then refines the row as it refines the others.
"""

from __future__ import annotations

import numpy as np


def imprinted_rows(
    known_weight: np.ndarray,
    known_bias: np.ndarray,
    class_means: np.ndarray,
    overall_mean: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Weight rows and biases for new labels.

    ``known_weight`` (k x d) and ``known_bias`` (k) are the trained rows; ``class_means``
    (m x d) the new labels' mean embeddings and ``overall_mean`` (d) that of the training
    rows, all in one embedding space. A class mean equal to the overall mean has no
    direction: its row is the shared part alone.
    """
    weight = np.asarray(known_weight, dtype=np.float64)
    if weight.ndim != 2 or len(weight) == 0:
        raise ValueError("imprinting needs at least one trained row")
    means = np.atleast_2d(np.asarray(class_means, dtype=np.float64))
    if means.shape[1] != weight.shape[1]:
        raise ValueError(
            f"class means have {means.shape[1]} dimensions, the head's rows {weight.shape[1]}"
        )
    shared = weight.mean(axis=0)
    scale = float(np.linalg.norm(weight - shared, axis=1).mean())
    direction = means - np.asarray(overall_mean, dtype=np.float64)
    norms = np.linalg.norm(direction, axis=1, keepdims=True)
    direction = np.divide(direction, norms, out=np.zeros_like(direction), where=norms > 1e-12)
    rows = shared + scale * direction
    bias = np.full(len(means), float(np.mean(known_bias)))
    return rows.astype(np.float32), bias.astype(np.float32)
