"""bench/int8_runtimes.py end to end in its quick mode (64 texts, one pass, no ONNX Runtime):
the torch rows are measured and its answer checks pass."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_int8_runtimes_quick_run_measures_the_torch_rows_and_passes_its_checks(
    tmp_path: Path,
) -> None:
    out = tmp_path / "r.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "int8_runtimes.py"),
            "--quick",
            "--no-ort",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(out.read_text())

    assert report["passed"] is True
    rows = report["rows"]
    for key in ("torch_fp32", "torch_int8_7bit", "shipped_int8"):
        speed = rows[key]["texts_per_s"]
        assert isinstance(speed, float) and math.isfinite(speed) and speed > 0, (key, speed)
    shipped = rows["shipped_int8"]
    assert shipped["cos_min"] >= 0.97
    assert "ratio_vs_torch_fp32" in shipped
    for key in ("ort_fp32", "ort_int8"):
        assert rows[key]["status"].startswith("skipped"), rows[key]
    assert "all checks passed" in done.stdout and "FAILED" not in done.stdout
