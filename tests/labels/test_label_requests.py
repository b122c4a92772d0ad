"""Label requests: the ranking (pure), the admin route and the CLI's export and bulk import,
against a real uvicorn, a real MLflow registry, a real store and a real trained specialist."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr

from lifecycle.config.settings import Settings
from lifecycle.config.spec import SpecialistsFile
from lifecycle.labels.files import export_csv, export_labelstudio, read_label_file
from lifecycle.labels.requests import (
    DISAGREEMENT,
    LOW_CONFIDENCE_REASON,
    OUT_OF_SCOPE,
    SURGE,
    LabelRequest,
    cluster_candidates,
    rank_label_requests,
    reference_shares,
    surging_labels,
)
from tests.conftest import TINY
from tests.gateway_harness import RunningGateway, SharedHost, running_gateway

TOKEN = "s3cret-admin-token-for-tests"
TEXTS = [f"my card {i} was lost at the station" for i in range(6)] + [
    f"please refund order {i}" for i in range(6)
]


def _rid(i: int) -> str:
    return f"{i:032x}"


def _window() -> pd.DataFrame:
    """30 out-of-scope rows in 3 tight clusters of unequal size, 10 unsure in-scope rows, 10
    confident ones; a few labelled by a person."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16))
    rows = []
    sizes = {0: 15, 1: 9, 2: 6}
    i = 0
    for k, size in sizes.items():
        for _ in range(size):
            rows.append(
                {
                    "out_of_scope": True,
                    "ood_score": 5.0 + rng.random(),
                    "confidence": 0.9,
                    "embedding": (centers[k] + 0.02 * rng.normal(size=16)).astype(np.float32),
                    "text": f"oos {k} {i}",
                }
            )
            i += 1
    for j in range(20):
        rows.append(
            {
                "out_of_scope": False,
                "ood_score": 0.1,
                "confidence": 0.2 + j * 0.01 if j < 10 else 0.95,
                "embedding": rng.normal(size=16).astype(np.float32),
                "text": f"in scope {j}",
            }
        )
    frame = pd.DataFrame(rows)
    frame["id"] = [_rid(n) for n in range(len(frame))]
    frame["label"] = "a"
    frame["model_version"] = 1
    frame["true_label_source"] = np.nan
    frame["out_of_scope"] = frame["out_of_scope"].astype("boolean")
    frame.loc[[0, 30], "true_label_source"] = "human"  # labelled: never asked again
    return frame


def _shadow(window: pd.DataFrame) -> pd.DataFrame:
    ids = list(window["id"].iloc[40:44])
    return pd.DataFrame(
        {
            "request_id": ids,
            "champion_label": ["a", "a", "a", "a"],
            "challenger_label": ["b", "a", "c", "b"],
            "champion_confidence": [0.9, 0.9, 0.6, 0.7],
            "challenger_version": [2, 2, 2, 2],
            "true_label_source": [np.nan, np.nan, np.nan, "human"],
        }
    )


def test_ranking_spreads_over_clusters_and_interleaves_reasons() -> None:
    window = _window()
    clusters = cluster_candidates(window, min_cluster_size=3)
    assert len(set(clusters.values()) - {-1}) == 3
    ranked = rank_label_requests(window, clusters=clusters, shadow=_shadow(window), limit=60)
    ids = [r.request_id for r in ranked]
    assert len(ids) == len(set(ids))
    assert _rid(0) not in ids and _rid(30) not in ids  # a person labelled them
    # One of each reason in turn while each queue lasts.
    assert [r.reason for r in ranked[:6]] == [OUT_OF_SCOPE, DISAGREEMENT, LOW_CONFIDENCE_REASON] * 2
    # Out of scope: each cluster in turn, largest first, not the largest cluster alone.
    first = [r.cluster for r in ranked if r.reason == OUT_OF_SCOPE][:6]
    assert first == [0, 1, 2, 0, 1, 2]
    # Disagreements only where the labels differ and no person labelled; the least sure first.
    split = [r for r in ranked if r.reason == DISAGREEMENT]
    assert [r.request_id for r in split] == [_rid(42), _rid(40)]
    assert split[0].challenger_label == "c" and "challenger v2" in split[0].detail
    # Low confidence, least confident first; the confident rows are not asked.
    low = [r for r in ranked if r.reason == LOW_CONFIDENCE_REASON]
    assert [r.confidence for r in low] == sorted(r.confidence for r in low)
    assert all(r.confidence < 0.5 for r in low)
    assert len(rank_label_requests(window, clusters=clusters, limit=5)) == 5


