"""What a training run records in MLflow: its note, its evaluation as JSON, the confusion
matrix figure, the monitoring reference and the training set as files. Pure content; the
registry's tracking logs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    return (
        f"**{spec.name}** ({trigger} training) on `{spec.base_model}`: "
        f"{len(result.meta.labels)} labels, {len(result.train)} training rows. "
        f"Validation accuracy {ev.accuracy:.3f}, macro-F1 {ev.macro_f1:.3f}, "
        f"calibration error {ev.calibration_error:.3f} (temperature {result.meta.temperature:.2f})."
    )


def evaluation_dict(result: TrainResult) -> dict[str, Any]:
    ev = result.evaluation
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


def write_reference(result: TrainResult, folder: Path) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    result.validation_predictions.to_parquet(folder / "validation.parquet", index=False)
    save_file({"embeddings": result.validation_embeddings}, str(folder / "embeddings.safetensors"))
    return folder


def write_training_set(result: TrainResult, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame = result.train[["text", "label"]].astype({"text": str, "label": str})
    frame.reset_index(drop=True).to_parquet(folder / TRAINING_FILE, index=False)
    return folder
