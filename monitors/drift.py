"""Drift scores from Evidently, with every method set explicitly.

Evidently picks its default tests by sample size (K-S below 1,000 rows, Wasserstein above)
and flags drift against its own fixed thresholds. We ask it for raw scores with fixed
methods only, so a score means the same at every window size, and compare them with
thresholds calibrated per champion (``monitors.thresholds``). Evidently's objects stay in
this module: callers get plain floats and, on request, the HTML report.

Every score grows with drift: a domain classifier's ROC AUC (text, embeddings), a normed
Wasserstein distance (numbers), a Jensen-Shannon distance (categories).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitors.frames import MonitorData

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SignalDef:
    name: str
    column: str
    kind: str  # text | numerical | categorical | embeddings
    method: str
    #: The score's value when both sides come from one distribution (AUC 0.5, distance 0).
    baseline: float


SIGNAL_DEFS: tuple[SignalDef, ...] = (
    SignalDef("text", "text", "text", "abs_text_content_drift", 0.5),
    SignalDef("text_length", "text_length", "numerical", "wasserstein", 0.0),
    SignalDef("word_count", "word_count", "numerical", "wasserstein", 0.0),
    SignalDef("oov_share", "oov_share", "numerical", "wasserstein", 0.0),
    SignalDef("embeddings", "emb", "embeddings", "model", 0.5),
    SignalDef("prediction", "prediction", "categorical", "jensenshannon", 0.0),
    SignalDef("confidence", "confidence", "numerical", "wasserstein", 0.0),
    SignalDef("escalation_rate", "below_threshold", "categorical", "jensenshannon", 0.0),
    # An extractor's answers (``monitors.entities``): present only in its frames.
    SignalDef("n_entities", "n_entities", "numerical", "wasserstein", 0.0),
    SignalDef("entity_confidence", "entity_confidence", "numerical", "wasserstein", 0.0),
    SignalDef("span_length", "span_length", "numerical", "wasserstein", 0.0),
    SignalDef("no_entity", "no_entity", "categorical", "jensenshannon", 0.0),
    SignalDef("missing_required", "missing_required", "categorical", "jensenshannon", 0.0),
)
BY_NAME = {d.name: d for d in SIGNAL_DEFS}
#: A signal to score: its definition and the usable rows of the reference and the window.
_Item = tuple[SignalDef, np.ndarray, np.ndarray]
#: Fewer usable rows than this on either side: the signal is skipped, not guessed.
MIN_ROWS = 20


@dataclass(frozen=True, slots=True)
class Scores:
    """Raw scores and the row counts behind each (for size-aware thresholds)."""

    values: dict[str, float]
    sizes: dict[str, tuple[int, int]]  # signal -> (reference rows, current rows)
    skipped: dict[str, str]  # signal -> why
    reports: tuple[Path, ...] = ()


def applicable(data: MonitorData) -> tuple[str, ...]:
    """The signals ``data`` has columns for: every classifier signal (embeddings included,
    skipped later if absent), and an extractor's answer signals where its frame has them.
    Calibration and checks both start from this list, so a signal is tested only with a
    calibrated threshold and counts in the false-alarm budget only where it can fire."""
    return tuple(
        d.name for d in SIGNAL_DEFS if d.kind == "embeddings" or d.column in data.frame.columns
    )


def usable(data: MonitorData, d: SignalDef) -> np.ndarray:
    """Row positions usable for signal ``d`` (text present, number finite, embedding whole)."""
    if d.kind == "embeddings":
        if data.embeddings is None:
            return np.arange(0)
        return np.flatnonzero(np.isfinite(data.embeddings).all(axis=1))
    if d.column not in data.frame.columns:
        return np.arange(0)
    column = data.frame[d.column]
    if d.kind == "numerical":
        mask = np.isfinite(pd.to_numeric(column, errors="coerce").to_numpy(dtype=float))
    else:
        mask = column.notna().to_numpy()
    return np.flatnonzero(mask)


def drift_scores(
    reference: MonitorData,
    current: MonitorData,
    *,
    signals: tuple[str, ...] | None = None,
    html: Path | None = None,
) -> Scores:
    """Evidently's score for each signal of ``current`` against ``reference``.

    A signal with too few usable rows, one kind of value only where a classifier needs
    two, or an error inside Evidently is skipped with the reason; the others go on. With
    ``html`` the report of the computed signals is saved there. Without ``signals``, those
    the reference has columns for (:func:`applicable`).
    """
    wanted = [BY_NAME[s] for s in (signals or applicable(reference))]
    skipped: dict[str, str] = {}
    plan: list[_Item] = []
    for d in wanted:
        ref_rows, cur_rows = usable(reference, d), usable(current, d)
        why = _unusable(reference, current, d, ref_rows, cur_rows)
        if why:
            skipped[d.name] = why
        else:
            plan.append((d, ref_rows, cur_rows))

    values: dict[str, float] = {}
    sizes: dict[str, tuple[int, int]] = {}
    snapshots: list[Any] = []
    if html is None:
        # Evidently's metrics draw their report's figures on every call (a t-SNE map for
        # embeddings, plotly charts for columns: seconds a window). Without a report, its
        # stattests and drift methods alone give the same scores, in a fraction of the time.
        for item in plan:
            if item[0].kind == "embeddings":
                _score(_embedding, reference, current, item, values, sizes, skipped)
            else:
                _score(_stattest, reference, current, item, values, sizes, skipped)
        return Scores(values, sizes, skipped)
    # Evidently's embedding panel maps the rows with t-SNE (25 s for 1,300 rows on two
    # cores, whatever the score needs): the score uses every row, the picture a sample.
    pictures: list[Any] = []
    for item in [p for p in plan if p[0].kind == "embeddings"]:
        plan.remove(item)
        _score(_embedding, reference, current, item, values, sizes, skipped)
        if item[0].name in values:
            pictures.extend(_embedding_picture(reference, current, item))
    # One report over all signals is cheapest; rows that one signal cannot use (a missing
    # text) must not be dropped for the others, so each signal group gets its own report.
    for group in _groups(plan):
        try:
            snapshot, metrics = _run(reference, current, group)
        except Exception as exc:
            if len(group) > 1:
                for single in group:
                    try:
                        snapshot, metrics = _run(reference, current, [single])
                    except Exception as inner:
                        skipped[single[0].name] = f"Evidently failed: {_oneline(inner)}"
                        continue
                    _collect(snapshot, metrics, [single], values, sizes, skipped)
                    snapshots.append(snapshot)
                continue
            skipped[group[0][0].name] = f"Evidently failed: {_oneline(exc)}"
            continue
        _collect(snapshot, metrics, group, values, sizes, skipped)
        snapshots.append(snapshot)
    reports = _save_all(snapshots, html)
    for snapshot in pictures:
        path = html.with_name(f"{html.stem}-embeddings.html")
        path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(path))
        reports.append(path)
    return Scores(values, sizes, skipped, tuple(reports))


#: Rows per side in the embedding panel of the HTML report.
PICTURE_ROWS = 150


def _embedding_picture(
    reference: MonitorData,
    current: MonitorData,
    item: _Item,
) -> list[Any]:
    """Evidently's embedding drift panel on a sample (named so), or nothing if it fails."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from evidently.metrics.embeddings import ModelDriftMethod

    _, ref_rows, cur_rows = item
    assert reference.embeddings is not None and current.embeddings is not None
    rng = np.random.default_rng(0)
    ref_rows = rng.permutation(ref_rows)[:PICTURE_ROWS]
    cur_rows = rng.permutation(cur_rows)[:PICTURE_ROWS]
    name = f"sample_of_{max(len(ref_rows), len(cur_rows))}_rows_per_side"
    columns = [f"e{i}" for i in range(reference.embeddings.shape[1])]
    definition = DataDefinition(numerical_columns=columns, embeddings={name: columns})

    def dataset(data: MonitorData, rows: np.ndarray) -> Any:
        assert data.embeddings is not None
        frame = pd.DataFrame(data.embeddings[rows], columns=columns)
        return Dataset.from_pandas(frame, data_definition=definition)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metric = EmbeddingsDrift(embeddings_name=name, drift_method=ModelDriftMethod())
            snapshot = Report([metric], include_tests=False).run(
                dataset(current, cur_rows), dataset(reference, ref_rows)
            )
    except Exception as exc:  # the picture is a nicety; the score stands without it
        logger.warning("embedding panel not drawn: %s", _oneline(exc))
        return []
    return [snapshot]