def test_a_label_answered_far_more_often_than_on_its_reference_surges() -> None:
    # Reference: 10 labels, 10% each. Window of 500: "b" absorbs a hidden intent (150 against
    # 50 expected); "c" is a little up (65), by chance; "z" was never answered on the reference.
    expected = {label: 0.1 for label in "abcdefghij"}
    window = ["b"] * 150 + ["c"] * 65 + ["z"] * 40 + [x for x in "adefghij" for _ in range(30)]
    window += ["a"] * 5
    surges = surging_labels(window, expected)
    assert [s.label for s in surges] == ["b"]
    (b,) = surges
    assert b.observed == 150 and b.expected == pytest.approx(50.0)
    assert b.excess == pytest.approx(100.0) and b.ratio == pytest.approx(3.0)
    assert b.p_value < 1e-10
    # Twice the share but too few rows to tell from chance in a small window: no surge.
    assert surging_labels(["b"] * 4 + [x for x in "acdefghi" for _ in range(2)], expected) == []
    # Empty window, empty baseline: nothing, and no error.
    assert surging_labels([], expected) == []
    assert surging_labels(window, {}) == []


def test_reference_shares_come_from_the_versions_own_answers() -> None:
    reference = pd.DataFrame(
        {"text": ["x"] * 4, "label": ["a", "a", "b", "b"], "prediction": ["a", "a", "a", "b"]}
    )
    assert reference_shares(reference) == {"a": 0.75, "b": 0.25}
    assert reference_shares(reference.drop(columns="prediction")) is None
    assert reference_shares(reference.iloc[0:0]) is None


def test_surging_labels_get_their_own_queue_capped_at_the_excess_most_atypical_first() -> None:
    window = _window()
    clusters = cluster_candidates(window, min_cluster_size=3)
    # 12 confident in-scope rows now answered "b", which the reference gives 2% of the time:
    # 1.24 of the 62 rows expected, an excess of 10.8 requests.
    extra = window.iloc[40:50].copy()
    surge_rows = []
    for j in range(12):
        row = extra.iloc[j % len(extra)].copy()
        row["id"] = _rid(100 + j)
        row["label"] = "b"
        row["confidence"] = 0.97
        row["ood_score"] = float(j)
        row["out_of_scope"] = False
        surge_rows.append(row)
    window = pd.concat([window, pd.DataFrame(surge_rows)], ignore_index=True)
    window.loc[window["id"] == _rid(111), "true_label_source"] = "human"
    ranked = rank_label_requests(
        window,
        clusters=clusters,
        shadow=_shadow(window),
        limit=200,
        expected_shares={"a": 0.98, "b": 0.02},
    )
    asked = [r for r in ranked if r.reason == SURGE]
    assert asked, "the surge queue is interleaved with the others"
    assert [r.reason for r in ranked[:4]] == [
        OUT_OF_SCOPE,
        DISAGREEMENT,
        LOW_CONFIDENCE_REASON,
        SURGE,
    ]
    assert all(r.predicted == "b" for r in asked)
    assert _rid(111) not in {r.request_id for r in asked}  # a person labelled it
    # Most atypical first; as many as the excess, rounded up (11 of the 11 unlabelled).
    scores = [r.ood_score for r in asked]
    assert scores == sorted(scores, reverse=True)
    assert len(asked) == 11
    assert "surges" not in asked[0].detail and "'b'" in asked[0].detail
    # Without a baseline there is no surge queue and the order is the three others'.
    plain = rank_label_requests(window, clusters=clusters, limit=200)
    assert not any(r.reason == SURGE for r in plain)


def _items() -> list[LabelRequest]:
    return [
        LabelRequest(_rid(1), 'said "hi", then, left', OUT_OF_SCOPE, "cluster 0", "a", 0.4, 3),
        LabelRequest(_rid(2), None, LOW_CONFIDENCE_REASON, "unsure", "b", 0.2, 3),
    ]


