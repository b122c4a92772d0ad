"""Dynamic int8 for the base encoder's linear layers on a CPU, and when to use it.

The encoder's ``nn.Linear`` layers carry ~80% of a CPU pass; int8 weights (per output
channel) with activations quantized per call do that arithmetic ~1.7x faster. LoRA weights and
the heads stay float32: they are small, and a LoRA delta quantized on its own would lose most
of what a few hundred steps taught it.

The layers keep their type and their float weights: only their ``forward`` is switched, so peft
still sees (and wraps) plain linear layers when adapters come and go, and switching back gives
the float pass bit for bit. The load-time probes of packed and mixed passes compare float passes
(``Int8Linears.suspended``): activations quantized per call depend on what else shares the
batch, so those probes' tolerances hold only in float; what int8 changes is measured instead as
label agreement with float on a specialist's own reference rows (``agreement``).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

logger = logging.getLogger(__name__)

#: ``off``: float32 only; ``int8``: int8 linear layers always; ``auto``: int8 while every loaded
#: specialist's labels agree with float32 on its reference rows at the set bar.
QuantizeMode = Literal["off", "int8", "auto"]


class Int8Linears:
    """Int8 twins of every linear layer of an encoder, switched on and off together."""

    def __init__(self, encoder: Any) -> None:
        import torch
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
        from torch.ao.quantization import PerChannelMinMaxObserver, PlaceholderObserver, QConfig

        # Per-channel weights: per-tensor scales lose the small rows of a layer whose rows
        # differ in size. The activations' observer only shapes the packing; the range they use
        # is set per call below.
        qconfig = QConfig(
            activation=PlaceholderObserver.with_args(dtype=torch.quint8, is_dynamic=True),
            weight=PerChannelMinMaxObserver.with_args(
                dtype=torch.qint8, qscheme=torch.per_channel_symmetric
            ),
        )
        self._twins: list[tuple[Any, Any]] = []
        # Only the encoder's own layers exist now: LoRA's and the heads' come later and stay float.
        with warnings.catch_warnings():
            # torch 2.13 announces the quantized tensor types' removal in a later release; the
            # pin holds torch at 2.13, and tests/model/test_int8.py fails loudly on one without.
            warnings.filterwarnings("ignore", message=".*quantize_per_.*deprecated.*")
            for module in encoder.modules():
                if type(module) is torch.nn.Linear:
                    module.qconfig = qconfig  # type: ignore[assignment]
                    twin = DynamicLinear.from_float(module)
                    del module.qconfig
                    self._twins.append((module, _full_range(twin._packed_params._packed_params)))
        if not self._twins:
            raise ValueError("the encoder has no linear layers to quantize")
        self._on = False

    def __len__(self) -> int:
        return len(self._twins)

    @property
    def on(self) -> bool:
        return self._on

    @on.setter
    def on(self, value: bool) -> None:
        if value == self._on:
            return
        for module, twin in self._twins:
            if value:
                # An instance attribute shadows nn.Linear.forward; deleting it restores it.
                module.forward = twin
            else:
                del module.forward
        self._on = value

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """Float passes inside, whatever the state outside."""
        was = self._on
        self.on = False
        try:
            yield
        finally:
            self.on = was


def _full_range(packed: Any) -> Any:
    """The int8 forward of one layer: activations quantized per call on all 8 bits.

    torch's dynamic layer quantizes activations on 7 bits (``reduce_range``) on x86, against
    16-bit overflow in fbgemm's products on CPUs without VNNI. On MiniLM (an AVX2 CPU without
    VNNI, bench/int8_runtimes.py) all 8 bits gave pooled embeddings at a worst cosine of 0.981
    to float32 (7 bits: 0.943) at the same speed; the agreement probe is what guards a model
    where they would not.
    """
    import torch

    def forward(x: Any) -> Any:
        return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False)

    return forward


def agreement(reference: Sequence[str], other: Sequence[str]) -> float:
    """Share of rows whose labels are the same (1.0 for no rows: nothing disagrees)."""
    if len(reference) != len(other):
        raise ValueError("one label per row on both sides")
    if not reference:
        return 1.0
    return sum(a == b for a, b in zip(reference, other, strict=True)) / len(reference)


def int8_wanted(mode: QuantizeMode, agreements: Mapping[str, float | None], bar: float) -> bool:
    """Whether a host runs int8: always under ``int8``; under ``auto`` while at least one
    specialist is loaded and every loaded one was probed at or above ``bar`` (one never
    probed, None, keeps the host in float: nothing says int8 answers it well)."""
    if mode == "int8":
        return True
    if mode == "off" or not agreements:
        return False
    return all(a is not None and a >= bar for a in agreements.values())
