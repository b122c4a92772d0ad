"""Packed inference: the row plan (pure), the tensors, and answers equal to padded passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lifecycle.model.forward import Passes, TokenMixer
from lifecycle.model.host import AdapterHost
from lifecycle.model.packing import pack, plan_rows, segment_means


def test_rows_fill_up_to_the_budget_longest_first() -> None:
    assert plan_rows([5, 3, 4, 2], budget=8) == [[0, 1], [2, 3]]  # 5+3, then 4+2
    assert plan_rows([], budget=8) == []
    # a text longer than the budget is never cut: it gets a row of its own
    assert plan_rows([20, 3], budget=8) == [[0], [1]]
    with pytest.raises(ValueError, match="budget"):
        plan_rows([1], budget=0)


@given(st.lists(st.integers(1, 100), max_size=80), st.integers(1, 200))
def test_every_text_is_in_one_row_within_the_budget(lengths: list[int], budget: int) -> None:
    rows = plan_rows(lengths, budget)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    for row in rows:
        assert len(row) == 1 or sum(lengths[i] for i in row) <= budget
    # first fit: no two rows could have been one, so rows are as few as that allows
    used = sorted(sum(lengths[i] for i in row) for row in rows)
    if len(used) >= 2:
        assert used[0] + used[1] > budget


def test_the_packed_tensors_keep_each_text_to_itself() -> None:
    tokens = [[101, 7, 102], [101, 102], [101, 8, 9, 102]]
    packed = pack(tokens, [[2, 1], [0]], pad_id=0)
    assert packed.input_ids.tolist() == [[101, 8, 9, 102, 101, 102], [101, 7, 102, 0, 0, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 0, 0]]
    mask = packed.attention_mask[:, 0]
    assert mask.shape == (2, 6, 6)
    assert mask[0, 0, :4].all() and not mask[0, 0, 4:].any()  # text 2 sees only its tokens
    assert mask[0, 5, 4:].all() and not mask[0, 5, :4].any()  # text 1 likewise
    # each padding position sees only itself: no softmax over an empty row, nothing leaks
    assert mask[1, 3].tolist() == [False, False, False, True, False, False]
    assert not mask[1, :3, 3:].any()


def test_segment_means_average_each_texts_positions_only() -> None:
    hidden = torch.arange(12, dtype=torch.float32).reshape(1, 6, 2)
    segment = torch.tensor([[1, 1, 0, 0, 0, -1]])
    means = segment_means(hidden, segment, 2)
    np.testing.assert_allclose(means.numpy(), [[6.0, 7.0], [1.0, 2.0]])


def _texts(n: int) -> list[str]:
    words = ["card", "refund", "charge", "app", "crash", "login", "transfer", "pending", "fee"]
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=int(rng.integers(1, 40)))) for _ in range(n)]


def _perturb(host: AdapterHost, *adapter_ids: str) -> None:
    with torch.no_grad():  # fresh LoRA B is zero: make the adapters really differ
        for adapter_id in adapter_ids:
            for name, param in host.lora_parameters(adapter_id):
                if "lora_B" in name:
                    param.normal_(0.0, 0.05)


def _packed_and_padded(
    host: AdapterHost, texts: list[str], ids: list[str]
) -> tuple[tuple[list[np.ndarray], np.ndarray], tuple[list[np.ndarray], np.ndarray]]:
    packed = host.logits_and_embeddings(texts, ids, batch_size=64)
    host.packing = False
    try:
        padded = host.logits_and_embeddings(texts, ids, batch_size=64)
    finally:
        host.packing = True
    return packed, padded


def _assert_same(
    a: tuple[list[np.ndarray], np.ndarray], b: tuple[list[np.ndarray], np.ndarray]
) -> None:
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)
    for x, y in zip(a[0], b[0], strict=True):
        np.testing.assert_allclose(x, y, atol=1e-4)


def test_packed_passes_give_the_answers_of_padded_ones(host: AdapterHost) -> None:
    """Rows mix adapters of other ranks and target modules: each token gets its own."""
    from lifecycle.config.spec import LoraSpec

    assert host.packing  # MiniLM on a CPU passes the load-time probe
    wide = LoraSpec(r=4, alpha=8, target_modules=("query", "key", "value", "dense"))
    host.new_adapter("pa", name="pa", labels=["x", "y", "z"], lora=LoraSpec(), max_length=64)
    host.new_adapter("pb", name="pb", labels=[f"l{i}" for i in range(9)], lora=wide, max_length=64)
    try:
        _perturb(host, "pa", "pb")
        texts = _texts(70)
        texts[3] = "word " * 300  # longer than max_length: truncated, and more than a row
        ids = ["pa" if i % 3 else "pb" for i in range(len(texts))]
        _assert_same(*_packed_and_padded(host, texts, ids))
        # one adapter alone, and a lone text, take the plain peft path
        _assert_same(*_packed_and_padded(host, texts[:20], ["pb"] * 20))
        _assert_same(*_packed_and_padded(host, ["hi"], ["pa"]))
        assert host.passes.mixer.plan is None  # nothing of a pass outlives it
    finally:
        host.remove_adapter("pa")
        host.remove_adapter("pb")


def test_a_dora_adapter_is_never_mixed_into_rows_by_token(host: AdapterHost) -> None:
    """The per-token hooks reproduce plain LoRA only; a variant such as DoRA is left to
    peft (which runs it alone: it refuses DoRA in a mixed batch, packed or padded)."""
    from peft import LoraConfig

    from lifecycle.config.spec import LoraSpec

    host.new_adapter("pc", name="pc", labels=["x", "y"], lora=LoraSpec(), max_length=64)
    host.adapters.attach(
        "pd", LoraConfig(r=4, lora_alpha=8, target_modules=["query"], use_dora=True)
    )
    host.adapters.register("pd", host.adapters.get("pc"))  # same head; only the LoRA differs
    try:
        _perturb(host, "pc", "pd")
        mixer = host.passes.mixer
        assert not mixer.mixable(["pc", "pd"]) and mixer.mixable(["pc"])
        texts = _texts(30)
        _assert_same(*_packed_and_padded(host, texts, ["pd"] * len(texts)))
    finally:
        host.remove_adapter("pd")
        host.remove_adapter("pc")


def _perturb_all(host: AdapterHost, *adapter_ids: str, seed: int = 0) -> None:
    """Seeded noise on every LoRA weight: an embedding LoRA starts at zero in A, not B."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter_id in adapter_ids:
            for _, param in host.lora_parameters(adapter_id):
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)


