"""An open label set: feedback proposes labels the champion does not know, within a cap, and a
retrain learns those with enough examples. The rules (``lifecycle.labels.feedback``) are checked
pure; the route against a real uvicorn, a real MLflow registry and a real trained specialist."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import SecretStr

from lifecycle.config.settings import Settings
from lifecycle.config.spec import SpecialistsFile, SpecialistSpec
from lifecycle.labels.feedback import (
    ACCEPTED,
    INVALID,
    TOO_MANY_PROPOSED,
    UNKNOWN_REQUEST,
    LabelSet,
    check_feedback,
    label_problem,
    proposed_labels,
    refusal,
)
from lifecycle.training.retraining import plan_retraining
from tests.conftest import TINY
from tests.gateway_harness import RunningGateway, SharedHost, running_gateway

TOKEN = "s3cret-admin-token-for-tests"
#: Distinct proposed labels one specialist may have in these tests.
CAP = 3
RID = "a" * 32


# -- the rules, pure ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "problem"),
    [
        ("card_lost", None),
        ("été — ok", None),
        ("x" * 100, None),
        ("", "blank"),
        ("   ", "blank"),
        ("x" * 101, "101 characters"),
        ("bad\x07label", "control characters"),
        ("tab\there", "control characters"),
        ("del\x7f", "control characters"),
        (" padded", "whitespace"),
    ],
)
def test_label_problem(label: str, problem: str | None) -> None:
    found = label_problem(label)
    assert (found is None) if problem is None else (problem in (found or ""))


def _labels(**overrides: Any) -> LabelSet:
    values: dict[str, Any] = {
        "specialist": "s",
        "known": frozenset({"a", "b"}),
        "open": True,
        "stored_proposed": frozenset({"p1"}),
        "max_proposed": 3,
    }
    values.update(overrides)
    return LabelSet(**values)


def test_check_feedback_orders_problems_and_caps_new_labels() -> None:
    owners = {RID: "s", "b" * 32: "other"}
    rows = [
        (RID, "a"),  # known
        (RID, "p1"),  # proposed, already stored: no new room needed
        (RID, "p2"),  # new: room for 2 (3 - 1 stored)
        (RID, "p3"),  # new: the last room
        (RID, "p2"),  # admitted already
        (RID, "p4"),  # past the cap
        ("b" * 32, "a"),  # another specialist's request
        ("c" * 32, "a"),  # no such request
        ("nope", "a"),  # not a request id
        (RID, "bad\x00"),  # not a label
    ]
    checks = check_feedback(rows, labels=_labels(), owners=owners)
    assert [c.status for c in checks] == [
        ACCEPTED,
        ACCEPTED,
        ACCEPTED,
        ACCEPTED,
        ACCEPTED,
        TOO_MANY_PROPOSED,
        UNKNOWN_REQUEST,
        UNKNOWN_REQUEST,
        INVALID,
        INVALID,
    ]
    assert [c.row for c in checks] == list(range(1, 11))
    assert [c.proposed for c in checks[:4]] == [False, True, True, True]
    assert "LIFECYCLE_MAX_PROPOSED_LABELS" in (checks[5].reason or "")
    # All or nothing: 422 outranks 404, which outranks 429.
    status, message = refusal(checks) or (0, "")
    assert status == INVALID and "control characters" in message
    assert refusal(checks[:5]) is None
    assert (refusal(checks[:8]) or (0,))[0] == UNKNOWN_REQUEST


def test_closed_policy_refuses_unknown_labels() -> None:
    checks = check_feedback([(RID, "new")], labels=_labels(open=False), owners={RID: "s"})
    assert checks[0].status == INVALID and "labels_policy: closed" in (checks[0].reason or "")


def test_proposed_labels_most_used_first() -> None:
    counts = {"a": 9, "new": 3, "other": 5, "also": 3}
    assert proposed_labels(counts, ["a"]) == {"other": 5, "also": 3, "new": 3}


def test_spec_policies_and_defaults() -> None:
    spec = SpecialistSpec(name="x")
    assert spec.labels_policy == "open" and spec.out_of_scope_label is None
    assert spec.training.min_examples_per_label == 10
    with pytest.raises(ValueError, match="not a valid label"):
        SpecialistSpec(name="x", out_of_scope_label=" none")
    with pytest.raises(ValueError):
        SpecialistSpec(name="x", labels_policy="ajar")  # type: ignore[arg-type]


# -- retraining: the head grows only for proposed labels with enough examples ----------------


def _window(counts: dict[str, int]) -> pd.DataFrame:
    rows = []
    for label, n in counts.items():
        for i in range(n):
            rows.append(
                {
                    "id": f"{label}-{i}",
                    "text": f"{label} text {i}",
                    "true_label": label,
                    "true_label_source": "human",
                    "escalated": False,
                    "fallback_label": None,
                }
            )
    return pd.DataFrame(rows)


def test_plan_grows_the_head_only_for_labels_with_enough_examples() -> None:
    reference = pd.DataFrame({"text": [f"r{i}" for i in range(40)], "label": ["a", "b"] * 20})
    window = _window({"a": 20, "b": 20, "enough": 12, "short": 4, "tiny": 1})
    plan = plan_retraining(
        window,
        reference=reference,
        labels_known=["a", "b"],
        min_labels=10,
        replay_ratio=0.0,
        min_examples_per_label=10,
    )
    assert plan.ready
    assert plan.new_labels == ["enough"]
    trained = set(plan.train["label"]) | set(plan.holdout_new["label"])
    assert "enough" in trained and not trained & {"short", "tiny"}
    assert plan.counts.held_back == 5 and plan.counts.usable == 52
    summary = plan.summary()
    assert summary["labels_short"] == {"short": 6, "tiny": 9}
    assert summary["held_back_rows"] == 5
    assert any("'short' needs 6 more" in w for w in plan.warnings)

    # Not ready: the reason names the labels short of examples, and how many each lacks.
    waiting = plan_retraining(
        _window({"a": 3, "short": 4}),
        reference=reference,
        labels_known=["a", "b"],
        min_labels=10,
        replay_ratio=0.0,
        min_examples_per_label=10,
    )
    assert not waiting.ready and waiting.missing == 7
    assert "'short' needs 6 more" in waiting.reason


def test_plan_waits_for_a_new_label_that_is_a_real_share_of_the_traffic() -> None:
    reference = pd.DataFrame({"text": [f"r{i}" for i in range(40)], "label": ["a", "b"] * 20})
    kwargs: dict[str, Any] = {
        "reference": reference,
        "labels_known": ["a", "b"],
        "min_labels": 10,
        "replay_ratio": 0.0,
        "min_examples_per_label": 10,
        "wait_share": 0.05,
    }
    # 'new' is 6 of 46 labelled rows (13%): training now would leave it out, so the plan waits.
    waiting = plan_retraining(_window({"a": 20, "b": 20, "new": 6}), **kwargs)
    assert not waiting.ready
    assert waiting.missing == 4
    assert (
        "waiting for proposed labels" in waiting.reason and "'new' needs 4 more" in waiting.reason
    )
    assert waiting.summary()["labels_short"] == {"new": 4}
    # Once it has enough it trains, growing the head.
    ready = plan_retraining(_window({"a": 20, "b": 20, "new": 10}), **kwargs)
    assert ready.ready and ready.new_labels == ["new"]
    # A rare proposed label (2 of 202 rows, 1%) does not hold the retrain back.
    rare = plan_retraining(_window({"a": 100, "b": 100, "typo": 2}), **kwargs)
    assert rare.ready and rare.counts.held_back == 2
    # wait_share 0: never waits.
    never = plan_retraining(_window({"a": 20, "b": 20, "new": 6}), **{**kwargs, "wait_share": 0})
    assert never.ready
    with pytest.raises(ValueError, match="wait_share"):
        plan_retraining(_window({"a": 20}), **{**kwargs, "wait_share": 1.5})


# -- the gateway --------------------------------------------------------------------------------


def _specs(**overrides: Any) -> SpecialistsFile:
    return SpecialistsFile.model_validate({"specialists": [{**TINY, **overrides}]})


@pytest.fixture(scope="module")
def gateway(served_home: Path, host: Any) -> Iterator[RunningGateway]:
    from lifecycle.serving.app import create_app

    settings = Settings(
        home=served_home, admin_token=SecretStr(TOKEN), registry_poll_s=0, max_proposed_labels=CAP
    )
    with SharedHost(host) as shared:
        app = create_app(settings, _specs(), host=shared)
        with running_gateway(app, token=TOKEN) as running:
            yield running


def _request_ids(gw: RunningGateway, n: int) -> list[str]:
    texts = [f"I lost my card number {i}" for i in range(n)]
    with gw.client() as client:
        answer = client.post("/v1/specialists/tiny/predict", json={"texts": texts})
    assert answer.status_code == 200, answer.text
    # Stored (and the store migrated) before labels that need a read of it are sent.
    gw.gw.writer.flush(timeout=30)
    return [p["request_id"] for p in answer.json()["predictions"]]


def _stored_labels(gw: RunningGateway) -> dict[str, int]:
    gw.gw.writer.flush(timeout=30)
    counts: dict[str, int] = gw.gw.writer.store.label_counts("tiny", source=None)
    return counts


def _send(gw: RunningGateway, items: list[tuple[str, str]]) -> Any:
    with gw.client() as client:
        return client.post(
            "/v1/specialists/tiny/feedback",
            json={"items": [{"request_id": r, "label": label} for r, label in items]},
        )


def test_open_policy_stores_a_proposed_label(gateway: RunningGateway) -> None:
    ids = _request_ids(gateway, 3)
    answer = _send(gateway, [(i, "lost_in_space") for i in ids])
    assert answer.status_code == 202, answer.text
    assert answer.json()["proposed_labels"] == ["lost_in_space"]
    assert _stored_labels(gateway)["lost_in_space"] == 3


def test_closed_policy_refuses_a_label_outside_the_set(gateway: RunningGateway) -> None:
    (rid,) = _request_ids(gateway, 1)
    gw = gateway.gw
    open_spec = gw.specs["tiny"]
    gw.specs["tiny"] = open_spec.model_copy(update={"labels_policy": "closed"})
    try:
        refused = _send(gateway, [(rid, "brand_new_intent")])
        known = _send(gateway, [(rid, gw.engine.routes["tiny"].champion.labels[0])])
    finally:
        gw.specs["tiny"] = open_spec
    assert refused.status_code == 422
    assert "brand_new_intent" in refused.json()["detail"]
    assert "closed" in refused.json()["detail"]
    assert known.status_code == 202
    assert "brand_new_intent" not in _stored_labels(gateway)


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        ("   ", "blank"),
        ("x" * 101, "101 characters"),
        ("bad\x01label", "control characters"),
    ],
)
def test_malformed_labels_are_a_422_with_the_reason(
    gateway: RunningGateway, label: str, reason: str
) -> None:
    (rid,) = _request_ids(gateway, 1)
    answer = _send(gateway, [(rid, label)])
    assert answer.status_code == 422
    assert reason in answer.json()["detail"]


def test_the_proposed_label_cap_is_a_429_and_stores_nothing(gateway: RunningGateway) -> None:
    ids = _request_ids(gateway, CAP + 2)
    before = _stored_labels(gateway)
    champion = gateway.gw.engine.routes["tiny"].champion.labels
    room = CAP - len([k for k in before if k not in champion])
    labels = [f"flood_{i}" for i in range(room + 1)]
    known = gateway.gw.engine.routes["tiny"].champion.labels[0]
    # One call past the cap, with a known label in it: nothing of the call is stored.
    answer = _send(gateway, [(ids[0], known), *zip(ids[1:], labels, strict=False)])
    assert answer.status_code == 429, answer.text
    assert "LIFECYCLE_MAX_PROPOSED_LABELS" in answer.json()["detail"]
    assert _stored_labels(gateway) == before
    # Up to the cap is fine; one more distinct label is not, an already proposed one is.
    assert _send(gateway, list(zip(ids, labels[:room], strict=False))).status_code == 202
    assert _send(gateway, [(ids[0], "one_too_many")]).status_code == 429
    assert _send(gateway, [(ids[1], "lost_in_space")]).status_code == 202


def test_proposed_labels_in_the_listing_and_status(
    gateway: RunningGateway, served_home: Path, tmp_path: Path
) -> None:
    import yaml
    from typer.testing import CliRunner

    from lifecycle.cli.main import app
    from lifecycle.serving.state import refresh_outcomes

    ids = _request_ids(gateway, 2)
    assert _send(gateway, [(i, "lost_in_space") for i in ids]).status_code == 202
    expected = _stored_labels(gateway)["lost_in_space"]
    asyncio.run(refresh_outcomes(gateway.gw))  # what the gateway does after each poll
    with gateway.client() as client:
        listing = client.get("/v1/specialists").json()["specialists"][0]
        openapi = client.get("/openapi.json").json()
    assert listing["proposed_labels"]["lost_in_space"] == expected
    assert not set(listing["proposed_labels"]) & set(listing["labels"])
    described = openapi["components"]["schemas"]["SpecialistOut"]["properties"]
    assert "champion does not know" in described["proposed_labels"]["description"]

    spec_file = tmp_path / "specialists.yaml"
    spec_file.write_text(yaml.safe_dump({"specialists": [TINY]}))
    env = {"LIFECYCLE_HOME": str(served_home)}
    result = CliRunner().invoke(app, ["status", "-f", str(spec_file), "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["proposed_labels"]["lost_in_space"] == expected
    text = CliRunner().invoke(app, ["status", "-f", str(spec_file)], env=env)
    assert f"lost_in_space ({expected})" in text.stdout


def test_the_out_of_scope_label_answers_out_of_scope(gateway: RunningGateway) -> None:
    gw = gateway.gw
    with gateway.client() as client:
        first = client.post("/v1/specialists/tiny/predict", json={"texts": ["refund please"]})
        said = first.json()["predictions"][0]["label"]
        spec = gw.specs["tiny"]
        gw.specs["tiny"] = spec.model_copy(update={"out_of_scope_label": said})
        try:
            again = client.post("/v1/specialists/tiny/predict", json={"texts": ["refund please"]})
        finally:
            gw.specs["tiny"] = spec
    prediction = again.json()["predictions"][0]
    assert prediction["label"] == said and prediction["out_of_scope"] is True


def test_the_monitor_alert_lists_proposed_labels() -> None:
    from monitors.message import alert_message
    from monitors.results import Status, Verdict

    verdict = Verdict(
        specialist="tiny",
        status=Status.DRIFT,
        reasons=(),
        champion_version=1,
        window={"rows": 300, "proposed_labels": {"lost_in_space": 12, "new_card": 3}},
    )
    message = alert_message(SpecialistSpec(name="tiny"), verdict)
    assert "proposed labels: lost_in_space (12), new_card (3)" in message.summary
    assert message.extra["proposed_labels"] == {"lost_in_space": 12, "new_card": 3}
    assert any("label-requests" in a for a in message.actions)
