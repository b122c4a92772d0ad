"""Packed inference: the row plan (pure), the tensors, and answers equal to padded passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lifecycle.model import AdapterHost
from lifecycle.packing import pack, plan_rows, segment_means


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


def test_packed_passes_give_the_answers_of_padded_ones(host: AdapterHost) -> None:
    assert host.packing  # MiniLM on a CPU passes the load-time probe
    labels_a, labels_b = ["x", "y", "z"], [f"l{i}" for i in range(9)]
    host.new_adapter("pa", name="pa", labels=labels_a, lora=_lora(), max_length=64, seed=1)
    host.new_adapter("pb", name="pb", labels=labels_b, lora=_lora(), max_length=64, seed=2)
    try:
        with torch.no_grad():  # fresh LoRA B is zero: make the two adapters really differ
            for name, param in host._peft.named_parameters():
                if "lora_B" in name and (".pa." in name or ".pb." in name):
                    param.normal_(0.0, 0.05)
        texts = _texts(70)
        texts[3] = "word " * 300  # longer than max_length: truncated, and more than a row
        ids = ["pa" if i % 3 else "pb" for i in range(len(texts))]
        packed = host.logits_and_embeddings(texts, ids, batch_size=64)
        host.packing = False
        try:
            padded = host.logits_and_embeddings(texts, ids, batch_size=64)
        finally:
            host.packing = True
        np.testing.assert_allclose(packed[1], padded[1], atol=1e-5)
        for a, b in zip(packed[0], padded[0], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-4)
    finally:
        host.remove_adapter("pa")
        host.remove_adapter("pb")


def test_an_encoder_that_packs_differently_is_run_padded() -> None:
    class Skewed(AdapterHost):
        def _pooled_packed(self, model, texts, adapter_ids, max_length):  # type: ignore[no-untyped-def]
            return super()._pooled_packed(model, texts, adapter_ids, max_length) + 0.01

    class Refusing(AdapterHost):
        def _pooled_packed(self, model, texts, adapter_ids, max_length):  # type: ignore[no-untyped-def]
            raise TypeError("forward() got an unexpected keyword argument 'position_ids'")

    assert not Skewed("minilm").packing
    assert not Refusing("minilm").packing


def _lora():  # type: ignore[no-untyped-def]
    from lifecycle.spec import LoraSpec

    return LoraSpec()
