"""Exporting EAGLE-3 drafts for vLLM, SGLang and speculators: each export imports back to identical logits, holds the
keys, shapes, dtypes and config fields its engine's loader reads (checked here without importing the engines),
adapted drafts export merged, and exports an engine cannot load are refused in one line."""

from __future__ import annotations

import copy
import json

import peft
import pytest
import torch
from conftest import make_target
from safetensors.torch import load_file
from transformers import LlamaConfig

from eda_adapters import Eagle3DraftModel, EagleDraftModel, EdaConfig, EdaInputError, export_draft
from eda_adapters.cli import main
from eda_adapters.export.eagle3 import EAGLE3_ENGINES
from eda_adapters.training import unroll_training_time_test

LAYERS = 8
AUX = [1, 4, 6]  # not the default: the ids must be translated, not re-derived
# what each engine's loader calls the aux ids (read from SGLang's and vLLM's llama_eagle3.py and vLLM's speculators
# config reader): vLLM and speculators capture the input of layer i, SGLang the output of layer i
ENGINE_AUX = {"vllm": [1, 4, 6], "sglang": [0, 3, 5], "speculators": [1, 4, 6]}


@pytest.fixture(scope="module")
def source():
    target = make_target("llama", num_hidden_layers=LAYERS)
    torch.manual_seed(5)
    draft = Eagle3DraftModel.from_target(target, draft_vocab=range(5, 85), aux_layer_ids=AUX)
    with torch.no_grad():
        for p in draft.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return target, draft.eval()


def _logits(draft, target, ids):
    with torch.no_grad():
        aux = draft.target_features(target(ids, output_hidden_states=draft.hidden_state_indices).hidden_states)
        return draft(input_ids=ids, hidden_states=aux).logits


@pytest.mark.parametrize("engine", EAGLE3_ENGINES)
def test_an_export_imports_back_to_identical_logits(tmp_path, source, engine):
    target, draft = source
    folder = export_draft(draft, tmp_path / engine, engine=engine)
    imported = Eagle3DraftModel.from_eagle_checkpoint(folder, target_model=target)
    assert imported.config.eagle_aux_hidden_state_layer_ids == AUX
    assert torch.equal(imported.draft_token_ids, draft.draft_token_ids)
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    assert torch.equal(_logits(imported, target, ids), _logits(draft, target, ids))


