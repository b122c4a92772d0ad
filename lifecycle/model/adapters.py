"""The LoRA adapters on one base encoder, with their heads, and their artifact folders.

A specialist is a LoRA adapter (peft) on the shared encoder plus a small linear head over
the mean-pooled last hidden state, and optionally an out-of-scope detector. The heads live
outside peft so that specialists with different label sets (or a label set that grew) share
one peft model. An artifact folder holds safetensors and JSON only: nothing that a loader
would unpickle is written, and a folder holding such a file is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lifecycle.config.errors import ModelLoadError
from lifecycle.config.spec import LoraSpec
from lifecycle.model.artifacts import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    HEAD_WEIGHTS,
    META_FILE,
    PICKLE_SUFFIXES,
    SpecialistMeta,
)
from lifecycle.model.base import Base

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


@dataclass
class Adapter:
    """What a loaded specialist adds to the peft model's LoRA weights."""

    meta: SpecialistMeta
    head: torch.nn.Linear
    #: The version's out-of-scope detector (``lifecycle.model.ood``); None for a version without.
    detector: Any = None


def is_lora_of(name: str, adapter_id: str) -> bool:
    """Whether a peft parameter name is one of ``adapter_id``'s LoRA weights.

    peft files them under a ``lora_*`` container keyed by adapter: ``…lora_A.<id>.weight``
    for a linear layer, ``…lora_embedding_A.<id>`` (nothing after the id) for an embedding.
    An id never holds a dot (torch refuses one in a module name), so the part right after
    the container is the whole id.
    """
    parts = name.split(".")
    return any(
        part.startswith("lora_") and parts[i + 1 : i + 2] == [adapter_id]
        for i, part in enumerate(parts)
    )


def check_artifact(folder: Path) -> SpecialistMeta:
    """Validate an artifact folder without loading weights; refuse pickle files."""
    if not folder.is_dir():
        raise ModelLoadError(f"adapter folder {folder} does not exist")
    refused = sorted(p.name for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if refused:
        raise ModelLoadError(
            f"adapter {folder} holds pickle-format files ({', '.join(refused)}); "
            "only safetensors are loaded"
        )
    missing = [
        f
        for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, HEAD_WEIGHTS, META_FILE)
        if not (folder / f).is_file()
    ]
    if missing:
        raise ModelLoadError(f"adapter {folder} lacks {', '.join(missing)}")
    try:
        return SpecialistMeta.model_validate_json((folder / META_FILE).read_text(encoding="utf-8"))
    except Exception as exc:
        raise ModelLoadError(
            f"{folder / META_FILE} is not a valid specialist description: {exc}"
        ) from exc