def test_an_adapter_with_embedding_lora_runs_in_rows_of_its_own(host: AdapterHost) -> None:
    """The per-token hooks apply linear LoRA only: an adapter that also has LoRA on the
    word embeddings would lose that part in a mixed row, so it is never mixed by token;
    peft applies it to rows of its own, and its answers are those of a padded pass."""
    from lifecycle.config.spec import LoraSpec

    host.new_adapter("ea", name="ea", labels=["x", "y"], lora=LoraSpec(), max_length=64)
    embedding = LoraSpec(r=4, alpha=8, target_modules=("word_embeddings", "query"))
    host.new_adapter("eb", name="eb", labels=["x", "y"], lora=embedding, max_length=64)
    try:
        _perturb_all(host, "ea", "eb")
        assert any(name.endswith("lora_embedding_A.eb") for name, _ in host.lora_parameters("eb"))
        mixer = host.passes.mixer
        assert mixer.mixable(["ea"]) and not mixer.mixable(["eb"])
        assert not mixer.mixable(["ea", "eb"])
        texts = _texts(40)
        ids = ["eb" if i % 2 else "ea" for i in range(len(texts))]
        _assert_same(*_packed_and_padded(host, texts, ids))
        _assert_same(*_packed_and_padded(host, texts[:10], ["eb"] * 10))
    finally:
        host.remove_adapter("eb")
        host.remove_adapter("ea")


