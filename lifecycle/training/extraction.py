"""LoRA training of an extraction specialist: BIO tags per word piece on the shared encoder.

The same loop as a classifier's (``lifecycle.training.fit``); what differs is the data (text
and character-span entities), the targets (each piece's tag, ``lifecycle.extraction.spans``),
the calibration (one temperature over every piece's tag logits) and the evaluation (entity
F1 on exact spans and exact match per request).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lifecycle.config.spec import SpecialistSpec
from lifecycle.extraction.spans import IGNORE, align, keys, summary, tags_for, to_json
from lifecycle.model.adapters import check_artifact
from lifecycle.model.host import AdapterHost
from lifecycle.training.fit import CANDIDATE, fit_adapter

if TYPE_CHECKING:
    import pandas as pd

    from lifecycle.extraction.metrics import ExtractionEvaluation
    from lifecycle.training.result import TrainResult

logger = logging.getLogger(__name__)


def prepare(frame: pd.DataFrame, *, source: str = "data") -> pd.DataFrame:
    """A validated extraction table with the ``label`` column the shared parts read: each
    row's summary of its entities (``date+order_id``), which stratifies the split, weighs
    the replay and is the request's category in the traffic store."""
    from lifecycle.extraction.data import validate_entities

    checked = validate_entities(frame, source=source)
    return checked.assign(label=[summary(e) for e in checked["entities"]])


def extraction_hash(frame: pd.DataFrame) -> str:
    """The training-set hash over (text, entities), independent of row order."""
    from lifecycle.training.data import training_set_hash

    spans = [json.dumps(sorted(keys(e))) for e in frame["entities"]]
    return training_set_hash(frame[["text"]].assign(label=spans))