def _score(
    prepare: Callable[[MonitorData, MonitorData, _Item], Callable[[], Any]],
    reference: MonitorData,
    current: MonitorData,
    item: _Item,
    values: dict[str, float],
    sizes: dict[str, tuple[int, int]],
    skipped: dict[str, str],
) -> None:
    """Score one signal with ``prepare``'s scorer and keep the score.

    ``prepare`` readies the inputs (its errors are the data's, and propagate) and returns the
    call into Evidently, which runs with its warnings silenced: a failure there skips the
    signal with its reason.
    """
    compute = prepare(reference, current, item)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = compute()
    except Exception as exc:  # a library failure must not end the check
        skipped[item[0].name] = f"Evidently failed: {_oneline(exc)}"
        return
    _keep(item, score, values, sizes, skipped)


def _stattest(reference: MonitorData, current: MonitorData, item: _Item) -> Callable[[], Any]:
    """A column signal's scorer: the signal's Evidently stattest on both sides' values."""
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    d, ref_rows, cur_rows = item
    kind = {"text": ColumnType.Text, "numerical": ColumnType.Numerical}.get(
        d.kind, ColumnType.Categorical
    )
    ref = reference.frame[d.column].iloc[ref_rows].reset_index(drop=True)
    cur = current.frame[d.column].iloc[cur_rows].reset_index(drop=True)
    if kind is ColumnType.Categorical:
        ref, cur = ref.astype(str), cur.astype(str)
    elif kind is ColumnType.Numerical:
        ref, cur = ref.astype(float), cur.astype(float)

    def compute() -> Any:
        test = get_stattest(ref, cur, kind, d.method)
        return test(ref, cur, kind, None).drift_score

    return compute


