"""`eda export`: adapted drafts written in the EAGLE-1 layout serving engines load, checked by an independent reader."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import make_target
from peft import PeftModel, get_peft_model
from safetensors import safe_open
from transformers import LlamaConfig

from eda_adapters import (
    EagleDraftModel,
    EdaConfig,
    ExportOptions,
    RunMismatchError,
    eagle_layout,
    export_adapters,
    export_draft,
    find_adapters,
    merge_for_export,
)
from eda_adapters.cli import main

# ----------------------------------------------------------------------------------------------------------------
# An EAGLE-1 draft written from the file layout alone (config.json + model.safetensors), in plain torch: it shares no
# code with eda_adapters, so a mismatch in names, shapes, bias handling or layer structure shows up as wrong numbers.


def load_layout(path):
    config = json.loads((path / "config.json").read_text())
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        weights = {key: f.get_tensor(key).float() for key in f.keys()}
    return config, weights


def rms_norm(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def linear(x, weights, name):
    out = x @ weights[f"{name}.weight"].T
    return out + weights[f"{name}.bias"] if f"{name}.bias" in weights else out


def rope(x, positions, theta):
    # Llama/NeoX convention: rotate the two halves of each head.
    dim = x.shape[-1]
    freqs = positions[:, None].float() / theta ** (torch.arange(0, dim, 2).float() / dim)
    cos, sin = torch.cat((freqs, freqs), -1).cos(), torch.cat((freqs, freqs), -1).sin()
    x1, x2 = x[..., : dim // 2], x[..., dim // 2 :]
    return x * cos + torch.cat((-x2, x1), -1) * sin


def swiglu_mlp(h, weights, prefix):
    gate, up = linear(h, weights, f"{prefix}.mlp.gate_proj"), linear(h, weights, f"{prefix}.mlp.up_proj")
    return linear(torch.nn.functional.silu(gate) * up, weights, f"{prefix}.mlp.down_proj")


def reference_eagle1(config, weights, embeds, features, mlp=swiglu_mlp):
    """hidden [seq, H] = EAGLE-1(embeds [seq, H], features [seq, H]) for one sequence, causal, positions 0..seq-1.
    `mlp(h, weights, "layers.i")` computes a layer's MLP (another layout's mixture of experts, say)."""
    heads, kv_heads, head_dim = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    eps, theta = config["rms_norm_eps"], config["rope_theta"]
    seq = embeds.shape[0]
    positions = torch.arange(seq)
    x = linear(torch.cat((embeds, features), -1), weights, "fc")
    for i in range(config["num_hidden_layers"]):
        p = f"layers.{i}"
        h = rms_norm(x, weights[f"{p}.input_layernorm.weight"], eps) if f"{p}.input_layernorm.weight" in weights else x
        q = linear(h, weights, f"{p}.self_attn.q_proj").view(seq, heads, head_dim).transpose(0, 1)
        k = linear(h, weights, f"{p}.self_attn.k_proj").view(seq, kv_heads, head_dim).transpose(0, 1)
        v = linear(h, weights, f"{p}.self_attn.v_proj").view(seq, kv_heads, head_dim).transpose(0, 1)
        q, k = rope(q, positions, theta), rope(k, positions, theta)
        group = heads // kv_heads
        k, v = k[torch.arange(heads) // group], v[torch.arange(heads) // group]
        scores = q @ k.transpose(1, 2) / math.sqrt(head_dim)
        scores = scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf"))
        attn = (scores.softmax(-1) @ v).transpose(0, 1).reshape(seq, heads * head_dim)
        x = x + linear(attn, weights, f"{p}.self_attn.o_proj")
        x = x + mlp(rms_norm(x, weights[f"{p}.post_attention_layernorm.weight"], eps), weights, p)
    return x  # EAGLE-1 has no final norm: the target's lm_head reads this directly


# ----------------------------------------------------------------------------------------------------------------
def adapted(target, seed=0, adapter_seed=1, draft_kwargs=None, fc_bias_std=0.5, **eda_kwargs):
    """A random draft for `target` with a random (non-zero) single-expert EDA adapter."""
    torch.manual_seed(seed)
    draft = EagleDraftModel.from_target(target, **(draft_kwargs or {}))
    if draft.fc.bias is not None:
        torch.nn.init.normal_(draft.fc.bias, std=fc_bias_std)
    for name, param in draft.named_parameters():
        if name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias", "o_proj.bias")):
            torch.nn.init.normal_(param, std=0.1)
    torch.manual_seed(adapter_seed)
    return get_peft_model(draft, EdaConfig(init_private_weights="random", **eda_kwargs))


def inputs(target, seq=7, seed=3):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, target.config.vocab_size, (1, seq), generator=g)
    features = torch.randn(1, seq, target.config.hidden_size, generator=g)
    return tokens, features


def assert_round_trip(path, model, target, atol=2e-5):
    config, weights = load_layout(path)
    tokens, features = inputs(target)
    with torch.no_grad():
        expected = model(input_ids=tokens, hidden_states=features)
        hidden = reference_eagle1(config, weights, target.get_input_embeddings()(tokens)[0], features[0])
        logits = target.get_output_embeddings()(hidden)
    torch.testing.assert_close(hidden, expected.last_hidden_state[0], atol=atol, rtol=1e-4)
    torch.testing.assert_close(logits, expected.logits[0], atol=atol, rtol=1e-4)
    return config, weights


def test_round_trip_vllm_layout_matches_adapted_draft(tmp_path):
    target = make_target("qwen2", rope_parameters={"rope_type": "default", "rope_theta": 1e6})  # Qwen2.5's theta
    model = adapted(target)
    with torch.no_grad():
        before = model(input_ids=inputs(target)[0], hidden_states=inputs(target)[1]).last_hidden_state
    out = export_draft(model, tmp_path / "eagle")
    config, weights = assert_round_trip(out, model, target)

    # the layout engines load: names, shapes, nothing extra
    hidden, width = 32, 64 * 2  # shared MLP width + private width
    assert set(weights) == {
        "fc.weight",
        *(f"layers.0.self_attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj", "o_proj")),
        "layers.0.post_attention_layernorm.weight",
        *(f"layers.0.mlp.{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")),
    }
    assert weights["fc.weight"].shape == (hidden, 2 * hidden)
    assert weights["layers.0.mlp.gate_proj.weight"].shape == (width, hidden)
    assert weights["layers.0.mlp.down_proj.weight"].shape == (hidden, width)
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_hidden_layers"] == 1
    llama = LlamaConfig.from_pretrained(out)
    assert (llama.intermediate_size, llama.num_key_value_heads, llama.head_dim) == (width, 2, 8)
    assert llama.rope_parameters["rope_theta"] == config["rope_theta"] == 1e6
    assert json.loads((out / "eda_export.json").read_text())["adapter_name"] == "default"

    # the adapter matters (the private branch is in the export) and the user's PeftModel was left as it was
    with torch.no_grad():
        tokens, features = inputs(target)
        after = model(input_ids=tokens, hidden_states=features).last_hidden_state
        with model.disable_adapter():
            shared_only = model(input_ids=tokens, hidden_states=features).last_hidden_state
    torch.testing.assert_close(after, before)
    assert not torch.allclose(after, shared_only, atol=1e-3)
    assert isinstance(model, PeftModel) and "default" in model.peft_config


def test_round_trip_sglang_two_layers_with_biases(tmp_path):
    target = make_target("llama")
    draft_kwargs = dict(num_layers=2, fc_bias=True, attention_bias=True)
    model = adapted(target, draft_kwargs=draft_kwargs, private_intermediate_size=24)
    out = export_draft(model, tmp_path / "sglang", engine="sglang")
    config, weights = assert_round_trip(out, model, target)
    assert config["architectures"] == ["LlamaForCausalLMEagle"] and config["attention_bias"] is True
    assert "fc.bias" in weights and "layers.0.input_layernorm.weight" not in weights
    assert "layers.1.input_layernorm.weight" in weights
    assert weights["layers.1.mlp.up_proj.weight"].shape == (64 + 24, 32)


def test_sglang_gets_zero_fc_bias_when_draft_has_none(tmp_path):
    target = make_target("llama")
    model = adapted(target)
    out = export_draft(model, tmp_path / "sglang", engine="sglang")
    _, weights = assert_round_trip(out, model, target)
    assert torch.count_nonzero(weights["fc.bias"]) == 0  # SGLang's fc always has a bias: it must be loaded, as zeros


def test_vllm_refuses_nonzero_fc_bias_unless_folded(tmp_path):
    target = make_target("mistral")
    model = adapted(target, draft_kwargs=dict(fc_bias=True))
    with pytest.raises(ValueError, match="fc layer has a non-zero bias.*engine='sglang'.*fold_fc_bias"):
        export_draft(model, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    out = export_draft(model, tmp_path / "folded", fold_fc_bias=True)
    config, weights = assert_round_trip(out, model, target, atol=5e-5)
    assert "fc.bias" not in weights and config["attention_bias"] is True
    assert json.loads((out / "eda_export.json").read_text())["fc_bias_folded"] is True


def test_vllm_drops_an_all_zero_fc_bias(tmp_path):
    target = make_target("llama")
    model = adapted(target, draft_kwargs=dict(fc_bias=True), fc_bias_std=0.0)  # before the adapter records the draft
    assert not model.get_base_model().fc.bias.any()
    out = export_draft(model, tmp_path / "eagle")
    config, weights = assert_round_trip(out, model, target)
    assert "fc.bias" not in weights and config["attention_bias"] is False


def test_routed_adapter_is_refused_with_the_reason(tmp_path):
    model = adapted(make_target("llama"), num_private_experts=2, num_experts_per_tok=1)
    with pytest.raises(ValueError, match="routes each token.*exact merge is impossible"):
        export_draft(model, tmp_path / "out")
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_non_empty_output_dir_needs_overwrite(tmp_path):
    target = make_target("llama")
    model = adapted(target)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(RunMismatchError, match="not empty.*--overwrite"):
        export_draft(model, out)
    assert (out / "old.txt").read_text() == "keep me"
    export_draft(model, out, overwrite=True)
    assert not (out / "old.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary directories left behind


def test_hf_format_reloads_as_our_draft(tmp_path):
    target = make_target("llama")
    model = adapted(target)
    out = export_draft(model, tmp_path / "hf", format="hf")
    reloaded = EagleDraftModel.from_pretrained(out, target_model=target)
    assert reloaded.config.intermediate_size == 128
    tokens, features = inputs(target)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(input_ids=tokens, hidden_states=features).logits,
            model(input_ids=tokens, hidden_states=features).logits,
        )


def test_embeddings_only_when_asked_and_dtype(tmp_path):
    target = make_target("llama")
    model = adapted(target)
    out = export_draft(model, tmp_path / "emb", include_embeddings=True, dtype="bfloat16")
    config, _ = load_layout(out)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        embed = f.get_tensor("embed_tokens.weight")
        assert f.get_tensor("fc.weight").dtype == torch.bfloat16
    assert config["torch_dtype"] == "bfloat16"
    torch.testing.assert_close(embed, target.get_input_embeddings().weight.to(torch.bfloat16))
    with pytest.raises(ValueError, match="include_embeddings applies to format='eagle'"):
        export_draft(model, tmp_path / "hf", format="hf", include_embeddings=True)


def test_non_silu_draft_is_refused():
    model = adapted(make_target("llama", hidden_act="gelu"))
    with pytest.raises(ValueError, match="hidden_act='gelu'.*format='hf'"):
        eagle_layout(merge_for_export(model))


def test_layout_of_a_meta_draft_needs_no_memory_and_keeps_rope_scaling():
    target = make_target("llama")
    rope = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64}  # fmt: skip
    config = EagleDraftModel.from_target(target, rope_parameters=rope).config
    with torch.device("meta"):
        draft = EagleDraftModel(config)
    layout, tensors = eagle_layout(draft)
    assert all(t.is_meta for t in tensors.values())
    assert layout["intermediate_size"] == 64 and "lm_head.weight" not in tensors
    # transformers 4.x readers (the engines) use rope_theta + rope_scaling, 5.x rope_parameters: both say the same
    assert layout["rope_theta"] == 5e5 and layout["rope_scaling"]["factor"] == 8.0
    assert layout["rope_scaling"]["rope_type"] == layout["rope_scaling"]["type"] == "llama3"  # pre-4.45 readers: type
    read_back = LlamaConfig(**layout).rope_parameters
    assert {k: v for k, v in read_back.items() if k != "type"} == rope


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
@pytest.mark.parametrize("fc_bias", [False, True])
def test_every_eagle_flavour_says_whether_fc_has_a_bias(tmp_path, engine, fc_bias):
    """The EAGLE reference loader builds `fc` with a bias unless config.json says `"bias": false` (a missing key
    means True there): the key must be written and agree with the weights, in every flavour."""
    target = make_target("llama")
    model = adapted(target, draft_kwargs=dict(fc_bias=fc_bias), fc_bias_std=0.0)
    out = export_draft(model, tmp_path / "out", engine=engine)
    config, weights = load_layout(out)
    assert isinstance(config["bias"], bool)
    assert config["bias"] == ("fc.bias" in weights) == (engine == "sglang")
    # the engines' Llama layers read `bias: true` as attention biases: then they are written (zeros here)
    if config["bias"]:
        assert config["attention_bias"] is True and not weights["layers.0.self_attn.q_proj.bias"].any()
    assert_round_trip(out, model, target)
    # default rope: the older readers get rope_theta and no scaling, the newer rope_parameters
    assert config["rope_scaling"] is None and config["rope_theta"] == config["rope_parameters"]["rope_theta"]


def test_export_options_are_one_checked_set(tmp_path):
    target = make_target("llama")
    model = adapted(target)
    with pytest.raises(ValueError, match="engine must be one of"):
        ExportOptions(engine="tgi")
    with pytest.raises(TypeError, match="Unknown export option.*'engin'"):
        export_draft(model, tmp_path / "typo", engin="sglang")
    options = ExportOptions(engine="sglang", dtype="bfloat16")
    out = export_draft(model, tmp_path / "out", options=options, dtype="float16")  # a keyword replaces a field
    config, _ = load_layout(out)
    assert config["architectures"] == ["LlamaForCausalLMEagle"] and config["torch_dtype"] == "float16"
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_tensor("fc.weight").dtype == torch.float16


def test_cli_shared_draft_alone_with_target_embeddings(tmp_path):
    target = make_target("llama")
    target.save_pretrained(tmp_path / "target")
    EagleDraftModel.from_target(target).save_pretrained(tmp_path / "draft")
    args = ["export", "--draft", str(tmp_path / "draft"), "--output-dir", str(tmp_path / "out"), "--engine", "sglang"]
    assert main(args + ["--target", str(tmp_path / "target")]) == 2  # --target without --include-embeddings
    assert main(args + ["--include-embeddings"]) == 2  # embeddings asked, but no target to take them from
    assert main(args + ["--include-embeddings", "--target", str(tmp_path / "target")]) == 0
    draft = EagleDraftModel.from_pretrained(tmp_path / "draft", target_model=target)
    config, weights = assert_round_trip(tmp_path / "out", draft, target)
    torch.testing.assert_close(weights["embed_tokens.weight"], target.get_input_embeddings().weight)


# ---------------------------------------------------------------------------------------------- several adapters
@pytest.fixture
def saved_adapters(tmp_path):
    """One shared draft saved once, plus `math` and `code` adapters saved together by PEFT."""
    target = make_target("llama")
    torch.manual_seed(0)
    draft = EagleDraftModel.from_target(target)
    draft.save_pretrained(tmp_path / "draft")  # before get_peft_model wraps the draft's MLPs in place
    torch.manual_seed(1)
    model = get_peft_model(draft, EdaConfig(init_private_weights="random"), adapter_name="math")
    model.add_adapter("code", EdaConfig(init_private_weights="random", private_intermediate_size=16))
    model.save_pretrained(tmp_path / "adapters")
    return target, model, tmp_path


def test_cli_writes_one_servable_draft_per_adapter(saved_adapters, capsys):
    target, model, tmp_path = saved_adapters
    assert sorted(find_adapters(tmp_path / "adapters")) == ["code", "math"]  # PEFT: non-default names in subfolders
    code = main(["export", "--draft", str(tmp_path / "draft"), "--adapter", str(tmp_path / "adapters"),
                 "--format", "eagle", "--output-dir", str(tmp_path / "out")])  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["code", "math"]
    for name, width in (("math", 128), ("code", 80)):
        model.set_adapter(name)
        config, _ = assert_round_trip(tmp_path / "out" / name, model, target)
        assert config["intermediate_size"] == width
    assert "math:" in capsys.readouterr().out


def test_cli_errors_are_one_line(saved_adapters, capsys):
    _, _, tmp_path = saved_adapters
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    code = main(["export", "--draft", str(tmp_path / "draft"), "--adapter", str(tmp_path / "adapters"),
                 "--output-dir", str(tmp_path / "full")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("eda export: error:") and err.endswith("(--overwrite)")
    code = main(["export", "--draft", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "o")])
    assert code == 2 and "No draft at" in capsys.readouterr().err


def test_adapter_of_another_draft_is_refused(saved_adapters):
    target, _, tmp_path = saved_adapters
    torch.manual_seed(42)
    other = EagleDraftModel.from_target(target)  # same sizes, other weights
    with pytest.raises(ValueError, match="belongs to another draft.*fingerprint.*allow_fingerprint_mismatch"):
        export_adapters(other, tmp_path / "adapters", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    written = export_adapters(
        other, tmp_path / "adapters", tmp_path / "out", adapter_names=["code"], allow_fingerprint_mismatch=True
    )
    assert written == {"code": tmp_path / "out"}  # one adapter: the output directory is the servable draft
    assert (tmp_path / "out" / "model.safetensors").is_file()

    narrower = EagleDraftModel.from_target(target, intermediate_size=48)
    with pytest.raises(ValueError, match="shared MLP has width 64, but this draft's is 48"):
        export_adapters(narrower, tmp_path / "adapters", tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
