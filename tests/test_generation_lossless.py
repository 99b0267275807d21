"""Lossless greedy speculative decoding: the generate hook (chain) and tree decoding reproduce plain greedy exactly,
for random drafts, briefly trained drafts, PEFT-wrapped (EDA) drafts and merged drafts, on three target families."""

from __future__ import annotations

import peft
import pytest
import torch
from conftest import make_target

from eda_adapters import EagleDraftModel, EdaConfig, TreeConfig, speculative_generate, track_acceptance
from eda_adapters.research.toys import greedy_continuations, quick_fit_draft

NEW_TOKENS = 24
TREE = TreeConfig(depth=4, top_k=3, total_tokens=12)




def _prompts(num: int, seed: int = 123) -> list[torch.LongTensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 97, (1, 5 + i), generator=generator) for i in range(num)]


def _check_lossless(target, draft, prompts, **generate_kwargs) -> tuple[float, float]:
    """Assert chain and tree outputs equal plain greedy; return (chain tau, tree tau)."""
    chain_stats = []
    tree_stats = []
    for prompt in prompts:
        reference = target.generate(prompt, do_sample=False, max_new_tokens=NEW_TOKENS)
        with track_acceptance() as stats:
            chain = target.generate(
                prompt, assistant_model=draft, do_sample=False, max_new_tokens=NEW_TOKENS, **generate_kwargs
            )
        chain_stats.append(stats)
        tree, tree_stat = speculative_generate(
            target, draft, prompt, tree=TREE, max_new_tokens=NEW_TOKENS, return_stats=True
        )
        tree_stats.append(tree_stat)
        assert torch.equal(chain, reference), "chain speculative decoding changed the greedy output"
        assert torch.equal(tree, reference), "tree speculative decoding changed the greedy output"
    chain_tau = sum(s.tau for s in chain_stats) / len(chain_stats)
    tree_tau = sum(s.tau for s in tree_stats) / len(tree_stats)
    return chain_tau, tree_tau


@pytest.fixture(scope="module", params=["llama", "qwen2", "mistral"])
def fitted(request):
    """A target of each family with a random draft and a draft fitted for a few dozen steps on its greedy outputs."""
    target = make_target(request.param, initializer_range=0.1)
    torch.manual_seed(0)
    random_draft = EagleDraftModel.from_target(target)
    trained_draft = EagleDraftModel.from_target(target)
    prompts = torch.randint(3, 97, (32, 6), generator=torch.Generator().manual_seed(7))
    sequences = greedy_continuations(target, prompts, 24)
    losses = quick_fit_draft(target, trained_draft, sequences, steps=40)
    assert losses[-1] < losses[0]
    return target, random_draft, trained_draft


def test_random_draft_is_lossless(fitted):
    target, random_draft, _ = fitted
    _check_lossless(target, random_draft, _prompts(2), num_assistant_tokens=4)


def test_trained_draft_is_lossless_and_accepts(fitted):
    target, _, trained_draft = fitted
    chain_tau, tree_tau = _check_lossless(target, trained_draft, _prompts(3))
    # a fitted draft gets tokens accepted: more than one token per target forward on both paths
    assert chain_tau > 1.0
    assert tree_tau > 1.0


def test_eda_adapter_draft_and_merged_draft_are_lossless(llama_target):
    torch.manual_seed(0)
    base = EagleDraftModel.from_target(llama_target)
    config = EdaConfig(num_private_experts=1, num_experts_per_tok=1, init_private_weights="random")
    peft_draft = peft.get_peft_model(base, config)
    peft_draft.eval()
    prompts = _prompts(2, seed=5)
    _check_lossless(llama_target, peft_draft, prompts)

    # the active adapter is what the generator runs: its drafts differ from the adapter-disabled draft
    features = torch.randn(1, 4, 32)
    tokens = torch.randint(3, 97, (1, 4))
    with torch.no_grad():
        with_adapter = peft_draft.get_base_model()(input_ids=tokens, hidden_states=features).logits
        with peft_draft.disable_adapter():
            without = peft_draft.get_base_model()(input_ids=tokens, hidden_states=features).logits
    assert not torch.allclose(with_adapter, without)

    merged = peft_draft.merge_and_unload()
    assert isinstance(merged, EagleDraftModel)
    _check_lossless(llama_target, merged, prompts)


