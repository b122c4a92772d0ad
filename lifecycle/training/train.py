"""LoRA training of one specialist: split, train with early stopping, calibrate, evaluate."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lifecycle.config.spec import SpecialistSpec
from lifecycle.model.calibration import fit_temperature, softmax
from lifecycle.model.host import AdapterHost
from lifecycle.training.candidate import RunOptions, finish_candidate, start_candidate
from lifecycle.training.data import training_set_hash, validate_training_table
from lifecycle.training.evaluate import evaluate
from lifecycle.training.fit import CANDIDATE, fit_adapter, resolve_labels
from lifecycle.training.result import TrainResult

__all__ = ["TrainResult", "predict_probabilities", "resolve_labels", "train_specialist"]

if TYPE_CHECKING:
    import pandas as pd


def train_specialist(
    spec: SpecialistSpec,
    data: pd.DataFrame,
    *,
    parent: Path | None = None,
    replay: pd.DataFrame | None = None,
    host: AdapterHost | None = None,
    device: str = "auto",
    threads: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a LoRA adapter and head for ``spec`` on a table of (text, label).

    ``parent`` is the artifact folder of the version this one descends from:
    its head rows warm-start the labels it knew. ``replay`` is older data mixed
    in at ``spec.training.replay_ratio`` rows per new row, so that retraining on
    drifted traffic does not forget what the specialist already did well.
    """
    options = RunOptions(
        parent=parent, replay=replay, host=host, device=device, threads=threads, progress=progress
    )
    if spec.task == "extraction":
        from lifecycle.training.extraction import train_extractor

        return train_extractor(spec, data, options)
    validate_training_table(data)
    run = start_candidate(
        spec, data, options, prepare_replay=lambda rows: rows, labels_in=_labels_in
    )
    host, labels, validation = run.host, run.labels, run.validation
    label_index = {label: i for i, label in enumerate(labels)}
    val_texts = validation["text"].tolist()
    val_targets = np.array([label_index[x] for x in validation["label"]])
    fit = fit_adapter(
        host,
        spec,
        texts=run.train["text"].tolist(),
        targets=[label_index[x] for x in run.train["label"]],
        validate=lambda: _validate(host, val_texts, val_targets),
        progress=progress,
    )

    val_logits, val_embeddings = host.logits_and_embeddings(val_texts, CANDIDATE)
    stacked = np.stack(val_logits)
    temperature = fit_temperature(stacked, val_targets)
    host.set_temperature(CANDIDATE, temperature)
    probs = softmax(stacked, temperature)
    evaluation = evaluate(validation["label"].tolist(), probs, labels)
    return finish_candidate(
        run,
        spec,
        fit,
        embeddings=val_embeddings,
        confidence=probs.max(axis=1),
        temperature=temperature,
        evaluation=evaluation,
        validation_predictions=validation.assign(
            prediction=[labels[i] for i in probs.argmax(axis=1)], confidence=probs.max(axis=1)
        ).reset_index(drop=True),
        dataset_hash=training_set_hash(run.data[["text", "label"]]),
        summary=(
            f"{spec.name}: val accuracy {evaluation.accuracy:.3f}, "
            f"macro-F1 {evaluation.macro_f1:.3f}"
        ),
    )


def predict_probabilities(host: AdapterHost, adapter_id: str, texts: Sequence[str]) -> np.ndarray:
    """Calibrated probabilities of one adapter over a list of texts."""
    meta = host.meta(adapter_id)
    logits, _ = host.logits_and_embeddings(texts, adapter_id)
    return softmax(np.stack(logits), meta.temperature)


def _labels_in(rows: pd.DataFrame) -> list[str]:
    return rows["label"].tolist()


def _validate(host: AdapterHost, texts: list[str], targets: np.ndarray) -> dict[str, float]:
    logits, _ = host.logits_and_embeddings(texts, CANDIDATE, batch_size=64)
    stacked = np.stack(logits)
    probs = softmax(stacked)
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, None))))
    return {"val_loss": loss, "val_accuracy": float((probs.argmax(axis=1) == targets).mean())}
