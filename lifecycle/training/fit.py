"""What training shares between task kinds: the loop (AdamW on the LoRA and head weights, a
warm-up schedule, length-bucketed batches, early stopping on the validation loss), the
label set of a new version, the parent's head rows, and the out-of-scope detector."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifecycle.config.errors import DataError
from lifecycle.config.spec import SpecialistSpec
from lifecycle.model.adapters import check_artifact
from lifecycle.model.host import AdapterHost

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from lifecycle.model.ood import OutOfScopeDetector

logger = logging.getLogger(__name__)

#: The adapter id a training run works on.
CANDIDATE = "candidate"


@dataclass(frozen=True)
class Fit:
    """What a training loop did: its curve, steps, best step and speed."""

    history: list[dict[str, float]]
    steps: int
    best_step: int
    seconds: float
    examples_per_second: float


def fit_adapter(
    host: AdapterHost,
    spec: SpecialistSpec,
    *,
    texts: list[str],
    targets: list[Any],
    validate: Callable[[], dict[str, float]],
    progress: bool,
) -> Fit:
    """Train the candidate adapter and head on (text, target) pairs with AdamW, a warm-up
    schedule and early stopping on ``validate()["val_loss"]``; the best evaluation's weights
    are restored at the end. The task kind of the candidate gives the loss; ``validate``
    gives the validation figures of the curve."""
    import torch

    from lifecycle.tasks import task_kind

    cfg = spec.training
    kind = task_kind(host.meta(CANDIDATE).task)
    lora_params, head_params = host.trainable_parameters(CANDIDATE)
    optimizer = torch.optim.AdamW(
        [
            {"params": lora_params, "lr": cfg.learning_rate},
            {"params": head_params, "lr": cfg.head_learning_rate},
        ],
        weight_decay=cfg.weight_decay,
    )
    batches_per_epoch = max(1, -(-len(texts) // cfg.batch_size))
    total_steps = batches_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_linear(total_steps))
    eval_every = max(1, batches_per_epoch // cfg.evals_per_epoch)

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
            logits, _, _ = host.forward(
                [texts[i] for i in batch], [CANDIDATE] * len(batch), train=True
            )
            loss = kind.loss(logits, [targets[i] for i in batch])
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
                figures = validate()
                val_loss = figures["val_loss"]
                history.append(
                    {
                        "step": step,
                        "epoch": step / batches_per_epoch,
                        "train_loss": loss.item(),
                        **figures,
                    }
                )
                bar.set_postfix({k: f"{v:.3f}" for k, v in figures.items()})
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
    return Fit(
        history=history,
        steps=step,
        best_step=int(best.get("step", step)),
        seconds=seconds,
        examples_per_second=seen / seconds if seconds else 0.0,
    )


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


def _progress(total: int, *, enabled: bool, desc: str) -> Any:
    import sys

    from tqdm.auto import tqdm

    # A bar redrawn into a log file is noise: show it on terminals only.
    show = enabled and sys.stderr.isatty()
    return tqdm(total=total, disable=not show, desc=desc, unit="step", leave=False)


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
    declared = spec.label_set
    if spec.labels_policy == "open":
        start = list(parent_labels or ())
        start += [label for label in declared or () if label not in start]
        return tuple(start) + tuple(label for label in found if label not in start)
    if declared is not None:
        unknown = sorted(set(found) - set(declared))
        if unknown:
            field = "entities" if spec.task == "extraction" else "labels"
            raise DataError(
                f"the data has labels that specialist {spec.name!r} does not declare: "
                f"{', '.join(unknown[:10])}; add them to its `{field}` or drop those rows"
            )
        return tuple(declared)
    if parent_labels:
        return tuple(parent_labels) + tuple(label for label in found if label not in parent_labels)
    return tuple(found)


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


def read_parent_head(folder: Path) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """(head rows, weight, bias) of a version's artifact folder: a retrain warm-starts the
    rows it shares with its parent."""
    from safetensors.numpy import load_file

    meta = check_artifact(Path(folder))
    state = load_file(str(Path(folder) / "head.safetensors"))
    return meta.head_rows, state["weight"], state["bias"]
