"""EAGLE-2 tree decoding internals: tree growth and selection, the tree attention mask, KV-cache consistency of target
and draft, stopping rules and errors."""

from __future__ import annotations

import pytest
import torch
from conftest import make_target

from eda_adapters import EagleDraftModel, TreeConfig, speculative_generate
from eda_adapters.generation import TreeSpeculator




@pytest.fixture
def pair(family):
    target = make_target(family)
    torch.manual_seed(0)
    return target, EagleDraftModel.from_target(target)


def _prompt(length: int = 7, seed: int = 0) -> torch.LongTensor:
    return torch.randint(3, 97, (1, length), generator=torch.Generator().manual_seed(seed))


def test_tree_shape_and_selection(llama_target):
    torch.manual_seed(0)
    speculator = TreeSpeculator(llama_target, EagleDraftModel.from_target(llama_target), TreeConfig(3, 4, 10))
    speculator.prefill(_prompt()[0])
    tree = speculator.grow_tree()
    # depth 1: top_k nodes; each deeper level: top_k expanded nodes x top_k children
    assert tree.tokens.numel() == 4 + 2 * 16
    assert int(tree.depths.max()) == 3
    assert bool((tree.parents < torch.arange(tree.tokens.numel())).all())  # parents come first
    child = tree.parents >= 0
    # cumulative log-probabilities never increase down a path
    assert bool((tree.scores[child] <= tree.scores[tree.parents[child]] + 1e-6).all())

    selected = tree.select(10)
    assert selected.tokens.numel() >= 10
    assert bool((selected.parents < torch.arange(selected.tokens.numel())).all())
    has_parent = selected.parents >= 0
    assert bool((selected.depths[has_parent] == selected.depths[selected.parents[has_parent]] + 1).all())
    assert bool((selected.depths[~has_parent] == 1).all())


