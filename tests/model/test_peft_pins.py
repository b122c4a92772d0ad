"""Pins the parts of peft's LoRA layers that lifecycle.model.forward relies on beyond peft's API.

Mixed-adapter packed passes switch peft's own LoRA off through the private flag
``_disable_adapters`` (``switch_lora``) and add each token's LoRA in a hook that copies
peft's linear forward from ``lora_A``, ``lora_B``, ``lora_dropout`` and ``scaling``
(``TokenMixer.add_token_deltas``); which adapters may mix is read from ``lora_variant``,
``lora_embedding_A`` and the layer's class (``mixable``). A peft release that changes any
of these fails here, by name, rather than in answers that are quietly different.
Each test runs on a two-layer toy model: no base model to load.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import Embedding as LoraEmbedding
from peft.tuners.lora import Linear as LoraLinear

from lifecycle.model.forward import mixable, switch_lora


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(20, 8)
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.emb(ids))


def _peft_toy(*adapters: tuple[str, LoraConfig]) -> Any:
    torch.manual_seed(0)
    (first, config), *rest = adapters
    model = get_peft_model(Toy(), config, adapter_name=first)
    for name, more in rest:
        model.add_adapter(name, more)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # fresh LoRA is a no-op (B or embedding A is zero): make it count
        for param_name, param in model.named_parameters():
            if "lora_" in param_name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.5)
    return model.eval()


def _layer(model: Any, name: str) -> Any:
    return dict(model.named_modules())[f"base_model.model.{name}"]


def test_the_disable_flag_exists_and_makes_a_lora_layer_return_its_base_output() -> None:
    model = _peft_toy(("one", LoraConfig(r=2, lora_alpha=4, target_modules=["proj"])))
    layer = _layer(model, "proj")
    assert isinstance(layer, LoraLinear)
    assert layer._disable_adapters is False and layer.disable_adapters is False
    x = torch.randn(5, 8)
    with torch.no_grad():
        base, with_lora = layer.base_layer(x), layer(x)
        assert not torch.allclose(with_lora, base)  # the LoRA part is there
        layer._disable_adapters = True
        assert layer.disable_adapters is True  # the public property reads the flag
        torch.testing.assert_close(layer(x), base, rtol=0, atol=0)
        layer._disable_adapters = False
        torch.testing.assert_close(layer(x), with_lora, rtol=0, atol=0)


def test_switch_lora_uses_the_flag_and_leaves_requires_grad_alone() -> None:
    """``switch_lora`` sets the flag directly, not through ``enable_adapters`` (which
    resets requires_grad on every adapter's weights, milliseconds per pass)."""
    model = _peft_toy(("one", LoraConfig(r=2, lora_alpha=4, target_modules=["proj"])))
    layer = _layer(model, "proj")
    grads = {n: p.requires_grad for n, p in layer.named_parameters()}
    x = torch.randn(3, 8)
    with torch.no_grad():
        switch_lora([layer], on=False)
        assert layer._disable_adapters is True
        torch.testing.assert_close(layer(x), layer.base_layer(x), rtol=0, atol=0)
        switch_lora([layer], on=True)
        assert layer._disable_adapters is False
        assert not torch.allclose(layer(x), layer.base_layer(x))
    assert {n: p.requires_grad for n, p in layer.named_parameters()} == grads


def test_a_lora_linear_layer_adds_what_the_per_token_hook_adds() -> None:
    """peft's linear forward is base + lora_B(lora_A(dropout(x))) * scaling[adapter]: the
    sum ``TokenMixer.add_token_deltas`` computes per token from the same attributes."""
    config = LoraConfig(r=3, lora_alpha=7, lora_dropout=0.1, target_modules=["proj"])
    model = _peft_toy(("one", config))
    layer = _layer(model, "proj")
    x = torch.randn(6, 8)
    with torch.no_grad():
        dropout = layer.lora_dropout["one"]
        assert not dropout.training  # eval mode: dropout is the identity
        delta = layer.lora_B["one"](layer.lora_A["one"](dropout(x))) * layer.scaling["one"]
        torch.testing.assert_close(layer(x), layer.base_layer(x) + delta)
    assert layer.scaling["one"] == pytest.approx(7 / 3)


def test_embedding_lora_is_not_in_lora_a_so_it_is_never_mixed_by_token() -> None:
    model = _peft_toy(("emb", LoraConfig(r=2, lora_alpha=4, target_modules=["emb", "proj"])))
    embedding, linear = _layer(model, "emb"), _layer(model, "proj")
    assert isinstance(embedding, LoraEmbedding) and not isinstance(embedding, LoraLinear)
    assert "emb" in embedding.lora_embedding_A and "emb" in embedding.lora_embedding_B
    assert "emb" not in embedding.lora_A  # what the per-token hook would skip
    assert "emb" in embedding.r
    assert not mixable([embedding], ["emb"]) and mixable([linear], ["emb"])


def test_a_lora_variant_such_as_dora_is_listed_in_lora_variant() -> None:
    model = _peft_toy(
        ("plain", LoraConfig(r=2, lora_alpha=4, target_modules=["proj"])),
        ("dora", LoraConfig(r=2, lora_alpha=4, target_modules=["proj"], use_dora=True)),
    )
    layer = _layer(model, "proj")
    assert "dora" in layer.lora_variant and "plain" not in layer.lora_variant
    assert mixable([layer], ["plain"]) and not mixable([layer], ["dora"])


def test_adapter_names_give_each_row_its_own_adapter() -> None:
    """The reference the mixed path is held to (padded passes of mixed batches, and rows
    that hold one adapter each) is peft's per-row ``adapter_names``."""
    model = _peft_toy(
        ("one", LoraConfig(r=2, lora_alpha=4, target_modules=["emb", "proj"])),
        ("two", LoraConfig(r=4, lora_alpha=4, target_modules=["proj"])),
    )
    ids = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    names = ["one", "two", "one"]
    with torch.no_grad():
        mixed = model(ids, adapter_names=names)
        for row, name in enumerate(names):
            model.set_adapter(name)
            torch.testing.assert_close(mixed[row], model(ids[row : row + 1])[0])