@pytest.fixture(scope="module")
def trained_folder(trained: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained.host.save_adapter(trained.adapter_id, tmp_path_factory.mktemp("t") / "t")


def test_the_mixed_path_passes_its_load_time_probe(host: AdapterHost, trained_folder: Path) -> None:
    host.load_adapter("probe-a", trained_folder)
    host.load_adapter("probe-b", trained_folder)  # probed together with probe-a
    try:
        assert host.packing and host.mixing
    finally:
        host.remove_adapter("probe-a")
        host.remove_adapter("probe-b")


@pytest.mark.parametrize("fault", ["skewed", "raising"])
def test_a_mixed_path_that_disagrees_at_load_is_switched_off(
    fault: str, trained_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A per-token hook that no longer reproduces peft (a peft upgrade, say) is caught when
    an adapter loads; mixed batches then run one adapter per row and stay right."""
    hook = TokenMixer.add_token_deltas

    def broken(self: TokenMixer, module: Any, args: Any, output: Any) -> Any:
        out = hook(self, module, args, output)
        if self.plan is None:
            return out
        if fault == "raising":
            raise RuntimeError("lora_A has no attribute weight")
        return out + 0.01

    monkeypatch.setattr(TokenMixer, "add_token_deltas", broken)
    fresh = AdapterHost("minilm", device="cpu")
    assert fresh.packing and fresh.mixing
    fresh.load_adapter("first", trained_folder)
    assert not fresh.mixing
    fresh.load_adapter("second", trained_folder)
    _perturb_all(fresh, "second", seed=3)  # the two must differ for the rows to matter
    texts = _texts(30)
    ids = ["first" if i % 2 else "second" for i in range(len(texts))]
    _assert_same(*_packed_and_padded(fresh, texts, ids))


def test_an_encoder_that_packs_differently_is_run_padded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    packed = Passes.packed

    def skewed(self: Passes, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        pooled, states = packed(self, *args, **kwargs)
        return pooled + 0.01, states

    def skewed_tokens(self: Passes, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        pooled, states = packed(self, *args, **kwargs)
        return pooled, {i: h + 0.01 for i, h in states.items()}

    def refusing(self: Passes, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise TypeError("forward() got an unexpected keyword argument 'position_ids'")

    for fault in (skewed, skewed_tokens, refusing):
        monkeypatch.setattr(Passes, "packed", fault)
        assert not AdapterHost("minilm").packing


def test_inference_after_adding_an_adapter_runs_every_module_in_eval_mode(
    host: AdapterHost,
) -> None:
    """peft builds a new adapter's LoRA dropout in training mode; inference must not use it."""
    from lifecycle.config.spec import LoraSpec

    texts = _texts(40)
    host.new_adapter("pe", name="pe", labels=["x", "y"], lora=LoraSpec(dropout=0.5), max_length=64)
    host.new_adapter("pf", name="pf", labels=["x", "y"], lora=LoraSpec(dropout=0.5), max_length=64)
    try:
        _perturb(host, "pe", "pf")
        ids = ["pe" if i % 2 else "pf" for i in range(len(texts))]
        first = host.logits_and_embeddings(texts, ids)
        assert not [name for name, m in host.adapters.model.named_modules() if m.training]
        host.new_adapter(
            "pg", name="pg", labels=["x", "y"], lora=LoraSpec(dropout=0.5), max_length=64
        )
        again = host.logits_and_embeddings(texts, ids)
        np.testing.assert_array_equal(first[1], again[1])  # no dropout: bit for bit the same
        assert not [name for name, m in host.adapters.model.named_modules() if m.training]
    finally:
        for adapter_id in ("pe", "pf", "pg"):
            if adapter_id in host.adapter_ids:
                host.remove_adapter(adapter_id)
