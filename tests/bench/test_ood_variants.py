"""bench/ood_variants.py end to end on its self-test data (``PROBE_FAKE=1``): small random
pools and a thinned grid, no champion to train; its answer checks must pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_ood_variants_self_test_writes_the_report_and_passes_its_checks(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "ood_variants.py"), "--out", str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PROBE_FAKE": "1"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = (tmp_path / "fake_results.md").read_text()
    assert (tmp_path / "fake_grid.npz").is_file()

    assert "Shipped detector via lifecycle.model.ood.fit_detector: held-out " in report
    assert "### Fair rule: every 5/5 split of the held-out intents (252)." in report
    assert "- AUROC on the 5 untuned intents: mean " in report
    assert "shipped recipe on the same halves: mean " in report
    assert "- AUROC all 10 of the picked config: mean " in report
    assert "- one pick from the in_scope pool only" in report
    assert "### The split rule inside smaller families declared in advance" in report
    for family in (
        "conf weight only (shipped kNN)",
        "kNN base x conf weight",
        "plain kNN bases (no knnlr/knnpc) x all parts",
        "knnlr base x all parts",
        "full grid",
    ):
        assert f"| {family} |" in report
    assert "- shipped recipe from the grid's parts: held-out " in report
    assert "all checks passed" in report and "FAILED" not in report
