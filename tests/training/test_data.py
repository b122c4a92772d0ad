"""Loading, validating, hashing, splitting and replaying (text, label) tables."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from lifecycle.config.errors import DataError
from lifecycle.training.data import (
    load_table,
    replay_mix,
    stratified_split,
    training_set_hash,
    validate_training_table,
)

ROWS = pd.DataFrame(
    {
        "text": [
            "I lost my card",
            "refund please",
            "where is my parcel?",
            "card stolen, help",
            "NA",
            "héllo — naïve “quotes”, commas",
        ],
        "label": ["card_lost", "refund", "delivery", "card_lost", "refund", " delivery "],
    }
)
EXPECTED_LABELS = ["card_lost", "refund", "delivery", "card_lost", "refund", "delivery"]


def _table(n_per_class: dict[str, int]) -> pd.DataFrame:
    rows = [(f"{label} example {i}", label) for label, n in n_per_class.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["text", "label"])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".ndjson", ".parquet", ".pq"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        ROWS.to_csv(path, index=False)
    elif suffix in {".jsonl", ".ndjson"}:
        ROWS.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        ROWS.to_parquet(path)
    df = load_table(path)
    assert list(df.columns) == ["text", "label"]
    assert df["text"].tolist() == ROWS["text"].tolist()  # "NA" stays a text, unicode intact
    assert df["label"].tolist() == EXPECTED_LABELS  # labels are stripped


def test_custom_columns_and_unlabelled(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("id,utterance,category\n1,hello there,greet\n2,bye now,leave\n", "utf-8")
    df = load_table(path, text_column="utterance", label_column="category")
    assert df.to_dict("records") == [
        {"text": "hello there", "label": "greet"},
        {"text": "bye now", "label": "leave"},
    ]
    unlabelled = load_table(path, text_column="utterance", label_column=None)
    assert list(unlabelled.columns) == ["text"]


def test_jsonl_numeric_labels_become_strings(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": 2}\n', "utf-8")
    assert load_table(path)["label"].tolist() == ["1", "2"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as info:
        load_table(tmp_path / "nope.csv")
    assert "nope.csv" in str(info.value)


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"whatever")
    with pytest.raises(DataError, match=r"unsupported extension '\.xlsx'"):
        load_table(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.csv", b""),
        ("blank.csv", b"\n  \n"),
        ("header_only.csv", b"text,label\n"),
        ("empty.jsonl", b"\n\n"),
        ("empty.parquet", b""),
    ],
)
def test_empty_file(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"empty|no rows") as info:
        load_table(path)
    assert name in str(info.value)


def test_empty_parquet_table(tmp_path: Path) -> None:
    path = tmp_path / "zero.parquet"
    ROWS.iloc[0:0].to_parquet(path)
    with pytest.raises(DataError, match="no rows"):
        load_table(path)


@pytest.mark.parametrize("missing", ["text", "label"])
def test_missing_column_lists_found_columns(tmp_path: Path, missing: str) -> None:
    path = tmp_path / "data.csv"
    ROWS.rename(columns={missing: "something_else"}).to_csv(path, index=False)
    with pytest.raises(DataError, match=f"missing column '{missing}'") as info:
        load_table(path)
    assert "something_else" in str(info.value)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_non_utf8_bytes_name_file_and_offset(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"latin1{suffix}"
    if suffix == ".csv":
        content = "text,label\ncafé au lait,drink\n".encode("latin-1")
    else:
        content = '{"text": "café", "label": "drink"}\n'.encode("latin-1")
    path.write_bytes(content)
    offset = content.index(b"\xe9")
    with pytest.raises(DataError, match="UTF-8") as info:
        load_table(path)
    message = str(info.value)
    assert "latin1" in message
    assert f"offset {offset}" in message


def test_bad_json_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": oops}\n', "utf-8")
    with pytest.raises(DataError, match="line 2"):
        load_table(path)


def test_blank_texts_are_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "data.parquet"
    pd.DataFrame(
        {"text": ["ok", None, "  ", "", "fine"], "label": ["a", "a", "b", "b", "b"]}
    ).to_parquet(path)
    with caplog.at_level(logging.WARNING, logger="lifecycle.training.data"):
        df = load_table(path)
    assert df["text"].tolist() == ["ok", "fine"]
    assert "dropped 3 of 5" in caplog.text


def test_all_blank_texts_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('text,label\n"",a\n"   ",b\n', "utf-8")
    with pytest.raises(DataError, match="all 2 rows have an empty or missing 'text'"):
        load_table(path)


def test_validate_one_class() -> None:
    with pytest.raises(DataError, match="one class"):
        validate_training_table(_table({"only": 10}))


def test_validate_small_classes_are_named() -> None:
    with pytest.raises(DataError, match="fewer than 3 rows") as info:
        validate_training_table(_table({"big": 10, "tiny": 1, "small": 2}), min_per_class=3)
    assert "'tiny' (1)" in str(info.value)
    assert "'small' (2)" in str(info.value)
    assert "big" not in str(info.value)
    validate_training_table(_table({"big": 10, "other": 3}), min_per_class=3)


def test_hash_is_order_independent_and_content_sensitive() -> None:
    df = _table({"a": 5, "b": 4})
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert not shuffled.equals(df)
    assert training_set_hash(df) == training_set_hash(shuffled)
    assert len(training_set_hash(df)) == 64
    changed = df.copy()
    changed.loc[0, "label"] = "b"
    assert training_set_hash(changed) != training_set_hash(df)
    assert training_set_hash(df.iloc[1:]) != training_set_hash(df)
    # No ambiguity between where the text ends and the label begins.
    left = pd.DataFrame({"text": ["ab"], "label": ["c"]})
    right = pd.DataFrame({"text": ["a"], "label": ["bc"]})
    assert training_set_hash(left) != training_set_hash(right)


def test_split_is_stratified_and_deterministic() -> None:
    df = _table({"a": 60, "b": 30, "c": 10, "single": 1})
    rest, held = stratified_split(df, fraction=0.2, seed=7)
    assert len(rest) + len(held) == len(df)
    assert set(rest["text"]).isdisjoint(held["text"])
    assert held["label"].value_counts().to_dict() == {"a": 12, "b": 6, "c": 2}
    assert "single" in set(rest["label"])
    again_rest, again_held = stratified_split(df, fraction=0.2, seed=7)
    assert again_held.equals(held)
    assert again_rest.equals(rest)
    _, other_held = stratified_split(df, fraction=0.2, seed=8)
    assert set(other_held["text"]) != set(held["text"])


def test_split_of_tiny_classes_falls_back_per_class() -> None:
    df = _table({"a": 2, "b": 2, "c": 2, "d": 2})
    rest, held = stratified_split(df, fraction=0.1, seed=0)  # sklearn would refuse
    assert sorted(held["label"]) == ["a", "b", "c", "d"]
    assert sorted(rest["label"]) == ["a", "b", "c", "d"]


def test_split_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(_table({"a": 4, "b": 4}), fraction=1.0, seed=0)


def test_replay_mix_size_mix_and_determinism() -> None:
    new = _table({"x": 10, "y": 10})
    old = _table({"a": 60, "b": 30, "c": 10})
    mixed = replay_mix(new, old, ratio=0.5, seed=1)
    assert mixed["source"].value_counts().to_dict() == {"new": 20, "replay": 10}
    replay = mixed[mixed["source"] == "replay"]
    assert replay["label"].value_counts().to_dict() == {"a": 6, "b": 3, "c": 1}
    assert replay["text"].is_unique
    assert mixed.equals(replay_mix(new, old, ratio=0.5, seed=1))
    assert not mixed.equals(replay_mix(new, old, ratio=0.5, seed=2))
    capped = replay_mix(new, old.iloc[:5], ratio=10.0, seed=1)
    assert (capped["source"] == "replay").sum() == 5
    none = replay_mix(new, old, ratio=0.0, seed=1)
    assert (none["source"] == "new").all() and len(none) == len(new)


def test_json_records_survive(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    lines = [
        json.dumps({"text": f"t{i}", "label": "a" if i % 2 else "b", "extra": i}) for i in range(4)
    ]
    path.write_text("\n".join(lines), "utf-8")
    df = load_table(path)
    assert list(df.columns) == ["text", "label"]
    assert len(df) == 4


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(DataError, match="cannot read as Parquet") as info:
        load_table(path)
    assert "broken.parquet" in str(info.value)


def test_importing_is_cheap() -> None:
    import subprocess
    import sys

    code = (
        "import sys, lifecycle.training.data, lifecycle.synthetic.scenarios; "
        "print(sorted(m for m in ('pandas', 'sklearn', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
