"""Lossless decoding with EAGLE-3 drafts: the generate hook (chain), tree decoding and replay reproduce plain greedy on
tied and untied targets of two families, plain, EDA-wrapped and merged; EDA adapters on EAGLE-3 drafts keep every PEFT
verb; the target returns only the states the draft reads."""

from __future__ import annotations

import json

import peft
import pytest
import torch
import torch.nn.functional as F
from conftest import make_target

from eda_adapters import (
    Eagle3DraftModel,
    EagleDraftModel,
    EdaConfig,
    EdaInputError,
    TreeConfig,
    speculative_generate,
    track_acceptance,
)
from eda_adapters.generation.replay import greedy_references, replay_acceptance
from eda_adapters.research.toys import greedy_continuations

LAYERS = 8
NEW_TOKENS = 20
TREE = TreeConfig(depth=4, top_k=3, total_tokens=12)


def fit_eagle3(target, draft, sequences: torch.LongTensor, steps: int = 60, lr: float = 1e-2) -> list[float]:
    """Teacher-forced next-token cross-entropy over the draft vocabulary: pair (aux_t, token_{t+1}) predicts
    token_{t+2}; tokens outside the draft vocabulary are not scored. Only trainable parameters move."""
    base = draft.get_base_model() if isinstance(draft, peft.PeftModel) else draft
    with torch.no_grad():
        aux = base.target_features(target(sequences, output_hidden_states=base.hidden_state_indices).hidden_states)
    to_draft = torch.full((base.config.vocab_size,), -100, dtype=torch.long)
    to_draft[base.draft_token_ids] = torch.arange(base.config.draft_vocab_size)
    labels = to_draft[sequences[:, 2:]]
    optimizer = torch.optim.AdamW([p for p in draft.parameters() if p.requires_grad], lr=lr)
    losses = []
    draft.train()
    for _ in range(steps):
        logits = draft(input_ids=sequences[:, 1:-1], hidden_states=aux[:, :-2]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    draft.eval()
    return losses


def _prompts(num: int = 3) -> list[torch.LongTensor]:
    generator = torch.Generator().manual_seed(11)
    return [torch.randint(3, 97, (1, 5 + i), generator=generator) for i in range(num)]


def _check_lossless(target, draft, prompts: list[torch.LongTensor]) -> tuple[float, float]:
    """Chain and tree outputs equal plain greedy, and replay predicts their acceptance exactly; returns the taus."""
    chain_taus, tree_taus = [], []
    references = greedy_references(target, prompts, NEW_TOKENS, hidden_state_indices=[2, 4, 5])
    for prompt, reference in zip(prompts, references):
        plain = target.generate(prompt, do_sample=False, max_new_tokens=NEW_TOKENS)
        with track_acceptance() as chain_stats:
            chain = target.generate(prompt, assistant_model=draft, do_sample=False, max_new_tokens=NEW_TOKENS)
        tree, tree_stats = speculative_generate(
            target, draft, prompt, tree=TREE, max_new_tokens=NEW_TOKENS, return_stats=True
        )
        assert torch.equal(chain, plain), "chain decoding with an EAGLE-3 draft changed the greedy output"
        assert torch.equal(tree, plain), "tree decoding with an EAGLE-3 draft changed the greedy output"
        assert replay_acceptance(draft, target, reference).accepted_lengths == chain_stats.accepted_lengths
        assert replay_acceptance(draft, target, reference, tree=TREE).accepted_lengths == tree_stats.accepted_lengths
        chain_taus.append(chain_stats.tau)
        tree_taus.append(tree_stats.tau)
    return sum(chain_taus) / len(chain_taus), sum(tree_taus) / len(tree_taus)


@pytest.fixture(scope="module", params=[("llama", True), ("llama", False), ("qwen2", True), ("qwen2", False)], ids=str)
def fitted(request):
    family, tied = request.param
    target = make_target(family, num_hidden_layers=LAYERS, initializer_range=0.1, tie_word_embeddings=tied)
    torch.manual_seed(0)
    draft = Eagle3DraftModel.from_target(target, draft_vocab=range(3, 97))
    sequences = greedy_continuations(target, torch.randint(3, 97, (24, 6), generator=torch.Generator().manual_seed(5)), 20)
    losses = fit_eagle3(target, draft, sequences)
    assert losses[-1] < 0.5 * losses[0]
    # prompts the draft was fitted on: acceptance shows the draft proposes; losslessness does not depend on it
    return target, draft, sequences, [row[None, :6] for row in sequences[:3]]


def test_fitted_eagle3_draft_is_lossless_and_accepted(fitted):
    target, draft, _, prompts = fitted
    chain_tau, tree_tau = _check_lossless(target, draft, prompts)
    assert chain_tau > 1.5 and tree_tau > 1.5, (chain_tau, tree_tau)  # the draft does propose accepted tokens


def test_eda_wrapped_and_merged_eagle3_drafts_are_lossless(fitted):
    target, draft, sequences, prompts = fitted
    model = peft.get_peft_model(draft, EdaConfig(init_private_weights="random"))
    fit_eagle3(target, model, sequences, steps=20, lr=3e-3)
    _check_lossless(target, model, prompts + _prompts(1))
    ids = torch.randint(3, 97, (1, 7))
    with torch.no_grad():
        aux = draft.target_features(target(ids, output_hidden_states=draft.hidden_state_indices).hidden_states)
        wrapped = model(input_ids=ids, hidden_states=aux).logits
        merged = model.merge_and_unload()
        torch.testing.assert_close(merged(input_ids=ids, hidden_states=aux).logits, wrapped, atol=1e-5, rtol=1e-5)
    assert isinstance(merged, Eagle3DraftModel) and merged.config.intermediate_size == 2 * 64
    _check_lossless(target, merged, prompts + _prompts(1))


def test_peft_verbs_on_an_eagle3_draft(tmp_path):
    target = make_target("llama", num_hidden_layers=LAYERS)
    torch.manual_seed(0)
    draft = Eagle3DraftModel.from_target(target)
    model = peft.get_peft_model(draft, EdaConfig(init_private_weights="random"), adapter_name="code")
    model.add_adapter("math", EdaConfig(init_private_weights="random", private_intermediate_size=16))
    assert model.peft_config["code"].draft_model_type == "eagle3_draft"
    ids = torch.randint(3, 97, (1, 6))
    with torch.no_grad():
        aux = draft.target_features(target(ids, output_hidden_states=draft.hidden_state_indices).hidden_states)

        def logits():
            return model(input_ids=ids, hidden_states=aux).logits

        model.set_adapter("code")
        out_a = logits()
        model.set_adapter("math")
        out_b = logits()
        with model.disable_adapter():
            shared = logits()
    assert not torch.allclose(out_a, out_b) and not torch.allclose(out_a, shared)
    model.save_pretrained(tmp_path)
    torch.manual_seed(0)  # the same shared draft again
    reloaded = peft.PeftModel.from_pretrained(Eagle3DraftModel.from_target(target), tmp_path / "math", adapter_name="math")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids, hidden_states=aux).logits, out_b)


