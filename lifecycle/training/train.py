"""LoRA training of one specialist: split, train with early stopping, calibrate, evaluate."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lifecycle.config.errors import DataError
from lifecycle.config.spec import SpecialistSpec
from lifecycle.model.adapters import check_artifact
from lifecycle.model.artifacts import SpecialistMeta
from lifecycle.model.calibration import fit_temperature, softmax
from lifecycle.model.host import AdapterHost
from lifecycle.training.data import (
    replay_mix,
    stratified_split,
    training_set_hash,
    validate_training_table,
)
from lifecycle.training.evaluate import Evaluation, evaluate

if TYPE_CHECKING:
    import pandas as pd

    from lifecycle.model.ood import OutOfScopeDetector

logger = logging.getLogger(__name__)

CANDIDATE = "candidate"


@dataclass
class TrainResult:
    """A trained specialist still in memory, with what the registry needs to log."""

    host: AdapterHost
    adapter_id: str
    meta: SpecialistMeta
    train: pd.DataFrame
    validation: pd.DataFrame
    #: The champion's own view of its validation set: prediction, confidence, embedding.
    validation_predictions: pd.DataFrame
    validation_embeddings: np.ndarray
    evaluation: Evaluation
    dataset_hash: str
    seconds: float
    steps: int
    examples_per_second: float
    history: list[dict[str, float]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)


def resolve_labels(
    spec: SpecialistSpec, data_labels: Sequence[str], parent_labels: Sequence[str] | None
) -> tuple[str, ...]:
    """The label set of the new version.

    Under ``labels_policy: closed`` the spec's list wins when it has one, and data with other
    labels is refused. Otherwise the parent's labels keep their order (a declared list is the
    starting set when there is no parent), declared labels the parent lacks follow, and labels
    new in the data are appended: a new intent grows the head by one row while the known rows
    keep their trained weights.
    """
    found = sorted(set(data_labels))
    if spec.labels_policy == "open":
        start = list(parent_labels or ())
        start += [label for label in spec.labels or () if label not in start]
        return tuple(start) + tuple(label for label in found if label not in start)
    if spec.labels is not None:
        unknown = sorted(set(found) - set(spec.labels))
        if unknown:
            raise DataError(
                f"the data has labels that specialist {spec.name!r} does not declare: "
                f"{', '.join(unknown[:10])}; add them to its `labels` or drop those rows"
            )
        return tuple(spec.labels)
    if parent_labels:
        return tuple(parent_labels) + tuple(label for label in found if label not in parent_labels)
    return tuple(found)


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
    import torch
    from transformers import set_seed

    cfg = spec.training
    set_seed(cfg.seed)
    validate_training_table(data)
    if replay is not None and len(replay) and cfg.replay_ratio > 0:
        data = replay_mix(data, replay, ratio=cfg.replay_ratio, seed=cfg.seed)
    data = data.reset_index(drop=True)
    parent_head = _read_parent_head(parent) if parent is not None else None
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
    lora_params, head_params = host.trainable_parameters(CANDIDATE)
    optimizer = torch.optim.AdamW(
        [
            {"params": lora_params, "lr": cfg.learning_rate},
            {"params": head_params, "lr": cfg.head_learning_rate},
        ],
        weight_decay=cfg.weight_decay,
    )
    label_index = {label: i for i, label in enumerate(labels)}
    texts = train_frame["text"].tolist()
    targets = torch.tensor([label_index[x] for x in train_frame["label"]], dtype=torch.long)
    batches_per_epoch = max(1, -(-len(texts) // cfg.batch_size))
    total_steps = batches_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_linear(total_steps))
    eval_every = max(1, batches_per_epoch // cfg.evals_per_epoch)
    val_texts = validation["text"].tolist()
    val_targets = np.array([label_index[x] for x in validation["label"]])

    best: dict[str, Any] = {"loss": float("inf")}
    history: list[dict[str, float]] = []
    stale = 0
    step = 0
    seen = 0
    started = time.perf_counter()
    bar = _progress(total_steps, enabled=progress, desc=f"train {spec.name}")
    rng = random.Random(cfg.seed)
    stop = False
    for _epoch in range(cfg.epochs):
        for batch in _length_bucketed_batches(texts, cfg.batch_size, rng):
            host.train_mode(CANDIDATE, True)
            logits, _ = host.forward(
                [texts[i] for i in batch], [CANDIDATE] * len(batch), train=True
            )
            loss = torch.nn.functional.cross_entropy(
                torch.stack(logits).float(), targets[batch].to(logits[0].device)
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lora_params + head_params, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            seen += len(batch)
            bar.update(1)
            if step % eval_every == 0 or step == total_steps:
                host.train_mode(CANDIDATE, False)
                val_loss, val_acc = _validate(host, val_texts, val_targets)
                history.append(
                    {
                        "step": step,
                        "epoch": step / batches_per_epoch,
                        "train_loss": loss.item(),
                        "val_loss": val_loss,
                        "val_accuracy": val_acc,
                    }
                )
                bar.set_postfix(val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.3f}")
                if val_loss < best["loss"] - cfg.min_delta:
                    best = {
                        "loss": val_loss,
                        "step": step,
                        "state": _snapshot(lora_params + head_params),
                    }
                    stale = 0
                else:
                    stale += 1
                    if stale > cfg.patience:
                        logger.info("early stop at step %d (best step %d)", step, best["step"])
                        stop = True
                        break
        if stop:
            break
    bar.close()
    seconds = time.perf_counter() - started
    if "state" in best:
        _restore(best["state"], lora_params, head_params)
    host.train_mode(CANDIDATE, False)

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
        seconds,
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
        seconds=seconds,
        steps=step,
        examples_per_second=seen / seconds if seconds else 0.0,
        history=history,
        params={
            "base_model": spec.base_model,
            "n_labels": len(labels),
            "n_train": len(train_frame),
            "n_validation": len(validation),
            "replay_rows": int((data.get("source") == "replay").sum()) if "source" in data else 0,
            "best_step": best.get("step", step),
            "temperature": temperature,
            **{f"ood.{k}": v for k, v in detector.describe().items()},
            "device": host.placement.device,
            "bf16": host.placement.autocast_bf16,
            **{f"lora.{k}": v for k, v in spec.lora.model_dump().items()},
            **{f"training.{k}": v for k, v in cfg.model_dump().items()},
        },
    )


def fit_out_of_scope(
    host: AdapterHost,
    train_frame: pd.DataFrame,
    validation_embeddings: np.ndarray,
    validation_confidence: np.ndarray,
    *,
    target_rate: float,
    seed: int,
) -> OutOfScopeDetector:
    """The candidate's out-of-scope detector: fitted on the embeddings of the rows it was
    trained on (a stratified sample past ``KNN_MAX_ROWS``), calibrated on its validation rows,
    which it never trained on, for ``target_rate`` of them flagged."""
    from lifecycle.model.ood import KNN_MAX_ROWS, fit_detector

    frame = train_frame
    if len(frame) > KNN_MAX_ROWS:
        share = KNN_MAX_ROWS / len(frame)
        frame = frame.groupby("label", group_keys=False).sample(frac=share, random_state=seed)
    _, embeddings = host.logits_and_embeddings(frame["text"].tolist(), CANDIDATE, batch_size=64)
    return fit_detector(
        embeddings=embeddings,
        labels=frame["label"].astype(str).tolist(),
        calibration=validation_embeddings,
        calibration_confidence=validation_confidence,
        target_rate=target_rate,
        seed=seed,
    )


def predict_probabilities(host: AdapterHost, adapter_id: str, texts: Sequence[str]) -> np.ndarray:
    """Calibrated probabilities of one adapter over a list of texts."""
    meta = host.meta(adapter_id)
    logits, _ = host.logits_and_embeddings(texts, adapter_id)
    return softmax(np.stack(logits), meta.temperature)


def _validate(host: AdapterHost, texts: list[str], targets: np.ndarray) -> tuple[float, float]:
    logits, _ = host.logits_and_embeddings(texts, CANDIDATE, batch_size=64)
    stacked = np.stack(logits)
    probs = softmax(stacked)
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, None))))
    return loss, float((probs.argmax(axis=1) == targets).mean())


def _length_bucketed_batches(
    texts: Sequence[str], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """Shuffled batches of similar-length texts: far less padding, still random order."""
    order = list(range(len(texts)))
    rng.shuffle(order)
    pool = batch_size * 32
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: len(texts[i]))
        batches.extend(chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def _warmup_linear(total_steps: int) -> Any:
    """Linear warm-up over 6% of the steps, then linear decay to a floor of 5%.

    Not transformers' ``get_linear_schedule_with_warmup``: that one takes its first step at
    learning rate 0 and decays to 0, so every trained version would come out different.
    """
    warmup = max(1, int(0.06 * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.05, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def _snapshot(params: list[Any]) -> list[Any]:
    return [p.detach().clone() for p in params]


def _restore(state: list[Any], lora: list[Any], head: list[Any]) -> None:
    import torch

    with torch.no_grad():
        for param, saved in zip(lora + head, state, strict=True):
            param.copy_(saved)


def _read_parent_head(folder: Path) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    from safetensors.numpy import load_file

    meta = check_artifact(Path(folder))
    state = load_file(str(Path(folder) / "head.safetensors"))
    return meta.labels, state["weight"], state["bias"]


def _progress(total: int, *, enabled: bool, desc: str) -> Any:
    import sys

    from tqdm.auto import tqdm

    # A bar redrawn into a log file is noise: show it on terminals only.
    show = enabled and sys.stderr.isatty()
    return tqdm(total=total, disable=not show, desc=desc, unit="step", leave=False)
