"""Imprinted head rows for new labels: the pure rule, and what a warm-started retrain does."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lifecycle.training.imprint import imprinted_rows


def _trained(k: int = 5, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(k, d)) + 3.0, rng.normal(scale=0.1, size=k)


def test_a_new_row_is_the_shared_part_plus_the_class_direction_at_the_trained_scale() -> None:
    weight, bias = _trained()
    shared = weight.mean(axis=0)
    scale = np.linalg.norm(weight - shared, axis=1).mean()
    overall = np.zeros(8)
    means = np.array([[2.0, 0, 0, 0, 0, 0, 0, 0], [0, 0, -0.5, 0, 0, 0, 0, 0]])
    rows, biases = imprinted_rows(weight, bias, means, overall)
    assert rows.shape == (2, 8) and biases.shape == (2,) and rows.dtype == np.float32
    part = rows - shared
    # As long as a trained row's own class part, pointing from the centre to the examples.
    assert np.allclose(np.linalg.norm(part, axis=1), scale, rtol=1e-5)
    assert part[0, 0] > 0 and part[1, 2] < 0
    assert np.allclose(part[:, [1, 3, 4, 5, 6, 7]], 0, atol=1e-5)
    assert np.allclose(biases, bias.mean())


def test_a_class_mean_at_the_centre_gets_the_shared_part_alone() -> None:
    weight, bias = _trained()
    centre = np.full(8, 0.25)
    rows, _ = imprinted_rows(weight, bias, centre[None, :], centre)
    assert np.isfinite(rows).all()
    assert np.allclose(rows[0], weight.mean(axis=0), atol=1e-5)


def test_imprinting_needs_trained_rows_of_the_same_width() -> None:
    weight, bias = _trained()
    with pytest.raises(ValueError, match="at least one trained row"):
        imprinted_rows(np.zeros((0, 8)), np.zeros(0), np.ones((1, 8)), np.zeros(8))
    with pytest.raises(ValueError, match="dimensions"):
        imprinted_rows(weight, bias, np.ones((1, 4)), np.zeros(4))


def test_a_warm_started_retrain_imprints_the_new_labels_rows(
    trained: Any, tiny_spec: Any, tmp_path: Any
) -> None:
    # The glue on a real host: the rows of labels the parent knew keep its weights, the new
    # label's row is the rule's, computed from that label's training rows' embeddings.
    from lifecycle.synthetic.scenarios import NEW_INTENTS, generate_tickets
    from lifecycle.training.candidate import RunOptions, start_candidate
    from lifecycle.training.fit import CANDIDATE, read_parent_head
    from lifecycle.training.train import IMPRINT_SAMPLE, _imprint_new_labels

    parent = trained.host.save_adapter(trained.adapter_id, tmp_path / "parent")
    new_intent = NEW_INTENTS[0]
    data = generate_tickets(120, seed=9, intents=[*trained.meta.labels[:3], new_intent])
    run = start_candidate(
        tiny_spec,
        data,
        RunOptions(parent=parent, device="cpu", progress=False),
        prepare_replay=lambda rows: rows,
        labels_in=lambda rows: rows["label"].tolist(),
    )
    head = run.host.adapters.get(CANDIDATE).head
    before = head.weight.detach().numpy().copy()
    _imprint_new_labels(run, parent, seed=0)
    after = head.weight.detach().numpy()
    new_row = run.labels.index(new_intent)
    known = [i for i, label in enumerate(run.labels) if label != new_intent]
    assert np.array_equal(after[known], before[known])
    parent_labels, parent_weight, _ = read_parent_head(parent)
    assert np.allclose(
        after[known], parent_weight[[parent_labels.index(run.labels[i]) for i in known]]
    )

    rows = run.train[run.train["label"] == new_intent]
    sample = run.train.sample(n=min(len(run.train), IMPRINT_SAMPLE), random_state=0)
    _, mine = run.host.logits_and_embeddings(rows["text"].tolist(), CANDIDATE)
    _, centre = run.host.logits_and_embeddings(sample["text"].tolist(), CANDIDATE)
    bias = head.bias.detach().numpy()
    expected, _ = imprinted_rows(before[known], bias[known], mine.mean(axis=0), centre.mean(axis=0))
    assert np.allclose(after[new_row], expected[0], atol=1e-4)
    assert not np.allclose(after[new_row], before[new_row])  # the random start is gone
    # It scores its own training rows above the other new-label-free rows' average.
    logits, _ = run.host.logits_and_embeddings(rows["text"].tolist(), CANDIDATE)
    stacked = np.stack(logits)
    assert stacked[:, new_row].mean() > np.delete(stacked, new_row, axis=1).mean()
