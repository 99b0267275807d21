"""The draft's transformers-5 conventions: attention dispatch, masks, gradient checkpointing, strict arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_target

from eda_adapters import EagleDraftModel
from eda_adapters.errors import EdaInputError
from eda_adapters.models.eagle.modeling_eagle import apply_rotary, build_attention_mask


def _draft(attn_implementation: str = "sdpa", kv_heads: int = 2) -> EagleDraftModel:
    target = make_target("llama", num_key_value_heads=kv_heads)
    draft = EagleDraftModel.from_target(target, num_layers=2).eval()
    draft.set_attn_implementation(attn_implementation)
    return draft


def _inputs(draft: EagleDraftModel, batch: int = 3, seq: int = 6) -> dict:
    torch.manual_seed(1)
    return {
        "input_ids": torch.randint(0, draft.config.vocab_size, (batch, seq)),
        "hidden_states": torch.randn(batch, seq, draft.config.hidden_size),
    }


def _reference_attention(attn, hidden, cos_sin, mask):
    """The draft's attention written out with plain torch SDPA: repeated KV heads and a boolean mask."""
    batch, seq, _ = hidden.shape
    q = attn.q_proj(hidden).view(batch, seq, attn.num_heads, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(hidden).view(batch, seq, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(hidden).view(batch, seq, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
    q, k = apply_rotary(q, *cos_sin), apply_rotary(k, *cos_sin)
    groups = attn.num_heads // attn.num_kv_heads
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.o_proj(out.transpose(1, 2).reshape(batch, seq, -1))


def test_sdpa_is_bit_identical_to_plain_sdpa_with_a_causal_boolean_mask():
    draft = _draft("sdpa")
    attn = draft.layers[0].self_attn
    hidden = torch.randn(2, 5, draft.config.hidden_size)
    position_ids = torch.arange(5).expand(2, 5)
    cos_sin = draft.rotary_emb(hidden, position_ids)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()[None, None].expand(2, 1, 5, 5)
    with torch.no_grad():
        mask = build_attention_mask(draft.config, hidden, None, None)
        ours = attn(hidden, cos_sin, mask)
        reference = _reference_attention(attn, hidden, cos_sin, causal)
    assert mask.dtype == torch.bool and torch.equal(mask, causal)
    assert torch.equal(ours, reference)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_eager_and_sdpa_agree_with_padding_and_a_cache(kv_heads):
    outputs = {}
    for implementation in ("eager", "sdpa"):
        draft = _draft(implementation, kv_heads)
        assert draft.config._attn_implementation == implementation
        inputs = _inputs(draft)
        padding = torch.ones(3, 6, dtype=torch.long)
        padding[0, :2] = 0
        with torch.no_grad():
            full = draft(**inputs, attention_mask=padding).logits
            prefix = draft(input_ids=inputs["input_ids"][:, :4], hidden_states=inputs["hidden_states"][:, :4],
                           attention_mask=padding[:, :4], use_cache=True)
            step = draft(input_ids=inputs["input_ids"][:, 4:5], hidden_states=inputs["hidden_states"][:, 4:5],
                         attention_mask=padding[:, :5], past_key_values=prefix.past_key_values, use_cache=True)
        assert torch.isfinite(full).all()  # fully padded rows must not leak NaN
        torch.testing.assert_close(step.logits[:, 0], full[:, 4], atol=1e-5, rtol=1e-5)
        outputs[implementation] = full[padding.bool()]
    torch.testing.assert_close(outputs["eager"], outputs["sdpa"], atol=1e-5, rtol=1e-5)


def test_tree_mask_works_in_eager_and_is_refused_by_flash_kernels():
    draft = _draft("eager")
    inputs = _inputs(draft, batch=1, seq=3)
    tree = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=torch.bool)[None, None]
    with torch.no_grad():
        eager = draft(**inputs, attention_mask=tree, position_ids=torch.tensor([[0, 1, 1]])).logits
        draft.set_attn_implementation("sdpa")
        sdpa = draft(**inputs, attention_mask=tree, position_ids=torch.tensor([[0, 1, 1]])).logits
    torch.testing.assert_close(eager, sdpa, atol=1e-5, rtol=1e-5)
    draft.config._attn_implementation = "flash_attention_2"
    with pytest.raises(EdaInputError, match="4D attention mask"):
        draft(**inputs, attention_mask=tree)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        draft = _draft("sdpa").train()
        assert draft.supports_gradient_checkpointing
        if checkpointing:
            draft.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            assert all(layer.gradient_checkpointing for layer in draft.layers)
        draft(**_inputs(draft)).logits.square().mean().backward()
        grads.append(draft.fc.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_unknown_forward_arguments_are_refused():
    draft = _draft()
    with pytest.raises(TypeError, match="hidden_state"):
        draft(input_ids=torch.zeros(1, 2, dtype=torch.long), hidden_state=torch.zeros(1, 2, draft.config.hidden_size))


def test_flex_attention_agrees_with_sdpa():
    draft = _draft("sdpa")
    inputs = _inputs(draft, batch=2, seq=16)
    with torch.no_grad():
        sdpa = draft(**inputs).logits
        draft.set_attn_implementation("flex_attention")
        flex = draft(**inputs).logits
    assert draft.config._attn_implementation == "flex_attention"
    torch.testing.assert_close(flex, sdpa, atol=1e-5, rtol=1e-5)