@pytest.mark.parametrize("engine", EAGLE3_ENGINES)
def test_an_export_holds_what_its_engine_loader_reads(tmp_path, source, engine):
    target, draft = source
    folder = export_draft(draft, tmp_path / engine, engine=engine, dtype="bfloat16", verifier="org/tiny-llama")
    config = json.loads((folder / "config.json").read_text())
    tensors = load_file(folder / "model.safetensors")
    c = draft.config
    hidden, heads_out = c.hidden_size, c.num_attention_heads * c.head_dim
    layer = "layers.0." if engine == "speculators" else "midlayer."  # vLLM maps midlayer. to layers.0.; SGLang not
    shapes = {
        "fc.weight": (hidden, 3 * c.target_hidden_size), "norm.weight": (hidden,), "lm_head.weight": (80, hidden),
        "d2t": (80,), "t2d": (97,),
        **{f"{layer}{n}.weight": (hidden,) for n in ("hidden_norm", "input_layernorm", "post_attention_layernorm")},
        f"{layer}self_attn.q_proj.weight": (heads_out, 2 * hidden),  # q/k/v read [embedding, fused state]
        f"{layer}self_attn.k_proj.weight": (c.num_key_value_heads * c.head_dim, 2 * hidden),
        f"{layer}self_attn.v_proj.weight": (c.num_key_value_heads * c.head_dim, 2 * hidden),
        f"{layer}self_attn.o_proj.weight": (hidden, heads_out),
        f"{layer}mlp.gate_proj.weight": (c.intermediate_size, hidden),
        f"{layer}mlp.up_proj.weight": (c.intermediate_size, hidden),
        f"{layer}mlp.down_proj.weight": (hidden, c.intermediate_size),
    }
    assert {name: tuple(t.shape) for name, t in tensors.items()} == shapes  # no bias, no embedding: shared
    assert tensors["d2t"].dtype == torch.int64 and tensors["t2d"].dtype == torch.bool  # vLLM: a long Parameter
    assert tensors["fc.weight"].dtype == torch.bfloat16
    assert torch.equal(torch.arange(80) + tensors["d2t"], torch.arange(5, 85))  # SGLang's hot_token_id
    assert config["draft_vocab_size"] == 80 and config["target_hidden_size"] == c.target_hidden_size
    assert config["norm_before_residual"] is False  # vLLM's speculators reader assumes true when absent
    if engine == "speculators":
        # vLLM's SpeculatorsConfig.validate_speculators_config and update_eagle3
        spec = config["speculators_config"]
        assert config["speculators_model_type"] == "eagle3" and spec["algorithm"] == "eagle3"
        assert spec["proposal_methods"][0]["speculative_tokens"] >= 1
        assert spec["verifier"]["name_or_path"] == "org/tiny-llama"
        assert config["eagle_aux_hidden_state_layer_ids"] == ENGINE_AUX[engine]
        assert (config["norm_before_fc"], config["fc_norm"], config["norm_output"]) == (False, False, False)
        layer_config = config["transformer_layer_config"]
    else:
        assert config["architectures"] == ["LlamaForCausalLMEagle3"]
        # SGLang ties the head to the embedding if asked, and gives fc / o_proj a bias if "bias" is set
        assert config["tie_word_embeddings"] is False and config["bias"] is False
        if engine == "vllm":
            assert config["eagle_aux_hidden_state_layer_ids"] == ENGINE_AUX[engine] and "eagle_config" not in config
        else:
            assert config["eagle_config"] == {"eagle_aux_hidden_state_layer_ids": ENGINE_AUX[engine],
                                              "use_aux_hidden_state": True}
            assert "eagle_aux_hidden_state_layer_ids" not in config
        layer_config = config
    llama = LlamaConfig(**{k: v for k, v in layer_config.items() if k != "architectures"})
    assert (llama.hidden_size, llama.num_hidden_layers, llama.vocab_size) == (hidden, 1, 97)
    assert (llama.attention_bias, llama.head_dim, llama.intermediate_size) == (False, c.head_dim, c.intermediate_size)


def test_an_adapted_draft_exports_merged(tmp_path, source):
    target, draft = source
    adapted = peft.get_peft_model(copy.deepcopy(draft), EdaConfig(num_private_experts=1, init_private_weights="random"))
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "eda_" in name or "modules_to_save" in name:
                p.add_(0.05 * torch.randn_like(p))
    folder = export_draft(adapted, tmp_path / "merged", engine="sglang")
    tensors = load_file(folder / "model.safetensors")
    assert not [k for k in tensors if "eda_" in k or "modules_to_save" in k or "base_layer" in k]
    config = json.loads((folder / "config.json").read_text())
    assert config["intermediate_size"] > draft.config.intermediate_size  # the private expert widened the MLP
    imported = Eagle3DraftModel.from_eagle_checkpoint(folder, target_model=target)
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(1))
    expected = _logits(adapted, target, ids)
    assert not torch.allclose(expected, _logits(draft, target, ids), atol=1e-3)  # the adapter changes the draft
    torch.testing.assert_close(_logits(imported, target, ids), expected, rtol=1e-4, atol=1e-5)


