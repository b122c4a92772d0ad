"""What a training run does around its loop, whatever the task kind: before it, the seed, the
replay mixed in, the label set, the split and a fresh candidate adapter; after it, the
out-of-scope detector and the :class:`~lifecycle.training.result.TrainResult`.

The kinds differ only in between (targets, validation, calibration and evaluation:
``lifecycle.training.train`` for a classifier, ``lifecycle.training.extraction`` for an
extractor), so a change to what every run does is made once, here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifecycle.config.errors import DataError
from lifecycle.config.spec import SpecialistSpec
from lifecycle.model.adapters import check_artifact
from lifecycle.model.host import AdapterHost
from lifecycle.training.data import replay_mix, stratified_split
from lifecycle.training.fit import (
    CANDIDATE,
    Fit,
    fit_out_of_scope,
    read_parent_head,
    resolve_labels,
)
from lifecycle.training.result import TrainResult

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from lifecycle.extraction.metrics import ExtractionEvaluation
    from lifecycle.training.evaluate import Evaluation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A fresh candidate adapter on its host, its label set and the rows it learns from."""

    host: AdapterHost
    labels: tuple[str, ...]
    #: The new rows, then the replayed ones (``source`` "replay"): what the run is hashed on.
    data: pd.DataFrame
    train: pd.DataFrame
    validation: pd.DataFrame


@dataclass(frozen=True)
class RunOptions:
    """``train_specialist``'s keywords, handed whole to the kind's training and its set-up.

    ``parent`` is the artifact folder of the version the run descends from (it warm-starts
    the labels it knew), ``replay`` older data mixed in, ``host`` the adapter host to train
    on (a new one on ``device`` with ``threads`` when None), ``progress`` a progress bar.
    """

    parent: Path | None = None
    replay: pd.DataFrame | None = None
    host: AdapterHost | None = None
    device: str = "auto"
    threads: int | None = None
    progress: bool = True


def start_candidate(
    spec: SpecialistSpec,
    data: pd.DataFrame,
    options: RunOptions,
    *,
    prepare_replay: Callable[[pd.DataFrame], pd.DataFrame],
    labels_in: Callable[[pd.DataFrame], Sequence[str]],
) -> Candidate:
    """Seed the run, mix ``options.replay`` into the (checked) ``data`` at the spec's ratio,
    resolve the label set from ``labels_in(data)`` and the parent's, split off the validation
    rows and add a fresh candidate adapter, warm-started from ``options.parent``, to
    ``options.host`` (a new one when None). ``prepare_replay`` checks the replay as the
    kind's data is checked; it runs only when the replay is used."""
    from transformers import set_seed

    replay, parent, host = options.replay, options.parent, options.host
    cfg = spec.training
    set_seed(cfg.seed)
    if replay is not None and len(replay) and cfg.replay_ratio > 0:
        data = replay_mix(data, prepare_replay(replay), ratio=cfg.replay_ratio, seed=cfg.seed)
    data = data.reset_index(drop=True)
    parent_head = read_parent_head(parent) if parent is not None else None
    parent_labels = check_artifact(parent).labels if parent is not None else None
    labels = resolve_labels(spec, labels_in(data), parent_labels)
    if not labels:
        # Only an extractor gets here: a classifier's table was refused with under two labels.
        raise DataError(
            f"specialist {spec.name!r}: the training data has no entity at all; an "
            "extractor needs labelled spans (or declare its `entities`)"
        )
    train, validation = stratified_split(data, fraction=cfg.validation_fraction, seed=cfg.seed)

    host = host or AdapterHost(spec.base_model, device=options.device, threads=options.threads)
    if CANDIDATE in host.adapter_ids:
        host.remove_adapter(CANDIDATE)
    host.new_adapter(
        CANDIDATE,
        name=spec.name,
        task=spec.task,
        labels=labels,
        lora=spec.lora,
        max_length=cfg.max_length,
        seed=cfg.seed,
        parent_head=parent_head,
        parent_adapter=parent,
    )
    return Candidate(host=host, labels=labels, data=data, train=train, validation=validation)


def finish_candidate(
    run: Candidate,
    spec: SpecialistSpec,
    fit: Fit,
    *,
    embeddings: np.ndarray,
    confidence: np.ndarray,
    temperature: float,
    evaluation: Evaluation | ExtractionEvaluation,
    validation_predictions: pd.DataFrame,
    dataset_hash: str,
    summary: str,
    params: dict[str, Any] | None = None,
) -> TrainResult:
    """Fit the candidate's out-of-scope detector on its validation ``embeddings`` and
    ``confidence``, log ``summary`` (who was trained, with the kind's figures) and gather the
    result; ``params`` adds the kind's own to the params every run logs."""
    host, cfg = run.host, spec.training
    detector = fit_out_of_scope(
        host,
        run.train,
        embeddings,
        confidence,
        target_rate=spec.monitoring.out_of_scope_rate,
        seed=cfg.seed,
    )
    host.set_detector(CANDIDATE, detector)
    logger.info("trained %s, T=%.2f in %.0f s", summary, temperature, fit.seconds)
    data = run.data
    return TrainResult(
        host=host,
        adapter_id=CANDIDATE,
        meta=host.meta(CANDIDATE),
        train=run.train,
        validation=run.validation,
        validation_predictions=validation_predictions,
        validation_embeddings=embeddings,
        evaluation=evaluation,
        dataset_hash=dataset_hash,
        seconds=fit.seconds,
        steps=fit.steps,
        examples_per_second=fit.examples_per_second,
        history=fit.history,
        params={
            **(params or {}),
            "base_model": spec.base_model,
            "n_labels": len(run.labels),
            "n_train": len(run.train),
            "n_validation": len(run.validation),
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
