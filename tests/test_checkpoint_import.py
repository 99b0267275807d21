"""Existing drafts as the shared draft: EAGLE-1 checkpoints in the EAGLE project's layout, our own exports (all three
flavours), and the EDA authors' shared/private checkpoints split into a shared draft plus an EDA adapter.

Checkpoints in other projects' layouts are written here by small scripts from the key names alone, and checked against
the plain-torch EAGLE-1 reference of test_export.py, which shares no code with eda_adapters."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import make_target
from peft import PeftModel
from safetensors.torch import save_file
from test_export import adapted, inputs, linear, reference_eagle1

from eda_adapters import EagleDraftModel, export_draft, load_official_eda_checkpoint

H, HEADS, KV_HEADS, HEAD_DIM, INTER = 32, 4, 2, 8, 64


def checkpoint_config(**extra):
    """A config.json as the EAGLE project writes it for a one-layer draft (LlamaConfig keys + `bias`)."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 97, "hidden_size": H,
        "intermediate_size": INTER, "num_hidden_layers": 1, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "hidden_act": "silu", "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "max_position_embeddings": 256, **extra,
    }


def eagle1_tensors(seed=0, fc_bias=True, qkv_bias=False, mlp=True):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    t = {"fc.weight": rand(H, 2 * H), "embed_tokens.weight": rand(97, H)}
    if fc_bias:
        t["fc.bias"] = rand(H)
    for name, rows in (("q_proj", HEADS * HEAD_DIM), ("k_proj", KV_HEADS * HEAD_DIM), ("v_proj", KV_HEADS * HEAD_DIM)):
        t[f"layers.0.self_attn.{name}.weight"] = rand(rows, H)
        if qkv_bias:
            t[f"layers.0.self_attn.{name}.bias"] = rand(rows)
    t["layers.0.self_attn.o_proj.weight"] = rand(H, HEADS * HEAD_DIM)
    t["layers.0.post_attention_layernorm.weight"] = 1 + rand(H)
    if mlp:
        t |= {"layers.0.mlp.gate_proj.weight": rand(INTER, H), "layers.0.mlp.up_proj.weight": rand(INTER, H),
              "layers.0.mlp.down_proj.weight": rand(H, INTER)}
    return t


def write_checkpoint(path, tensors, config, fmt="bin"):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    if fmt == "bin":
        torch.save(tensors, path / "pytorch_model.bin")
    else:
        save_file({k: v.contiguous() for k, v in tensors.items()}, path / "model.safetensors")
    return path


def assert_matches_reference(model, target, config, tensors, mlp=None):
    tokens, features = inputs(target)
    with torch.no_grad():
        got = model(input_ids=tokens, hidden_states=features).last_hidden_state[0]
        kwargs = {"mlp": mlp} if mlp else {}
        expected = reference_eagle1(config, tensors, target.get_input_embeddings()(tokens)[0], features[0], **kwargs)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_eagle_project_layout_imports_with_its_fc_bias(tmp_path, fmt):
    target = make_target("llama")
    tensors, config = eagle1_tensors(), checkpoint_config(bias=True)
    path = write_checkpoint(tmp_path / "eagle", tensors, config, fmt)
    draft = EagleDraftModel.from_eagle_checkpoint(path, target_model=target)
    assert draft.config.fc_bias and torch.equal(draft.fc.bias, tensors["fc.bias"])
    assert draft.lm_head is target.get_output_embeddings()  # the checkpoint's embed_tokens is not used
    assert_matches_reference(draft, target, config, tensors)


def test_qwen2_style_qkv_biases_get_a_zero_o_bias(tmp_path):
    target = make_target("qwen2")
    tensors, config = eagle1_tensors(qkv_bias=True, fc_bias=False), checkpoint_config(model_type="qwen2")
    draft = EagleDraftModel.from_eagle_checkpoint(write_checkpoint(tmp_path / "q", tensors, config), target)
    assert draft.config.attention_bias and not draft.config.fc_bias
    assert not draft.layers[0].self_attn.o_proj.bias.any()
    assert_matches_reference(draft, target, config, tensors)


@pytest.mark.parametrize("engine,fmt", [("vllm", "eagle"), ("sglang", "eagle"), (None, "hf")])
def test_export_then_import_gives_identical_outputs(tmp_path, engine, fmt):
    target = make_target("llama")
    model = adapted(target, draft_kwargs={"fc_bias": engine == "sglang"})
    kwargs = {"engine": engine} if engine else {}
    out = export_draft(model, tmp_path / "served", format=fmt, **kwargs)
    imported = EagleDraftModel.from_eagle_checkpoint(out, target_model=target)
    tokens, features = inputs(target)
    with torch.no_grad():
        expected = model(input_ids=tokens, hidden_states=features).logits
        got = imported(input_ids=tokens, hidden_states=features).logits
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