def test_exports_parse_back() -> None:
    rows = list(csv.DictReader(io.StringIO(export_csv(_items()))))
    assert [r["request_id"] for r in rows] == [_rid(1), _rid(2)]
    assert rows[0]["text"] == 'said "hi", then, left' and rows[1]["text"] == ""
    assert rows[0]["label"] == "" and rows[0]["predicted"] == "a"
    assert list(rows[0]) == ["request_id", "text", "reason", "predicted", "label"]
    tasks = json.loads(export_labelstudio(_items()))
    assert tasks[0]["data"]["text"] == 'said "hi", then, left'
    assert tasks[0]["data"]["request_id"] == _rid(1)
    assert "text" not in tasks[1]["data"]  # withheld: ids only
    choice = tasks[0]["predictions"][0]["result"][0]
    assert choice["type"] == "choices" and choice["value"]["choices"] == ["a"]


def test_label_files_read_back(tmp_path: Path) -> None:
    labelled = tmp_path / "labels.csv"
    labelled.write_text(
        "request_id,text,reason,predicted,label\n"
        f"{_rid(1)},x,r,a,new_intent\n"
        f"{_rid(2)},x,r,a,\n"  # left unlabelled: skipped
        f"{_rid(3)},x,r,a,b,extra\n"  # malformed
    )
    rows = read_label_file(labelled)
    assert [(r.row, r.label, r.skip, r.problem is None) for r in rows] == [
        (1, "new_intent", False, True),
        (2, "", True, True),
        (3, "", False, False),
    ]
    export = tmp_path / "export.json"
    export.write_text(
        json.dumps(
            [
                {
                    "data": {"request_id": _rid(1), "text": "t"},
                    "annotations": [{"result": [{"value": {"choices": ["card_lost"]}}]}],
                },
                {"data": {"request_id": _rid(2)}, "annotations": []},
                {"data": {"text": "no id"}, "annotations": []},
            ]
        )
    )
    rows = read_label_file(export)
    assert [(r.request_id, r.label, r.skip) for r in rows[:2]] == [
        (_rid(1), "card_lost", False),
        (_rid(2), "", True),
    ]
    assert rows[2].problem == "the task has no data.request_id"


# -- against a real gateway ------------------------------------------------------------------


def _specs() -> SpecialistsFile:
    return SpecialistsFile.model_validate({"specialists": [TINY]})


@pytest.fixture(scope="module")
def gateway(served_home: Path, host: Any) -> Iterator[RunningGateway]:
    from lifecycle.serving.app import create_app

    settings = Settings(home=served_home, admin_token=SecretStr(TOKEN), registry_poll_s=0)
    with SharedHost(host) as shared:
        app = create_app(settings, _specs(), host=shared)
        with running_gateway(app, token=TOKEN) as running:
            yield running


def _predict(gw: RunningGateway, texts: list[str]) -> list[str]:
    with gw.client() as client:
        answer = client.post("/v1/specialists/tiny/predict", json={"texts": texts})
    assert answer.status_code == 200, answer.text
    gw.gw.writer.flush(timeout=30)
    return [p["request_id"] for p in answer.json()["predictions"]]


