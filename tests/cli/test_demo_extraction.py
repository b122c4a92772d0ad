"""``lifecycle demo --task extraction`` end to end, as a user runs it: a champion extractor
trained on generated tickets, served by a real gateway, a drift that brings tracking numbers
nobody declared, and the flows (monitor, retrain, gate) that learn the new field and promote
it. Minutes of real training and serving: ``slow``. Its arguments are checked first."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

FIGURE = re.compile(r"entity F1 (before the drift|after the promotion)[^:]*: ([0-9.]+) on (\d+)")


def test_the_demo_checks_the_task_and_its_scenario_before_starting_anything() -> None:
    from typer.testing import CliRunner

    from lifecycle.cli.main import app

    runner = CliRunner()
    bad_task = runner.invoke(app, ["demo", "--task", "ranking"])
    assert bad_task.exit_code == 2 and "classification or extraction" in bad_task.output
    bad_scenario = runner.invoke(app, ["demo", "--task", "extraction", "--scenario", "new_intent"])
    assert bad_scenario.exit_code == 2 and "new_field" in bad_scenario.output
    with_data = runner.invoke(app, ["demo", "--task", "extraction", "--data", "x.csv"])
    assert with_data.exit_code == 2 and "--data" in with_data.output
    shown = runner.invoke(app, ["demo", "--help"])
    assert shown.exit_code == 0 and "--task" in shown.output


@pytest.mark.slow
def test_the_extraction_demo_learns_the_new_field_and_promotes_it(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LIFECYCLE_", "PREFECT_", "MLFLOW_TRACKING"))
    }
    home = tmp_path / "demo"
    command = [str(Path(sys.executable).parent / "lifecycle"), "demo", "--task", "extraction"]
    run = subprocess.run(
        [*command, "--home", str(home)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=3 * 3600,
    )
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    for step in ("champion registered", "monitor:", "challenger registered", "shadow starts"):
        assert step in out, f"the timeline lacks {step!r}:\n{out}"
    assert "head grows: tracking_number" in out, out
    assert "gate: promoted" in out and "promoted" in out, out
    figures = {what: (float(value), int(n)) for what, value, n in FIGURE.findall(out)}
    assert set(figures) == {"before the drift", "after the promotion"}, out
    (before, n_before), (after, n_after) = (
        figures["before the drift"],
        figures["after the promotion"],
    )
    assert n_before > 0 and n_after > 0
    assert after >= 0.9 * before, out