class _RunsCode:
    """A pickle payload that would create a file if it were ever unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_is_not_plain_tensors_is_refused_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    tensors = eagle1_tensors() | {"extra": _RunsCode(str(marker))}
    path = write_checkpoint(tmp_path / "evil", tensors, checkpoint_config())
    with pytest.raises(ValueError, match="refused rather than unpickled"):
        EagleDraftModel.from_eagle_checkpoint(path)
    assert not marker.exists()


def test_unknown_layout_lists_expected_and_found_keys(tmp_path):
    tensors = eagle1_tensors(mlp=False) | {"layers.0.ffn.w1.weight": torch.zeros(INTER, H)}
    path = write_checkpoint(tmp_path / "odd", tensors, checkpoint_config(), fmt="safetensors")
    with pytest.raises(ValueError, match=r"Unknown draft layout.*missing \['layers\.0\.mlp.*found instead \['layers\.0\.ffn"):
        EagleDraftModel.from_eagle_checkpoint(path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps(checkpoint_config()))
    with pytest.raises(FileNotFoundError, match="No weights"):
        EagleDraftModel.from_eagle_checkpoint(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------------------------
# The EDA authors' layout: layers.N.block_sparse_moe.{shared,private}_{gate,experts.E.*_proj}


def official_eda_tensors(num_private=1, private_width=16, num_shared=1, seed=5):
    g = torch.Generator().manual_seed(seed)
    tensors = eagle1_tensors(seed=seed, mlp=False)
    moe = "layers.0.block_sparse_moe"
    tensors[f"{moe}.shared_gate.weight"] = torch.randn(num_shared, H, generator=g)
    tensors[f"{moe}.private_gate.weight"] = torch.randn(num_private, H, generator=g)
    for group, count, width in (("shared", num_shared, INTER), ("private", num_private, private_width)):
        for e in range(count):
            p = f"{moe}.{group}_experts.{e}"
            tensors[f"{p}.gate_proj.weight"] = torch.randn(width, H, generator=g) * 0.2
            tensors[f"{p}.up_proj.weight"] = torch.randn(width, H, generator=g) * 0.2
            tensors[f"{p}.down_proj.weight"] = torch.randn(H, width, generator=g) * 0.2
    return tensors


def official_moe_mlp(top_k_private):
    """The authors' shared/private mixture, written from their description: per group, softmax over the group's gate,
    top-k, renormalise, weighted sum of the chosen experts; the two groups add."""

    def expert(h, weights, prefix):
        gate, up = linear(h, weights, f"{prefix}.gate_proj"), linear(h, weights, f"{prefix}.up_proj")
        return linear(F.silu(gate) * up, weights, f"{prefix}.down_proj")

    def group(h, weights, prefix, name, top_k):
        probs = torch.softmax(h @ weights[f"{prefix}.{name}_gate.weight"].T, dim=-1)
        top_w, top_e = probs.topk(top_k, dim=-1)
        top_w = top_w / top_w.sum(-1, keepdim=True)
        out = torch.zeros_like(h)
        for slot in range(top_k):
            for e in range(probs.shape[-1]):
                chosen = (top_e[:, slot] == e).float()[:, None] * top_w[:, slot, None]
                out = out + chosen * expert(h, weights, f"{prefix}.{name}_experts.{e}")
        return out

    def mlp(h, weights, layer_prefix):
        prefix = f"{layer_prefix}.block_sparse_moe"
        return group(h, weights, prefix, "shared", 1) + group(h, weights, prefix, "private", top_k_private)

    return mlp


@pytest.mark.parametrize("num_private,top_k", [(1, 1), (3, 2)])
def test_official_eda_checkpoint_splits_into_shared_draft_and_adapter(tmp_path, num_private, top_k):
    target = make_target("llama")
    tensors = official_eda_tensors(num_private=num_private)
    config = checkpoint_config(bias=True, num_shared_experts=1, num_private_experts=num_private,
                               top_k_private=top_k, private_intermediate_size=16)
    path = write_checkpoint(tmp_path / "eda", tensors, config)
    model = load_official_eda_checkpoint(path, target_model=target)
    assert isinstance(model, PeftModel)
    eda_config = model.peft_config["default"]
    assert (eda_config.num_private_experts, eda_config.private_intermediate_size) == (num_private, 16)
    assert_matches_reference(model, target, config, tensors, mlp=official_moe_mlp(top_k))
    # the shared draft alone is the checkpoint's shared expert, exactly
    shared_mlp = model.get_base_model().layers[0].mlp.get_base_layer()
    assert torch.equal(shared_mlp.gate_proj.weight, tensors["layers.0.block_sparse_moe.shared_experts.0.gate_proj.weight"])

    # shared draft and adapter save apart and reload through PEFT like any EDA adapter
    model.save_pretrained(tmp_path / "adapter")
    load_official_eda_checkpoint(path, target_model=target).unload().save_pretrained(tmp_path / "shared")
    reloaded = PeftModel.from_pretrained(
        EagleDraftModel.from_pretrained(tmp_path / "shared", target_model=target), tmp_path / "adapter"
    ).eval()
    tokens, features = inputs(target)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=tokens, hidden_states=features).logits,
                                   model(input_ids=tokens, hidden_states=features).logits)


def test_official_eda_checkpoint_with_several_shared_experts_is_refused(tmp_path):
    path = write_checkpoint(tmp_path / "eda", official_eda_tensors(num_shared=2), checkpoint_config())
    with pytest.raises(ValueError, match="2 shared experts"):
        load_official_eda_checkpoint(path)
    with pytest.raises(ValueError, match="load_official_eda_checkpoint"):
        EagleDraftModel.from_eagle_checkpoint(path)


def test_plain_eagle_checkpoint_is_not_an_eda_checkpoint(tmp_path):
    path = write_checkpoint(tmp_path / "plain", eagle1_tensors(), checkpoint_config())
    with pytest.raises(ValueError, match="from_eagle_checkpoint"):
        load_official_eda_checkpoint(path)
    assert os.path.isdir(path)
