"""The EAGLE-3 draft: its forward against an independent plain-torch forward of the architecture, the draft vocabulary,
save/load, every family and tied/untied targets, and the one-line errors for bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import make_target
from safetensors.torch import load_file

from eda_adapters import Eagle3DraftConfig, Eagle3DraftModel, EdaInputError

LAYERS = 8  # enough target layers for the default aux states [2, L//2, L-3]


def eagle3_target(family: str = "llama", **overrides):
    return make_target(family, num_hidden_layers=LAYERS, **overrides)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    dim = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim)
    angles = positions[:, None].float() * inv_freq[None]
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    rotated = torch.cat((-x[..., dim // 2 :], x[..., : dim // 2]), -1)
    return x * cos + rotated * sin


def reference_forward(weights: dict, config: Eagle3DraftConfig, embeds: torch.Tensor, fused_in: torch.Tensor):
    """EAGLE-3 as the issue describes it, from the raw weights: fc (skipped for width-H inputs), one layer whose q/k/v
    read [input_layernorm(embedding), hidden_norm(fused)] with the un-normed fused state as the residual, SwiGLU MLP,
    final norm and the draft's own head."""
    eps, heads, kv_heads = config.rms_norm_eps, config.num_attention_heads, config.num_key_value_heads
    head_dim, seq = config.head_dim, embeds.shape[1]
    fused = fused_in @ weights["fc.weight"].T if fused_in.shape[-1] != config.hidden_size else fused_in
    x = torch.cat(
        (_rms(embeds, weights["midlayer.input_layernorm.weight"], eps),
         _rms(fused, weights["midlayer.hidden_norm.weight"], eps)), -1
    )

    def project(name: str, n: int) -> torch.Tensor:
        return (x @ weights[f"midlayer.self_attn.{name}_proj.weight"].T).view(1, seq, n, head_dim).transpose(1, 2)

    positions = torch.arange(seq)
    theta = config.rope_parameters["rope_theta"]
    q, k, v = _rope(project("q", heads), positions, theta), _rope(project("k", kv_heads), positions, theta), project(
        "v", kv_heads
    )
    k, v = k.repeat_interleave(heads // kv_heads, 1), v.repeat_interleave(heads // kv_heads, 1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
    scores = scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf"))
    attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(1, seq, heads * head_dim)
    h = fused + attended @ weights["midlayer.self_attn.o_proj.weight"].T
    normed = _rms(h, weights["midlayer.post_attention_layernorm.weight"], eps)
    mlp = (F.silu(normed @ weights["midlayer.mlp.gate_proj.weight"].T) * (normed @ weights["midlayer.mlp.up_proj.weight"].T))
    h = h + mlp @ weights["midlayer.mlp.down_proj.weight"].T
    return h, _rms(h, weights["norm.weight"], eps) @ weights["lm_head.weight"].T


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_forward_matches_a_plain_torch_forward_of_the_architecture(family):
    target = eagle3_target(family)
    torch.manual_seed(1)
    draft = Eagle3DraftModel.from_target(target, draft_vocab=torch.arange(0, 97, 3), head_init="random").eval()
    for p in draft.parameters():  # norms away from 1 so that each one is checked
        p.data.add_(0.05 * torch.randn_like(p))
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        states = target(ids, output_hidden_states=draft.hidden_state_indices).hidden_states
        aux = draft.target_features(states)
        out = draft(input_ids=ids, hidden_states=aux)
        weights = {k: v for k, v in draft.state_dict().items() if not k.startswith("embed_tokens")}
        embeds = target.get_input_embeddings()(ids)
        hidden, logits = reference_forward(weights, draft.config, embeds, aux)
        torch.testing.assert_close(out.last_hidden_state, hidden, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=1e-5)
        # the aux input is the three chosen states, low to high, each the state entering that layer
        everything = target(ids, output_hidden_states=True).hidden_states
        assert draft.hidden_state_indices == [2, LAYERS // 2, LAYERS - 3]
        torch.testing.assert_close(aux, torch.cat([everything[i] for i in (2, 4, 5)], -1))
        # a later step reads the layer's own pre-norm output (width H): fc is skipped
        again = draft(input_ids=ids, hidden_states=out.last_hidden_state)
        hidden2, logits2 = reference_forward(weights, draft.config, embeds, out.last_hidden_state)
        torch.testing.assert_close(again.logits, logits2, atol=1e-5, rtol=1e-5)


def test_cached_steps_equal_one_full_forward(llama_target):
    target = eagle3_target()
    draft = Eagle3DraftModel.from_target(target).eval()
    ids = torch.randint(0, 97, (2, 8))
    with torch.no_grad():
        aux = draft.target_features(target(ids, output_hidden_states=draft.hidden_state_indices).hidden_states)
        full = draft(input_ids=ids, hidden_states=aux)
        first = draft(input_ids=ids[:, :5], hidden_states=aux[:, :5], use_cache=True)
        rest = draft(input_ids=ids[:, 5:], hidden_states=aux[:, 5:], past_key_values=first.past_key_values)
    torch.testing.assert_close(torch.cat((first.logits, rest.logits), 1), full.logits, atol=1e-5, rtol=1e-5)


def test_draft_vocabulary_maps_and_head_rows():
    target = eagle3_target()
    vocab = torch.tensor([50, 3, 7, 96, 20])
    draft = Eagle3DraftModel.from_target(target, draft_vocab=vocab)
    ids = vocab.sort().values
    assert draft.config.draft_vocab_size == 5 and draft.d2t.dtype == torch.long
    assert torch.equal(torch.arange(5) + draft.d2t, ids)  # target id = i + d2t[i]
    assert draft.t2d.dtype == torch.bool and draft.t2d.sum() == 5 and draft.t2d[ids].all()
    assert torch.equal(draft.lm_head.weight, target.get_output_embeddings().weight[ids])
    logits = torch.randn(1, 2, 5)
    full = draft.target_vocab_logits(logits)
    assert full.shape == (1, 2, 97)
    assert torch.equal(full[..., ids], logits) and torch.isinf(full).sum() == 2 * 92
    random_head = Eagle3DraftModel.from_target(target, draft_vocab=vocab, head_init="random")
    assert not torch.equal(random_head.lm_head.weight, draft.lm_head.weight)


@pytest.mark.parametrize("tied", [True, False])
def test_save_load_round_trip_without_the_targets_embedding(tmp_path, tied):
    target = eagle3_target("qwen2", tie_word_embeddings=tied)
    draft = Eagle3DraftModel.from_target(target, draft_vocab=range(40)).eval()
    draft.save_pretrained(tmp_path)
    keys = set(load_file(tmp_path / "model.safetensors"))
    assert "embed_tokens.weight" not in keys and {"fc.weight", "d2t", "t2d", "lm_head.weight", "norm.weight"} <= keys
    assert {k for k in keys if k.startswith("midlayer.")} == {
        f"midlayer.{name}.weight"
        for name in ("hidden_norm", "input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                     "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    }
    loaded = Eagle3DraftModel.from_pretrained(tmp_path, target_model=target).eval()
    assert loaded.config.target_tie_word_embeddings is tied and loaded.config.tie_word_embeddings is False
    ids = torch.randint(0, 97, (1, 6))
    with torch.no_grad():
        aux = draft.target_features(target(ids, output_hidden_states=draft.hidden_state_indices).hidden_states)
        assert torch.equal(loaded(input_ids=ids, hidden_states=aux).logits, draft(input_ids=ids, hidden_states=aux).logits)
    assert loaded.d2t.dtype == torch.long and torch.equal(loaded.d2t, draft.d2t)


def test_bad_input_gets_one_line(tmp_path):
    target = eagle3_target()
    with pytest.raises(Exception, match=r"aux_layer_ids|hidden_states indices"):
        Eagle3DraftModel.from_target(target, aux_layer_ids=[1, 3, 9])
    for layers in (2, 6):  # [2, 1, -1] and [2, 3, 3]: out of range, repeated
        with pytest.raises(EdaInputError, match="too few for the default aux states"):
            Eagle3DraftModel.from_target(make_target("llama", num_hidden_layers=layers))
    assert Eagle3DraftModel.from_target(make_target("llama", num_hidden_layers=7)).hidden_state_indices == [2, 3, 4]
    draft = Eagle3DraftModel.from_target(target)
    with pytest.raises(EdaInputError, match="target_hidden_size"):
        draft.attach_target(make_target("llama", num_hidden_layers=LAYERS, hidden_size=48, num_attention_heads=4))
    with pytest.raises(EdaInputError, match=r"out of range for a target of 2 layers"):
        draft.attach_target(make_target("llama"))
    with pytest.raises(EdaInputError, match="reads 96 .* or 32"):
        draft(input_ids=torch.zeros(1, 3, dtype=torch.long), hidden_states=torch.zeros(1, 3, 64))
    # a checkpoint whose d2t does not describe draft_vocab_size target ids
    small = Eagle3DraftModel.from_target(target, draft_vocab=range(10))
    small.d2t[3] = 40
    small.save_pretrained(tmp_path)
    with pytest.raises(EdaInputError, match="vocabulary maps do not agree with draft_vocab_size=10"):
        Eagle3DraftModel.from_pretrained(tmp_path)


def test_draft_vocabulary_from_answer_token_counts():
    """The draft vocabulary comes from counts at the loss-masked (answer) positions: prompt tokens do not count."""
    from eda_adapters.data import most_frequent_tokens

    target = eagle3_target()
    rows = [
        {"input_ids": [90, 91, 92, 10, 11, 11], "loss_mask": [0, 0, 0, 1, 1, 1]},
        {"input_ids": [90, 93, 12, 11, 12], "loss_mask": [0, 0, 1, 1, 1]},
    ]
    vocab = most_frequent_tokens(rows, size=3, vocab_size=97)
    draft = Eagle3DraftModel.from_target(target, draft_vocab=vocab)
    assert draft.t2d.nonzero().flatten().tolist() == [10, 11, 12]
    assert torch.equal(draft.draft_token_ids, torch.tensor([10, 11, 12]))
