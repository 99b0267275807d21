"""The shared EAGLE draft: construction from targets, caching, masks, saving/loading, and bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import make_target
from safetensors.torch import load_file
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoModel, BertConfig, BertForMaskedLM, LlamaConfig, LlamaModel

from eda_adapters import EagleDraftConfig, EagleDraftModel
from eda_adapters.data import compute_target_features


def _inputs(target, batch=2, seq=9, seed=1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, target.config.vocab_size, (batch, seq), generator=gen)
    features, _ = compute_target_features(target, ids)
    return ids[:, 1:], features[:, :-1]


def test_from_target_reads_sizes_and_shares_frozen_heads(target):
    draft = EagleDraftModel.from_target(target)
    cfg, tcfg = draft.config, target.config
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (
        tcfg.hidden_size,
        tcfg.intermediate_size,
        tcfg.num_attention_heads,
        tcfg.num_key_value_heads,
    )
    assert cfg.num_hidden_layers == 1 and cfg.target_model_type == tcfg.model_type
    assert cfg.rope_parameters["rope_theta"] == tcfg.rope_parameters["rope_theta"]
    assert draft.embed_tokens is target.get_input_embeddings()
    assert draft.lm_head is target.get_output_embeddings()
    assert not draft.embed_tokens.weight.requires_grad and not draft.lm_head.weight.requires_grad
    trainable = {n for n, p in draft.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith(("embed_tokens", "lm_head")) for n in trainable)
    # EAGLE-1 layout: layer 0 reads the fused fc output without an input norm
    assert draft.layers[0].input_layernorm is None


def test_forward_shapes_and_logits_come_from_target_head(target):
    draft = EagleDraftModel.from_target(target)
    ids, feats = _inputs(target)
    out = draft(input_ids=ids, hidden_states=feats)
    assert out.last_hidden_state.shape == feats.shape
    assert out.logits.shape == (*ids.shape, target.config.vocab_size)
    torch.testing.assert_close(out.logits, target.lm_head(out.last_hidden_state))
    assert draft(input_ids=ids, hidden_states=feats, compute_logits=False).logits is None


def test_kv_cache_matches_full_forward(target):
    draft = EagleDraftModel.from_target(target, num_layers=2)
    assert draft.layers[1].input_layernorm is not None
    ids, feats = _inputs(target, seq=10)
    full = draft(input_ids=ids, hidden_states=feats).logits
    first = draft(input_ids=ids[:, :4], hidden_states=feats[:, :4], use_cache=True)
    cache = first.past_key_values
    steps = [first.logits]
    for i in range(4, ids.shape[1]):  # one token at a time, as when drafting
        out = draft(input_ids=ids[:, i : i + 1], hidden_states=feats[:, i : i + 1], past_key_values=cache, use_cache=True)
        steps.append(out.logits)
    assert cache.get_seq_length() == ids.shape[1]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_left_padding_matches_unpadded_rows(llama_target):
    draft = EagleDraftModel.from_target(llama_target, num_layers=2)
    ids, feats = _inputs(llama_target, batch=1, seq=7)
    pad = 3
    padded_ids = torch.cat((torch.zeros(1, pad, dtype=ids.dtype), ids), dim=1)
    padded_feats = torch.cat((torch.randn(1, pad, feats.shape[-1]), feats), dim=1)
    mask = torch.cat((torch.zeros(1, pad), torch.ones(1, ids.shape[1])), dim=1).long()
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    padded = draft(input_ids=padded_ids, hidden_states=padded_feats, attention_mask=mask, position_ids=positions)
    plain = draft(input_ids=ids, hidden_states=feats)
    assert torch.isfinite(padded.logits).all()
    torch.testing.assert_close(padded.logits[:, pad:], plain.logits, atol=1e-5, rtol=1e-5)


def test_explicit_4d_mask_is_used_as_given(llama_target):
    draft = EagleDraftModel.from_target(llama_target)
    ids, feats = _inputs(llama_target, batch=1, seq=6)
    seq = ids.shape[1]
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()[None, None]
    torch.testing.assert_close(
        draft(input_ids=ids, hidden_states=feats, attention_mask=causal).logits,
        draft(input_ids=ids, hidden_states=feats).logits,
    )
    # attending only to itself is a different computation: the mask really reaches the attention
    diagonal = torch.eye(seq, dtype=torch.bool)[None, None]
    assert not torch.allclose(
        draft(input_ids=ids, hidden_states=feats, attention_mask=diagonal).logits[:, 1:],
        draft(input_ids=ids, hidden_states=feats).logits[:, 1:],
    )


def test_save_excludes_target_heads_and_reloads_identically(tmp_path, target):
    draft = EagleDraftModel.from_target(target)
    ids, feats = _inputs(target)
    draft.save_pretrained(tmp_path)
    keys = set(load_file(tmp_path / "model.safetensors"))
    assert "fc.weight" in keys and "layers.0.mlp.gate_proj.weight" in keys
    assert not any(k.startswith(("embed_tokens", "lm_head")) for k in keys)

    reloaded = EagleDraftModel.from_pretrained(tmp_path, target_model=target)
    assert torch.equal(
        reloaded(input_ids=ids, hidden_states=feats).logits, draft(input_ids=ids, hidden_states=feats).logits
    )
    auto = AutoModel.from_pretrained(tmp_path)
    assert isinstance(auto, EagleDraftModel) and not auto.has_target_heads
    with pytest.raises(ValueError, match="attach_target"):
        auto(input_ids=ids, hidden_states=feats)
    auto.attach_target(target)
    assert torch.equal(auto(input_ids=ids, hidden_states=feats).logits, draft(input_ids=ids, hidden_states=feats).logits)


def test_save_target_heads_makes_a_standalone_checkpoint(tmp_path, llama_target):
    draft = EagleDraftModel.from_target(llama_target, save_target_heads=True)
    draft.save_pretrained(tmp_path)
    assert {"embed_tokens.weight", "lm_head.weight"} <= set(load_file(tmp_path / "model.safetensors"))
    standalone = EagleDraftModel.from_pretrained(tmp_path)
    ids, feats = _inputs(llama_target)
    torch.testing.assert_close(
        standalone(input_ids=ids, hidden_states=feats).logits, draft(input_ids=ids, hidden_states=feats).logits
    )


def test_overrides_and_unknown_fields(llama_target):
    draft = EagleDraftModel.from_target(llama_target, intermediate_size=48, fc_bias=True)
    assert draft.layers[0].mlp.gate_proj.out_features == 48 and draft.fc.bias is not None
    with pytest.raises(TypeError, match="unknown config fields"):
        EagleDraftModel.from_target(llama_target, not_a_field=1)


def test_mismatched_target_is_refused(llama_target):
    draft = EagleDraftModel.from_target(llama_target)
    wider = make_target("qwen2", hidden_size=48)
    with pytest.raises(ValueError, match="hidden size 48 != draft's 32"):
        draft.attach_target(wider)
    other_vocab = make_target("llama", vocab_size=120)
    with pytest.raises(ValueError, match="vocabulary 120 != draft's 97"):
        draft.check_compatible(other_vocab)
    ids, feats = _inputs(llama_target)
    with pytest.raises(ValueError, match="hidden_states have size"):
        draft(input_ids=ids, hidden_states=torch.randn(*ids.shape, 48))


@pytest.mark.parametrize(
    "not_causal_lm",
    [
        lambda: LlamaModel(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=4)),
        lambda: BertForMaskedLM(BertConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=4)),
        lambda: torch.nn.Linear(4, 4),
    ],
    ids=["llama-without-head", "bert-masked-lm", "plain-module"],
)
def test_non_causal_lm_target_is_refused(not_causal_lm):
    with pytest.raises(TypeError, match="decoder-only causal LM"):
        EagleDraftModel.from_target(not_causal_lm())


@pytest.mark.parametrize("field,value", [("hidden_size", 0), ("num_hidden_layers", -1), ("vocab_size", 2.5)])
def test_config_rejects_nonsense(field, value):
    # transformers 5 configs validate through `@strict`, which wraps the one-line cause
    with pytest.raises(StrictDataclassError, match=f"EagleDraftConfig.{field} must be a positive integer"):
        EagleDraftConfig(**{field: value})


def test_config_fields_are_dataclass_fields():
    names = {field.name for field in dataclasses.fields(EagleDraftConfig)}
    assert {"hidden_size", "num_hidden_layers", "rope_parameters", "draft_vocab_size", "fc_bias"} <= names
    config = EagleDraftConfig(hidden_size=64, num_attention_heads=4, intermediate_size=96, vocab_size=100)
    assert (config.head_dim, config.num_key_value_heads) == (16, 4)  # derived in __post_init__


def test_config_written_by_earlier_versions_still_loads(tmp_path):
    """Before the dataclass config, `tie_word_embeddings` held the target's flag and extra keys were kept as-is."""
    legacy = {
        "model_type": "eagle_draft", "architectures": ["EagleDraftModel"], "transformers_version": "4.57.0",
        "vocab_size": 100, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "hidden_act": "silu",
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "fc_bias": True,
        "tie_word_embeddings": True, "torch_dtype": "float32",
    }
    (tmp_path / "config.json").write_text(json.dumps(legacy))
    config = EagleDraftConfig.from_pretrained(tmp_path)
    assert (config.num_hidden_layers, config.num_key_value_heads, config.fc_bias) == (2, 2, True)
    assert config.rope_parameters["rope_theta"] == 500000.0
    assert config.target_tie_word_embeddings is True and config.tie_word_embeddings is False
    assert config.dtype == torch.float32
