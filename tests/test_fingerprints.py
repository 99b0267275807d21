"""Fingerprints (eda_adapters.fingerprints): the draft fingerprint covers every shared weight of the draft and
nothing else; the dataset and tokenizer fingerprints change with what they cover."""

from __future__ import annotations

import pytest
import torch
from conftest import make_target
from datasets import Dataset
from peft import get_peft_model

from eda_adapters import EagleDraftModel, EdaConfig, draft_fingerprint, export_adapters
from eda_adapters.fingerprints import (
    dataset_sample_fingerprint,
    dataset_tokens_fingerprint,
    json_fingerprint,
    target_fingerprint,
)


@pytest.fixture(scope="module")
def target():
    return make_target("llama")


def draft_of(target, seed=0):
    torch.manual_seed(seed)
    return EagleDraftModel.from_target(target)


SHARED_WEIGHTS = [
    "fc.weight",
    "layers.0.self_attn.q_proj.weight",
    "layers.0.self_attn.o_proj.weight",
    "layers.0.post_attention_layernorm.weight",
    "layers.0.mlp.gate_proj.weight",
    "layers.0.mlp.up_proj.weight",
    "layers.0.mlp.down_proj.weight",
]


@pytest.mark.parametrize("name", SHARED_WEIGHTS)
def test_changing_one_value_of_any_shared_weight_changes_the_fingerprint(target, name):
    draft = draft_of(target)
    before = draft_fingerprint(draft)
    weight = dict(draft.named_parameters())[name]
    with torch.no_grad():
        weight.view(-1)[-1] += 1.0  # the last value: a sample of the first or strided values would miss it
    assert draft_fingerprint(draft) != before


def test_every_draft_weight_but_the_target_heads_is_covered(target):
    draft = draft_of(target)
    names = {n for n, _ in draft.named_parameters()}
    assert set(SHARED_WEIGHTS) <= names
    # the embedding and head are the target's (shared, never saved with the draft): not part of the fingerprint
    before = draft_fingerprint(draft)
    with torch.no_grad():
        draft.get_input_embeddings().weight.add_(1.0)
    assert draft_fingerprint(draft) == before
    with torch.no_grad():
        draft.get_input_embeddings().weight.sub_(1.0)


def test_fingerprint_survives_dtype_and_save_reload_but_not_other_weights(target, tmp_path):
    draft = draft_of(target)
    fingerprint = draft_fingerprint(draft)
    assert fingerprint is not None and len(fingerprint) == 16
    assert draft_fingerprint(draft_of(target)) == fingerprint  # deterministic
    assert draft_fingerprint(draft_of(target, seed=1)) != fingerprint
    assert draft_fingerprint(draft_of(target).to(torch.bfloat16)) == fingerprint
    draft.save_pretrained(tmp_path / "draft")
    reloaded = EagleDraftModel.from_pretrained(tmp_path / "draft", target_model=target)
    assert draft_fingerprint(reloaded) == fingerprint


def test_wrapping_with_adapters_keeps_the_shared_fingerprint(target):
    draft = draft_of(target)
    fingerprint = draft_fingerprint(draft)
    model = get_peft_model(draft, EdaConfig(num_private_experts=1, private_intermediate_size=8))
    assert model.peft_config["default"].draft_fingerprint == fingerprint
    assert draft_fingerprint(model.get_base_model()) == fingerprint
    # the adapter's own weights are not the shared draft's
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "eda_" in n).add_(1.0)
    assert draft_fingerprint(model.get_base_model()) == fingerprint


def test_meta_draft_has_no_fingerprint(target):
    config = draft_of(target).config
    with torch.device("meta"):
        draft = EagleDraftModel(config)
    assert draft_fingerprint(draft) is None


def test_export_refuses_a_draft_whose_mlp_differs(target, tmp_path):
    """The failure the old fc-only fingerprint missed: same fc, other MLP weights (e.g. a draft whose MLP failed to
    load) must not be merged with an adapter trained on the real draft."""
    draft = draft_of(target)
    model = get_peft_model(draft, EdaConfig(num_private_experts=1, private_intermediate_size=8))
    model.save_pretrained(tmp_path / "adapter")
    broken = draft_of(target)
    with torch.no_grad():
        broken.layers[0].mlp.down_proj.weight.normal_()
    assert torch.equal(broken.fc.weight, draft.fc.weight)
    with pytest.raises(ValueError, match="fingerprint"):
        export_adapters(broken, tmp_path / "adapter", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dataset_fingerprints_follow_their_rows():
    rows = {"input_ids": [[1, 2, 3], [4, 5], [6]], "loss_mask": [[0, 1, 1], [1, 1], [1]]}
    full = dataset_tokens_fingerprint(Dataset.from_dict(rows))
    changed = {**rows, "input_ids": [[1, 2, 3], [4, 9], [6]]}
    assert dataset_tokens_fingerprint(Dataset.from_dict(changed)) != full
    assert dataset_tokens_fingerprint(Dataset.from_dict(rows)) == full

    sample = dataset_sample_fingerprint(Dataset.from_dict(rows))
    assert sample["num_rows"] == 3 and sample != dataset_sample_fingerprint(Dataset.from_dict(changed))
    assert dataset_sample_fingerprint(iter([]))["num_rows"] is None
    assert json_fingerprint({"a": 1, "b": [2]}) == json_fingerprint({"b": [2], "a": 1}) != json_fingerprint({"a": 2})


def test_target_fingerprint_changes_with_the_weights(target):
    before = target_fingerprint(target)
    with torch.no_grad():
        next(target.parameters()).view(-1)[0] += 1.0
    assert target_fingerprint(target) != before
    with torch.no_grad():
        next(target.parameters()).view(-1)[0] -= 1.0
