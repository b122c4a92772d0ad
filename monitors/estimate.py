"""Accuracy of a window when some of its traffic belongs to no label the model knows.

Calibrated confidences estimate accuracy well on the classes a model was trained for (CBPE),
and say nothing about the rest: a request from an undeclared intent is wrong whatever its
confidence. So the estimate has two parts.

Without labels: the in-scope share times the calibrated accuracy of in-scope rows. Each row's
chance of being in scope comes from its out-of-scope score: the detector's scores on the
reference (held-out in-scope rows) give the in-scope score distribution, the window's scores
are a mixture of it and an unknown out-of-scope one, and the in-scope share is read off the
lower 60% of the in-scope distribution, where out-of-scope rows are rare (a mixture-
proportion estimate). A row's weight is the share of its score bin the in-scope part
accounts for; the label-free figure is the mean of weight x confidence. Out-of-scope rows
count as wrong, unless the model predicted its own out-of-scope label.

With labels: prediction-powered inference (Angelopoulos et al., 2023), for the window's own
accuracy (a finite population). Labelled rows count as they are; the label-free per-row
figure is the prediction for the others, and the labelled rows measure its bias (label
minus prediction), which is added back; the interval is that bias's, scaled by the share of
unlabelled rows. It is valid whatever the label-free part gets wrong, provided the labelled
rows are a random sample of the window; a good label-free part only makes it narrower.

What it assumes, and says so in every result: confidences stay calibrated on in-scope rows;
the detector's in-scope score distribution holds in the window; out-of-scope rows seldom
score in the lower 60% of in-scope scores (rows of an unseen intent that look in scope
are counted as in scope: the estimate is blind to them, and is optimistic by their share
times their confidence); labels, when used, are a random sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Equal-mass bins of the in-scope score distribution (at most).
BINS = 10
#: Reference rows per bin at least: a small reference gets fewer, wider bins.
MIN_ROWS_PER_BIN = 10
#: The in-scope share is read from the bins below this quantile of in-scope scores: more mass
#: is less noise, more out-of-scope rows mixed in is more bias. bench/openworld.py's windows
#: (Banking77 release, SNIPS, in-scope) put the best trade at 0.6 (MAE 1.5 points; 0.5: 1.7,
#: 0.7: 2.2).
LOWER_MASS = 0.6
BOOTSTRAP_ROUNDS = 200
#: Labelled rows below this: the labels are shown but the estimate stays label-free.
MIN_PPI_LABELS = 10

ASSUMPTIONS_LABEL_FREE = (
    "confidences are calibrated on in-scope rows (as on the reference)",
    "in-scope rows score as the reference's held-out rows did",
    "out-of-scope rows seldom score like the most typical 60% of in-scope rows; those "
    "that do are counted as in scope, and make the estimate optimistic",
    "out-of-scope rows are wrong (no out-of-scope label in the set)",
)
ASSUMPTION_LABELS = "the labelled rows are a random sample of the window"


@dataclass(frozen=True, slots=True)
class OpenWorldEstimate:
    """The estimate, its interval and what it rests on."""

    accuracy: float
    interval: tuple[float, float]
    #: The label-free part alone, and the estimated share of in-scope rows in the window.
    label_free: float
    in_scope_share: float
    #: Rows the detector flags (its own threshold), and rows with a usable score.
    flagged_share: float
    scored_rows: int
    labels_used: int
    method: str  # "label-free" | "prediction-powered"
    assumptions: tuple[str, ...]


def row_predictions(
    *,
    confidence: np.ndarray,
    scores: np.ndarray,
    reference_scores: np.ndarray,
    predicted_out_of_scope: np.ndarray | None = None,
    all_in_scope: bool = False,
) -> tuple[np.ndarray, float]:
    """Each row's label-free chance of being answered right, and the in-scope share.

    Rows without a score (no embedding) are taken as in scope: nothing says otherwise.
    ``all_in_scope`` skips the share (the bootstrap keeps the full window's decision that
    there is no out-of-scope traffic, rather than re-deciding it on every resample).
    """
    conf = np.clip(np.nan_to_num(np.asarray(confidence, dtype=float), nan=0.0), 0.0, 1.0)
    s = np.asarray(scores, dtype=float)
    ref = np.asarray(reference_scores, dtype=float)
    ref = ref[np.isfinite(ref)]
    weight = np.ones(len(conf))
    share = 1.0
    scored = np.isfinite(s)
    # Equal-mass bins need reference rows in each: fewer bins for a small reference.
    bins = int(min(BINS, len(ref) // MIN_ROWS_PER_BIN))
    if bins >= 2 and scored.any() and not all_in_scope:
        edges = np.quantile(ref, np.linspace(0.0, 1.0, bins + 1))
        edges[0], edges[-1] = -np.inf, np.inf
        # Bin b holds in-scope mass 1/bins (by construction on the reference).
        index = np.clip(np.searchsorted(edges, s[scored], side="right") - 1, 0, bins - 1)
        counts = np.bincount(index, minlength=bins).astype(float)
        n = float(scored.sum())
        lower = max(1, round(bins * LOWER_MASS))
        mass = lower / bins
        observed = counts[:lower].sum() / n
        # Both the window and the reference (whose quantiles place the bins) are samples: a
        # deficit within two standard deviations of their joint noise is no evidence.
        spread = 1.0 / n + 1.0 / len(ref)
        noise_sd = math.sqrt(mass * (1 - mass) * spread)
        share = 1.0 if observed >= mass - 2 * noise_sd else observed / mass
        # A second witness: out-of-scope traffic fills the top bin past its in-scope mass. A
        # lower-bin deficit with no such excess is the reference not quite matching the
        # traffic (a prior shift, or a reference split that is easier than traffic), not new
        # traffic; and the excess itself is the least share the window can have.
        top = 1.0 / bins
        tail = counts[-1] / n - top
        tail_sd = math.sqrt(top * (1 - top) * spread)
        share = 1.0 if tail <= 2 * tail_sd else min(share, 1.0 - tail)
        expected = share * n / bins
        # (1 - share) x n rows are out of scope. They live at high scores: take them from the
        # highest bins first, each down to its in-scope expectation, never from the lower
        # bins the share was read from.
        per_bin = np.ones(bins)
        missing = (1.0 - share) * n
        for b in range(bins - 1, lower - 1, -1):
            if missing <= 0:
                break
            if counts[b] == 0:
                continue
            take = min(max(counts[b] - expected, 0.0), missing)
            per_bin[b] -= take / counts[b]
            missing -= take
        weight[scored] = per_bin[index]
    f = weight * conf
    if predicted_out_of_scope is not None:
        # The model itself said "none of mine": that answer is right when the row is.
        own = np.asarray(predicted_out_of_scope, dtype=bool)
        f = np.where(own, conf, f)
    return f, share


def estimate_accuracy(
    *,
    confidence: np.ndarray,
    scores: np.ndarray,
    reference_scores: np.ndarray,
    threshold: float | None,
    correct: np.ndarray | None = None,
    predicted_out_of_scope: np.ndarray | None = None,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> OpenWorldEstimate | None:
    """The window's accuracy: label-free, or prediction-powered where ``correct`` (1.0 right,
    0.0 wrong, NaN unlabelled, per row) has at least ``MIN_PPI_LABELS`` labels."""
    from scipy.stats import norm

    conf = np.asarray(confidence, dtype=float)
    if len(conf) == 0 or not np.isfinite(conf).any():
        return None
    keep = np.isfinite(conf)
    conf = conf[keep]
    s = np.asarray(scores, dtype=float)[keep]
    own = None if predicted_out_of_scope is None else np.asarray(predicted_out_of_scope)[keep]
    f, share = row_predictions(
        confidence=conf, scores=s, reference_scores=reference_scores, predicted_out_of_scope=own
    )
    flagged = float((np.nan_to_num(s, nan=-np.inf) > threshold).mean()) if threshold else 0.0
    y = None if correct is None else np.asarray(correct, dtype=float)[keep]
    labelled = np.zeros(len(f), dtype=bool) if y is None else np.isfinite(y)
    n_labels = int(labelled.sum())
    z = float(norm.ppf(0.5 + confidence_level / 2))
    common: dict[str, Any] = {
        "label_free": float(f.mean()),
        "in_scope_share": share,
        "flagged_share": flagged,
        "scored_rows": int(np.isfinite(s).sum()),
    }
    if n_labels >= MIN_PPI_LABELS and y is not None:
        # The target is this window's accuracy (a finite population): labelled rows count as
        # they are; each unlabelled row counts its label-free figure plus the bias the labels
        # measured. Only that bias is uncertain, and only for the unlabelled share.
        unlabelled = ~labelled
        rectifier = y[labelled] - f[labelled]
        bias = float(rectifier.mean())
        total = float(y[labelled].sum() + (f[unlabelled] + bias).sum())
        value = total / len(f)
        share_unlabelled = float(unlabelled.mean())
        # Two parts: the bias is estimated from the labelled rows, and each unlabelled row's
        # own outcome still varies around its figure plus that bias.
        sigma2 = float(rectifier.var(ddof=1))
        var = share_unlabelled**2 * sigma2 / n_labels + share_unlabelled * sigma2 / len(f)
        half = z * math.sqrt(max(var, 0.0))
        return OpenWorldEstimate(
            accuracy=_clip(value),
            interval=(_clip(value - half), _clip(value + half)),
            labels_used=n_labels,
            method="prediction-powered",
            assumptions=(ASSUMPTION_LABELS,),
            **common,
        )
    low, high = _bootstrap(
        conf, s, reference_scores, own, confidence_level, seed, all_in_scope=share >= 1.0
    )
    return OpenWorldEstimate(
        accuracy=_clip(float(f.mean())),
        interval=(low, high),
        labels_used=n_labels,
        method="label-free",
        assumptions=ASSUMPTIONS_LABEL_FREE,
        **common,
    )


def _bootstrap(
    conf: np.ndarray,
    scores: np.ndarray,
    reference: np.ndarray,
    own: np.ndarray | None,
    level: float,
    seed: int,
    *,
    all_in_scope: bool,
) -> tuple[float, float]:
    """Percentile interval of the label-free estimate over resampled window rows: the
    sampling noise of the window and of the in-scope share, not the assumptions' error.
    A window judged free of out-of-scope traffic keeps that judgement in every resample."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(BOOTSTRAP_ROUNDS):
        i = rng.integers(0, len(conf), len(conf))
        f, _ = row_predictions(
            confidence=conf[i],
            scores=scores[i],
            reference_scores=reference,
            predicted_out_of_scope=None if own is None else own[i],
            all_in_scope=all_in_scope,
        )
        values.append(f.mean())
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return _clip(float(lo)), _clip(float(hi))


def _clip(x: float) -> float:
    return float(min(1.0, max(0.0, x)))
