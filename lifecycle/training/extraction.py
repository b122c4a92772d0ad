"""LoRA training of an extraction specialist: BIO tags per word piece on the shared encoder.

The same loop as a classifier's (``lifecycle.training.fit``), with the same set-up and result
around it (``lifecycle.training.candidate``); what differs is the data (text and
character-span entities), the targets (each piece's tag, ``lifecycle.extraction.spans``), the
calibration (one temperature over every piece's tag logits) and the evaluation (entity F1 on
exact spans and exact match per request).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from lifecycle.config.spec import SpecialistSpec
from lifecycle.extraction.spans import IGNORE, align, keys, summary, tags_for, to_json
from lifecycle.model.host import AdapterHost
from lifecycle.training.candidate import finish_candidate, start_candidate
from lifecycle.training.fit import CANDIDATE, fit_adapter

if TYPE_CHECKING:
    import pandas as pd

    from lifecycle.extraction.metrics import ExtractionEvaluation
    from lifecycle.training.candidate import RunOptions
    from lifecycle.training.result import TrainResult


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


def train_extractor(spec: SpecialistSpec, data: pd.DataFrame, options: RunOptions) -> TrainResult:
    """Train a LoRA adapter and token head for an extraction ``spec`` on (text, entities).

    ``options`` are ``train_specialist``'s (which calls this): ``parent`` warm-starts the
    tags it knew and its LoRA weights; ``replay`` is older data mixed in as for a classifier.
    """
    import pandas as pd

    from lifecycle.extraction.metrics import evaluate_entities
    from lifecycle.model.calibration import fit_temperature

    run = start_candidate(
        spec,
        prepare(data),
        options,
        prepare_replay=lambda rows: prepare(rows, source="replay"),
        labels_in=lambda rows: [str(e["label"]) for row in rows["entities"] for e in row],
    )
    host, labels, train_frame, validation = run.host, run.labels, run.train, run.validation
    max_length = spec.training.max_length
    tag_index = {tag: i for i, tag in enumerate(tags_for(labels))}
    texts = train_frame["text"].tolist()
    targets = _targets(host, texts, train_frame["entities"].tolist(), tag_index, max_length)
    val_texts = validation["text"].tolist()
    val_targets = _targets(host, val_texts, validation["entities"].tolist(), tag_index, max_length)
    fit = fit_adapter(
        host,
        spec,
        texts=texts,
        targets=targets,
        validate=lambda: _validate(host, val_texts, val_targets),
        progress=options.progress,
    )

    val_logits, val_embeddings, val_offsets = host.infer(val_texts, CANDIDATE)
    flat_logits, flat_targets = _flatten(val_logits, val_targets)
    temperature = fit_temperature(flat_logits, flat_targets)
    host.set_temperature(CANDIDATE, temperature)
    answers = host.answers(val_texts, [CANDIDATE] * len(val_texts), val_logits, val_offsets)
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
    return finish_candidate(
        run,
        spec,
        fit,
        embeddings=val_embeddings,
        confidence=np.array([a.confidence for a in answers]),
        temperature=temperature,
        evaluation=evaluation,
        validation_predictions=validation_predictions,
        dataset_hash=extraction_hash(run.data),
        summary=(
            f"extractor {spec.name}: val entity micro-F1 {evaluation.micro_f1:.3f}, "
            f"exact match {evaluation.exact_match:.3f}"
        ),
        params={"task": "extraction", "n_tags": len(tags_for(labels))},
    )


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