def _embedding(reference: MonitorData, current: MonitorData, item: _Item) -> Callable[[], Any]:
    """The embedding signal's scorer: Evidently's model-based drift on the vectors."""
    from evidently.metrics.embeddings import ModelDriftMethod

    _, ref_rows, cur_rows = item
    assert reference.embeddings is not None and current.embeddings is not None
    ref_vectors: np.ndarray = reference.embeddings
    cur_vectors: np.ndarray = current.embeddings
    columns = [f"e{i}" for i in range(ref_vectors.shape[1])]

    def compute() -> Any:
        score, _, _ = ModelDriftMethod()(
            pd.DataFrame(cur_vectors[cur_rows], columns=columns),
            pd.DataFrame(ref_vectors[ref_rows], columns=columns),
        )
        return score

    return compute


def _keep(
    item: _Item,
    score: Any,
    values: dict[str, float],
    sizes: dict[str, tuple[int, int]],
    skipped: dict[str, str],
) -> None:
    """Record a signal's score and row counts, or why it has none."""
    d, ref_rows, cur_rows = item
    value = _number(score)
    if value is None:
        skipped[d.name] = f"Evidently gave no finite score ({score!r})"
        return
    values[d.name] = value
    sizes[d.name] = (len(ref_rows), len(cur_rows))