def train_extractor(
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
    """Train a LoRA adapter and token head for an extraction ``spec`` on (text, entities).

    ``parent`` warm-starts the tags it knew and its LoRA weights; ``replay`` is older data
    mixed in as for a classifier.
    """
    import pandas as pd
    from transformers import set_seed

    from lifecycle.extraction.metrics import evaluate_entities
    from lifecycle.model.calibration import fit_temperature
    from lifecycle.training.data import replay_mix, stratified_split
    from lifecycle.training.fit import fit_out_of_scope, read_parent_head, resolve_labels
    from lifecycle.training.result import TrainResult

    cfg = spec.training
    set_seed(cfg.seed)
    data = prepare(data)
    if replay is not None and len(replay) and cfg.replay_ratio > 0:
        data = replay_mix(
            data, prepare(replay, source="replay"), ratio=cfg.replay_ratio, seed=cfg.seed
        )
    data = data.reset_index(drop=True)
    parent_head = read_parent_head(parent) if parent is not None else None
    parent_labels = check_artifact(parent).labels if parent is not None else None
    found = [str(e["label"]) for row in data["entities"] for e in row]
    labels = resolve_labels(spec, found, parent_labels)
    if not labels:
        from lifecycle.config.errors import DataError

        raise DataError(
            f"specialist {spec.name!r}: the training data has no entity at all; an "
            "extractor needs labelled spans (or declare its `entities`)"
        )
    train_frame, validation = stratified_split(
        data, fraction=cfg.validation_fraction, seed=cfg.seed
    )

    host = host or AdapterHost(spec.base_model, device=device, threads=threads)
    if CANDIDATE in host.adapter_ids:
        host.remove_adapter(CANDIDATE)
    host.new_adapter(
        CANDIDATE,
        name=spec.name,
        task="extraction",
        labels=labels,
        lora=spec.lora,
        max_length=cfg.max_length,
        seed=cfg.seed,
        parent_head=parent_head,
        parent_adapter=parent,
    )
    tag_index = {tag: i for i, tag in enumerate(tags_for(labels))}
    texts = train_frame["text"].tolist()
    targets = _targets(host, texts, train_frame["entities"].tolist(), tag_index, cfg.max_length)
    val_texts = validation["text"].tolist()
    val_targets = _targets(
        host, val_texts, validation["entities"].tolist(), tag_index, cfg.max_length
    )
    fit = fit_adapter(
        host,
        spec,
        texts=texts,
        targets=targets,
        validate=lambda: _validate(host, val_texts, val_targets),
        progress=progress,
    )

    val_logits, val_embeddings = host.logits_and_embeddings(val_texts, CANDIDATE)
    flat_logits, flat_targets = _flatten(val_logits, val_targets)
    temperature = fit_temperature(flat_logits, flat_targets)
    host.set_temperature(CANDIDATE, temperature)
    answers = host.answers(val_texts, [CANDIDATE] * len(val_texts), val_logits)
    evaluation = evaluate_entities(
        [keys(e) for e in validation["entities"]],
        [keys(a.entities or ()) for a in answers],
        labels=labels,
    )
    # The monitor's reference: the same columns a traffic window has (``entities`` is the
    # model's answer as the store keeps it, ``true_entities`` a person's).
    validation_predictions = pd.DataFrame(
        {
            "text": val_texts,
            "label": validation["label"].tolist(),
            "prediction": [a.label for a in answers],
            "confidence": [a.confidence for a in answers],
            "entities": [to_json(a.entities or ()) for a in answers],
            "true_entities": [json.dumps(e, ensure_ascii=False) for e in validation["entities"]],
        }
    )
    detector = fit_out_of_scope(
        host,
        train_frame,
        val_embeddings,
        np.array([a.confidence for a in answers]),
        target_rate=spec.monitoring.out_of_scope_rate,
        seed=cfg.seed,
    )
    host.set_detector(CANDIDATE, detector)
    logger.info(
        "trained extractor %s: val entity micro-F1 %.3f, exact match %.3f, T=%.2f in %.0f s",
        spec.name,
        evaluation.micro_f1,
        evaluation.exact_match,
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
        dataset_hash=extraction_hash(data),
        seconds=fit.seconds,
        steps=fit.steps,
        examples_per_second=fit.examples_per_second,
        history=fit.history,
        params=_params(spec, host, labels, train_frame, validation, data, fit.best_step)
        | {"temperature": temperature, **{f"ood.{k}": v for k, v in detector.describe().items()}},
    )


def _params(
    spec: SpecialistSpec,
    host: AdapterHost,
    labels: tuple[str, ...],
    train_frame: pd.DataFrame,
    validation: pd.DataFrame,
    data: pd.DataFrame,
    best_step: int,
) -> dict[str, Any]:
    return {
        "task": "extraction",
        "base_model": spec.base_model,
        "n_labels": len(labels),
        "n_tags": len(tags_for(labels)),
        "n_train": len(train_frame),
        "n_validation": len(validation),
        "replay_rows": int((data.get("source") == "replay").sum()) if "source" in data else 0,
        "best_step": best_step,
        "device": host.placement.device,
        "bf16": host.placement.autocast_bf16,
        **{f"lora.{k}": v for k, v in spec.lora.model_dump().items()},
        **{f"training.{k}": v for k, v in spec.training.model_dump().items()},
    }


def _targets(
    host: AdapterHost,
    texts: list[str],
    entities: list[list[dict[str, Any]]],
    tag_index: dict[str, int],
    max_length: int,
) -> list[list[int]]:
    """Each text's tag per word piece, tokenized as the training pass tokenizes it."""
    encoded = host.tokenizer(
        texts, truncation=True, max_length=max_length, return_offsets_mapping=True
    )
    return [
        align([(int(s), int(e)) for s, e in offsets], spans, tag_index)
        for offsets, spans in zip(encoded["offset_mapping"], entities, strict=True)
    ]


def _flatten(logits: list[np.ndarray], targets: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Every scored piece's logits and tag, special tokens dropped."""
    rows, wanted = [], []
    for row, target in zip(logits, targets, strict=True):
        keep = np.asarray(target[: len(row)]) != IGNORE
        rows.append(row[: len(target)][keep])
        wanted.append(np.asarray(target[: len(row)])[keep])
    return np.concatenate(rows), np.concatenate(wanted)


def _validate(host: AdapterHost, texts: list[str], targets: list[list[int]]) -> dict[str, float]:
    """Token loss (early stopping reads it) and the share of texts tagged right throughout."""
    from lifecycle.model.calibration import softmax

    logits, _ = host.logits_and_embeddings(texts, CANDIDATE, batch_size=64)
    losses, exact = [], 0
    for row, target in zip(logits, targets, strict=True):
        keep = np.asarray(target) != IGNORE
        probs = softmax(row[keep])
        wanted = np.asarray(target)[keep]
        losses.append(-np.log(np.clip(probs[np.arange(len(wanted)), wanted], 1e-12, None)))
        exact += bool((probs.argmax(axis=1) == wanted).all())
    loss = float(np.concatenate(losses).mean()) if losses else 0.0
    return {"val_loss": loss, "val_exact_match": exact / max(1, len(texts))}


def evaluation_of(result: TrainResult) -> ExtractionEvaluation:
    """The result's evaluation as an extractor's (a type check for callers that know)."""
    from lifecycle.extraction.metrics import ExtractionEvaluation

    assert isinstance(result.evaluation, ExtractionEvaluation)
    return result.evaluation
