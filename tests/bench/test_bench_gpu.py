"""bench/gpu.py end to end on the CPU (``--device cpu --quick``), and the parts of
bench/gateway.py it builds on that decide a verdict: the derived adapters, the answer
check and the exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.bench_modules import load_bench

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
DATA = REPO.parent / "shared" / "data" / "banking77"


gb = load_bench("gateway")


def test_gpu_bench_runs_end_to_end_on_the_cpu_in_quick_mode(tmp_path: Path) -> None:
    if not (DATA / "train.csv").is_file():
        pytest.skip(f"Banking77 is not at {DATA}")
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "gpu.py"), "--device", "cpu", "--quick", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = json.loads(out.read_text())

    assert results["device"] == "cpu" and results["quick"] is True
    training = results["training"]
    assert training["steps"] > 0 and training["examples_per_second"] > 0
    assert training["test_accuracy"] > training["chance"]
    assert results["limit"]["best"] > 0
    points = results["gateway"]["points"]
    assert set(points) == {"1", "16"}
    for point in points.values():
        assert point["texts_per_s"] > 0
        assert point["non_2xx"] == 0 and point["socket_errors"] == 0
    answers = results["gateway"]["answers"]
    assert answers["before_load"]["checked"] == gb.CHECK_TEXTS
    assert answers["under_load"]["checked"] > 0
    assert answers["share_checked"] >= 0.05
    for tally in (answers["before_load"], answers["under_load"]):
        assert tally["mismatches"] == 0 and tally["unverifiable"] == 0
    assert all(r is not None and r > 0 for r in results["ratios"].values())
    assert results["gpu_tests"]["ok"] and results["gpu_tests"]["returncode"] == 0
    assert results["checks"] and all(results["checks"].values())


def test_gpu_bench_forced_onto_cuda_without_cuda_says_so_and_fails(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    done = subprocess.run(
        [sys.executable, str(BENCH / "gpu.py"), "--device", "cuda", "--quick"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "CUDA is unavailable" in done.stderr


# -- bench/gateway.py's verdict logic --


class _FakeHost:
    """Answers fixed in advance, in the shape AdapterHost.predict gives them."""

    def __init__(self, labels: list[str], answers: dict[str, list[float]]) -> None:
        self.labels = labels
        self.answers = answers

    def meta(self, adapter_id: str) -> Any:
        return SimpleNamespace(labels=tuple(self.labels))

    def predict(self, texts: list[str], adapter_id: str) -> list[Any]:
        out = []
        for text in texts:
            probs = self.answers[text]
            best = max(range(len(probs)), key=probs.__getitem__)
            out.append(
                SimpleNamespace(
                    label=self.labels[best], confidence=probs[best], probabilities=probs
                )
            )
        return out


def test_an_answer_from_other_weights_is_a_mismatch_and_float_noise_is_not() -> None:
    host = _FakeHost(["a", "b", "c"], {"t1": [0.7, 0.2, 0.1], "t2": [0.45, 0.44995, 0.10005]})
    oracle = gb.Oracle(host, {"s": "s@v1"})
    tally = gb.Tally()
    oracle.compare(tally, "s", ["t1"], ["a"], [0.7 + 1e-6], where="test")
    assert (tally.checked, tally.mismatches, tally.ties) == (1, 0, 0)
    oracle.compare(tally, "s", ["t1"], ["b"], [0.7], where="test")  # wrong label
    oracle.compare(tally, "s", ["t1"], ["a"], [0.65], where="test")  # right label, other weights
    assert tally.mismatches == 2
    # The runner-up within TIE of the top, with the top's confidence: float noise, not a fault.
    oracle.compare(tally, "s", ["t2"], ["b"], [0.45], where="test")
    assert (tally.checked, tally.mismatches, tally.ties) == (4, 2, 1)


def test_derived_adapters_differ_from_the_trained_one_and_leave_it_as_it_was() -> None:
    import torch

    torch.manual_seed(0)
    lora = [torch.nn.Parameter(torch.randn(4, 6)), torch.nn.Parameter(torch.randn(6, 4))]
    head = [torch.nn.Parameter(torch.randn(5, 6)), torch.nn.Parameter(torch.randn(5))]
    host = SimpleNamespace(trainable_parameters=lambda adapter_id: (lora, head))
    result = SimpleNamespace(host=host, adapter_id="candidate")
    original = [p.detach().clone() for p in (*lora, *head)]
    with gb.derived(result, 0) as how:
        assert how == "trained"
        assert all(torch.equal(p, o) for p, o in zip((*lora, *head), original, strict=True))
    seen = []
    for k in (1, 2, 1):
        with gb.derived(result, k):
            seen.append([p.detach().clone() for p in (*lora, *head)])
            # The head's rows are dealt out again, not changed: the same rows in another order.
            assert sorted(head[1].tolist()) == sorted(original[3].tolist())
        assert all(torch.equal(p, o) for p, o in zip((*lora, *head), original, strict=True))
    assert not torch.equal(seen[0][0], original[0])
    assert not torch.equal(seen[0][0], seen[1][0])
    assert all(torch.equal(a, b) for a, b in zip(seen[0], seen[2], strict=True))  # seeded


def _results(**answers: Any) -> dict[str, Any]:
    loaded = {"checked": 300, "mismatches": 0, "unverifiable": 0, "ties": 0}
    loaded.update(answers)
    before = {"checked": 8, "mismatches": 0, "unverifiable": 0}
    pair = [{"limit": 100.0, "sixteen": 90.0, "one": 60.0, "one_c16": 60.0, "mlflow_c16": 15.0}]
    return {
        "paired": pair,
        "adapters": {"eight_mixed_texts_per_s": [90.0], "one_texts_per_s": [100.0]},
        "shadow": {"on_p50_ms": [10.0], "off_p50_ms": [10.0]},
        "ood": {
            "rounds": [
                {
                    f"{side}_{n}{e}": v
                    for side in ("on", "off")
                    for n in (1, 16)
                    for e, v in (("", 100.0), ("_errors", 0))
                }
            ]
        },
        "answers": {
            "answered_under_load": 3000,
            "under_load": {"max_confidence_gap": 0.0, **loaded},
            "before_load": before,
        },
        # Part 7 (an extractor and a classifier mixed), measured and fine.
        "mixed": {
            "rounds": [
                {f"{k}_{n}": 100.0 for k in ("classifier", "extractor", "mixed") for n in (1, 16)}
            ],
            "answers": {
                "answered_under_load": 3000,
                "under_load": {
                    "checked": 300,
                    "mismatches": 0,
                    "unverifiable": 0,
                    "ties": 0,
                    "max_confidence_gap": 0.0,
                },
                "before_and_after_load": before,
            },
        },
        # Part 8 (int8 against float32), measured and fine.
        "int8": {
            "rounds": [
                {
                    "limit_int8": 170.0,
                    "limit_fp32": 100.0,
                    "int8_16": 160.0,
                    "fp32_16": 100.0,
                    "int8_1": 90.0,
                    "mlflow_best": 25.0,
                    **{f"{k}_errors": 0 for k in ("int8_16", "fp32_16", "int8_1", "fp32_1")},
                }
            ],
            "accuracy": {
                "test_texts": 3080,
                "accuracy_fp32": 0.92,
                "accuracy_int8": 0.918,
                "loss_points": 0.2,
                "agreement_test": 0.99,
                "agreement_reference": 0.99,
            },
            "drift": {
                "reference_int8": {"status": "OK", "drifted": []},
                "reference_fp32": {"status": "DRIFT", "drifted": ["embeddings"]},
            },
        },
    }


def test_int8_floors_fail_on_slow_int8_lost_accuracy_or_an_alarm_on_the_int8_reference() -> None:
    def int8_failures(results: dict[str, Any]) -> list[str]:
        checks = [v["check"] for v in gb.verdicts(results) if v["pass"] is not True]
        return [c for c in checks if "int8" in c]

    assert int8_failures(_results()) == []
    slow = _results()
    slow["int8"]["rounds"][0].update(limit_int8=150.0, int8_16=140.0, int8_1=70.0)
    assert len(int8_failures(slow)) == 3, "limit 1.5, gateway 1.4, peer 2.8: all under"
    lossy = _results()
    lossy["int8"]["accuracy"]["loss_points"] = 0.6
    assert int8_failures(lossy) == ["Banking77 test accuracy lost to int8, points"]
    alarm = _results()
    alarm["int8"]["drift"]["reference_int8"] = {"status": "WARN", "drifted": ["embeddings"]}
    assert len(int8_failures(alarm)) == 1
    missing = _results()
    del missing["int8"]
    assert len(int8_failures(missing)) == 5, "a part not measured is not passed"


def _answers_row(results: dict[str, Any]) -> dict[str, Any]:
    rows = [v for v in gb.verdicts(results) if v["check"].startswith("answers")]
    assert len(rows) == 1
    return rows[0]


def test_a_mismatch_or_too_small_a_sample_fails_the_answers_floor_and_the_run() -> None:
    fine = _results()
    assert _answers_row(fine)["pass"] is True
    assert gb.failed_floors(gb.verdicts(fine)) == []
    for broken in (_results(mismatches=1), _results(unverifiable=1), _results(checked=100)):
        row = _answers_row(broken)
        assert row["pass"] is False
        assert gb.failed_floors(gb.verdicts(broken)) == [row["check"]]


def test_a_floor_missed_or_not_measured_fails_the_run() -> None:
    slow = _results()
    slow["paired"][0]["mlflow_c16"] = 40.0  # gateway / peer 1.5, floor 2 (float32)
    assert [f for f in gb.failed_floors(gb.verdicts(slow)) if "mlflow" in f]
    unmeasured = _results()
    del unmeasured["answers"]
    row = _answers_row(unmeasured)
    assert row["pass"] is None and row["check"] in gb.failed_floors(gb.verdicts(unmeasured))
