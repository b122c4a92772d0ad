"""Tables of (text, label): loading, validation, hashing, splitting and replay.

Every specialist trains and is evaluated on the same shape of data: a frame with a ``text``
column and, when labelled, a ``label`` column of stripped strings. Whatever a user can get
wrong in a file (a missing column, a stray Latin-1 byte, a label set with one class) is
reported as a :class:`~lifecycle.config.errors.DataError` naming the file and the problem, so the
CLI can print it instead of a pandas traceback.

pandas and scikit-learn are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifecycle.config.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

_FORMATS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def load_table(
    path: str | Path, *, text_column: str = "text", label_column: str | None = "label"
) -> pd.DataFrame:
    """Read a CSV, JSONL or Parquet file into a frame with columns ``text`` (and ``label``).

    The format follows the extension. Text columns are renamed to ``text`` and ``label`` so
    the rest of the code never needs to know what a data set called them. Rows whose text
    (or label) is missing or blank are dropped with a logged warning; a file where no row
    survives is an error, as are a missing file, an unknown extension, an empty file, a
    missing column and bytes that are not UTF-8.
    """
    import pandas as pd

    file = Path(path)
    raw = read_raw(file, convert_hint="convert the file to CSV with a header row")
    found = [str(c) for c in raw.columns]
    for wanted, option in ((text_column, "text_column"), (label_column, "label_column")):
        if wanted is not None and wanted not in raw.columns:
            raise DataError(
                f"{file}: missing column {wanted!r}; found columns {found}. "
                f"Rename the column or pass {option}= with the right name."
            )

    text = [_as_text(v) for v in raw[text_column]]
    frame = pd.DataFrame({"text": text})
    keep = frame["text"].notna()
    dropped_text = int((~keep).sum())
    if label_column is not None:
        frame["label"] = [_as_text(v, strip=True) for v in raw[label_column]]
        has_label = frame["label"].notna()
        dropped_label = int((keep & ~has_label).sum())
        keep &= has_label
    else:
        dropped_label = 0

    if dropped_text:
        logger.warning(
            "%s: dropped %d of %d rows whose %r is empty or missing",
            file,
            dropped_text,
            len(frame),
            text_column,
        )
    if dropped_label:
        logger.warning(
            "%s: dropped %d of %d rows whose %r is empty or missing",
            file,
            dropped_label,
            len(frame),
            label_column,
        )
    if not keep.any():
        raise DataError(
            f"{file}: all {len(frame)} rows have an empty or missing {text_column!r}"
            + (f" or {label_column!r}" if label_column is not None else "")
            + ". Check that the right column is named as text."
        )
    return frame[keep].reset_index(drop=True).astype(str)


def read_raw(file: Path, *, convert_hint: str) -> pd.DataFrame:
    """The raw table of a data file, by its extension, with at least one row.

    A missing file, a folder, an unknown extension, an empty file and a file without rows are
    each a DataError naming the file; ``convert_hint`` ends the unknown-extension message
    ("or <hint>.") with the format the caller would rather have.
    """
    if not file.exists():
        raise DataError(
            f"{file}: file not found. Check the path (relative paths start at {Path.cwd()})."
        )
    if not file.is_file():
        raise DataError(f"{file}: not a regular file. Give a .csv, .jsonl or .parquet file.")
    fmt = _FORMATS.get(file.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(_FORMATS))
        raise DataError(
            f"{file}: unsupported extension {file.suffix!r}. Use one of {known}, or {convert_hint}."
        )
    if file.stat().st_size == 0:
        raise DataError(
            f"{file}: file is empty. It needs a header (or JSON keys) and at least one row."
        )
    reader = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[fmt]
    raw = reader(file)
    if len(raw) == 0:
        raise DataError(f"{file}: the file has no rows (empty file). Add at least one row of data.")
    return raw


def _decode(file: Path) -> str:
    """The file's text under strict UTF-8 (a leading BOM is allowed), or a DataError."""
    data = file.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{file}: not valid UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start} "
            f"(line {line}). Re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
        ) from exc


