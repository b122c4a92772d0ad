"""The adapter host on the real MiniLM: mixed batches, save/load, refusal of unsafe artifacts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lifecycle.config.errors import ModelLoadError
from lifecycle.config.spec import LoraSpec
from lifecycle.model.adapters import check_artifact
from lifecycle.model.base import pick_placement, resolve_base_model
from lifecycle.model.host import AdapterHost

TEXTS = [
    "I lost my card yesterday",
    "please refund the double charge on my invoice",
    "the app crashes every time I open it on my phone",
    "hi",
]


def test_trained_specialist_predicts_with_calibrated_confidence_and_embedding(trained) -> None:  # type: ignore[no-untyped-def]
    preds = trained.host.predict(TEXTS, trained.adapter_id)
    assert len(preds) == len(TEXTS)
    for p in preds:
        assert p.label in trained.meta.labels
        assert 0.0 < p.confidence <= 1.0
        assert p.confidence == pytest.approx(max(p.probabilities))
        assert sum(p.probabilities) == pytest.approx(1.0, abs=1e-6)
        assert len(p.embedding) == trained.host.hidden_size
        assert np.linalg.norm(p.embedding) == pytest.approx(1.0, abs=1e-4)
    assert trained.meta.temperature != 1.0  # fitted on validation data


def test_order_and_batching_do_not_change_answers(trained) -> None:  # type: ignore[no-untyped-def]
    one = trained.host.predict(TEXTS, trained.adapter_id, batch_size=1)
    many = trained.host.predict(list(reversed(TEXTS)), trained.adapter_id, batch_size=32)[::-1]
    for a, b in zip(one, many, strict=True):
        assert a.label == b.label
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)


def test_pause_is_called_before_every_layer_of_every_pass_and_changes_nothing(trained) -> None:  # type: ignore[no-untyped-def]
    calls: list[int] = []
    plain = trained.host.predict(TEXTS, trained.adapter_id, batch_size=2)
    paused = trained.host.predict(
        TEXTS, trained.adapter_id, batch_size=2, pause=lambda: calls.append(1)
    )
    layers = trained.host.adapters.encoder.config.num_hidden_layers
    assert len(calls) == layers * 2  # two passes of two texts, MiniLM's six layers each
    for a, b in zip(plain, paused, strict=True):
        assert a.label == b.label
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
    trained.host.predict(TEXTS, trained.adapter_id)
    assert len(calls) == layers * 2  # the pause belongs to one call only


def test_a_pause_that_raises_fails_that_call_only(trained) -> None:  # type: ignore[no-untyped-def]
    def boom() -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        trained.host.predict(TEXTS, trained.adapter_id, pause=boom)
    assert len(trained.host.predict(TEXTS, trained.adapter_id)) == len(TEXTS)


def test_save_load_round_trip_and_mixed_batches(trained, host: AdapterHost, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = trained.host.save_adapter(trained.adapter_id, tmp_path / "a")
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "head.safetensors",
        "ood.safetensors",
        "specialist.json",
    ]
    host.load_adapter("tiny@v1", folder)
    # A second specialist with another label count on the same base.
    host.new_adapter(
        "other", name="other", labels=["x", "y", "z"], lora=trained.meta.lora, max_length=32
    )
    try:
        expected = trained.host.predict(TEXTS, trained.adapter_id)
        loaded = host.predict(TEXTS, "tiny@v1")
        for a, b in zip(expected, loaded, strict=True):
            np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
        other = host.predict(TEXTS, "other")
        mixed = host.predict(TEXTS, ["tiny@v1", "other", "tiny@v1", "other"])
        for i, row in enumerate(mixed):
            ref = loaded[i] if i % 2 == 0 else other[i]
            assert row.label == ref.label
            np.testing.assert_allclose(row.probabilities, ref.probabilities, atol=1e-5)
        with pytest.raises(ModelLoadError, match="already loaded"):
            host.load_adapter("tiny@v1", folder)
    finally:
        host.remove_adapter("tiny@v1")
        host.remove_adapter("other")
    assert host.adapter_ids == []


def test_an_artifact_folder_holds_safetensors_and_json_only(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Nothing in a stored version names a class to import: moving a module never strands
    an artifact, and loading one runs no code."""
    folder = trained.host.save_adapter(trained.adapter_id, tmp_path / "a")
    for path in folder.iterdir():
        raw = path.read_bytes()
        if path.suffix == ".safetensors":
            size = int.from_bytes(raw[:8], "little")
            json.loads(raw[8 : 8 + size])  # a JSON header, then raw tensor bytes: no pickle
        else:
            assert path.suffix == ".json"
            json.loads(raw)
        # The detector's metadata key ("lifecycle.model.ood") is a name, never imported.
        named = raw.replace(b'"lifecycle.model.ood"', b"")
        assert b"lifecycle." not in named and b"__main__" not in named


