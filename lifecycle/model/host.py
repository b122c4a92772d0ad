"""One base model in memory with any number of LoRA adapters and their heads.

``AdapterHost`` is the face the rest of lifecycle sees; it composes the base encoder
(``lifecycle.model.base``), the adapters and their artifact folders
(``lifecycle.model.adapters``) and the forward passes (``lifecycle.model.forward``). A batch
can mix rows of several adapters: each row gets its own LoRA weights, then its own head.
The pooled vector is also the row's embedding for drift monitoring, so it comes from the
same forward pass.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lifecycle.config.spec import DEFAULT_BASE_MODEL, LoraSpec, TaskName
from lifecycle.model.adapters import Adapters
from lifecycle.model.artifacts import Prediction, SpecialistMeta
from lifecycle.model.base import encoder_layers, load_base
from lifecycle.model.forward import Offsets, Passes
from lifecycle.model.int8 import Int8Linears, QuantizeMode, agreement, int8_wanted
from lifecycle.tasks.base import Answer

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


class AdapterHost:
    """A base encoder with named LoRA adapters and their classification heads.

    Adapter ids are the caller's to choose; the gateway versions them
    (``name@v3``) so that one id never stands for two sets of weights.
    """

    #: Score texts with their adapter's out-of-scope detector in ``predict``; the gateway sets
    #: it from ``LIFECYCLE_OOD_SCORES`` (off: every ``ood_score`` and ``out_of_scope`` is None).
    score_out_of_scope: bool = True

    def __init__(
        self,
        base_model: str = DEFAULT_BASE_MODEL,
        *,
        device: str = "auto",
        threads: int | None = None,
        quantize: QuantizeMode = "off",
        min_agreement: float = 0.995,
    ) -> None:
        base = load_base(base_model, device=device, threads=threads)
        self.base_model = base_model
        self.placement = base.placement
        #: ``quantize`` and ``min_agreement`` as given (``lifecycle.model.int8``); int8 runs on a
        #: CPU only (a GPU runs bf16), so elsewhere the mode is ``off``.
        self.quantize: QuantizeMode = quantize if base.placement.device == "cpu" else "off"
        self.min_agreement = min_agreement
        #: Per loaded adapter, its labels' agreement int8 vs float32 on the rows it was probed
        #: on (None: not probed); ``auto`` runs int8 while every one is at the bar.
        self.agreements: dict[str, float | None] = {}
        self._int8 = Int8Linears(base.encoder) if self.quantize != "off" else None
        self.tokenizer = base.tokenizer
        self.hidden_size = base.hidden_size
        #: The passes: padded, packed, mixed; ``packing`` and ``mixing`` say which may run.
        self.passes = Passes(base.tokenizer, base.placement)
        #: The adapters with their heads: attach, load, save, train.
        self.adapters = Adapters(base, on_attach=self.passes.mixer.hook)
        self._pause: Callable[[], None] | None = None
        with self._float():
            self.passes.packing = self.passes.probe_packing(base.encoder, base_model)
        self._settle_runtime()
        # The hooks sit on the encoder's own layer modules, which peft wraps and unloads
        # without replacing, so they hold for every adapter loaded later.
        for layer in encoder_layers(base.encoder):
            layer.register_forward_pre_hook(self._between_layers)

    def _between_layers(self, module: Any, args: Any) -> None:
        if self._pause is not None:
            self._pause()

    @property
    def runtime(self) -> str:
        """What the encoder's linear layers run in now: ``int8``, ``bf16`` (CUDA autocast) or
        ``fp32``."""
        if self._int8 is not None and self._int8.on:
            return "int8"
        return "bf16" if self.placement.autocast_bf16 else "fp32"

    def _float(self) -> contextlib.AbstractContextManager[None]:
        return self._int8.suspended() if self._int8 is not None else contextlib.nullcontext()

    def _settle_runtime(self) -> None:
        if self._int8 is None:
            return
        wanted = int8_wanted(self.quantize, self.agreements, self.min_agreement)
        if wanted != self._int8.on:
            logger.info(
                "encoder linear layers now %s (quantize=%s, agreement %s, bar %.3f)",
                "int8" if wanted else "float32",
                self.quantize,
                {k: v if v is None else round(v, 4) for k, v in self.agreements.items()},
                self.min_agreement,
            )
        self._int8.on = wanted

    def int8_agreement(
        self, adapter_id: str, texts: Sequence[str], *, batch_size: int = 64
    ) -> float:
        """Share of ``texts`` whose label from ``adapter_id`` is the same with int8 linear layers
        as with float32 ones (1.0 on a host that never quantizes: nothing changes)."""
        if self._int8 is None:
            return 1.0
        ids = [adapter_id] * len(texts)
        was = self._int8.on
        try:
            self._int8.on = False
            exact = self.infer(texts, adapter_id, batch_size=batch_size)
            self._int8.on = True
            quick = self.infer(texts, adapter_id, batch_size=batch_size)
        finally:
            self._int8.on = was
        labels = [
            [a.label for a in self.answers(texts, ids, logits, offsets)]
            for logits, _, offsets in (exact, quick)
        ]
        return agreement(labels[0], labels[1])

    @property
    def packing(self) -> bool:
        """Whether inference packs texts into shared rows (the encoder passed its probe)."""
        return self.passes.packing

    @packing.setter
    def packing(self, on: bool) -> None:
        self.passes.packing = on

    @property
    def mixing(self) -> bool:
        """Whether packed rows may mix adapters (every loaded adapter passed its probe)."""
        return self.passes.mixing

    @mixing.setter
    def mixing(self, on: bool) -> None:
        self.passes.mixing = on

    # -- adapters -------------------------------------------------------------

    @property
    def adapter_ids(self) -> list[str]:
        return self.adapters.ids

    def meta(self, adapter_id: str) -> SpecialistMeta:
        return self.adapters.get(adapter_id).meta

    def new_adapter(
        self,
        adapter_id: str,
        *,
        name: str,
        labels: Sequence[str],
        lora: LoraSpec,
        max_length: int,
        seed: int = 0,
        parent_head: tuple[Sequence[str], np.ndarray, np.ndarray] | None = None,
        parent_adapter: Path | None = None,
        task: TaskName = "classification",
    ) -> None:
        """Add a fresh, trainable adapter and head (``task`` decides the head's rows).

        ``parent_head`` (labels, weight, bias) warm-starts the rows of labels the
        parent already knew; a label new to this version gets a fresh row.
        ``parent_adapter`` (a version's artifact folder) starts the LoRA weights from the
        parent's when its LoRA shape matches: a retrain on a few hundred new labels then
        refines what the parent learned instead of relearning it from scratch.
        """
        meta = SpecialistMeta(
            name=name,
            task=task,
            labels=tuple(labels),
            base_model=self.base_model,
            max_length=max_length,
            lora=lora,
        )
        self.adapters.create(
            adapter_id,
            meta=meta,
            seed=seed,
            parent_head=parent_head,
            parent_adapter=parent_adapter,
        )

    def trainable_parameters(self, adapter_id: str) -> tuple[list[Any], list[Any]]:
        """(LoRA parameters, head parameters) of one adapter, marked trainable."""
        return self.adapters.trainable_parameters(adapter_id)

    def lora_parameters(self, adapter_id: str) -> list[tuple[str, Any]]:
        """(name, parameter) of every LoRA weight of one adapter."""
        return self.adapters.lora_parameters(adapter_id)

    def set_temperature(self, adapter_id: str, temperature: float) -> None:
        adapter = self.adapters.get(adapter_id)
        adapter.meta = adapter.meta.model_copy(update={"temperature": float(temperature)})

    def head_arrays(self, adapter_id: str) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        adapter = self.adapters.get(adapter_id)
        return (
            adapter.meta.head_rows,
            adapter.head.weight.detach().float().cpu().numpy(),
            adapter.head.bias.detach().float().cpu().numpy(),
        )

    def save_adapter(self, adapter_id: str, folder: str | Path) -> Path:
        """Write the adapter as safetensors plus JSON; no pickle anywhere."""
        return self.adapters.save(adapter_id, Path(folder))

    def set_detector(self, adapter_id: str, detector: Any) -> None:
        """Attach an out-of-scope detector (``lifecycle.model.ood.OutOfScopeDetector``) whose scores
        ``predict`` returns with every answer."""
        self.adapters.get(adapter_id).detector = detector

    def detector(self, adapter_id: str) -> Any:
        return self.adapters.get(adapter_id).detector

    def load_adapter(
        self,
        adapter_id: str,
        folder: str | Path,
        *,
        probe_texts: Sequence[str] | None = None,
    ) -> SpecialistMeta:
        """Load a specialist artifact folder written by ``save_adapter``.

        Only safetensors and JSON are read; a folder holding anything a loader
        would unpickle is refused, whatever else it holds. The adapter is then probed,
        with the one loaded before it, for packed rows that mix adapters. On a host with
        ``quantize="auto"``, ``probe_texts`` (the version's reference rows) measure its int8
        agreement, which decides whether the host keeps running int8.
        """
        meta = self.adapters.load(adapter_id, Path(folder))
        others = [a for a in self.adapters.ids if a != adapter_id][-1:]
        with self._float():
            self.passes.probe_mixing(self.adapters.model, [adapter_id, *others])
        if self._int8 is not None:
            self.agreements[adapter_id] = (
                self.int8_agreement(adapter_id, probe_texts) if probe_texts else None
            )
            self._settle_runtime()
        return meta

    def remove_adapter(self, adapter_id: str) -> None:
        self.adapters.remove(adapter_id)
        if adapter_id in self.agreements:
            del self.agreements[adapter_id]
            self._settle_runtime()

    def train_mode(self, adapter_id: str, enabled: bool) -> None:
        self.adapters.model.train(enabled)
        self.adapters.get(adapter_id).head.train(enabled)

    # -- inference --------------------------------------------------------------

    def forward(
        self, texts: Sequence[str], adapter_ids: Sequence[str], *, train: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor, dict[int, Offsets]]:
        """Logits (one tensor per row: heads differ in size; an extractor's is tokens x
        tags), pooled embeddings and, outside training, the token offsets of the extractors'
        rows (by row index), from the pass's own tokenization.

        Rows may name different adapters; each gets its own LoRA weights and head.
        Gradients flow only when ``train`` is set. Inference on a CPU packs the texts
        (``lifecycle.model.packing``) when the encoder passed the packing probe at load.
        """
        if len(texts) != len(adapter_ids):
            raise ValueError("one adapter id per text")
        distinct = list(dict.fromkeys(adapter_ids))
        max_length = max(self.adapters.get(a).meta.max_length for a in distinct)
        model = self.adapters.model
        if len(distinct) == 1 and model.active_adapter != distinct[0]:
            model.set_adapter(distinct[0])  # walks every module: only when it changes
        extractors = {a for a in distinct if self.adapters.token_level(a)}
        pooled, states, offsets = self.passes.encode(
            model,
            texts,
            adapter_ids,
            max_length,
            train=train,
            tokens=[i for i, a in enumerate(adapter_ids) if a in extractors],
        )
        logits = self.adapters.heads(pooled, adapter_ids, states)
        return logits, pooled if train else pooled.detach(), offsets

    def predict(
        self,
        texts: Sequence[str],
        adapter_id: str | Sequence[str],
        *,
        batch_size: int = 32,
        pause: Callable[[], None] | None = None,
    ) -> list[Prediction]:
        """Label, calibrated confidence and embedding per text.

        Texts are sorted by length before batching (padding dominates CPU cost on
        short texts; on a CPU the passes are packed as well); results come back in the
        caller's order. ``pause`` is called before every encoder layer of every pass:
        work that may wait (shadow scoring) blocks there to give the CPU to work that
        may not.
        """
        self._pause = pause
        try:
            logits, embeddings, offsets = self.infer(texts, adapter_id, batch_size=batch_size)
        finally:
            self._pause = None
        ids = _ids_per_text(texts, adapter_id)
        adapters = [self.adapters.get(a) for a in ids]
        answers = self.answers(texts, ids, logits, offsets)
        confidence = np.array([a.confidence for a in answers], dtype=np.float64)
        scores = self._ood_scores(ids, embeddings, confidence)
        predictions = []
        for i, answer in enumerate(answers):
            score = scores[i]
            detector = adapters[i].detector
            flagged = None if score is None else bool(score > detector.threshold)
            predictions.append(
                Prediction(
                    label=answer.label,
                    confidence=answer.confidence,
                    embedding=embeddings[i],
                    probabilities=answer.probabilities,
                    ood_score=None if score is None else float(score),
                    out_of_scope=flagged,
                    entities=answer.entities,
                )
            )
        return predictions

    def answers(
        self,
        texts: Sequence[str],
        ids: Sequence[str],
        logits: Sequence[np.ndarray],
        offsets: Sequence[Offsets | None],
    ) -> list[Answer]:
        """Each text's answer from its logits (and, for an extractor, its token offsets: both
        from ``infer``), as its adapter's task kind reads them."""
        from lifecycle.tasks import Reading, task_kind

        metas = [self.adapters.get(a).meta for a in ids]
        return [
            task_kind(meta.task).answer(row, Reading(meta.labels, meta.temperature, text, spans))
            for text, row, meta, spans in zip(texts, logits, metas, offsets, strict=True)
        ]

    def _ood_scores(
        self, ids: Sequence[str], embeddings: np.ndarray, confidence: np.ndarray
    ) -> list[float | None]:
        """Each row's out-of-scope score under its own adapter's detector (None without one,
        and for every row while ``score_out_of_scope`` is off).

        Rows are scored in one call per adapter: a product with the detector's matrix, small
        beside the encoder pass that produced the embeddings.
        """
        out: list[float | None] = [None] * len(ids)
        if not self.score_out_of_scope:
            return out
        groups: dict[str, list[int]] = {}
        for i, adapter_id in enumerate(ids):
            groups.setdefault(adapter_id, []).append(i)
        for adapter_id, rows in groups.items():
            detector = self.adapters.get(adapter_id).detector
            if detector is None:
                continue
            values = detector.score(embeddings[rows], confidence[rows])
            for i, v in zip(rows, values, strict=True):
                out[i] = float(v) if np.isfinite(v) else None
        return out

    def logits_and_embeddings(
        self, texts: Sequence[str], adapter_id: str | Sequence[str], *, batch_size: int = 32
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Raw logits (per row) and L2-normalised embeddings, in the caller's order."""
        logits, embeddings, _ = self.infer(texts, adapter_id, batch_size=batch_size)
        return logits, embeddings

    def infer(
        self, texts: Sequence[str], adapter_id: str | Sequence[str], *, batch_size: int = 32
    ) -> tuple[list[np.ndarray], np.ndarray, list[Offsets | None]]:
        """Raw logits (per row), L2-normalised embeddings and token offsets (an extractor's
        rows; None for a classifier's), in the caller's order."""
        import torch

        ids = _ids_per_text(texts, adapter_id)
        if len(ids) != len(texts):
            raise ValueError("one adapter id per text")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        logits: list[np.ndarray] = [np.empty(0)] * len(texts)
        offsets: list[Offsets | None] = [None] * len(texts)
        embeddings = np.zeros((len(texts), self.hidden_size), dtype=np.float32)
        model = self.adapters.model
        if model.training:  # eval() walks every module: only after training
            model.eval()
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                out, pooled, spans = self.forward(
                    [texts[i] for i in chunk], [ids[i] for i in chunk]
                )
                normed = torch.nn.functional.normalize(pooled, dim=1).cpu().numpy()
                for k, i in enumerate(chunk):
                    logits[i] = out[k].float().cpu().numpy()
                    embeddings[i] = normed[k]
                    offsets[i] = spans.get(k)
        return logits, embeddings, offsets


def _ids_per_text(texts: Sequence[str], adapter_id: str | Sequence[str]) -> list[str]:
    return [adapter_id] * len(texts) if isinstance(adapter_id, str) else list(adapter_id)