def _read_csv(file: Path) -> pd.DataFrame:
    import pandas as pd

    content = _decode(file)
    if not content.strip():
        raise DataError(f"{file}: file is empty (only whitespace). It needs a header and rows.")
    try:
        # keep_default_na=False: a text that reads "NA" or "null" is a text, not a missing value.
        return pd.read_csv(io.StringIO(content), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(
            f"{file}: cannot parse as CSV ({exc}). Check quoting and delimiters."
        ) from exc


def _read_jsonl(file: Path) -> pd.DataFrame:
    import pandas as pd

    records: list[dict[str, Any]] = []
    for number, line in enumerate(_decode(file).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{file}: line {number} is not valid JSON ({exc.msg}). "
                "Each line must hold one JSON object."
            ) from exc
        if not isinstance(record, dict):
            raise DataError(
                f"{file}: line {number} holds a {type(record).__name__}, not a JSON object. "
                'Each line must look like {"text": ..., "label": ...}.'
            )
        records.append(record)
    if not records:
        raise DataError(f"{file}: file is empty (no JSON lines). Add one JSON object per line.")
    return pd.DataFrame.from_records(records)


def _read_parquet(file: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_parquet(file)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{file}: cannot read as Parquet ({exc}).") from exc


def _as_text(value: object, *, strip: bool = False) -> str | None:
    """A cell as a string, or None when it is missing or blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if type(value).__name__ in {"NAType", "NaTType"}:
        return None
    text = value if isinstance(value, str) else str(value)
    if not text.strip():
        return None
    return text.strip() if strip else text


def _require_columns(df: pd.DataFrame, *columns: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"table lacks column(s) {missing}; found {[str(c) for c in df.columns]}. "
            "Load it with load_table(), which names the columns text and label."
        )


def validate_training_table(df: pd.DataFrame, *, min_per_class: int = 2) -> None:
    """Refuse a table that cannot train a classifier: fewer than two labels or tiny classes.

    Checked before training rather than left to the trainer, so the message can name the
    classes to fix instead of surfacing as a stratification error deep in scikit-learn.
    """
    _require_columns(df, "text", "label")
    counts = df["label"].value_counts()
    if len(counts) == 0:
        raise DataError("training table has no rows. Give it labelled examples.")
    if len(counts) < 2:
        raise DataError(
            f"training table has one class only ({counts.index[0]!r}); "
            "a label set with one class cannot train a classifier. "
            "Add examples of at least one other label."
        )
    small = counts[counts < min_per_class].sort_index()
    if len(small):
        listed = ", ".join(f"{label!r} ({n})" for label, n in small.items())
        raise DataError(
            f"training table has classes with fewer than {min_per_class} rows: {listed}. "
            "Add examples of these labels or remove them from the label set."
        )


def training_set_hash(df: pd.DataFrame) -> str:
    """A sha256 hex digest of the (text, label) rows, independent of their order.

    Stored as a lineage tag on each model version, so two versions trained on the same
    rows can be recognised even when the rows arrived shuffled. Duplicate rows count.
    """
    _require_columns(df, "text", "label")
    rows = sorted(zip(df["text"].astype(str), df["label"].astype(str), strict=True))
    digest = hashlib.sha256()
    for text, label in rows:
        digest.update(json.dumps([text, label], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def stratified_split(
    df: pd.DataFrame, *, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split into (rest, held_out), held_out about ``fraction`` of rows with the same label mix.

    Deterministic for a seed. A class with a single row cannot be in both parts and goes to
    ``rest`` (the training side). Both parts keep the original row order and all columns.
    """
    import pandas as pd
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be strictly between 0 and 1, got {fraction}")
    _require_columns(df, "label")
    counts = df["label"].map(df["label"].value_counts())
    singles = df[counts == 1]
    multi = df[counts > 1]
    if len(multi) == 0:
        return df.reset_index(drop=True), df.iloc[0:0].reset_index(drop=True)
    try:
        rest, held = train_test_split(
            multi, test_size=fraction, random_state=seed, stratify=multi["label"]
        )
    except ValueError:
        # Too few rows for sklearn to put every class on both sides: split class by class.
        rest, held = _per_class_split(multi, fraction=fraction, seed=seed)
    rest = pd.concat([rest, singles]).sort_index()
    return rest.reset_index(drop=True), held.sort_index().reset_index(drop=True)


def _per_class_split(
    df: pd.DataFrame, *, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    import numpy as np

    rng = np.random.default_rng(seed)
    held_index: list[Any] = []
    for label in sorted(df["label"].unique(), key=str):
        index = df.index[df["label"] == label].to_numpy()
        k = min(max(1, round(fraction * len(index))), len(index) - 1)
        held_index.extend(rng.permutation(index)[:k].tolist())
    held = df.loc[held_index]
    return df.drop(index=held_index), held


def replay_mix(
    new: pd.DataFrame, old: pd.DataFrame, *, ratio: float, seed: int, at_least: int = 0
) -> pd.DataFrame:
    """New rows plus a label-proportional sample of old rows, marked by a ``source`` column.

    Retraining on drifted traffic alone forgets what the reference taught (catastrophic
    forgetting); replaying ``round(ratio * len(new))`` old rows (at most all of them) keeps
    the old classes present. The sample keeps the old label mix (largest-remainder quotas per
    label) and is deterministic for a seed. New rows come first, then the replayed ones.
    ``at_least`` raises the count when the ratio gives fewer (few new rows would otherwise
    replay too little of a large old set); it too is capped by ``len(old)``.
    """
    import numpy as np
    import pandas as pd

    if ratio < 0:
        raise ValueError(f"ratio must be >= 0, got {ratio}")
    if at_least < 0:
        raise ValueError(f"at_least must be >= 0, got {at_least}")
    wanted = min(max(round(ratio * len(new)), at_least), len(old))
    rng = np.random.default_rng(seed)
    if wanted == 0:
        picked = old.iloc[0:0]
    elif "label" in old.columns:
        groups = {
            label: old.index[old["label"] == label].to_numpy()
            for label in sorted(old["label"].unique(), key=str)
        }
        quotas = _largest_remainder(wanted, [len(g) for g in groups.values()])
        chosen: list[Any] = []
        for members, quota in zip(groups.values(), quotas, strict=True):
            chosen.extend(rng.choice(members, size=quota, replace=False).tolist())
        picked = old.loc[chosen]
    else:
        picked = old.iloc[np.sort(rng.choice(len(old), size=wanted, replace=False))]
    mixed = pd.concat([new.assign(source="new"), picked.assign(source="replay")], ignore_index=True)
    return mixed


def _largest_remainder(total: int, weights: list[int] | list[float]) -> list[int]:
    """Integer counts summing to ``total`` in proportion to ``weights`` (ties: earlier first)."""
    weight_sum = float(sum(weights))
    if total == 0 or weight_sum <= 0:
        return [0] * len(weights)
    exact = [total * w / weight_sum for w in weights]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts
