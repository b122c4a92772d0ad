"""A champion's reference, scored with the runtime the gateway serves it with.

A version's reference rows were scored by the training process in float32. A gateway that runs
the base encoder in int8 (``LIFECYCLE_QUANTIZE``) moves every embedding and confidence a
little; compared with the float32 reference, that shift alone would read as drift on a window
where nothing changed. So when the setting asks for int8, the reference is scored again the
way the gateway scores traffic: the same mode, the same agreement bar and probe rows, hence
(``auto``) the same decision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from lifecycle.config.settings import Settings
    from lifecycle.config.spec import SpecialistSpec


def served_reference(
    registry: Any,
    spec: SpecialistSpec,
    version: int,
    frame: pd.DataFrame,
    embeddings: np.ndarray,
    settings: Settings,
) -> tuple[pd.DataFrame, np.ndarray, str]:
    """``frame`` and ``embeddings`` (version ``version`` of ``spec``'s reference) as the gateway
    would score them, and that runtime (``fp32``, ``int8`` or ``bf16``); unchanged unless the
    gateway's linear layers run int8."""
    if settings.quantize == "off" or frame.empty:
        return frame, embeddings, "fp32"
    from lifecycle.model.host import AdapterHost

    name = spec.name
    host = AdapterHost(
        spec.base_model,
        device=settings.device,
        threads=settings.torch_threads,
        quantize=settings.quantize,
        min_agreement=settings.quantize_min_agreement,
    )
    texts = [str(t) for t in frame["text"]]
    _, folder = registry.download(name, version)
    adapter_id = f"{name}@v{version}"
    host.load_adapter(adapter_id, folder, probe_texts=texts[: settings.quantize_probe_rows])
    if host.runtime != "int8":
        return frame, embeddings, host.runtime
    return (*rescored(frame, host.predict(texts, adapter_id)), "int8")


def rescored(frame: pd.DataFrame, predictions: list[Any]) -> tuple[pd.DataFrame, np.ndarray]:
    """The reference's model columns (prediction, confidence and, for an extractor, its
    entities) and embeddings replaced by ``predictions`` (one per row, in order); the rows'
    texts and people's labels stay."""
    import numpy as np

    if len(predictions) != len(frame):
        raise ValueError("one prediction per reference row")
    columns: dict[str, Any] = {
        "prediction": [p.label for p in predictions],
        "confidence": [float(p.confidence) for p in predictions],
    }
    if "entities" in frame.columns:
        from lifecycle.extraction.spans import to_json

        columns["entities"] = [to_json(p.entities or ()) for p in predictions]
    embeddings = np.stack([np.asarray(p.embedding, dtype=np.float32) for p in predictions])
    return frame.assign(**columns), embeddings