class Adapters:
    """The peft model over a base encoder, and each adapter's head, meta and detector.

    ``on_attach`` is called with the peft model after every attach, when peft may have made
    new LoRA layers (the forward passes hook them).
    """

    def __init__(self, base: Base, *, on_attach: Callable[[Any], None]) -> None:
        self.base_model = base.reference
        self.device = base.placement.device
        self.hidden_size = base.hidden_size
        #: The bare encoder; peft wraps it in place and hands it back when the last adapter goes.
        self.encoder = base.encoder
        #: The peft model, from the first adapter on; None while no adapter is attached.
        self.model: Any = None
        self._on_attach = on_attach
        self._loaded: dict[str, Adapter] = {}

    @property
    def ids(self) -> list[str]:
        return list(self._loaded)

    def get(self, adapter_id: str) -> Adapter:
        try:
            return self._loaded[adapter_id]
        except KeyError:
            raise ModelLoadError(f"no adapter {adapter_id!r} is loaded") from None

    def attach(self, adapter_id: str, config: Any) -> None:
        """Add LoRA weights under ``adapter_id`` (a peft ``LoraConfig``), without a head:
        ``register`` gives it one."""
        from peft import get_peft_model

        if self.model is None:
            self.model = get_peft_model(self.encoder, config, adapter_name=adapter_id)
        else:
            self.model.add_adapter(adapter_id, config)
        self.model.to(self.device)
        self._on_attach(self.model)
        # peft builds a new adapter's modules (its LoRA dropout included) in training mode,
        # whatever mode the model is in: bring them to the model's mode.
        self.model.train(self.model.training)

    def register(self, adapter_id: str, adapter: Adapter) -> None:
        """Give the attached LoRA weights of ``adapter_id`` their head, meta and detector."""
        self._loaded[adapter_id] = adapter

    def remove(self, adapter_id: str) -> None:
        self.get(adapter_id)
        self._detach(adapter_id)
        del self._loaded[adapter_id]

    def create(
        self,
        adapter_id: str,
        *,
        meta: SpecialistMeta,
        seed: int = 0,
        parent_head: tuple[Sequence[str], np.ndarray, np.ndarray] | None = None,
        parent_adapter: Path | None = None,
    ) -> None:
        """A fresh, trainable adapter and head (``AdapterHost.new_adapter`` says more)."""
        import torch
        from peft import LoraConfig

        # The LoRA weights are drawn first, then the head: the order fixes what a seed gives.
        torch.manual_seed(seed)
        lora = meta.lora
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
        )
        self.attach(adapter_id, config)
        if parent_adapter is not None:
            self._warm_start(adapter_id, parent_adapter, lora)
        head = torch.nn.Linear(self.hidden_size, len(meta.head_rows)).to(self.device)
        if parent_head is not None:
            parent_labels, weight, bias = parent_head
            index = {label: i for i, label in enumerate(parent_labels)}
            with torch.no_grad():
                for row, label in enumerate(meta.head_rows):
                    if label in index:
                        head.weight[row] = torch.as_tensor(weight[index[label]])
                        head.bias[row] = float(bias[index[label]])
        self.register(adapter_id, Adapter(meta=meta, head=head))

    def _warm_start(self, adapter_id: str, folder: Path, lora: LoraSpec) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        parent = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        same = (
            parent.get("r") == lora.r
            and parent.get("lora_alpha") == lora.alpha
            and sorted(parent.get("target_modules") or []) == sorted(lora.target_modules)
        )
        if not same:
            logger.info("LoRA shape changed since the parent: %s starts fresh", adapter_id)
            return
        set_peft_model_state_dict(
            self.model, load_file(str(folder / ADAPTER_WEIGHTS)), adapter_name=adapter_id
        )

    def load(self, adapter_id: str, folder: Path) -> SpecialistMeta:
        """Load an artifact folder written by ``save`` (``AdapterHost.load_adapter`` says more)."""
        import torch
        from peft import LoraConfig, set_peft_model_state_dict
        from safetensors.torch import load_file

        from lifecycle.model.ood import OutOfScopeDetector

        meta = check_artifact(folder)
        if meta.base_model != self.base_model:
            raise ModelLoadError(
                f"adapter {folder} was trained on base model {meta.base_model!r}, "
                f"but this host runs {self.base_model!r}"
            )
        if adapter_id in self._loaded:
            raise ModelLoadError(f"adapter id {adapter_id!r} is already loaded")
        config_dict = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        config = LoraConfig(
            **{k: v for k, v in config_dict.items() if k in LoraConfig.__dataclass_fields__}
        )
        config.inference_mode = True
        self.attach(adapter_id, config)
        try:
            result = set_peft_model_state_dict(
                self.model, load_file(str(folder / ADAPTER_WEIGHTS)), adapter_name=adapter_id
            )
            unexpected = list(getattr(result, "unexpected_keys", []) or [])
            if unexpected:
                raise ModelLoadError(
                    f"adapter {folder} has weights this base lacks: {unexpected[:3]}"
                )
            head_state = load_file(str(folder / HEAD_WEIGHTS))
            weight, bias = head_state["weight"], head_state["bias"]
            rows = len(meta.head_rows)
            if weight.shape != (rows, self.hidden_size) or bias.shape != (rows,):
                raise ModelLoadError(
                    f"head of {folder} has shape {tuple(weight.shape)}, expected "
                    f"({rows}, {self.hidden_size})"
                )
            detector = OutOfScopeDetector.load(folder)
            if detector is not None and detector.transform.shape[-1] != self.hidden_size:
                raise ModelLoadError(
                    f"out-of-scope detector of {folder} expects {detector.transform.shape[-1]}-d "
                    f"embeddings, but this base has {self.hidden_size}"
                )
        except ModelLoadError:
            self._detach(adapter_id)
            raise
        except Exception as exc:  # a corrupt file must not leave a half-loaded adapter
            self._detach(adapter_id)
            raise ModelLoadError(f"adapter {folder} cannot be loaded: {exc}") from exc
        head = torch.nn.Linear(self.hidden_size, len(meta.head_rows))
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_(bias)
        head.to(self.device).eval()
        self.register(adapter_id, Adapter(meta=meta, head=head, detector=detector))
        return meta

    def save(self, adapter_id: str, folder: Path) -> Path:
        """Write the adapter as safetensors plus JSON; no pickle anywhere."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        adapter = self.get(adapter_id)
        folder.mkdir(parents=True, exist_ok=True)
        state = get_peft_model_state_dict(self.model, adapter_name=adapter_id)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in state.items()}, folder / ADAPTER_WEIGHTS
        )
        self.model.peft_config[adapter_id].save_pretrained(str(folder))
        save_file(
            {
                "weight": adapter.head.weight.detach().cpu().contiguous(),
                "bias": adapter.head.bias.detach().cpu().contiguous(),
            },
            folder / HEAD_WEIGHTS,
        )
        (folder / META_FILE).write_text(adapter.meta.model_dump_json(indent=2), encoding="utf-8")
        if adapter.detector is not None:
            adapter.detector.save(folder)
        return folder

    def lora_parameters(self, adapter_id: str) -> list[tuple[str, Any]]:
        """(name, parameter) of every LoRA weight of one adapter, in the model's order."""
        self.get(adapter_id)
        return [(n, p) for n, p in self.model.named_parameters() if is_lora_of(n, adapter_id)]

    def trainable_parameters(self, adapter_id: str) -> tuple[list[Any], list[Any]]:
        """(LoRA parameters, head parameters) of one adapter, the only ones left trainable."""
        adapter = self.get(adapter_id)
        self.model.set_adapter(adapter_id)
        lora = [p for _, p in self.lora_parameters(adapter_id)]
        own = {id(p) for p in lora}
        for param in self.model.parameters():
            param.requires_grad_(id(param) in own)
        for param in adapter.head.parameters():
            param.requires_grad_(True)
        return lora, list(adapter.head.parameters())

    def token_level(self, adapter_id: str) -> bool:
        """Whether the adapter's head reads every token (an extractor) or the pooled row."""
        from lifecycle.tasks import task_kind

        return task_kind(self.get(adapter_id).meta.task).token_level

    def heads(
        self,
        pooled: torch.Tensor,
        adapter_ids: Sequence[str],
        tokens: Mapping[int, torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """Each row through its own adapter's head: one tensor per row, as heads differ in
        size. A classifier's head reads the row's pooled vector (logits: labels); an
        extractor's reads the row's token states in ``tokens`` (logits: tokens x tags)."""
        import torch

        logits: list[torch.Tensor] = [torch.empty(0)] * len(adapter_ids)
        for adapter_id in dict.fromkeys(adapter_ids):
            rows = [i for i, a in enumerate(adapter_ids) if a == adapter_id]
            head = self._loaded[adapter_id].head
            if self.token_level(adapter_id):
                if tokens is None:
                    raise ValueError(f"{adapter_id} is an extractor: its head needs token states")
                for i in rows:
                    logits[i] = head(tokens[i])
                continue
            out = head(pooled[rows])
            for k, i in enumerate(rows):
                logits[i] = out[k]
        return logits

    def _detach(self, adapter_id: str) -> None:
        if self.model is not None and adapter_id in self.model.peft_config:
            remaining = [a for a in self.model.peft_config if a != adapter_id]
            if remaining and self.model.active_adapter == adapter_id:
                self.model.set_adapter(remaining[0])
            if remaining:
                self.model.delete_adapter(adapter_id)
            else:
                # peft cannot delete its last adapter: start over from the bare encoder.
                self.encoder = self.model.unload()
                self.model = None
