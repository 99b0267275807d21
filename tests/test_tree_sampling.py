"""Tree decoding with sampling keeps the target's distribution: the tensor rule of `TreeSampler`, and the explicit
recursive rejection sampling over siblings it stands for, pass a chi-square test against the exact distribution;
a rule that forgets to remove rejected siblings from the residual fails it (the test has power)."""

from __future__ import annotations

import pytest
import torch
from sampling_checks import PROMPT, VOCAB, chi_square_p_value, target_joint, tiny_target_and_draft

from eda_adapters import TreeConfig, speculative_generate
from eda_adapters.generation.tree_verification import AcceptedPath, TreeSampler

TEMPERATURE, TOP_P = 1.3, 0.9  # flat enough that a biased rule shows in 800 runs
TREE = TreeConfig(depth=2, top_k=2, total_tokens=4)  # x1 from the prefill; x2, x3 from one or two tree steps


@pytest.fixture(scope="module")
def tiny():
    return tiny_target_and_draft()


def _tree_counts(target, draft, runs: int, seed: int) -> tuple[torch.Tensor, list[int]]:
    torch.manual_seed(seed)
    counts, accepted = torch.zeros(VOCAB, VOCAB, VOCAB), []
    for _ in range(runs):
        out, stats = speculative_generate(target, draft, PROMPT, tree=TREE, max_new_tokens=3, do_sample=True,
                                          temperature=TEMPERATURE, top_p=TOP_P, return_stats=True)
        x1, x2, x3 = out[0, PROMPT.shape[1] :].tolist()
        counts[x1, x2, x3] += 1
        accepted += stats.accepted_lengths
    return counts, accepted


def _recursive_rejection(remove_rejected: bool):
    """SpecInfer/EAGLE-2 recursive rejection sampling, one sibling at a time, with q(x) = 1 for the deterministic
    top-k children. `remove_rejected=False` is the classic mistake: rejected siblings stay in the residual."""

    def accept(self, tree_tokens, parents, ancestors, logits) -> AcceptedPath:
        empty = torch.empty(logits.shape[0], 0, dtype=torch.long)
        probs = torch.softmax(self.warpers(empty, logits.float()), dim=-1)
        rows, tokens, row = [0], [], 0
        while True:
            residual = probs[row].clone()
            chosen = None
            for child in (parents == row - 1).nonzero().flatten().tolist():
                token = int(tree_tokens[child])
                if float(torch.rand(())) < residual[token]:  # min(1, p(x) / q(x)) with q(x) = 1
                    chosen = child
                    break
                if remove_rejected:  # norm(max(p - q, 0)) with q the point mass on the rejected token
                    residual[token] = 0
                    residual = residual / residual.sum()
            if chosen is None:
                tokens.append(int(torch.multinomial(residual, 1)))
                return AcceptedPath(rows=torch.tensor(rows), host_rows=rows, tokens=tokens,
                                    token_ids=torch.tensor(tokens))
            rows.append(chosen + 1)
            tokens.append(int(tree_tokens[chosen]))
            row = chosen + 1

    return accept


def test_tree_sampling_matches_target_distribution(tiny):
    target, draft = tiny
    counts, accepted = _tree_counts(target, draft, runs=800, seed=0)
    assert 0 < sum(accepted) < TREE.depth * len(accepted), "both acceptances and rejections must occur"
    assert chi_square_p_value(counts, target_joint(target, PROMPT, VOCAB, TEMPERATURE, TOP_P)) > 1e-3


def test_explicit_recursive_rejection_matches_too(tiny, monkeypatch):
    """The sibling-by-sibling rule the tensor rule stands for (see tree_verification.py) gives the same distribution."""
    target, draft = tiny
    monkeypatch.setattr(TreeSampler, "accept", _recursive_rejection(remove_rejected=True))
    counts, _ = _tree_counts(target, draft, runs=800, seed=1)
    assert chi_square_p_value(counts, target_joint(target, PROMPT, VOCAB, TEMPERATURE, TOP_P)) > 1e-3


def test_residual_keeping_rejected_siblings_is_detected(tiny, monkeypatch):
    target, draft = tiny
    monkeypatch.setattr(TreeSampler, "accept", _recursive_rejection(remove_rejected=False))
    counts, _ = _tree_counts(target, draft, runs=800, seed=2)
    assert chi_square_p_value(counts, target_joint(target, PROMPT, VOCAB, TEMPERATURE, TOP_P)) < 1e-3


def test_greedy_tree_ignores_sampling_warpers(tiny):
    """do_sample=False with a temperature is plain greedy tree decoding (as generate treats it)."""
    target, draft = tiny
    greedy = speculative_generate(target, draft, PROMPT, tree=TREE, max_new_tokens=6, do_sample=False,
                                  temperature=0.5)
    assert torch.equal(greedy, target.generate(PROMPT, do_sample=False, max_new_tokens=6))


def test_tree_stays_greedy_when_only_the_target_config_samples(tiny):
    """A target whose generation config samples (as many chat models ship) still decodes the tree greedily unless the
    call passes do_sample=True: benchmarks and research evaluations compare tree output with plain greedy."""
    target, draft = tiny
    config = target.generation_config
    saved = (config.do_sample, config.temperature)
    config.do_sample, config.temperature = True, 1.3
    try:
        greedy = [speculative_generate(target, draft, PROMPT, tree=TREE, max_new_tokens=6) for _ in range(3)]
    finally:
        config.do_sample, config.temperature = saved
    expected = target.generate(PROMPT, do_sample=False, max_new_tokens=6)
    assert all(torch.equal(out, expected) for out in greedy)