def test_adapters_are_refused_across_draft_architectures(tmp_path):
    target = make_target("llama", num_hidden_layers=LAYERS)
    eagle3 = peft.get_peft_model(Eagle3DraftModel.from_target(target), EdaConfig())
    eagle3.save_pretrained(tmp_path / "e3")
    torch.manual_seed(0)
    eagle1 = peft.get_peft_model(EagleDraftModel.from_target(target), EdaConfig())
    eagle1.save_pretrained(tmp_path / "e1")
    with pytest.raises(EdaInputError, match="made for an EAGLE-3 draft .* this draft is EAGLE-1"):
        peft.PeftModel.from_pretrained(EagleDraftModel.from_target(target), tmp_path / "e3")
    with pytest.raises(EdaInputError, match="made for an EAGLE-1 draft .* this draft is EAGLE-3"):
        peft.PeftModel.from_pretrained(Eagle3DraftModel.from_target(target), tmp_path / "e1")
    # an adapter saved before draft_model_type existed was made for an EAGLE-1 draft, the only one there was
    config_file = tmp_path / "e1" / "adapter_config.json"
    config_file.write_text(json.dumps({k: v for k, v in json.loads(config_file.read_text()).items()
                                       if k != "draft_model_type"}))
    with pytest.raises(EdaInputError, match="made for an EAGLE-1 draft .* this draft is EAGLE-3"):
        peft.PeftModel.from_pretrained(Eagle3DraftModel.from_target(target), tmp_path / "e1")
    torch.manual_seed(0)
    assert peft.PeftModel.from_pretrained(EagleDraftModel.from_target(target), tmp_path / "e1").peft_config[
        "default"].draft_model_type == "eagle_draft"


def test_the_target_returns_only_the_states_the_draft_reads(monkeypatch):
    target = make_target("llama", num_hidden_layers=LAYERS)
    draft = Eagle3DraftModel.from_target(target)
    seen = []
    forward = type(target).forward

    def spy(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        seen.append([i for i, state in enumerate(out.hidden_states or ()) if state is not None])
        return out

    monkeypatch.setattr(type(target), "forward", spy)
    target.generate(_prompts(1)[0], assistant_model=draft, do_sample=False, max_new_tokens=6)
    assert seen and all(kept == [2, 4, 5] for kept in seen), seen
    with pytest.raises(EdaInputError, match=r"hidden states \[-1\], but this draft reads \[2, 4, 5\]"):
        replay_acceptance(draft, target, greedy_references(target, _prompts(1), 4)[0])
