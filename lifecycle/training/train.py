"""LoRA training of one specialist: split, train with early stopping, calibrate, evaluate."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lifecycle.config.spec import SpecialistSpec
from lifecycle.model.calibration import fit_temperature, softmax
from lifecycle.model.host import AdapterHost
from lifecycle.training.data import (
    replay_mix,
    stratified_split,
    training_set_hash,
    validate_training_table,
)
from lifecycle.training.evaluate import evaluate
from lifecycle.training.fit import (
    CANDIDATE,
    fit_adapter,
    fit_out_of_scope,
    read_parent_head,
    resolve_labels,
)
from lifecycle.training.result import TrainResult

__all__ = ["TrainResult", "predict_probabilities", "resolve_labels", "train_specialist"]

if TYPE_CHECKING:
    import pandas as pd


logger = logging.getLogger(__name__)


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
    from transformers import set_seed

    if spec.task == "extraction":
        from lifecycle.training.extraction import train_extractor

        return train_extractor(
            spec,
            data,
            parent=parent,
            replay=replay,
            host=host,
            device=device,
            threads=threads,
            progress=progress,
        )
    cfg = spec.training
    set_seed(cfg.seed)
    validate_training_table(data)
    if replay is not None and len(replay) and cfg.replay_ratio > 0:
        data = replay_mix(data, replay, ratio=cfg.replay_ratio, seed=cfg.seed)
    data = data.reset_index(drop=True)
    parent_head = read_parent_head(parent) if parent is not None else None
    labels = resolve_labels(spec, data["label"].tolist(), parent_head[0] if parent_head else None)
    train_frame, validation = stratified_split(
        data, fraction=cfg.validation_fraction, seed=cfg.seed
    )

    host = host or AdapterHost(spec.base_model, device=device, threads=threads)
    if CANDIDATE in host.adapter_ids:
        host.remove_adapter(CANDIDATE)
    host.new_adapter(
        CANDIDATE,
        name=spec.name,
        labels=labels,
        lora=spec.lora,
        max_length=cfg.max_length,
        seed=cfg.seed,
        parent_head=parent_head,
        parent_adapter=parent,
    )
    label_index = {label: i for i, label in enumerate(labels)}
    val_texts = validation["text"].tolist()
    val_targets = np.array([label_index[x] for x in validation["label"]])
    fit = fit_adapter(
        host,
        spec,
        texts=train_frame["text"].tolist(),
        targets=[label_index[x] for x in train_frame["label"]],
        validate=lambda: _validate(host, val_texts, val_targets),
        progress=progress,
    )

    val_logits, val_embeddings = host.logits_and_embeddings(val_texts, CANDIDATE)
    stacked = np.stack(val_logits)
    temperature = fit_temperature(stacked, val_targets)
    host.set_temperature(CANDIDATE, temperature)
    probs = softmax(stacked, temperature)
    evaluation = evaluate(validation["label"].tolist(), probs, labels)
    validation_predictions = validation.assign(
        prediction=[labels[i] for i in probs.argmax(axis=1)], confidence=probs.max(axis=1)
    ).reset_index(drop=True)
    detector = fit_out_of_scope(
        host,
        train_frame,
        val_embeddings,
        probs.max(axis=1),
        target_rate=spec.monitoring.out_of_scope_rate,
        seed=cfg.seed,
    )
    host.set_detector(CANDIDATE, detector)
    logger.info(
        "trained %s: val accuracy %.3f, macro-F1 %.3f, T=%.2f in %.0f s",
        spec.name,
        evaluation.accuracy,
        evaluation.macro_f1,
        temperature,
        fit.seconds,
    )
    return TrainResult(
        host=host,
        adapter_id=CANDIDATE,
        meta=host.meta(CANDIDATE),
        train=train_frame,
        validation=validation,
        validation_predictions=validation_predictions,
        validation_embeddings=val_embeddings,
        evaluation=evaluation,
        dataset_hash=training_set_hash(data[["text", "label"]]),
        seconds=fit.seconds,
        steps=fit.steps,
        examples_per_second=fit.examples_per_second,
        history=fit.history,
        params={
            "base_model": spec.base_model,
            "n_labels": len(labels),
            "n_train": len(train_frame),
            "n_validation": len(validation),
            "replay_rows": int((data.get("source") == "replay").sum()) if "source" in data else 0,
            "best_step": fit.best_step,
            "temperature": temperature,
            **{f"ood.{k}": v for k, v in detector.describe().items()},
            "device": host.placement.device,
            "bf16": host.placement.autocast_bf16,
            **{f"lora.{k}": v for k, v in spec.lora.model_dump().items()},
            **{f"training.{k}": v for k, v in cfg.model_dump().items()},
        },
    )


def predict_probabilities(host: AdapterHost, adapter_id: str, texts: Sequence[str]) -> np.ndarray:
    """Calibrated probabilities of one adapter over a list of texts."""
    meta = host.meta(adapter_id)
    logits, _ = host.logits_and_embeddings(texts, adapter_id)
    return softmax(np.stack(logits), meta.temperature)


def _validate(host: AdapterHost, texts: list[str], targets: np.ndarray) -> dict[str, float]:
    logits, _ = host.logits_and_embeddings(texts, CANDIDATE, batch_size=64)
    stacked = np.stack(logits)
    probs = softmax(stacked)
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, None))))
    return {"val_loss": loss, "val_accuracy": float((probs.argmax(axis=1) == targets).mean())}
