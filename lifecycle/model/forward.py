"""Forward passes to pooled embeddings: padded, packed, and packed rows that mix adapters.

A padded pass is the reference: one text per row, peft applies each row's adapter. On a
CPU the texts are packed instead (``lifecycle.model.packing``): several texts share a row,
so no position is spent on padding. A packed row may even hold texts of several adapters:
peft's own LoRA is switched off for that pass, and a hook on every LoRA layer adds each
token's own adapter (``TokenMixer``). Both shortcuts are probed against padded passes
before they are used (``Passes.probe_packing``, ``Passes.probe_mixing``), since a model or a
peft release that breaks their assumptions would otherwise give other answers silently.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from lifecycle.model.base import Placement

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Tokens per packed row. Attention within a row costs length x length, so short rows keep
# its share small (about 5% of a MiniLM pass at 128), while a row still holds ~8 queries.
PACK_TOKENS = 128

#: Texts of the load-time probes, of unequal lengths so that packing has rows to share.
PROBE_TEXTS = ("a short one", "a longer probe text, with more than a few tokens in it", "ok")

#: Per text: each token's (start, end) characters, special tokens (0, 0).
Offsets = list[tuple[int, int]]


def mixable(layers: Iterable[Any], adapter_ids: Sequence[str]) -> bool:
    """Whether the per-token hooks reproduce every one of these adapters exactly: plain
    LoRA (no DoRA or other variant) on linear layers only.

    The hooks apply ``lora_A``/``lora_B`` of linear layers while peft's own LoRA is
    switched off, so an adapter with LoRA anywhere else (an embedding's
    ``lora_embedding_A/B``, a convolution) would silently lose that part in a mixed
    row: such adapters run in rows of their own, where peft applies them.
    """
    from peft.tuners.lora import Linear as LoraLinear

    for module in layers:
        variants = getattr(module, "lora_variant", {}) or {}
        plain_linear = isinstance(module, LoraLinear)
        for adapter_id in adapter_ids:
            if adapter_id in variants:
                return False
            held = adapter_id in getattr(module, "r", {}) or any(
                adapter_id in getattr(module, name, {}) for name in ("lora_A", "lora_embedding_A")
            )
            if held and not (plain_linear and adapter_id in module.lora_A):
                return False
    return True


def switch_lora(layers: Iterable[Any], *, on: bool) -> None:
    """Turn the LoRA part of peft's layers off (base weights only) or back on.

    peft's public ``enable_adapters`` also resets requires_grad on every adapter's
    weights, 4 ms per pass with ten adapters loaded; inference needs only the flag it
    sets, so that is set directly where it exists. A peft that stopped reading it fails
    tests/model/test_peft_pins.py, and the mixing probe turns mixed rows off at load.
    """
    for layer in layers:
        if hasattr(layer, "_disable_adapters"):
            layer._disable_adapters = not on
        else:  # pragma: no cover - another peft
            layer.enable_adapters(on)


def token_plan(
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


def adapter_kwargs(adapter_ids: Sequence[str] | None) -> dict[str, Any]:
    """peft's per-row adapter choice, when the rows name more than one adapter."""
    if adapter_ids is None or len(set(adapter_ids)) < 2:
        return {}
    return {"adapter_names": list(adapter_ids)}


class TokenMixer:
    """Adds each token's own LoRA in packed rows that mix adapters.

    It holds a forward hook on every LoRA layer of the model; the hooks do nothing except
    inside ``mixed``, where peft's own LoRA is off and ``plan`` says which positions
    belong to which adapter.
    """

    def __init__(self) -> None:
        self.layers: weakref.WeakSet[Any] = weakref.WeakSet()
        #: Per adapter, the flat positions of the running pass that it owns; None between passes.
        self.plan: list[tuple[str, torch.Tensor]] | None = None

    def hook(self, model: Any) -> None:
        """Put the per-token hook on LoRA layers that lack it (peft makes new ones for a
        new target module, and after the last adapter is unloaded)."""
        from peft.tuners.lora import LoraLayer

        for module in model.modules():
            if isinstance(module, LoraLayer) and module not in self.layers:
                cast("torch.nn.Module", module).register_forward_hook(self.add_token_deltas)
                self.layers.add(module)

    def mixable(self, adapter_ids: Sequence[str]) -> bool:
        """``mixable`` over every hooked layer."""
        return mixable(self.layers, adapter_ids)

    @contextlib.contextmanager
    def mixed(self, plan: list[tuple[str, torch.Tensor]]) -> Iterator[None]:
        """peft runs the base weights only; the hooks add each token's LoRA."""
        self.plan = plan
        switch_lora(self.layers, on=False)
        try:
            yield
        finally:
            self.plan = None
            switch_lora(self.layers, on=True)

    def add_token_deltas(self, module: Any, args: Any, output: Any) -> Any:
        """Forward hook of a LoRA layer: add each token's own adapter, as peft would for a
        row of that adapter (``lora_B(lora_A(dropout(x))) * scaling``)."""
        plan = self.plan
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


