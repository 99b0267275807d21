"""Targets beyond Llama/Qwen2/Mistral: tied embeddings (SmolLM2, Qwen2.5-0.5B, Llama-3.2, Gemma 3), q/k norms (Qwen3),
scaled embeddings with sliding-window layers (Gemma 3), a final logit soft-cap (Gemma 2) and a family whose config
names differ from Llama's (GPT-2: n_embd, n_head, learned positions). Speculative decoding must stay token-identical
to plain greedy with a plain, an adapted and a merged draft; the draft must never save or tie the target's tensors."""

from __future__ import annotations

import json

import peft
import pytest
import torch
from conftest import TINY
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

from eda_adapters import Eagle3DraftModel, EagleDraftModel, EdaConfig, TreeConfig, export_draft, speculative_generate

FAMILY_CONFIGS = {
    "llama-tied": ("llama", dict(TINY, tie_word_embeddings=True)),
    "qwen2-tied": ("qwen2", dict(TINY, tie_word_embeddings=True)),
    "qwen3": ("qwen3", dict(TINY, head_dim=8)),
    "gemma3": ("gemma3_text", dict(TINY, head_dim=8, sliding_window=64,
                                   layer_types=["sliding_attention", "full_attention"])),
    "gemma2-softcap": ("gemma2", dict(TINY, head_dim=8, final_logit_softcapping=5.0)),
    "gpt2": ("gpt2", dict(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=256,
                          bos_token_id=1, eos_token_id=2)),
}
NEW_TOKENS = 16
TREE = TreeConfig(depth=3, top_k=2, total_tokens=6)


def make_family_target(name: str, seed: int = 0):
    model_type, fields = FAMILY_CONFIGS[name]
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **fields)).eval()


@pytest.fixture(params=sorted(FAMILY_CONFIGS))
def family_target(request):
    return make_family_target(request.param)


def _prompt(seed: int = 1) -> torch.LongTensor:
    return torch.randint(3, 97, (1, 7), generator=torch.Generator().manual_seed(seed))


def _assert_lossless(target, draft) -> None:
    prompt = _prompt()
    reference = target.generate(prompt, do_sample=False, max_new_tokens=NEW_TOKENS)
    chain = target.generate(prompt, assistant_model=draft, do_sample=False, max_new_tokens=NEW_TOKENS)
    tree = speculative_generate(target, draft, prompt, tree=TREE, max_new_tokens=NEW_TOKENS)
    assert torch.equal(chain, reference), "the generate hook changed the greedy output"
    assert torch.equal(tree, reference), "tree decoding changed the greedy output"


def test_plain_adapted_and_merged_drafts_are_lossless(family_target):
    torch.manual_seed(0)
    plain = EagleDraftModel.from_target(family_target)
    _assert_lossless(family_target, plain)
    # a random private expert really changes the draft's outputs, so acceptance differs from the plain draft's
    adapted = peft.get_peft_model(EagleDraftModel.from_target(family_target), EdaConfig(init_private_weights="random"))
    adapted.eval()
    _assert_lossless(family_target, adapted)
    _assert_lossless(family_target, adapted.merge_and_unload())


@pytest.mark.parametrize("name", ["llama-tied", "qwen2-tied", "gemma3", "gpt2"])
def test_tied_target_heads_are_shared_not_saved(name, tmp_path):
    target = make_family_target(name)
    head, embed = target.get_output_embeddings(), target.get_input_embeddings()
    assert head.weight is embed.weight, "these test targets tie their head to the embedding"
    draft = EagleDraftModel.from_target(target)
    assert draft.config.target_tie_word_embeddings is True
    assert draft.config.tie_word_embeddings is False  # the draft ties nothing of its own
    assert draft.lm_head is head and draft.embed_tokens is embed
    draft.save_pretrained(tmp_path / "draft")
    saved = load_file(tmp_path / "draft" / "model.safetensors")
    assert not any(key.startswith(("embed_tokens", "lm_head")) for key in saved)
    assert json.loads((tmp_path / "draft" / "config.json").read_text())["target_tie_word_embeddings"] is True

    reloaded = EagleDraftModel.from_pretrained(tmp_path / "draft", target_model=target)
    ids, feats = _prompt()[:, :5], torch.randn(1, 5, target.config.hidden_size)
    torch.testing.assert_close(reloaded(input_ids=ids, hidden_states=feats).logits,
                               draft(input_ids=ids, hidden_states=feats).logits)
    # the target's tensors stay the target's: same objects, frozen, still tied
    assert reloaded.lm_head.weight is target.get_input_embeddings().weight
    assert not reloaded.lm_head.weight.requires_grad


