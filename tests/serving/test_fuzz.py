"""Fuzzing the gateway from its own OpenAPI document (schemathesis) against a real uvicorn.

Every operation gets valid inputs (with the admin token) and invalid ones (without it). The
contract: never a 5xx, every status code and body as documented, and the gateway still
answers a plain request afterwards with every accepted request stored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifecycle.config.settings import Settings
from lifecycle.config.spec import SpecialistsFile
from tests.conftest import TINY
from tests.gateway_harness import RunningGateway, SharedHost, running_gateway

TOKEN = "fuzz-admin-token-0123456789"
#: Hypothesis examples per operation and mode: 10 operations x 2 modes x this is the ceiling;
#: operations without inputs stop early, so the total is counted and checked below.
EXAMPLES = 110
MIN_CASES = 1000


@pytest.fixture(scope="module")
def fuzzed(served_home: Path, host) -> Iterator[RunningGateway]:  # type: ignore[no-untyped-def]
    from lifecycle.serving.app import create_app

    settings = Settings(
        home=served_home,
        admin_token=TOKEN,
        registry_poll_s=0,
        # Small limits keep the model's share of the run short; the fuzzer tests them too.
        max_texts_per_request=8,
        max_text_chars=300,
        max_body_bytes=20_000,
    )
    specs = SpecialistsFile.model_validate({"specialists": [TINY]})
    with SharedHost(host) as shared:
        app = create_app(settings, specs, host=shared)
        with running_gateway(app, token=TOKEN) as running:
            yield running


@pytest.mark.slow
def test_generated_requests_to_every_route_get_documented_answers(fuzzed: RunningGateway) -> None:
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")
    cases: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    session = requests.Session()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10

    def fuzz(operation, mode, headers: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,  # the same cases in every CI run
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def exercise(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(base_url=fuzzed.url, session=session, headers=headers)
            case.validate_response(response, checks=checks)
            cases[operation.label] += 1
            statuses[response.status_code] += 1

        exercise()

    for operation in operations:
        fuzz(operation, GenerationMode.POSITIVE, fuzzed.admin_headers())
        raw = operation.definition.raw
        if raw.get("parameters") or raw.get("requestBody"):  # else no input can be invalid
            fuzz(operation, GenerationMode.NEGATIVE, {})

    total = sum(cases.values())
    print(f"fuzzed {total} cases; per operation {dict(cases)}; statuses {dict(statuses)}")
    assert total >= MIN_CASES, (total, cases)
    assert {op.label for op in operations} == set(cases), "an operation got no case"
    assert not [code for code in statuses if code >= 500], statuses
    assert any(200 <= code < 300 for code in statuses) and statuses[422] > 0, statuses

    # Still serving, and what it accepted during the fuzzing is stored.
    with fuzzed.client() as client:
        after = client.post("/v1/specialists/tiny/predict", json={"texts": ["where is my card"]})
    assert after.status_code == 200, after.text
    writer = fuzzed.gw.writer
    assert writer.flush(timeout=30) == "database"
    assert writer.written == writer.submitted + writer.adopted