class Passes:
    """Mean-pooled last hidden states of texts, by the fastest pass that gives the padded
    pass's answers on this model."""

    def __init__(self, tokenizer: Any, placement: Placement) -> None:
        self.tokenizer = tokenizer
        self.placement = placement
        self.mixer = TokenMixer()
        #: Whether inference packs texts into shared rows; set by ``probe_packing``.
        self.packing = False
        #: Whether packed rows may mix adapters; each loaded adapter is probed
        #: (``probe_mixing``), and one that disagrees turns it off for good.
        self.mixing = True

    def encode(
        self,
        model: Any,
        texts: Sequence[str],
        adapter_ids: Sequence[str],
        max_length: int,
        *,
        train: bool = False,
        tokens: Sequence[int] = (),
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor], dict[int, Offsets]]:
        """Pooled rows, one float32 row per text, and the last hidden state of every token of
        the texts at the indices ``tokens`` (an extractor's head reads those), from the same
        pass: packed for inference where packing passed its probe, padded for training (the
        probes compare inference passes only). For inference, also those texts' token
        offsets, from the tokenizer call of the pass: an extractor's answer maps its tags back
        to characters with them, without tokenizing the texts again."""
        import torch

        autocast = torch.autocast(
            "cuda", dtype=torch.bfloat16, enabled=self.placement.autocast_bf16
        )
        pass_ = self.packed if self.packing and not train else self.padded
        with autocast:
            pooled, states, offsets = pass_(
                model, texts, adapter_ids, max_length, tokens=tokens, offsets=not train
            )
        return pooled.float(), {i: h.float() for i, h in states.items()}, offsets

    def padded(
        self,
        model: Any,
        texts: Sequence[str],
        adapter_ids: Sequence[str] | None,
        max_length: int,
        *,
        tokens: Sequence[int] = (),
        offsets: bool = False,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor], dict[int, Offsets]]:
        """Mean-pooled last hidden states of a padded batch, one row per text, and the token
        states of the texts at ``tokens`` (special tokens included, padding not), with their
        token offsets when ``offsets`` is set (else none)."""
        want = offsets and bool(tokens)
        encoded = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
            return_offsets_mapping=want,
        )
        spans: dict[int, Offsets] = {}
        if want:
            mapping, real = encoded.pop("offset_mapping"), encoded["attention_mask"].bool()
            spans = {i: [(int(s), int(e)) for s, e in mapping[i][real[i]].tolist()] for i in tokens}
        encoded = encoded.to(self.placement.device)
        hidden = model(
            input_ids=encoded["input_ids"],
            attention_mask=encoded["attention_mask"],
            **(
                {"token_type_ids": encoded["token_type_ids"]} if "token_type_ids" in encoded else {}
            ),
            **adapter_kwargs(adapter_ids),
        ).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        keep = encoded["attention_mask"].bool()
        return pooled, {i: hidden[i][keep[i]] for i in tokens}, spans

    def packed(
        self,
        model: Any,
        texts: Sequence[str],
        adapter_ids: Sequence[str] | None,
        max_length: int,
        *,
        mix: bool | None = None,
        tokens: Sequence[int] = (),
        offsets: bool = False,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor], dict[int, Offsets]]:
        """The same pooled vectors (and token states and offsets) as ``padded``, with no
        padding between texts.

        ``mix`` forces the per-token path on or off (the mixing probe); by default rows mix
        adapters when they may.
        """
        import torch

        from lifecycle.model.packing import pack, plan_rows, segment_means

        want = offsets and bool(tokens)
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=max_length, return_offsets_mapping=want
        )
        token_ids = encoded["input_ids"]
        spans: dict[int, Offsets] = {}
        if want:
            spans = {i: [(int(s), int(e)) for s, e in encoded["offset_mapping"][i]] for i in tokens}
        ids = list(adapter_ids) if adapter_ids is not None else [""] * len(texts)
        distinct = list(dict.fromkeys(ids))
        # Rows mix adapters when every adapter is one the LoRA hooks reproduce: they then
        # add each token's own adapter, so 8 specialists' texts pack as tightly as one's.
        # Otherwise each row holds one adapter's texts, as peft applies adapters per row.
        if mix is None:
            mixing = len(distinct) > 1 and self.mixing and self.mixer.mixable(distinct)
        else:
            mixing = mix
        groups = [distinct] if mixing else [[a] for a in distinct]
        rows: list[list[int]] = []
        row_adapters: list[str] = []
        for group in groups:
            members = [i for i, a in enumerate(ids) if a in group]
            for row in plan_rows([len(token_ids[i]) for i in members], PACK_TOKENS):
                rows.append([members[k] for k in row])
                row_adapters.append(group[0])
        packed = pack(token_ids, rows, int(self.tokenizer.pad_token_id or 0))
        device = self.placement.device
        extra: dict[str, Any] = {}
        if "token_type_ids" in self.tokenizer.model_input_names:
            extra["token_type_ids"] = torch.zeros_like(packed.input_ids, device=device)
        context: contextlib.AbstractContextManager[None]
        if mixing:
            context = self.mixer.mixed(token_plan(packed.segment, ids, distinct, device))
        else:
            extra.update(adapter_kwargs(row_adapters if adapter_ids else None))
            context = contextlib.nullcontext()
        with context:
            hidden = model(
                input_ids=packed.input_ids.to(device),
                attention_mask=packed.attention_mask.to(device),
                position_ids=packed.position_ids.to(device),
                **extra,
            ).last_hidden_state
        states: dict[int, torch.Tensor] = {}
        if tokens:
            # A text's positions sit in one row, in order: its states are those positions.
            flat = hidden.reshape(-1, hidden.shape[-1])
            segment = packed.segment.reshape(-1).to(hidden.device)
            states = {i: flat[segment == i] for i in tokens}
        return segment_means(hidden, packed.segment, len(texts)), states, spans

    def probe_packing(self, encoder: Any, name: str) -> bool:
        """Whether packed passes reproduce padded ones on this encoder (``name`` is for the log).

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
                padded = self.padded(encoder, PROBE_TEXTS, None, 64, tokens=[0])
                packed = self.packed(encoder, PROBE_TEXTS, None, 64, tokens=[0])
        except Exception as exc:  # any architecture that refuses the packed inputs
            logger.info("packed inference off for %s: %s", name, exc)
            return False
        # Token states too: an extractor reads them, not only the pooled rows.
        agrees = bool(
            torch.allclose(padded[0], packed[0], atol=1e-4, rtol=1e-3)
            and torch.allclose(padded[1][0], packed[1][0], atol=1e-4, rtol=1e-3)
        )
        if not agrees:
            logger.info("packed inference off for %s: answers differ", name)
        return agrees

    def probe_mixing(self, model: Any, adapter_ids: Sequence[str]) -> None:
        """Turn mixed rows off when they do not reproduce each adapter's own padded pass.

        Run when an adapter is loaded, on the probe texts of that adapter and of one other
        loaded adapter (``adapter_ids``), through the per-token hooks; the reference runs
        each adapter alone, through peft. A peft whose LoRA layers changed what the hooks
        copy (the forward, or the flag that switches peft's own LoRA off) would otherwise
        give other answers silently; with mixing off, each row holds one adapter and peft
        applies it.
        """
        import torch

        if not (self.packing and self.mixing):
            return  # nothing mixes
        probed = [a for a in adapter_ids if self.mixer.mixable([a])]
        if not probed:
            return
        texts = [t for _ in probed for t in PROBE_TEXTS]
        ids = [a for a in probed for _ in PROBE_TEXTS]
        # A fresh peft model is in training mode (dropout on) until its first inference;
        # the probe runs in eval mode and leaves the mode as it found it.
        training = model.training
        if training:
            model.eval()
        try:
            with torch.inference_mode():
                mixed = self.packed(model, texts, ids, 64, mix=True)[0]
                alone = []
                for a in probed:
                    model.set_adapter(a)
                    alone.append(self.padded(model, PROBE_TEXTS, None, 64)[0])
                agrees = bool(torch.allclose(mixed, torch.cat(alone), atol=1e-4, rtol=1e-3))
                problem = "answers differ"
        except Exception as exc:  # a peft whose layers refuse what the hooks do
            agrees, problem = False, f"{type(exc).__name__}: {exc}"
        finally:
            if training:
                model.train(True)
        if not agrees:
            self.mixing = False
            logger.warning(
                "mixed-adapter passes off (each row runs one adapter): with %s, %s",
                " and ".join(probed),
                problem,
            )
