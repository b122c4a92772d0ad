"""The out-of-scope detector: separation, calibrated flag rate, persistence, bad input, and
the real thing on a trained specialist (scores in the same pass as the answer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lifecycle.config.errors import ModelLoadError
from lifecycle.model.ood import (
    OOD_FILE,
    OutOfScopeDetector,
    auroc,
    fit_detector,
    fit_from_reference,
)


def _blobs(rng: np.random.Generator, centres: np.ndarray, n: int, spread: float) -> np.ndarray:
    rows = centres[rng.integers(0, len(centres), n)] + spread * rng.normal(
        size=(n, centres.shape[1])
    )
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    d = 32
    known = rng.normal(size=(6, d))
    unknown = rng.normal(size=(3, d))
    train_idx = rng.integers(0, 6, 1200)
    train = known[train_idx] + 0.35 * rng.normal(size=(1200, d))
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    return {
        "train": train,
        "labels": [f"l{i}" for i in train_idx],
        "calibration": _blobs(rng, known, 600, 0.35),
        "test_in": _blobs(rng, known, 2000, 0.35),
        "test_out": _blobs(rng, unknown, 500, 0.35),
    }


def _fit(
    world: dict[str, Any],
    *,
    confidence: np.ndarray | None = None,
    target_rate: float = 0.05,
    method: str = "knn",
) -> OutOfScopeDetector:
    return fit_detector(
        embeddings=world["train"],
        labels=world["labels"],
        calibration=world["calibration"],
        calibration_confidence=confidence,
        target_rate=target_rate,
        method=method,
    )


@pytest.mark.parametrize("method", ["knn", "mahalanobis"])
def test_unseen_clusters_score_higher_and_the_flag_rate_is_calibrated(
    world: dict[str, Any], method: str
) -> None:
    det = _fit(world, method=method)
    inside, outside = det.score(world["test_in"]), det.score(world["test_out"])
    assert auroc(inside, outside) > 0.99
    assert abs(det.flags(inside).mean() - 0.05) < 0.02
    assert det.flags(outside).mean() > 0.9
    assert abs(det.calibrated_rate - 0.05) <= 0.01
    assert det.describe()["method"] == method


def test_the_confidence_part_counts_when_given(world: dict[str, Any]) -> None:
    conf = np.full(len(world["calibration"]), 0.9)
    det = _fit(world, confidence=conf + np.linspace(-0.05, 0.05, len(conf)))
    assert det.confidence_weight > 0
    row = world["test_in"][:1]
    assert det.score(row, np.array([0.2]))[0] > det.score(row, np.array([0.99]))[0]
    # Without confidences only the distance counts: no crash, a finite score.
    assert np.isfinite(det.score(row)[0])


def test_save_and_load_give_the_same_scores(world: dict[str, Any], tmp_path: Path) -> None:
    det = _fit(world, confidence=np.full(600, 0.8), target_rate=0.1)
    det.save(tmp_path)
    back = OutOfScopeDetector.load(tmp_path)
    assert back is not None
    conf = np.full(len(world["test_out"]), 0.7)
    np.testing.assert_allclose(
        back.score(world["test_out"], conf), det.score(world["test_out"], conf), rtol=1e-5
    )
    assert back.threshold == det.threshold and back.target_rate == 0.1
    assert OutOfScopeDetector.load(tmp_path / "nowhere") is None


def test_a_corrupt_detector_file_is_a_clear_load_error(tmp_path: Path) -> None:
    (tmp_path / OOD_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="not a valid out-of-scope detector"):
        OutOfScopeDetector.load(tmp_path)


def test_missing_embeddings_score_nan_and_are_not_flagged(world: dict[str, Any]) -> None:
    det = _fit(world)
    rows = world["test_out"][:3].copy()
    rows[1] = np.nan
    scores = det.score(rows)
    assert np.isnan(scores[1]) and np.isfinite(scores[[0, 2]]).all()
    assert det.flags(scores).tolist() == [True, False, True]
    assert det.score(np.zeros((0, rows.shape[1]))).shape == (0,)


def test_bad_arguments_are_refused(world: dict[str, Any]) -> None:
    kwargs: dict[str, Any] = {
        "embeddings": world["train"],
        "labels": world["labels"],
        "calibration": world["calibration"],
        "calibration_confidence": None,
    }
    with pytest.raises(ValueError, match="target_rate"):
        fit_detector(**kwargs, target_rate=0.0)
    with pytest.raises(ValueError, match="method"):
        fit_detector(**kwargs, target_rate=0.05, method="magic")
    with pytest.raises(ValueError, match="at least 2"):
        fit_detector(
            **{**kwargs, "embeddings": world["train"][:1], "labels": ["a"]}, target_rate=0.05
        )


def test_a_detector_can_be_fitted_from_a_reference_alone(world: dict[str, Any]) -> None:
    det, half = fit_from_reference(
        world["calibration"], ["x"] * len(world["calibration"]), None, target_rate=0.05
    )
    assert len(half) == 300 and len(set(half.tolist())) == 300
    assert det.origin == "reference" and det.calibration_rows == 300
    assert auroc(det.score(world["test_in"]), det.score(world["test_out"])) > 0.95


def test_a_trained_specialist_scores_every_answer_and_flags_another_domain(
    trained: Any, tmp_path: Path
) -> None:
    """Real training fits the detector; predict returns its score in the same pass; the
    artifact folder carries it and a fresh load scores the same."""
    host, adapter_id = trained.host, trained.adapter_id
    detector = host.detector(adapter_id)
    assert detector is not None and detector.origin == "training"
    assert abs(detector.calibrated_rate - detector.target_rate) <= 0.05
    assert trained.params["ood.method"] == detector.method
    inside = trained.validation["text"].tolist()[:20]
    outside = [
        "play some jazz by miles davis on spotify",
        "what will the weather be in paris tomorrow",
        "book a table for four at an italian restaurant tonight",
        "add this song to my workout playlist",
    ]
    preds = host.predict(inside + outside, adapter_id)
    assert all(isinstance(p.ood_score, float) for p in preds)
    assert all(isinstance(p.out_of_scope, bool) for p in preds)
    flagged_out = [p.out_of_scope for p in preds[len(inside) :]]
    flagged_in = [p.out_of_scope for p in preds[: len(inside)]]
    assert sum(flagged_out) >= 3
    assert sum(flagged_in) <= 4
    folder = host.save_adapter(adapter_id, tmp_path / "adapter")
    assert (folder / OOD_FILE).is_file()
    loaded = OutOfScopeDetector.load(folder)
    assert loaded is not None
    again = loaded.score(
        np.stack([p.embedding for p in preds]), np.array([p.confidence for p in preds])
    )
    np.testing.assert_allclose(again, [p.ood_score for p in preds], rtol=1e-4, atol=1e-5)
