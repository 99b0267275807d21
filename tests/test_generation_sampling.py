"""Speculative sampling through the generate hook preserves the target's distribution (statistical test on a tiny
vocabulary), and a wrong acceptance rule fails the same test."""

from __future__ import annotations

import pytest
import torch
import transformers.generation.utils as generation_utils
from sampling_checks import PROMPT, VOCAB, chi_square_p_value, target_joint, tiny_target_and_draft

from eda_adapters import Eagle3DraftModel, EagleDraftModel

TEMPERATURE, TOP_P = 0.8, 0.9
NEW_TOKENS = 3  # x1 comes from the prefill; x2, x3 are drafted and verified


@pytest.fixture(scope="module")
def tiny():
    return tiny_target_and_draft()


def _target_joint(target) -> torch.Tensor:
    return target_joint(target, PROMPT, VOCAB, TEMPERATURE, TOP_P)


def _sample_counts(target, draft, runs: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    counts = torch.zeros(VOCAB, VOCAB, VOCAB)
    for _ in range(runs):
        out = target.generate(
            PROMPT, assistant_model=draft, do_sample=True, temperature=TEMPERATURE, top_p=TOP_P, top_k=None,
            max_new_tokens=NEW_TOKENS, num_assistant_tokens=2,
        )
        x1, x2, x3 = out[0, PROMPT.shape[1] :].tolist()
        counts[x1, x2, x3] += 1
    return counts


def test_speculative_sampling_matches_target_distribution(tiny):
    target, draft = tiny
    probs = _target_joint(target)
    counts = _sample_counts(target, draft, runs=800, seed=0)
    assert chi_square_p_value(counts, probs) > 1e-3


def test_wrong_acceptance_rule_is_detected(tiny, monkeypatch):
    """Accepting every drafted token (ignoring the target) must fail the same test: the test has power."""
    target, draft = tiny

    def accept_everything(candidate_input_ids, candidate_logits, candidate_length, new_logits, **kwargs):
        bonus = torch.multinomial(new_logits[0, -1].softmax(-1), 1)[None]
        return torch.cat((candidate_input_ids[:, -candidate_length:], bonus), dim=1), candidate_length

    monkeypatch.setattr(generation_utils, "_speculative_sampling", accept_everything)
    counts = _sample_counts(target, draft, runs=200, seed=1)
    assert chi_square_p_value(counts, _target_joint(target)) < 1e-3


def test_reduced_draft_vocabulary_keeps_target_distribution(tiny):
    """A draft that can only propose half of the vocabulary (the rest has probability 0 under it) still samples
    exactly the target's distribution: the acceptance rule's residual covers the tokens the draft never proposes."""
    target, _ = tiny
    torch.manual_seed(0)
    draft = EagleDraftModel.from_target(target, draft_vocab=[0, 2, 5])
    counts = _sample_counts(target, draft, runs=800, seed=2)
    assert counts[:, 1].sum() > 0 or counts[:, 3].sum() > 0, "tokens outside the draft vocabulary must still occur"
    assert chi_square_p_value(counts, _target_joint(target)) > 1e-3


def test_eagle3_draft_keeps_target_distribution(tiny):
    """An EAGLE-3 draft (three aux states of a one-layer target, a reduced draft vocabulary) samples exactly the
    target's distribution through the same acceptance rule."""
    target, _ = tiny
    torch.manual_seed(0)
    draft = Eagle3DraftModel.from_target(target, draft_vocab=[0, 2, 3, 5], aux_layer_ids=[0, 1, 1])
    counts = _sample_counts(target, draft, runs=800, seed=3)
    assert chi_square_p_value(counts, _target_joint(target)) > 1e-3
