"""The EDA private component as a PEFT adapter type: registration, training scope, PEFT verbs, merging, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_target
from peft import PeftModel, get_peft_model
from peft.utils import PeftType
from safetensors.torch import load_file

from eda_adapters import EagleDraftModel, EdaConfig, EdaLayer, router_aux_loss
from eda_adapters.data import compute_target_features


def _inputs(target, batch=2, seq=9, seed=1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, target.config.vocab_size, (batch, seq), generator=gen)
    features, _ = compute_target_features(target, ids)
    return {"input_ids": ids[:, 1:], "hidden_states": features[:, :-1]}


def _draft(target, seed=0, **kwargs):
    torch.manual_seed(seed)
    return EagleDraftModel.from_target(target, **kwargs)


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_registered_with_peft_and_wraps_every_mlp(target):
    assert PeftType.EDA == "EDA"
    model = get_peft_model(_draft(target, num_layers=2), EdaConfig())
    assert type(model) is PeftModel
    wrapped = [n for n, m in model.named_modules() if isinstance(m, EdaLayer)]
    assert wrapped == ["base_model.model.layers.0.mlp", "base_model.model.layers.1.mlp"]


def test_only_private_parameters_and_fc_copy_train(target, capsys):
    model = get_peft_model(_draft(target), EdaConfig(private_intermediate_size=16))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    private = {
        "base_model.model.layers.0.mlp.eda_gate_proj.default.weight",
        "base_model.model.layers.0.mlp.eda_up_proj.default.weight",
        "base_model.model.layers.0.mlp.eda_down_proj.default.weight",
    }
    # the default trains the adapter's own copy of fc with the private expert (modules_to_save=["fc"])
    assert trainable == private | {"base_model.model.fc.modules_to_save.default.weight"}
    model.print_trainable_parameters()
    hidden = target.config.hidden_size
    assert f"trainable params: {3 * 16 * hidden + 2 * hidden * hidden:,}" in capsys.readouterr().out
    for nothing in (None, [], ["none"]):  # ["none"]: what `--modules_to_save none` gives on the command line
        alone = get_peft_model(_draft(target), EdaConfig(private_intermediate_size=16, modules_to_save=nothing))
        assert {n for n, p in alone.named_parameters() if p.requires_grad} == private


def test_fresh_adapter_leaves_output_unchanged_and_training_touches_only_private(target):
    draft = _draft(target)
    inputs = _inputs(target)
    shared_before = {k: v.clone() for k, v in draft.state_dict().items()}
    reference = _logits(draft, inputs)
    model = get_peft_model(draft, EdaConfig())  # private expert + the adapter's own copy of fc
    torch.testing.assert_close(_logits(model, inputs), reference, rtol=0, atol=0)

    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = model(**inputs).logits.logsumexp(-1).mean()
        loss.backward()
        optim.step()
        optim.zero_grad()
    assert not torch.allclose(_logits(model, inputs), reference)
    base_state = model.get_base_model().state_dict()
    for key, before in shared_before.items():
        wrapped_key = key.replace(".mlp.", ".mlp.base_layer.").replace("fc.", "fc.original_module.")
        assert torch.equal(base_state[wrapped_key], before), key
    assert not torch.equal(base_state["fc.modules_to_save.default.weight"], shared_before["fc.weight"])
    with model.disable_adapter():
        torch.testing.assert_close(_logits(model, inputs), reference, rtol=0, atol=0)


def test_save_and_load_round_trip(tmp_path, target):
    inputs = _inputs(target)
    model = get_peft_model(_draft(target), EdaConfig(init_private_weights="random"))
    expected = _logits(model, inputs)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "EDA" and config["draft_hidden_size"] == target.config.hidden_size
    keys = set(load_file(tmp_path / "adapter_model.safetensors"))
    private = {f"base_model.model.layers.0.mlp.eda_{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")}
    assert keys == private | {"base_model.model.fc.weight"}  # PEFT saves the trained fc copy under its plain name

    loaded = PeftModel.from_pretrained(_draft(target), tmp_path)
    assert torch.equal(_logits(loaded, inputs), expected)
    assert not any(p.requires_grad for p in loaded.parameters())
    trainable = PeftModel.from_pretrained(_draft(target), tmp_path, is_trainable=True)
    assert any(p.requires_grad for p in trainable.parameters())


def test_several_named_adapters(tmp_path, llama_target):
    inputs = _inputs(llama_target)
    model = get_peft_model(_draft(llama_target), EdaConfig(init_private_weights="random"), adapter_name="math")
    torch.manual_seed(123)
    model.add_adapter("code", EdaConfig(init_private_weights="random", private_intermediate_size=24))
    math_out = _logits(model, inputs)
    model.set_adapter("code")
    code_out = _logits(model, inputs)
    assert not torch.allclose(math_out, code_out)
    model.save_pretrained(tmp_path)

    loaded = PeftModel.from_pretrained(_draft(llama_target), tmp_path / "code", adapter_name="code")
    loaded.load_adapter(tmp_path / "math", adapter_name="math")  # PEFT saves non-default adapters in subfolders
    assert torch.equal(_logits(loaded, inputs), code_out)
    loaded.set_adapter("math")
    assert torch.equal(_logits(loaded, inputs), math_out)
    # a checkpoint loads under any adapter name (flat keys per adapter)
    loaded.load_adapter(tmp_path / "code", adapter_name="renamed")
    loaded.set_adapter("renamed")
    assert torch.equal(_logits(loaded, inputs), code_out)
    loaded.delete_adapter("renamed")
    assert "renamed" not in loaded.peft_config


@pytest.mark.parametrize("private_size", [None, 20])
def test_merge_and_unload_is_exact(tmp_path, target, private_size):
    inputs = _inputs(target)
    draft = _draft(target, num_layers=2)
    shared = draft.config.intermediate_size
    model = get_peft_model(draft, EdaConfig(init_private_weights="random", private_intermediate_size=private_size))
    adapted = _logits(model, inputs)
    merged = model.merge_and_unload()
    assert type(merged) is EagleDraftModel
    assert not any(isinstance(m, EdaLayer) for m in merged.modules())
    assert merged.config.intermediate_size == shared + (private_size or shared)
    torch.testing.assert_close(_logits(merged, inputs), adapted, atol=1e-5, rtol=1e-5)

    merged.save_pretrained(tmp_path)
    reloaded = EagleDraftModel.from_pretrained(tmp_path, target_model=target)
    torch.testing.assert_close(_logits(reloaded, inputs), adapted, atol=1e-5, rtol=1e-5)


def test_merge_adapter_then_unmerge_restores_both_paths(llama_target):
    inputs = _inputs(llama_target)
    model = get_peft_model(_draft(llama_target), EdaConfig(init_private_weights="random"))
    adapted = _logits(model, inputs)
    with model.disable_adapter():
        shared = _logits(model, inputs)
    model.merge_adapter()
    torch.testing.assert_close(_logits(model, inputs), adapted, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter()
    torch.testing.assert_close(_logits(model, inputs), adapted, atol=1e-5, rtol=1e-5)
    with model.disable_adapter():
        torch.testing.assert_close(_logits(model, inputs), shared, atol=0, rtol=0)


def test_merge_edits_weights_in_place_and_an_optimizer_keeps_training_them(llama_target):
    inputs = _inputs(llama_target)
    model = get_peft_model(_draft(llama_target), EdaConfig(init_private_weights="random"))
    mlp = model.get_base_model().layers[0].mlp.get_base_layer()
    modules = (mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    params = [m.weight for m in modules]
    for param in params:
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    model(**inputs).logits.square().mean().backward()
    optimizer.step()
    optimizer.zero_grad()
    shapes = [tuple(p.shape) for p in params]

    model.merge_adapter()
    assert (mlp.gate_proj, mlp.up_proj, mlp.down_proj) == modules  # the same modules, wider weights
    assert all(m.weight is p for m, p in zip(modules, params))
    assert mlp.gate_proj.weight.shape[0] > shapes[0][0] and mlp.gate_proj.out_features == mlp.gate_proj.weight.shape[0]
    model.unmerge_adapter()
    assert [tuple(p.shape) for p in params] == shapes

    before = [p.detach().clone() for p in params]
    model(**inputs).logits.square().mean().backward()
    optimizer.step()  # Adam's state (shaped like the unmerged weights) still fits, and the weights move
    assert all(not torch.equal(b, p) for b, p in zip(before, params))


def _activate(model, names):
    """Activate several EDA adapters in every wrapped MLP (the draft's `fc` is a modules_to_save copy, one at a time)."""
    for module in model.modules():
        if isinstance(module, EdaLayer):
            module.set_adapter(names)


def test_unmerge_undoes_only_the_adapter_asked_for(llama_target):
    inputs = _inputs(llama_target)
    model = get_peft_model(_draft(llama_target), EdaConfig(init_private_weights="random"), adapter_name="math")
    model.add_adapter("code", EdaConfig(init_private_weights="random", private_intermediate_size=24))
    _activate(model, ["math"])
    only_math = _logits(model, inputs)
    _activate(model, ["math", "code"])
    both = _logits(model, inputs)
    assert not torch.allclose(only_math, both, atol=1e-3)  # code contributes
    layer = model.get_base_model().layers[0].mlp
    shared_width = layer.get_base_layer().gate_proj.out_features

    model.merge_adapter(["math", "code"])
    torch.testing.assert_close(_logits(model, inputs), both, atol=1e-5, rtol=1e-5)
    model.unmerge_adapter("math")  # the earlier-merged one: code's rows move down
    assert layer.merged_adapters == ["code"]
    assert layer.get_base_layer().gate_proj.out_features == shared_width + 24
    torch.testing.assert_close(_logits(model, inputs), both, atol=1e-5, rtol=1e-5)  # math runs unmerged again
    model.unmerge_adapter("code")
    _activate(model, ["math"])
    torch.testing.assert_close(_logits(model, inputs), only_math, atol=1e-5, rtol=1e-5)
    assert layer.get_base_layer().gate_proj.out_features == shared_width


def test_routed_experts_mix_top_k_with_renormalised_weights(llama_target):
    model = get_peft_model(
        _draft(llama_target), EdaConfig(num_private_experts=4, num_experts_per_tok=2, init_private_weights="random")
    )
    layer = model.get_base_model().layers[0].mlp
    x = torch.randn(3, 5, llama_target.config.hidden_size)
    got = layer.private_forward("default", x)

    # reference: dense computation of every expert, mixed with the renormalised top-2 router probabilities
    act = layer.get_base_layer().act_fn
    gate, up, down = (getattr(layer, f"eda_{p}")["default"].weight for p in ("gate_proj", "up_proj", "down_proj"))
    probs = torch.softmax(layer.eda_router["default"](x), dim=-1)
    top_p, top_i = probs.topk(2, dim=-1)
    weights = torch.zeros_like(probs).scatter(-1, top_i, top_p / top_p.sum(-1, keepdim=True))
    experts = torch.stack([(act(x @ gate[e].T) * (x @ up[e].T)) @ down[e].T for e in range(4)], dim=-2)
    torch.testing.assert_close(got, (weights.unsqueeze(-1) * experts).sum(-2), atol=1e-5, rtol=1e-5)

    inputs = _inputs(llama_target)
    logits = model(**inputs).logits
    aux = router_aux_loss(model)
    assert aux is not None and aux.item() >= 1.0 - 1e-4  # Switch loss is minimal (1.0) only when perfectly balanced
    aux.backward()  # the balancing loss alone reaches the router
    assert layer.eda_router["default"].weight.grad.abs().sum() > 0
    assert logits.requires_grad


def test_routed_adapter_refuses_to_merge(llama_target):
    model = get_peft_model(_draft(llama_target), EdaConfig(num_private_experts=2))
    with pytest.raises(ValueError, match="cannot be merged exactly"):
        model.merge_and_unload()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_private_experts": 0}, "num_private_experts"),
        ({"num_private_experts": 2, "num_experts_per_tok": 3}, "num_experts_per_tok"),
        ({"private_intermediate_size": -4}, "private_intermediate_size"),
        ({"router_aux_loss_coef": -1.0}, "router_aux_loss_coef"),
        ({"init_private_weights": "xavier"}, "init_private_weights"),
    ],
)
def test_config_rejects_nonsense(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EdaConfig(**kwargs)


def test_adapter_for_another_draft_shape_is_refused(tmp_path, llama_target):
    get_peft_model(_draft(llama_target), EdaConfig()).save_pretrained(tmp_path)
    wider_draft = _draft(make_target("llama", hidden_size=48))
    with pytest.raises(ValueError, match="hidden size 32, but this draft has 48"):
        PeftModel.from_pretrained(wider_draft, tmp_path)
    narrower_mlp = _draft(llama_target, intermediate_size=40)
    with pytest.raises(ValueError, match="shared MLP has width 64"):
        PeftModel.from_pretrained(narrower_mlp, tmp_path)


def test_target_without_swiglu_mlp_is_refused(llama_target):
    draft = _draft(llama_target)
    with pytest.raises(TypeError, match="SwiGLU MLP"):
        get_peft_model(draft, EdaConfig(target_modules=["self_attn"]))
