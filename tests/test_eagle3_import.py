"""Importing published EAGLE-3 drafts: the EAGLE project's layout, SpecForge's/SGLang's (output-of-layer aux ids in a
nested eagle_config) and speculators' (layers.0.*, transformer_layer_config as a diff), each written here the way its
project writes it, and the one-line errors for configs and weights that do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_target
from safetensors.torch import save_file
from transformers import LlamaConfig

from eda_adapters import Eagle3DraftModel, EagleDraftModel, EdaInputError

LAYERS = 8
AUX = [2, 4, 5]  # our convention (hidden_states indices) for a target of 8 layers: the default


@pytest.fixture(scope="module")
def source():
    """A trained-looking EAGLE-3 draft (random weights off their init) with a reduced draft vocabulary."""
    target = make_target("llama", num_hidden_layers=LAYERS)
    torch.manual_seed(3)
    draft = Eagle3DraftModel.from_target(target, draft_vocab=range(5, 85))
    with torch.no_grad():
        for p in draft.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return target, draft.eval()


def _own_tensors(draft: Eagle3DraftModel) -> dict[str, torch.Tensor]:
    return {k: v.clone().contiguous() for k, v in draft.state_dict().items() if not k.startswith("embed_tokens")}


def _llama_fields(draft: Eagle3DraftModel) -> dict:
    c = draft.config
    return {
        "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
        "num_attention_heads": c.num_attention_heads, "num_key_value_heads": c.num_key_value_heads,
        "rms_norm_eps": c.rms_norm_eps, "rope_theta": c.rope_parameters["rope_theta"], "rope_scaling": None,
        "vocab_size": c.vocab_size, "max_position_embeddings": c.max_position_embeddings, "hidden_act": "silu",
        "tie_word_embeddings": False,
    }


def write_eagle(folder: Path, draft, target) -> Path:
    """The EAGLE project's files: LlamaForCausalLMEagle3, midlayer.*, d2t/t2d, and the target's embedding."""
    folder.mkdir()
    config = {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", **_llama_fields(draft),
              "draft_vocab_size": draft.config.draft_vocab_size}
    (folder / "config.json").write_text(json.dumps(config))
    tensors = _own_tensors(draft) | {"embed_tokens.weight": target.get_input_embeddings().weight.detach().clone()}
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def write_specforge(folder: Path, draft, target) -> Path:
    """SpecForge/SGLang: the same keys; aux ids as output-of-layer ids in the nested eagle_config."""
    write_eagle(folder, draft, target)
    config = json.loads((folder / "config.json").read_text())
    config["eagle_config"] = {"eagle_aux_hidden_state_layer_ids": [i - 1 for i in AUX]}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def write_speculators(folder: Path, draft, target) -> Path:
    """speculators: speculators_model_type eagle3, transformer_layer_config as a diff against LlamaConfig, top-level
    input-of-layer aux ids, layers.0.* keys."""
    folder.mkdir()
    layer = LlamaConfig(**_llama_fields(draft), head_dim=draft.config.head_dim).to_diff_dict()
    config = {
        "speculators_model_type": "eagle3", "architectures": ["Eagle3Speculator"],
        "transformer_layer_config": layer, "draft_vocab_size": draft.config.draft_vocab_size,
        "norm_before_residual": False, "target_hidden_size": draft.config.target_hidden_size,
        "eagle_aux_hidden_state_layer_ids": AUX,
        "speculators_config": {"algorithm": "eagle3", "proposal_methods": [{"speculative_tokens": 3}],
                               "verifier": {"name_or_path": "tiny-llama", "architectures": ["LlamaForCausalLM"]}},
    }
    (folder / "config.json").write_text(json.dumps(config))
    tensors = {k.replace("midlayer.", "layers.0.", 1): v for k, v in _own_tensors(draft).items()}
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


WRITERS = {"eagle": write_eagle, "specforge": write_specforge, "speculators": write_speculators}


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_each_layout_imports_to_the_same_draft(tmp_path, source, layout):
    target, draft = source
    folder = WRITERS[layout](tmp_path / layout, draft, target)
    imported = Eagle3DraftModel.from_eagle_checkpoint(folder, target_model=target)
    assert imported.config.eagle_aux_hidden_state_layer_ids == AUX
    assert imported.config.draft_vocab_size == 80 and imported.d2t.dtype == torch.long
    assert torch.equal(imported.draft_token_ids, torch.arange(5, 85))
    ids = torch.randint(0, 97, (1, 7))
    with torch.no_grad():
        aux = draft.target_features(target(ids, output_hidden_states=AUX).hidden_states)
        torch.testing.assert_close(
            imported(input_ids=ids, hidden_states=aux).logits, draft(input_ids=ids, hidden_states=aux).logits
        )
    if layout == "speculators":
        assert imported.config.target_name_or_path == "tiny-llama"


def test_speculators_without_vocab_maps_means_the_full_vocabulary(tmp_path):
    target = make_target("llama", num_hidden_layers=LAYERS)
    draft = Eagle3DraftModel.from_target(target)
    folder = write_speculators(tmp_path / "s", draft, target)
    tensors = {k.replace("midlayer.", "layers.0.", 1): v for k, v in _own_tensors(draft).items()
               if k not in ("d2t", "t2d")}
    save_file(tensors, str(folder / "model.safetensors"))
    imported = Eagle3DraftModel.from_eagle_checkpoint(folder, target_model=target)
    assert imported.config.draft_vocab_size == 97 and not imported.d2t.any() and imported.t2d.all()


def test_eagle_layout_needs_the_target_for_its_fixed_aux_layers(tmp_path, source):
    target, draft = source
    folder = write_eagle(tmp_path / "e", draft, target)
    with pytest.raises(EdaInputError, match="pass target_model="):
        Eagle3DraftModel.from_eagle_checkpoint(folder)


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


def test_bad_checkpoints_get_one_line(tmp_path, source):
    target, draft = source
    # a target whose hidden size differs from the checkpoint's target_hidden_size
    folder = write_speculators(tmp_path / "hidden", draft, target)
    _edit_config(folder, target_hidden_size=48)
    with pytest.raises(EdaInputError, match="target_hidden_size=48"):
        Eagle3DraftModel.from_eagle_checkpoint(folder, target_model=target)
    other = make_target("llama", num_hidden_layers=LAYERS, hidden_size=48, num_attention_heads=4)
    with pytest.raises(EdaInputError, match="target_hidden_size 32"):
        Eagle3DraftModel.from_eagle_checkpoint(write_eagle(tmp_path / "e", draft, target), target_model=other)
    # aux layer ids out of range for the target
    folder = write_speculators(tmp_path / "aux", draft, target)
    _edit_config(folder, eagle_aux_hidden_state_layer_ids=[2, 4, 12])
    with pytest.raises(Exception, match=r"each \[0, 8\] for a target of 8 layers"):
        Eagle3DraftModel.from_eagle_checkpoint(folder, target_model=target)
    # two conventions that disagree
    folder = write_specforge(tmp_path / "both", draft, target)
    _edit_config(folder, eagle_aux_hidden_state_layer_ids=[1, 3, 4])
    with pytest.raises(EdaInputError, match="two different aux layers"):
        Eagle3DraftModel.from_eagle_checkpoint(folder, target_model=target)
    # d2t / t2d inconsistent with draft_vocab_size
    folder = write_eagle(tmp_path / "vocab", draft, target)
    _edit_config(folder, draft_vocab_size=64)
    with pytest.raises(EdaInputError, match="inconsistent with draft_vocab_size=64"):
        Eagle3DraftModel.from_eagle_checkpoint(folder, target_model=target)
    # a speculators config missing a field
    folder = write_speculators(tmp_path / "field", draft, target)
    _edit_config(folder, transformer_layer_config=None)
    with pytest.raises(EdaInputError, match="lacks transformer_layer_config"):
        Eagle3DraftModel.from_eagle_checkpoint(folder, target_model=target)
    # keys of no layout: expected and found are both listed
    folder = write_eagle(tmp_path / "keys", draft, target)
    tensors = {k.replace("midlayer.", "decoder."): v for k, v in _own_tensors(draft).items()}
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(EdaInputError, match=r"match no EAGLE-3 layout .*expected .*midlayer\.mlp.*found instead.*decoder"):
        Eagle3DraftModel.from_eagle_checkpoint(folder, target_model=target)
    # an EAGLE-3 folder given to the EAGLE-1 importer points to the right one
    with pytest.raises(EdaInputError, match="Eagle3DraftModel.from_eagle_checkpoint"):
        EagleDraftModel.from_eagle_checkpoint(write_speculators(tmp_path / "wrong", draft, target))