def test_the_route_needs_the_token_and_leaves_labelled_requests_out(
    gateway: RunningGateway,
) -> None:
    ids = _predict(gateway, TEXTS)
    labels = gateway.gw.engine.routes["tiny"].champion.labels
    with gateway.client() as client:
        assert client.get("/v1/specialists/tiny/label-requests").status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert client.get("/v1/specialists/tiny/label-requests", headers=wrong).status_code == 401
        done = client.post(
            "/v1/specialists/tiny/feedback", json={"request_id": ids[0], "label": labels[0]}
        )
        assert done.status_code == 202
        gateway.gw.writer.flush(timeout=30)
        answer = client.get(
            "/v1/specialists/tiny/label-requests",
            params={"limit": 1000},
            headers=gateway.admin_headers(),
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["text_withheld"] is False and body["note"] is None
    asked = {i["request_id"]: i for i in body["items"]}
    assert ids[0] not in asked
    assert asked, "the tiny champion is unsure of some of these texts"
    for item in asked.values():
        assert item["reason"] in (OUT_OF_SCOPE, DISAGREEMENT, LOW_CONFIDENCE_REASON, SURGE)
        assert item["predicted"] in labels and isinstance(item["text"], str)


def test_a_label_the_champion_gives_far_more_often_than_on_its_reference_is_asked(
    gateway: RunningGateway,
) -> None:
    from lifecycle.labels.requests import reference_shares
    from lifecycle.registry.models import Registry
    from lifecycle.synthetic.scenarios import generate_tickets

    route = gateway.gw.engine.routes["tiny"]
    frame, _ = Registry(gateway.gw.settings).reference("tiny", route.champion.version)
    shares = reference_shares(frame)
    assert shares and sum(shares.values()) == pytest.approx(1.0)
    # One intent's tickets only: the label the champion gives them surges against its reference.
    tickets = generate_tickets(400, seed=11)
    intent = str(tickets["label"].iloc[0])
    _predict(gateway, tickets.loc[tickets["label"] == intent, "text"].head(60).tolist())
    with gateway.client() as client:
        answer = client.get(
            "/v1/specialists/tiny/label-requests",
            params={"limit": 1000},
            headers=gateway.admin_headers(),
        )
    assert answer.status_code == 200, answer.text
    surges = [i for i in answer.json()["items"] if i["reason"] == SURGE]
    assert surges, "60 tickets of one intent make its label surge"
    surged = {i["predicted"] for i in surges}
    assert len(surged) == 1 and surged <= set(shares)
    assert "as often as on its reference rows" in surges[0]["detail"]
    # Most atypical first; the baseline is read from the registry once per version.
    scores = [i["ood_score"] for i in surges]
    assert scores == sorted(scores, reverse=True)
    assert gateway.gw.sync._shares[("tiny", route.champion.version)] == shares


def test_the_route_withholds_text_under_hash(served_home: Path, host: Any) -> None:
    from lifecycle.serving.app import create_app

    settings = Settings(
        home=served_home, admin_token=SecretStr(TOKEN), registry_poll_s=0, store_text="hash"
    )
    with SharedHost(host) as shared:
        app = create_app(settings, _specs(), host=shared)
        with running_gateway(app, token=TOKEN) as gw:
            _predict(gw, TEXTS)
            with gw.client() as client:
                answer = client.get(
                    "/v1/specialists/tiny/label-requests", headers=gw.admin_headers()
                )
    body = answer.json()
    assert answer.status_code == 200 and body["text_withheld"] is True
    assert "LIFECYCLE_STORE_TEXT=hash" in body["note"]
    assert all(i["text"] is None for i in body["items"])


def _cli(served_home: Path, tmp_path: Path, *args: str) -> Any:
    import yaml
    from typer.testing import CliRunner

    from lifecycle.cli.main import app

    spec_file = tmp_path / "specialists.yaml"
    spec_file.write_text(yaml.safe_dump({"specialists": [TINY]}))
    env = {"LIFECYCLE_HOME": str(served_home), "LIFECYCLE_STORE_TEXT": "full"}
    option = "--specialists-file" if args[0] == "feedback" else "-f"
    return CliRunner().invoke(app, [*args, option, str(spec_file)], env=env)


def test_cli_exports_parse_back(gateway: RunningGateway, served_home: Path, tmp_path: Path) -> None:
    _predict(gateway, TEXTS)
    out = tmp_path / "requests.csv"
    result = _cli(served_home, tmp_path, "label-requests", "-s", "tiny", "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert rows and all(r["label"] == "" and len(r["request_id"]) == 32 for r in rows)
    studio = _cli(served_home, tmp_path, "label-requests", "-s", "tiny", "--export", "labelstudio")
    assert studio.exit_code == 0, studio.output
    tasks = json.loads(studio.stdout)
    assert {t["data"]["request_id"] for t in tasks} == {r["request_id"] for r in rows}
    # Rows the hash gateway stored have no text: their tasks hold the id alone.
    assert all(isinstance(t["data"].get("text", ""), str) for t in tasks)
    assert any("text" in t["data"] for t in tasks)


def test_bulk_feedback_reports_per_row_and_stores_exactly_the_valid_rows(
    gateway: RunningGateway, served_home: Path, tmp_path: Path
) -> None:
    ids = _predict(gateway, TEXTS[:4])
    labels = gateway.gw.engine.routes["tiny"].champion.labels
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text(
        "request_id,label\n"
        f"{ids[0]},{labels[0]}\n"  # 1 ok
        f"{ids[1]},bulk_new_intent\n"  # 2 ok: proposed
        f"{'f' * 32},{labels[0]}\n"  # 3 unknown id
        f"{ids[2]}, padded\n"  # 4 malformed label
        f"not-an-id,{labels[0]}\n"  # 5 malformed id
        f"{ids[3]},\n"  # 6 no label: skipped
    )
    store = gateway.gw.writer.store

    def stored() -> dict[str, str]:
        window = store.window("tiny", with_embeddings=False)
        got = window[window["id"].isin(ids) & window["true_label"].notna()]
        return dict(zip(got["id"], got["true_label"], strict=True))

    strict = _cli(served_home, tmp_path, "feedback", "-s", "tiny", "--file", str(labels_csv))
    assert strict.exit_code == 2, strict.output  # written, with rows rejected
    assert "row 3: rejected (404)" in strict.stdout
    assert "row 4: rejected (422)" in strict.stdout and "whitespace" in strict.stdout
    assert "row 5: rejected (422)" in strict.stdout
    assert "2 labels written, 3 rows rejected, 1 without a label skipped" in strict.stdout
    assert stored() == {ids[0]: labels[0], ids[1]: "bulk_new_intent"}

    # --strict: the same file refused whole; a clean file in JSON.
    refused = _cli(
        served_home, tmp_path, "feedback", "-s", "tiny", "--file", str(labels_csv), "--strict"
    )
    assert refused.exit_code == 1 and "nothing written" in refused.stdout
    studio = tmp_path / "export.json"
    studio.write_text(
        json.dumps(
            [
                {
                    "data": {"request_id": ids[2]},
                    "annotations": [{"result": [{"value": {"choices": [labels[1]]}}]}],
                }
            ]
        )
    )
    clean = _cli(served_home, tmp_path, "feedback", "-s", "tiny", "--file", str(studio), "--json")
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.stdout)["written"] == 1
    assert stored() == {ids[0]: labels[0], ids[1]: "bulk_new_intent", ids[2]: labels[1]}


# -- the simulated person of the demo and bench/loop.py --------------------------------------


def test_a_simulated_person_labels_from_the_queue_first_then_at_random(
    gateway: RunningGateway,
) -> None:
    from lifecycle.synthetic.simulate import Labeller, simulate

    labels = gateway.gw.engine.routes["tiny"].champion.labels
    stream = pd.DataFrame(
        {
            "text": [f"{t} (person {i})" for i, t in enumerate(TEXTS * 2)],
            "label": [labels[i % len(labels)] for i in range(2 * len(TEXTS))],
            "phase": "after",
        }
    )
    with gateway.client() as client:
        report = simulate(gateway.url, "tiny", stream, feedback_share=0.0, client=client)
        assert report.feedback_sent == 0 and len(report.answered) == len(stream)
        gateway.gw.writer.flush(timeout=30)
        queued = client.get(
            "/v1/specialists/tiny/label-requests",
            params={"limit": 1000},
            headers=gateway.admin_headers(),
        ).json()["items"]
        in_queue = {i["request_id"] for i in queued} & {rid for rid, _ in report.answered}
        person = Labeller(share=0.5, source="queue", seed=1)
        person.saw(report)
        sent = person.label(client, "tiny", token=TOKEN)
        gateway.gw.writer.flush(timeout=30)
        # Half the 24 requests, the queue's own first.
        assert sent["queue"] + sent["random"] == 12 and person.refused == 0
        assert sent["queue"] == min(12, len(in_queue)) and sent["queue"] > 0
        # What was labelled leaves the queue; a second round with nothing new owes nothing.
        after = client.get(
            "/v1/specialists/tiny/label-requests",
            params={"limit": 1000},
            headers=gateway.admin_headers(),
        ).json()["items"]
        labelled_now = len(in_queue) - len(in_queue & {i["request_id"] for i in after})
        assert labelled_now == sent["queue"]
        assert person.label(client, "tiny", token=TOKEN) == {"queue": 0, "random": 0}

        # The random person never asks the queue, at the same label count.
        report = simulate(gateway.url, "tiny", stream, feedback_share=0.0, client=client)
        at_random = Labeller(share=0.5, source="random", seed=1)
        at_random.saw(report)
        assert at_random.label(client, "tiny", token=TOKEN) == {"queue": 0, "random": 12}
    with pytest.raises(ValueError, match="share"):
        Labeller(share=1.5)


def test_a_failed_request_counts_as_a_wrong_answer(gateway: RunningGateway) -> None:
    from lifecycle.synthetic.simulate import simulate

    stream = pd.DataFrame({"text": ["fine text", ""], "label": ["a", "a"], "phase": "x"})
    report = simulate(gateway.url, "tiny", stream, feedback_share=0.0)
    # The empty text is refused (422): the client got no answer, so it counts, as wrong.
    assert report.errors == 1 and report.sent == 2
    assert report.phases["x"].requests == 2 and report.phases["x"].correct <= 1
    assert len(report.answered) == 1
