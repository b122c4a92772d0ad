"""What a training run records in MLflow: its note, its evaluation as JSON, the confusion
matrix figure, the monitoring reference and the training set as files. Pure content; the
registry's tracking logs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifecycle.extraction.metrics import ExtractionEvaluation

if TYPE_CHECKING:
    from lifecycle.config.spec import SpecialistSpec
    from lifecycle.training.train import TrainResult

#: The training set's file inside its artifact folder.
TRAINING_FILE = "train.parquet"


def param_text(value: Any) -> str:
    """A param as MLflow stores it (a string of at most 500 characters)."""
    text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return text[:500]


def run_note(spec: SpecialistSpec, result: TrainResult, trigger: str) -> str:
    ev = result.evaluation
    if isinstance(ev, ExtractionEvaluation):
        return (
            f"**{spec.name}** ({trigger} training, extraction) on `{spec.base_model}`: "
            f"{len(result.meta.labels)} entity labels, {len(result.train)} training rows. "
            f"Validation entity micro-F1 {ev.micro_f1:.3f}, macro-F1 {ev.macro_f1:.3f}, "
            f"exact match {ev.exact_match:.3f} (temperature {result.meta.temperature:.2f})."
        )
    return (
        f"**{spec.name}** ({trigger} training) on `{spec.base_model}`: "
        f"{len(result.meta.labels)} labels, {len(result.train)} training rows. "
        f"Validation accuracy {ev.accuracy:.3f}, macro-F1 {ev.macro_f1:.3f}, "
        f"calibration error {ev.calibration_error:.3f} (temperature {result.meta.temperature:.2f})."
    )


def evaluation_dict(result: TrainResult) -> dict[str, Any]:
    ev = result.evaluation
    if isinstance(ev, ExtractionEvaluation):
        return {
            "task": "extraction",
            "n": ev.n,
            "micro_precision": ev.micro_precision,
            "micro_recall": ev.micro_recall,
            "micro_f1": ev.micro_f1,
            "macro_f1": ev.macro_f1,
            "exact_match": ev.exact_match,
            "temperature": result.meta.temperature,
            "labels": list(result.meta.labels),
            "per_label": ev.table(),
        }
    return {
        "n": ev.n,
        "accuracy": ev.accuracy,
        "macro_f1": ev.macro_f1,
        "calibration_error": ev.calibration_error,
        "temperature": result.meta.temperature,
        "labels": list(ev.labels),
        "confusion_matrix": ev.confusion.tolist(),
        "per_class": {k: vars(v) for k, v in ev.per_class.items()},
    }


def confusion_figure(result: TrainResult) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = result.evaluation
    if isinstance(ev, ExtractionEvaluation):
        return _per_label_figure(result, ev)
    size = min(24.0, 3.0 + 0.3 * len(ev.labels))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(ev.confusion, cmap="Blues")
    ax.set_xticks(range(len(ev.labels)), ev.labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(ev.labels)), ev.labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{result.meta.name}: validation accuracy {ev.accuracy:.3f}")
    fig.tight_layout()
    plt.close(fig)
    return fig


def _per_label_figure(result: TrainResult, ev: ExtractionEvaluation) -> Any:
    """An extractor's figure: F1 per entity label, with its support."""
    import matplotlib.pyplot as plt

    rows = sorted(ev.per_label.items(), key=lambda item: -item[1].support)
    fig, ax = plt.subplots(figsize=(8.0, 1.5 + 0.28 * len(rows)))
    ax.barh([f"{label} ({score.support})" for label, score in rows], [s.f1 for _, s in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 on exact spans")
    ax.set_title(f"{result.meta.name}: validation entity micro-F1 {ev.micro_f1:.3f}")
    fig.tight_layout()
    plt.close(fig)
    return fig


def headline(result: TrainResult) -> str:
    """The one figure a version's description gives."""
    ev = result.evaluation
    if isinstance(ev, ExtractionEvaluation):
        return f"val entity micro-F1 {ev.micro_f1:.4f}"
    return f"val accuracy {ev.accuracy:.4f}"


def write_reference(result: TrainResult, folder: Path) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    result.validation_predictions.to_parquet(folder / "validation.parquet", index=False)
    save_file({"embeddings": result.validation_embeddings}, str(folder / "embeddings.safetensors"))
    return folder


def write_training_set(result: TrainResult, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame = result.train[["text", "label"]].astype({"text": str, "label": str})
    if "entities" in result.train:  # an extractor's spans, as JSON (Parquet has no ragged dicts)
        frame = frame.assign(entities=[json.dumps(e) for e in result.train["entities"]])
    frame.reset_index(drop=True).to_parquet(folder / TRAINING_FILE, index=False)
    return folder
