"""bench/gateway.py part 7 (an extractor and a classifier on one gateway): the mixed request
file, the extractor's answer check and the part's verdicts, without a model or a server."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from lifecycle.extraction.spans import Entity
from tests.bench_modules import load_bench

gb = load_bench("gateway")


def test_mixed_requests_go_half_to_each_with_their_own_texts_in_order() -> None:
    sources = {
        "/a": [f"a{i}" for i in range(320)],
        "/b": [f"b{i}" for i in range(64)],
    }
    lines = gb.mixed_lines(sources, per_request=16, make=lambda chunk: {"texts": chunk})
    assert len(lines) == 320 // 16 + 64 // 16
    assert lines == gb.mixed_lines(sources, per_request=16, make=lambda c: {"texts": c})
    seen: dict[str, list[str]] = {"/a": [], "/b": []}
    for line in lines:
        path, _, body = line.partition("\t")
        texts = json.loads(body)["texts"]
        assert len(texts) == 16 and all(t[0] == path[1] for t in texts)
        seen[path] += texts
    assert seen["/a"] and seen["/b"]
    # Each path walks its own list from the start, wrapping around.
    for path, texts in seen.items():
        own = sources[path]
        assert texts == [own[i % len(own)] for i in range(len(texts))]
    many = gb.mixed_lines(
        {"/a": sources["/a"] * 10, "/b": sources["/b"] * 50}, per_request=1, make=lambda c: c
    )
    share = sum(line.startswith("/b\t") for line in many) / len(many)
    assert 0.45 < share < 0.55


def _extractor_host(entities: dict[str, tuple[Entity, ...]]) -> Any:
    meta = SimpleNamespace(task="extraction", labels=("city", "date"))

    def predict(texts: list[str], adapter_id: str) -> list[Any]:
        return [
            SimpleNamespace(label="x", confidence=0.9, entities=entities[t], probabilities=[])
            for t in texts
        ]

    return SimpleNamespace(meta=lambda adapter_id: meta, predict=predict)


def _served(entities: tuple[Entity, ...], *, confidence: float = 0.9) -> dict[str, Any]:
    best: dict[str, Entity] = {}
    for e in entities:
        if e.label not in best or (e.confidence or 0) > (best[e.label].confidence or 0):
            best[e.label] = e
    return {
        "label": "x",
        "confidence": confidence,
        "entities": [
            {
                "label": e.label,
                "text": e.text,
                "start": e.start,
                "end": e.end,
                "confidence": e.confidence,
            }
            for e in entities
        ],
        "fields": {label: e.text for label, e in best.items()},
    }


def test_an_extractor_answer_must_have_the_same_spans_and_confidences() -> None:
    spans = (Entity("city", 3, 8, "Paris", 0.8), Entity("date", 12, 17, "today", 0.7))
    oracle = gb.Oracle(_extractor_host({"t": spans}), {"slots": "slots@v1"})
    assert oracle.task("slots") == "extraction"
    tally = gb.Tally()
    noisy = tuple(
        Entity(e.label, e.start, e.end, e.text, (e.confidence or 0) + 1e-6) for e in spans
    )
    oracle.compare_entities(tally, "slots", ["t"], [_served(noisy)], where="test")
    assert (tally.checked, tally.mismatches) == (1, 0)
    moved = (spans[0], Entity("date", 12, 16, "toda", 0.7))
    wrong_label = (Entity("date", 3, 8, "Paris", 0.8), spans[1])
    far = (Entity("city", 3, 8, "Paris", 0.75), spans[1])
    for answer in (
        _served(moved),
        _served(wrong_label),
        _served(far),
        _served(spans[:1]),
        _served(spans, confidence=0.8),
    ):
        oracle.compare_entities(tally, "slots", ["t"], [answer], where="test")
    assert (tally.checked, tally.mismatches, tally.unverifiable) == (6, 5, 0)
    # A classifier's answer where an extractor's is due cannot be compared: a fault too.
    oracle.compare_entities(
        tally, "slots", ["t"], [{"label": "x", "confidence": 0.9}], where="test"
    )
    assert tally.unverifiable == 1 and tally.faults == 6


def _mixed(**answers: Any) -> dict[str, Any]:
    loaded = {"checked": 300, "mismatches": 0, "unverifiable": 0, "ties": 0}
    loaded.update(answers)
    rows = [
        {
            "round": r,
            **{f"{k}_{n}": v for n in (1, 16) for k, v in zip(gb.MIXED_KINDS, speeds, strict=True)},
        }
        for r, speeds in enumerate([(100.0, 50.0, 45.0), (100.0, 60.0, 30.0), (90.0, 50.0, 45.0)])
    ]
    return {
        "only": "mixed",
        "mixed": {
            "rounds": rows,
            "answers": {
                "answered_under_load": 3000,
                "under_load": {"max_confidence_gap": 0.0, **loaded},
                "before_and_after_load": {"checked": 32, "mismatches": 0, "unverifiable": 0},
            },
        },
    }


def test_the_mixed_ratio_is_the_median_of_rounds_over_the_slower_alone() -> None:
    rows = {v["check"]: v for v in gb.verdicts(_mixed())}
    assert len(rows) == 3  # --only mixed judges part 7 alone
    ratio16 = next(v for c, v in rows.items() if "16 texts/request" in c)
    assert ratio16["ratio"] == 0.9 and ratio16["pass"] is True  # 0.9, 0.5, 0.9
    assert gb.failed_floors(gb.verdicts(_mixed())) == []
    slow = _mixed()
    for row in slow["mixed"]["rounds"]:
        row["mixed_16"] = 35.0
    assert [f for f in gb.failed_floors(gb.verdicts(slow)) if "16 texts" in f]


def test_a_mixed_mismatch_or_too_small_a_sample_fails_the_part() -> None:
    for broken in (_mixed(mismatches=1), _mixed(unverifiable=1), _mixed(checked=100)):
        failed = gb.failed_floors(gb.verdicts(broken))
        assert failed == ["extractor + classifier answers != in-process ones"]
    unmeasured = _mixed()
    del unmeasured["mixed"]
    assert len(gb.failed_floors(gb.verdicts(unmeasured))) == 3