def test_pickle_files_are_refused(trained, host: AdapterHost, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = trained.host.save_adapter(trained.adapter_id, tmp_path / "a")
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle
    with pytest.raises(ModelLoadError, match="pickle"):
        host.load_adapter("evil", folder)
    assert "evil" not in host.adapter_ids


@pytest.mark.parametrize("damage", ["missing_head", "corrupt_weights", "wrong_base", "bad_meta"])
def test_broken_artifacts_fail_cleanly(
    trained, host: AdapterHost, tmp_path: Path, damage: str
) -> None:  # type: ignore[no-untyped-def]
    folder = trained.host.save_adapter(trained.adapter_id, tmp_path / damage)
    if damage == "missing_head":
        (folder / "head.safetensors").unlink()
    elif damage == "corrupt_weights":
        (folder / "adapter_model.safetensors").write_bytes(b"not safetensors at all")
    elif damage == "wrong_base":
        meta = (folder / "specialist.json").read_text()
        (folder / "specialist.json").write_text(meta.replace('"minilm"', '"bert-base-uncased"'))
    else:
        (folder / "specialist.json").write_text("{not json")
    with pytest.raises(ModelLoadError):
        host.load_adapter("broken", folder)
    assert "broken" not in host.adapter_ids
    # The host still serves after a failed load.
    host.new_adapter("ok", name="ok", labels=["a", "b"], lora=trained.meta.lora, max_length=16)
    try:
        assert len(host.predict(["still works"], "ok")) == 1
    finally:
        host.remove_adapter("ok")


def test_check_artifact_on_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        check_artifact(tmp_path / "nope")


def test_base_model_references(tmp_path: Path) -> None:
    assert Path(resolve_base_model("minilm"), "config.json").is_file()
    assert resolve_base_model("sentence-transformers/all-MiniLM-L6-v2") == (
        "sentence-transformers/all-MiniLM-L6-v2"
    )  # a hub id passes through for users with a network
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_base_model(str(tmp_path / "no-such-model"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_base_model("./relative/missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        resolve_base_model(str(tmp_path / "empty"))


def test_a_local_base_model_folder_loads(tmp_path: Path) -> None:
    copy = tmp_path / "my-base"
    shutil.copytree(resolve_base_model("minilm"), copy)
    host = AdapterHost(str(copy), device="cpu")
    host.new_adapter("local-a", name="a", labels=["p", "q"], lora=LoraSpec(), max_length=16)
    assert host.predict(["hello"], "local-a")[0].label in {"p", "q"}


def test_cpu_placement_without_cuda() -> None:
    placement = pick_placement("auto")
    import torch

    assert placement.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_placement("cpu").device == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="no CUDA"):
            pick_placement("cuda")


@pytest.mark.gpu
def test_cuda_placement_uses_bf16_where_supported() -> None:
    import torch

    placement = pick_placement("auto")
    assert placement.device == "cuda"
    assert placement.autocast_bf16 == torch.cuda.is_bf16_supported()


def test_a_retrain_starts_from_the_parents_lora_weights_when_the_shape_matches(
    trained, host: AdapterHost, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    import torch

    folder = trained.host.save_adapter(trained.adapter_id, tmp_path / "parent")
    lora = trained.meta.lora
    host.new_adapter(
        "warm", name="warm", labels=["a", "b"], lora=lora, max_length=16, parent_adapter=folder
    )
    host.new_adapter("cold", name="cold", labels=["a", "b"], lora=lora, max_length=16)
    changed = lora.model_copy(update={"r": lora.r * 2})
    host.new_adapter(
        "reshaped", name="r", labels=["a", "b"], lora=changed, max_length=16, parent_adapter=folder
    )
    try:

        def weights(adapter_id: str, h: AdapterHost) -> list[torch.Tensor]:
            h.trainable_parameters(adapter_id)
            return [p.detach().clone() for p in h.trainable_parameters(adapter_id)[0]]

        parent = weights(trained.adapter_id, trained.host)
        warm, cold = weights("warm", host), weights("cold", host)
        assert len(parent) == len(warm) > 0
        assert all(torch.equal(a, b) for a, b in zip(parent, warm, strict=True))
        assert not all(torch.equal(a, b) for a, b in zip(parent, cold, strict=True))
        assert weights("reshaped", host)[0].shape != parent[0].shape  # fresh, not copied
    finally:
        for adapter_id in ("warm", "cold", "reshaped"):
            host.remove_adapter(adapter_id)


def test_an_embedding_lora_is_trained_with_the_rest_of_its_adapter(host: AdapterHost) -> None:
    """peft names an embedding's LoRA ``…lora_embedding_A.<id>``, nothing after the id: those
    weights are the adapter's too, and only its own weights are left trainable."""
    lora = LoraSpec(r=4, alpha=8, target_modules=("word_embeddings", "query"))
    host.new_adapter("emb", name="emb", labels=["a", "b"], lora=lora, max_length=16)
    host.new_adapter("emb-other", name="o", labels=["a", "b"], lora=lora, max_length=16)
    try:
        lora_params, head_params = host.trainable_parameters("emb")
        names = {name for name, _ in host.lora_parameters("emb")}
        assert {n.rsplit(".", 2)[-2] for n in names if "lora_embedding" in n} == {
            "lora_embedding_A",
            "lora_embedding_B",
        }
        assert any(n.endswith("lora_embedding_A.emb") for n in names)
        assert len(lora_params) == len(names) > 2
        assert all(p.requires_grad for p in lora_params + head_params)
        trainable = {n for n, p in host.adapters.model.named_parameters() if p.requires_grad}
        assert trainable == names  # not the base, not the other adapter
        assert not any("emb-other" in n for n in names)
    finally:
        host.remove_adapter("emb")
        host.remove_adapter("emb-other")
