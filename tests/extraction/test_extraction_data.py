"""Loading and validating extraction tables: formats, every bad span, real SNIPS rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lifecycle.config.errors import DataError
from lifecycle.extraction.data import entity_labels, load_extraction_table, validate_entities

SNIPS = Path(__file__).resolve().parents[3] / "shared" / "data" / "snips" / "train.jsonl"

ROWS: list[dict[str, Any]] = [
    {
        "text": "book a table in Paris for friday",
        "intent": "BookRestaurant",
        # Out of order on purpose, and one span without its text.
        "entities": [
            {"label": "date", "start": 26, "end": 32, "text": "friday"},
            {"label": "city", "start": 16, "end": 21},
        ],
    },
    {"text": "play some jazz", "intent": "PlayMusic", "entities": []},
    {
        "text": "héllo — “Zürich” weather",
        "intent": "GetWeather",
        "entities": [{"label": "city", "start": 9, "end": 15, "text": "Zürich"}],
    },
]

EXPECTED = [
    [
        {"label": "city", "start": 16, "end": 21, "text": "Paris"},
        {"label": "date", "start": 26, "end": 32, "text": "friday"},
    ],
    [],
    [{"label": "city", "start": 9, "end": 15, "text": "Zürich"}],
]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
    )
    return path


def _as_json_cells(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["entities"] = [json.dumps(e, ensure_ascii=False) for e in frame["entities"]]
    return frame


def _check(frame: pd.DataFrame) -> None:
    assert list(frame["text"]) == [r["text"] for r in ROWS]
    assert list(frame["entities"]) == EXPECTED
    assert list(frame["intent"]) == [r["intent"] for r in ROWS]


def test_jsonl_round_trip(tmp_path: Path) -> None:
    _check(load_extraction_table(_write_jsonl(tmp_path / "d.jsonl", ROWS)))


def test_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    _as_json_cells(ROWS).to_csv(path, index=False)
    _check(load_extraction_table(path))


def test_parquet_round_trip_with_json_strings(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    _as_json_cells(ROWS).to_parquet(path, index=False)
    _check(load_extraction_table(path))


def test_parquet_round_trip_with_nested_lists(tmp_path: Path) -> None:
    # A frame written straight by pandas stores the lists as Parquet lists of structs.
    path = tmp_path / "d.parquet"
    rows = [{**row, "entities": spans} for row, spans in zip(ROWS, EXPECTED, strict=True)]
    pd.DataFrame(rows).to_parquet(path, index=False)
    _check(load_extraction_table(path))


def test_other_column_names(tmp_path: Path) -> None:
    rows = [{"utterance": r["text"], "slots": r["entities"]} for r in ROWS]
    frame = load_extraction_table(
        _write_jsonl(tmp_path / "d.jsonl", rows), text_column="utterance", entities_column="slots"
    )
    assert list(frame.columns) == ["text", "entities"]
    assert list(frame["entities"]) == EXPECTED


def test_blank_text_rows_are_dropped(tmp_path: Path) -> None:
    rows = [*ROWS, {"text": "  ", "intent": "x", "entities": []}]
    frame = load_extraction_table(_write_jsonl(tmp_path / "d.jsonl", rows))
    assert len(frame) == len(ROWS)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.jsonl", None, "file not found"),
        ("d.txt", "text,entities\n", "unsupported extension"),
        ("d.jsonl", "", "file is empty"),
        ("d.csv", "text,label\nhello,x\n", "missing column 'entities'"),
        ("d.csv", 'text,entities\nhello,"[{""label"": 1"\n', "row 1: 'entities' is not valid JSON"),
        ("d.csv", "text,entities\nhello,[]\nbye,\n", "row 2: 'entities' is blank"),
        ("d.jsonl", '{"text": "hi", "entities": null}\n', "row 1: 'entities' is missing"),
    ],
)
def test_bad_files(tmp_path: Path, name: str, content: str | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_extraction_table(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes("text,entities\ncaf\xe9,[]\n".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8"):
        load_extraction_table(path)


def test_bad_span_in_a_file_names_the_file_and_row(tmp_path: Path) -> None:
    rows = [*ROWS, {"text": "abc", "entities": [{"label": "x", "start": 0, "end": 9}]}]
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError, match=r"d\.jsonl: row 4: entity 1: end 9 is past the end"):
        load_extraction_table(path)


def _frame(entities: object, text: object = "0123456789") -> pd.DataFrame:
    ok = {"text": "fine", "entities": [{"label": "a", "start": 0, "end": 4}]}
    return pd.DataFrame([ok, ok, {"text": text, "entities": entities}])


GOOD = {"label": "a", "start": 0, "end": 3}


@pytest.mark.parametrize(
    ("entities", "message"),
    [
        ("[]", "entities is a str, not a list"),
        ({"label": "a"}, "entities is a dict, not a list"),
        (["a"], "entity 1 is a str, not an object"),
        ([{"start": 0, "end": 1}], "entity 1 lacks label"),
        ([GOOD, {"label": "a", "start": 5}], "entity 2 lacks end"),
        ([{"label": "a", "start": "0", "end": 1}], "start '0' is not an integer"),
        ([{"label": "a", "start": 0, "end": 1.0}], "end 1.0 is not an integer"),
        ([{"label": "a", "start": True, "end": 1}], "start True is not an integer"),
        ([{"label": "a", "start": -1, "end": 1}], "start -1 is negative"),
        ([{"label": "a", "start": 0, "end": 11}], "end 11 is past the end of the text"),
        ([{"label": "a", "start": 3, "end": 3}], "start 3 >= end 3"),
        ([{"label": "a", "start": 4, "end": 2}], "start 4 >= end 2"),
        ([{"label": "a", "start": 0, "end": 3, "text": "013"}], "text '013' differs"),
        ([{"label": "", "start": 0, "end": 3}], "label '' is not a non-empty string"),
        ([{"label": " ", "start": 0, "end": 3}], "is not a non-empty string"),
        ([{"label": 7, "start": 0, "end": 3}], "label 7 is not a non-empty string"),
        (
            [{"label": "b", "start": 2, "end": 5}, GOOD],
            r"'a' at 0:3 \('012'\) and 'b' at 2:5 \('234'\) overlap",
        ),
        ([GOOD, GOOD], "'a' at 0:3 .* and 'a' at 0:3 .* overlap"),
        (
            [{"label": "a", "start": 0, "end": 9}, {"label": "b", "start": 5, "end": 6}, GOOD],
            "overlap",
        ),
    ],
)
def test_each_bad_span_names_row_and_problem(entities: object, message: str) -> None:
    with pytest.raises(DataError, match=rf"^data: row 3: .*{message}"):
        validate_entities(_frame(entities))


def test_text_not_a_string() -> None:
    with pytest.raises(DataError, match="row 3: text is float, not a string"):
        validate_entities(_frame([], text=float("nan")))


def test_closed_label_set() -> None:
    frame = _frame([{"label": "b", "start": 0, "end": 3}])
    validate_entities(frame, labels=["a"])  # open: logged only
    with pytest.raises(
        DataError, match=r"row 3: .*label 'b', which is not in the label set \['a'\]"
    ):
        validate_entities(frame, labels=["a"], closed=True, source="train.jsonl")
    validate_entities(frame, labels=["a", "b"], closed=True)
    with pytest.raises(ValueError, match="labels="):
        validate_entities(frame, closed=True)


def test_missing_column() -> None:
    with pytest.raises(DataError, match=r"missing column\(s\) \['entities'\]"):
        validate_entities(pd.DataFrame({"text": ["a"]}))


def test_validate_normalises_and_leaves_the_input_alone() -> None:
    entities = [
        {"label": " b ", "start": 5, "end": 7, "extra": 1},
        {"label": "a", "start": 0, "end": 2, "text": "01"},
    ]
    frame = _frame(entities)
    result = validate_entities(frame)
    assert result["entities"].iloc[2] == [
        {"label": "a", "start": 0, "end": 2, "text": "01"},
        {"label": "b", "start": 5, "end": 7, "text": "56"},
    ]
    assert frame["entities"].iloc[2] is entities  # the input frame is not modified
    assert result is not frame
    assert entity_labels(result) == ["a", "b"]


def test_empty_entities_are_valid() -> None:
    frame = pd.DataFrame({"text": ["nothing here", ""], "entities": [[], []]})
    result = validate_entities(frame)
    assert list(result["entities"]) == [[], []]
    assert entity_labels(result) == []


@pytest.mark.skipif(not SNIPS.exists(), reason=f"{SNIPS} is absent")
def test_real_snips_rows_validate(tmp_path: Path) -> None:
    head = SNIPS.read_text(encoding="utf-8").splitlines()[:200]
    path = tmp_path / "snips.jsonl"
    path.write_text("\n".join(head) + "\n", encoding="utf-8")
    frame = load_extraction_table(path)
    assert len(frame) == 200
    assert "intent" in frame.columns
    labels = entity_labels(frame)
    assert {"music_item", "playlist", "artist"} <= set(labels)
    for text, spans in zip(frame["text"], frame["entities"], strict=True):
        for span in spans:
            assert text[span["start"] : span["end"]] == span["text"]
    # The closed check passes with the labels found, and fails without one of them.
    validate_entities(frame, labels=labels, closed=True)
    with pytest.raises(DataError, match="not in the label set"):
        validate_entities(frame, labels=labels[1:], closed=True)


@pytest.mark.skipif(not SNIPS.exists(), reason=f"{SNIPS} is absent")
def test_all_snips_training_rows_validate() -> None:
    frame = load_extraction_table(SNIPS)
    labels = entity_labels(frame)
    assert 35 <= len(labels) <= 45  # the README says 39