@torch.no_grad()
def test_tree_attention_mask_reproduces_each_path(family, pair):
    """Every node's target logits in the tree forward equal those of a plain forward over prompt + its path."""
    target, draft = pair
    prompt = _prompt(6, seed=1)
    speculator = TreeSpeculator(target, draft, TreeConfig(depth=3, top_k=3, total_tokens=9))
    root = speculator.prefill(prompt[0])
    tree = speculator.grow_tree().select(9)
    captured = {}
    original = speculator._target_forward

    def capture(*args):
        captured["logits"], captured["features"] = original(*args)
        return captured["logits"], captured["features"]

    speculator._target_forward = capture
    speculator.step(root)
    for node in range(tree.tokens.numel()):
        path = tree.ancestors[node].nonzero().squeeze(-1)  # ancestors in topological order
        ids = torch.cat((prompt[0], torch.tensor([root]), tree.tokens[path]))
        reference = target(input_ids=ids[None]).logits[0, -1]
        torch.testing.assert_close(captured["logits"][1 + node], reference, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_caches_stay_consistent(family, pair):
    target, draft = pair
    prompt = _prompt(5, seed=2)
    speculator = TreeSpeculator(target, draft, TreeConfig(depth=3, top_k=3, total_tokens=8))
    generated = [speculator.prefill(prompt[0])]
    for _ in range(4):
        generated += speculator.step(generated[-1])
    sequence = torch.cat((prompt[0], torch.tensor(generated)))
    done = speculator.num_done
    assert done == len(sequence) - 1  # everything before the current root
    assert speculator.target_cache.get_seq_length() == done
    fresh = target(input_ids=sequence[None, :done], use_cache=True).past_key_values
    for kept, expected in zip(speculator.target_cache.layers, fresh.layers):
        torch.testing.assert_close(kept.keys, expected.keys, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(kept.values, expected.values, atol=1e-4, rtol=1e-4)
    # the draft's committed cache is what it would hold after reading the sequence with the target's features
    features = target(input_ids=sequence[None, :done], output_hidden_states=True).hidden_states[-1]
    reread = draft(input_ids=sequence[None, 1 : done + 1], hidden_states=features, use_cache=True)
    committed = speculator.draft_cache
    committed.crop(-(committed.get_seq_length() - done))
    for kept, expected in zip(committed.layers, reread.past_key_values.layers):
        torch.testing.assert_close(kept.keys, expected.keys, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(speculator.root_logits, reread.logits[0, -1], atol=1e-4, rtol=1e-4)


def test_stopping_rules_and_stats(llama_target):
    torch.manual_seed(0)
    draft = EagleDraftModel.from_target(llama_target)
    prompt = _prompt(seed=3)
    reference = llama_target.generate(prompt, do_sample=False, max_new_tokens=15, eos_token_id=None)
    out, stats = speculative_generate(
        llama_target, draft, prompt, tree=TreeConfig(2, 2, 4), max_new_tokens=15, eos_token_id=None, return_stats=True
    )
    assert torch.equal(out, reference)
    assert 1 + sum(n + 1 for n in stats.accepted_lengths) == 15
    # stop at an end-of-sequence token: pick a token the target does produce
    eos = int(reference[0, prompt.shape[1] + 4])
    out = speculative_generate(llama_target, draft, prompt, tree=TreeConfig(2, 2, 4), max_new_tokens=15,
                               eos_token_id=eos)
    assert torch.equal(out, llama_target.generate(prompt, do_sample=False, max_new_tokens=15, eos_token_id=eos))
    assert int(out[0, -1]) == eos

    # tree=None runs the generate hook and reports the same kind of stats
    chain, chain_stats = speculative_generate(llama_target, draft, prompt, max_new_tokens=15, eos_token_id=None,
                                              return_stats=True)
    assert torch.equal(chain, reference)
    assert chain_stats.num_steps > 0


def test_tree_errors(llama_target):
    draft = EagleDraftModel.from_target(llama_target)
    tree = TreeConfig(2, 2, 4)
    with pytest.raises(ValueError, match="batch size 1"):
        speculative_generate(llama_target, draft, torch.randint(3, 97, (2, 4)), tree=tree)
    with pytest.raises(ValueError, match="temperature > 0"):
        speculative_generate(llama_target, draft, _prompt(), tree=tree, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="temperature > 0"):
        speculative_generate(llama_target, draft, _prompt(), tree=tree, do_sample=True, temperature=-1.0)
    with pytest.raises(TypeError, match="unsupported arguments"):
        speculative_generate(llama_target, draft, _prompt(), tree=tree, num_beams=2)
    with pytest.raises(ValueError, match="exceeds the 6 nodes"):
        TreeConfig(depth=2, top_k=2, total_tokens=7)
    reduced = EagleDraftModel.from_target(llama_target, draft_vocab=[3, 5, 7])
    with pytest.raises(ValueError, match="vocabulary of 3 tokens"):
        speculative_generate(llama_target, reduced, _prompt(), tree=TreeConfig(2, 4, 4), do_sample=True)
    with pytest.raises(ValueError, match="padding"):
        speculative_generate(llama_target, draft, _prompt(), tree=tree, attention_mask=torch.tensor([[0] + [1] * 6]))
    with pytest.raises(ValueError, match=r"TreeConfig.depth must be an integer >= 1, got 0"):
        TreeConfig(depth=0)
    with pytest.raises(ValueError, match="does not fit"):
        speculative_generate(make_target("llama", hidden_size=48), draft, _prompt(), tree=tree)
    windowed = make_target("mistral", sliding_window=8)
    with pytest.raises(ValueError, match="sliding-window"):
        speculative_generate(windowed, EagleDraftModel.from_target(windowed), _prompt(), tree=tree, max_new_tokens=20)
    eager = make_target("llama", attn_implementation="eager")
    out = speculative_generate(eager, EagleDraftModel.from_target(eager), _prompt(), tree=tree, max_new_tokens=8)
    assert torch.equal(out, eager.generate(_prompt(), do_sample=False, max_new_tokens=8))


@torch.no_grad()
def test_multi_branch_draft_tree_matches_uncached_rollouts(llama_target):
    """Every expanded node's children scores equal those of the draft re-run from scratch along that node's path
    (checks the draft-side tree mask, positions and cache when several branches share one forward)."""
    torch.manual_seed(0)
    draft = EagleDraftModel.from_target(llama_target)
    prompt = _prompt(6, seed=4)
    speculator = TreeSpeculator(llama_target, draft, TreeConfig(depth=4, top_k=3, total_tokens=20))
    root = speculator.prefill(prompt[0])
    tree = speculator.grow_tree()
    features = llama_target(input_ids=prompt, output_hidden_states=True).hidden_states[-1][0]
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def rollout(node: int) -> tuple[torch.Tensor, torch.Tensor]:
        if node not in cache:
            path = tree.ancestors[node].nonzero().squeeze(-1).tolist()
            tokens = torch.cat((prompt[0, 1:], torch.tensor([root]), tree.tokens[path]))
            feats = [features, speculator.root_hidden[None]] + [rollout(a)[0][None] for a in path[:-1]]
            out = draft(input_ids=tokens[None], hidden_states=torch.cat(feats)[None])
            cache[node] = out.last_hidden_state[0, -1], torch.log_softmax(out.logits[0, -1].float(), -1)
        return cache[node]

    children = (tree.parents >= 0).nonzero().squeeze(-1)
    assert children.numel() > 0 and len(set(tree.parents[children].tolist())) > 1  # several expanded branches
    for child in children.tolist():
        parent = int(tree.parents[child])
        expected = rollout(parent)[1][tree.tokens[child]]
        torch.testing.assert_close(tree.scores[child] - tree.scores[parent], expected, atol=1e-4, rtol=1e-4)