def _unusable(
    reference: MonitorData,
    current: MonitorData,
    d: SignalDef,
    ref_rows: np.ndarray,
    cur_rows: np.ndarray,
) -> str | None:
    if d.kind != "embeddings":
        absent = [
            s
            for s, data in (("reference", reference), ("window", current))
            if d.column not in data.frame.columns
        ]
        if absent:
            return f"no {d.column} column in the {' and '.join(absent)}"
    if len(ref_rows) < MIN_ROWS or len(cur_rows) < MIN_ROWS:
        return f"too few usable rows ({len(ref_rows)} reference, {len(cur_rows)} window)"
    if d.kind == "embeddings":
        assert reference.embeddings is not None and current.embeddings is not None
        if reference.embeddings.shape[1] != current.embeddings.shape[1]:
            return (
                f"embedding sizes differ ({reference.embeddings.shape[1]} reference, "
                f"{current.embeddings.shape[1]} window)"
            )
    return None


def _groups(
    plan: list[_Item],
) -> list[list[_Item]]:
    """Signals that use the same rows on both sides share one Evidently run."""
    groups: dict[tuple[bytes, bytes], list[_Item]] = {}
    for item in plan:
        _, ref_rows, cur_rows = item
        groups.setdefault((ref_rows.tobytes(), cur_rows.tobytes()), []).append(item)
    return list(groups.values())


def _run(
    reference: MonitorData,
    current: MonitorData,
    group: list[_Item],
) -> tuple[Any, list[Any]]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift, ValueDrift
    from evidently.metrics.embeddings import ModelDriftMethod

    defs = [d for d, _, _ in group]
    _, ref_rows, cur_rows = group[0]
    text = [d.column for d in defs if d.kind == "text"]
    numerical = [d.column for d in defs if d.kind == "numerical"]
    categorical = [d.column for d in defs if d.kind == "categorical"]
    emb_cols: list[str] = []
    if any(d.kind == "embeddings" for d in defs):
        assert reference.embeddings is not None
        emb_cols = [f"e{i}" for i in range(reference.embeddings.shape[1])]
    definition = DataDefinition(
        text_columns=text,
        numerical_columns=numerical,
        categorical_columns=categorical,
        embeddings={"emb": emb_cols} if emb_cols else None,
    )
    columns = text + numerical + categorical

    def dataset(data: MonitorData, rows: np.ndarray) -> Any:
        frame = data.frame.iloc[rows][columns].reset_index(drop=True)
        for c in categorical:
            frame[c] = frame[c].astype(str)
        if emb_cols:
            assert data.embeddings is not None
            emb = pd.DataFrame(data.embeddings[rows], columns=emb_cols)
            frame = pd.concat([frame, emb], axis=1)
        return Dataset.from_pandas(frame, data_definition=definition)

    metrics: list[Any] = []
    for d in defs:
        if d.kind == "embeddings":
            metrics.append(EmbeddingsDrift(embeddings_name="emb", drift_method=ModelDriftMethod()))
        else:
            metrics.append(ValueDrift(column=d.column, method=d.method))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report(metrics, include_tests=False).run(
            dataset(current, cur_rows), dataset(reference, ref_rows)
        )
    return snapshot, metrics


def _collect(
    snapshot: Any,
    metrics: list[Any],
    group: list[_Item],
    values: dict[str, float],
    sizes: dict[str, tuple[int, int]],
    skipped: dict[str, str],
) -> None:
    results = snapshot.dict()["metrics"]
    for (d, ref_rows, cur_rows), result in zip(group, results, strict=True):
        value = _number(result.get("value"))
        if value is None:
            skipped[d.name] = f"Evidently gave no finite score ({result.get('value')!r})"
            continue
        values[d.name] = value
        sizes[d.name] = (len(ref_rows), len(cur_rows))


def _number(value: Any) -> float | None:
    if isinstance(value, dict):  # some metrics report {"value": x, ...}
        value = value.get("value")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _save_all(snapshots: list[Any], html: Path) -> list[Path]:
    """The first report at ``html``, any others (signals that used other rows) beside it."""
    if not snapshots:
        return []
    html.parent.mkdir(parents=True, exist_ok=True)
    paths = [html] + [html.with_name(f"{html.stem}-{k}.html") for k in range(1, len(snapshots))]
    for snapshot, path in zip(snapshots, paths, strict=True):
        snapshot.save_html(str(path))
    return paths


def _oneline(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
