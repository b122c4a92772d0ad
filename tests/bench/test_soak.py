"""The soak benchmark in a short form: bench/soak.py against `lifecycle serve`, shadow on.

The full soak (50,000 requests at concurrency 64) lives in bench/ with its figures in
bench/RESULTS.md; this run checks the same contract on fewer requests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

REQUESTS = 2000


@pytest.mark.slow
def test_a_short_soak_has_no_errors_logs_every_request_and_accounts_for_its_shadow(
    served_home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "soak.py"),
            f"--requests={REQUESTS}",
            "--concurrency=32",
            "--specialist=tiny",
            f"--home={served_home}",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["errors"] == 0, result["first_errors"]
    assert result["rows_logged"] == REQUESTS
    assert result["shadow_rows"] + result["shadow_failures"] > 0  # the challenger did shadow
    assert result["gateway_exit"] in (0, -15)
    # Every request's shadow work is stored, dropped (queue full) or discarded at the stop
    # (past the drain time), and counted: none is lost silently.
    counts = result["shadow_counts_at_shutdown"]
    assert counts is not None, "no shadow counts logged at shutdown: " + run.stdout[-3000:]
    stored = result["shadow_rows"] + result["shadow_failures"]
    assert stored + counts["dropped"] + counts["discarded"] == REQUESTS, (stored, counts)
    assert counts["scored"] + counts["failed"] == stored  # the gateway's counts match the store
    assert result["verdicts"]["shadow_accounted"]
    # Right answers, not only 200s: a sample equals the champion's own, run in-process.
    assert result["answers_checked"] >= 50, result["answers_checked"]
    assert result["answer_mismatch_count"] == 0, result["answer_mismatches"]
    # A short run still warms the allocator, so its bound is looser than the full soak's 10%.
    assert result["rss_end_over_warmup"] <= 1.25, result["rss_mb"]