def test_trained_peft_draft_outperforms_nothing_and_stays_lossless():
    """A briefly fitted EDA adapter on a random shared draft: lossless, and the adapter alone lifts tau above 1."""
    target = make_target("qwen2", initializer_range=0.1)
    torch.manual_seed(1)
    base = EagleDraftModel.from_target(target)
    for param in base.parameters():
        param.requires_grad_(False)
    draft = peft.get_peft_model(base, EdaConfig(num_private_experts=1, num_experts_per_tok=1))
    prompts = torch.randint(3, 97, (32, 6), generator=torch.Generator().manual_seed(3))
    sequences = greedy_continuations(target, prompts, 24)
    quick_fit_draft(target, draft, sequences, steps=40)
    chain_tau, tree_tau = _check_lossless(target, draft, _prompts(2, seed=9))
    assert max(chain_tau, tree_tau) > 1.0


def test_single_branch_tree_equals_chain(fitted):
    """A tree with one branch per node is the draft's greedy chain: both paths must accept exactly the same."""
    target, _, trained_draft = fitted
    for prompt in _prompts(2, seed=11):
        with track_acceptance() as chain_stats:
            target.generate(prompt, assistant_model=trained_draft, max_new_tokens=NEW_TOKENS, num_assistant_tokens=3)
        _, tree_stats = speculative_generate(
            target, trained_draft, prompt, tree=TreeConfig(depth=3, top_k=1, total_tokens=3),
            max_new_tokens=NEW_TOKENS, return_stats=True,
        )
        # the chain drafts fewer tokens right before the length limit: compare the steps before it
        steps = len(chain_stats.accepted_lengths) - 2
        assert chain_stats.accepted_lengths[:steps] == tree_stats.accepted_lengths[:steps]


@torch.no_grad()
def test_drafted_chain_matches_uncached_rollout(fitted):
    """The chain generator and a one-branch tree propose exactly what the draft gives when it is re-run from scratch
    (no cache, default positions) on the prompt's true features followed by its own predicted features."""
    from transformers import GenerationConfig

    from eda_adapters.generation import EagleCandidateGenerator, TreeSpeculator

    target, _, draft = fitted
    k = 4
    prompt = _prompts(1, seed=21)[0]
    out = target(input_ids=prompt, output_hidden_states=True)
    root = out.logits[:, -1:].argmax(-1)
    features, tokens = out.hidden_states[-1], torch.cat((prompt[:, 1:], root), dim=1)
    reference, reference_logits = [], []
    for _ in range(k):
        step = draft(input_ids=tokens, hidden_states=features)
        reference_logits.append(step.logits[0, -1])
        reference.append(int(step.logits[0, -1].argmax()))
        features = torch.cat((features, step.last_hidden_state[:, -1:]), dim=1)
        tokens = torch.cat((tokens, torch.tensor([[reference[-1]]])), dim=1)

    generator = EagleCandidateGenerator(
        target, draft, GenerationConfig(num_assistant_tokens=k, max_length=100, do_sample=False)
    )
    candidates, logits = generator.get_candidates(
        torch.cat((prompt, root), dim=1), model_kwargs={}, model_outputs=out, is_first_iteration=False,
        n_last_matches=0,
    )
    assert candidates[0, prompt.shape[1] + 1 :].tolist() == reference
    torch.testing.assert_close(logits[0], torch.stack(reference_logits), atol=1e-4, rtol=1e-4)

    speculator = TreeSpeculator(target, draft, TreeConfig(depth=k, top_k=1, total_tokens=k))
    assert speculator.prefill(prompt[0]) == int(root)
    tree = speculator.grow_tree()
    assert tree.tokens.tolist() == reference
    reference_scores = torch.stack(
        [torch.log_softmax(lg.float(), -1)[tok] for lg, tok in zip(reference_logits, reference)]
    ).cumsum(0)
    torch.testing.assert_close(tree.scores, reference_scores, atol=1e-4, rtol=1e-4)


def test_routed_eda_adapter_is_lossless_through_the_hook_and_the_tree(llama_target):
    """Several private experts behind a top-2 router: each drafted token may take other experts, the caches of the
    chain and the tree must still agree with plain greedy."""
    torch.manual_seed(3)
    base = EagleDraftModel.from_target(llama_target)
    config = EdaConfig(num_private_experts=4, num_experts_per_tok=2, init_private_weights="random")
    routed = peft.get_peft_model(base, config).eval()
    assert routed.peft_config["default"].is_routed
    _check_lossless(llama_target, routed, _prompts(2, seed=9))

    # the router's choice changes the draft: the adapter is really in the path the generator runs
    features, tokens = torch.randn(1, 6, 32), torch.randint(3, 97, (1, 6))
    with torch.no_grad():
        with_adapter = routed.get_base_model()(input_ids=tokens, hidden_states=features).logits
        with routed.disable_adapter():
            without = routed.get_base_model()(input_ids=tokens, hidden_states=features).logits
    assert not torch.allclose(with_adapter, without)