def test_tied_target_with_saved_heads_round_trips_without_the_target(tmp_path):
    target = make_family_target("llama-tied")
    draft = EagleDraftModel.from_target(target, save_target_heads=True)
    draft.save_pretrained(tmp_path / "draft")
    saved = load_file(tmp_path / "draft" / "model.safetensors")
    assert "embed_tokens.weight" in saved and "lm_head.weight" not in saved  # one tensor, stored once
    alone = EagleDraftModel.from_pretrained(tmp_path / "draft")
    assert alone.lm_head.weight is alone.embed_tokens.weight
    ids, feats = _prompt()[:, :5], torch.randn(1, 5, 32)
    torch.testing.assert_close(alone(input_ids=ids, hidden_states=feats).logits,
                               draft(input_ids=ids, hidden_states=feats).logits)


def test_tied_target_adapter_save_load_and_export(tmp_path):
    target = make_family_target("qwen2-tied")
    torch.manual_seed(0)
    draft = EagleDraftModel.from_target(target)
    draft.save_pretrained(tmp_path / "draft")
    adapted = peft.get_peft_model(draft, EdaConfig(init_private_weights="random")).eval()
    adapted.save_pretrained(tmp_path / "adapter")
    reloaded = peft.PeftModel.from_pretrained(
        EagleDraftModel.from_pretrained(tmp_path / "draft", target_model=target), tmp_path / "adapter"
    ).eval()
    ids, feats = _prompt()[:, :5], torch.randn(1, 5, 32)
    torch.testing.assert_close(reloaded(input_ids=ids, hidden_states=feats).logits,
                               adapted(input_ids=ids, hidden_states=feats).logits)
    out = export_draft(reloaded, tmp_path / "served", engine="vllm")
    exported = load_file(out / "model.safetensors")
    assert "lm_head.weight" not in exported and "fc.weight" in exported


def test_draft_follows_the_target_dtype(tmp_path):
    """The README's GPU pattern: a float32 draft loaded for a bfloat16 target runs as it is."""
    target = make_family_target("llama-tied")
    EagleDraftModel.from_target(target).save_pretrained(tmp_path / "draft")
    target = target.to(torch.bfloat16)
    draft = EagleDraftModel.from_pretrained(tmp_path / "draft", target_model=target)
    assert draft.fc.weight.dtype == torch.bfloat16
    out = target.generate(_prompt(), assistant_model=draft, do_sample=False, max_new_tokens=4)
    assert out.shape[1] == 7 + 4


def test_incomplete_draft_checkpoint_is_refused(tmp_path):
    target = make_family_target("llama-tied")
    EagleDraftModel.from_target(target).save_pretrained(tmp_path / "draft")
    weights = load_file(tmp_path / "draft" / "model.safetensors")
    del weights["layers.0.mlp.down_proj.weight"]
    weights["layers.0.mlp.extra.weight"] = torch.zeros(2)
    save_file(weights, tmp_path / "draft" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing layers\.0\.mlp\.down_proj\.weight.*unexpected layers\.0\.mlp\.extra"):
        EagleDraftModel.from_pretrained(tmp_path / "draft", target_model=target)


def test_eagle3_drafts_are_lossless_on_every_family(family_target):
    """An EAGLE-3 draft (three states of a two-layer target: [0, 1, 2]) plain and EDA-wrapped, on each family."""
    torch.manual_seed(0)
    draft = Eagle3DraftModel.from_target(family_target, draft_vocab=range(3, 90), aux_layer_ids=[0, 1, 2])
    _assert_lossless(family_target, draft)
    _assert_lossless(family_target, peft.get_peft_model(draft, EdaConfig(init_private_weights="random")))