def test_bad_exports_are_refused_in_one_line_and_leave_nothing(tmp_path, source):
    target, draft = source
    routed = peft.get_peft_model(Eagle3DraftModel.from_target(target), EdaConfig(num_private_experts=2))
    with pytest.raises(EdaInputError, match="routes each token"):
        export_draft(routed, tmp_path / "routed", engine="vllm")
    embeddings_in = Eagle3DraftModel.from_target(target, aux_layer_ids=[0, 4, 6])
    export_draft(embeddings_in, tmp_path / "written", engine="vllm")  # vLLM captures the input of layer 0
    with pytest.raises(EdaInputError, match=r"sglang can capture only 1 \.\. 7 .*\[0\] cannot be expressed"):
        export_draft(embeddings_in, tmp_path / "sglang", engine="sglang")
    after_norm = Eagle3DraftModel.from_target(target, aux_layer_ids=[2, 4, 8])
    for engine in EAGLE3_ENGINES:
        with pytest.raises(EdaInputError, match=r"\[8\] cannot be expressed"):
            export_draft(after_norm, tmp_path / engine, engine=engine)
    repeated = Eagle3DraftModel.from_target(target, aux_layer_ids=[2, 4, 4])
    with pytest.raises(EdaInputError, match="repeat a layer: the speculators library refuses"):
        export_draft(repeated, tmp_path / "repeated", engine="speculators")
    with pytest.raises(EdaInputError, match="speculators takes EAGLE-3 drafts"):
        export_draft(EagleDraftModel.from_target(target), tmp_path / "eagle1", engine="speculators")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["written"]  # no half-written folder


def test_eda_export_writes_an_eagle3_adapter_for_speculators(tmp_path, source, capsys):
    target, draft = source
    draft.save_pretrained(tmp_path / "draft")
    shared = Eagle3DraftModel.from_pretrained(tmp_path / "draft", target_model=target)  # the fixture stays unwrapped
    adapted = peft.get_peft_model(shared, EdaConfig(num_private_experts=1, init_private_weights="random"))
    adapted.save_pretrained(tmp_path / "adapter")
    target.save_pretrained(tmp_path / "target")
    code = main(["export", "--draft", str(tmp_path / "draft"), "--adapter", str(tmp_path / "adapter"),
                 "--output", str(tmp_path / "out"), "--engine", "speculators", "--target", str(tmp_path / "target")])
    assert code == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["speculators_model_type"] == "eagle3"
    assert config["speculators_config"]["verifier"]["name_or_path"] == str(tmp_path / "target")
    assert Eagle3DraftModel.from_eagle_checkpoint(tmp_path / "out", target_model=target).config.draft_vocab_size == 80


def test_the_speculators_package_loads_an_export_and_unrolls_it_to_our_logits(tmp_path, source):
    """Opt-in (`pip install speculators`; skipped otherwise): vLLM's `speculators` loads our export with the target as
    its verifier, and its own training-time-test forward gives our logits at every unrolled step."""
    speculators = pytest.importorskip("speculators.models.eagle3", reason="opt-in check: pip install speculators")
    target, draft = source
    target.save_pretrained(tmp_path / "target")
    folder = export_draft(draft, tmp_path / "export", engine="speculators", verifier=str(tmp_path / "target"))
    config = speculators.Eagle3SpeculatorConfig.from_pretrained(folder)
    config.transformer_layer_config._attn_implementation = "sdpa"  # its default, flex attention, compiles
    theirs = speculators.Eagle3DraftModel.from_pretrained(folder, config=config).eval()
    theirs.load_verifier_weights()
    steps, ids = 3, torch.randint(0, 97, (1, 24), generator=torch.Generator().manual_seed(3))
    logits = []
    theirs.lm_head.register_forward_hook(lambda module, inputs, output: logits.append(output[0]))
    with torch.no_grad():
        features = draft.target_features(target(ids, output_hidden_states=True).hidden_states)[:, :-1]
        ours = [out.logits[0] for out in unroll_training_time_test(draft, ids[:, 1:], features, steps)]
        theirs(hidden_states=features, input_ids=ids[:, 1:], document_ids=torch.zeros_like(ids[:, 1:]), ttt_steps=steps)
    assert len(logits) == steps
    for step in range(steps):  # the last `step` positions read padding (ours zeros the ids, theirs too)
        kept = ids.shape[1] - 1 - step
        torch.testing.assert_close(logits[step][:kept], ours[step][:kept], rtol=1e-4, atol=1e-5)
