"""Replay gives exactly the accepted lengths that decoding records (chain through `generate`, EAGLE-2 tree), and
chain decoding stops at the target's end-of-sequence token like plain greedy does."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model

from eda_adapters import EagleDraftModel, EdaConfig, TreeConfig, speculative_generate
from eda_adapters.research.experiment.evaluation import measure_tau
from eda_adapters.generation.replay import greedy_reference, greedy_references, replay_acceptance
from eda_adapters.research.toys import greedy_continuations, quick_fit_draft

from conftest import VOCAB, make_target

CHAIN = dict(num_assistant_tokens=5, num_assistant_tokens_schedule="constant", do_sample=False)
TREES = [TreeConfig(depth=4, top_k=3, total_tokens=12), TreeConfig(depth=5, top_k=10, total_tokens=60)]


def fitted(family: str, draft_layers: int = 1, draft_vocab=None, eos_from_answers: bool = False):
    """A tiny target, a draft fitted on its greedy answers (so that it accepts something), and held-out prompts."""
    target = make_target(family, eos_token_id=None, bos_token_id=None, pad_token_id=None)
    target.generation_config.eos_token_id = None
    torch.manual_seed(1)
    train = greedy_continuations(target, torch.randint(0, VOCAB, (24, 6)), 32)
    kwargs = {} if draft_vocab is None else {"draft_vocab": draft_vocab}
    draft = EagleDraftModel.from_target(target, num_hidden_layers=draft_layers, **kwargs)
    quick_fit_draft(target, draft, train, steps=120, lr=3e-3)
    prompts = [torch.randint(0, VOCAB, (1, 5 + i)) for i in range(5)]
    if eos_from_answers:
        # an end-of-sequence token that the target's greedy answers reach half-way: decoding must stop there
        answers = greedy_continuations(target, torch.cat([p[:, :5] for p in prompts]), 30)[:, 5:]
        target.generation_config.eos_token_id = int(answers[0, 12])
    return target, draft.eval(), prompts


def assert_replay_matches_decoding(target, draft, prompts, max_new_tokens=30):
    for prompt in prompts:
        ref = greedy_reference(target, prompt, max_new_tokens)
        for tree in [None, *TREES]:
            _, decoded = speculative_generate(
                target, draft, prompt, tree=tree, max_new_tokens=max_new_tokens, return_stats=True,
                attention_mask=torch.ones_like(prompt), **({} if tree else CHAIN),
            )
            replayed = replay_acceptance(draft, target, ref, tree=tree, num_draft_tokens=5)
            assert replayed.accepted_lengths == decoded.accepted_lengths, (tree, prompt.shape)
            # drafting a few starts per pass (linear in the answer) replays the same steps as all in one pass
            for per_pass in (3, 1000):
                passes = replay_acceptance(draft, target, ref, tree=tree, num_draft_tokens=5, starts_per_pass=per_pass)
                assert passes.accepted_lengths == decoded.accepted_lengths, (tree, per_pass)


@pytest.mark.parametrize("family,draft_layers", [("llama", 1), ("qwen2", 2), ("mistral", 1)])
def test_replay_equals_decoding(family, draft_layers):
    target, draft, prompts = fitted(family, draft_layers)
    assert_replay_matches_decoding(target, draft, prompts)
    # the fitted draft accepts something, so equality is not the trivial all-zero case
    tau = measure_tau(draft, target, prompts, max_new_tokens=30, method="replay", tree=TREES[1]).tau
    assert tau > 1.3


def test_replay_equals_decoding_with_eos_reduced_vocab_and_adapter():
    target, draft, prompts = fitted("llama", draft_vocab=torch.arange(0, VOCAB, 2), eos_from_answers=True)
    refs = [greedy_reference(target, p, 30) for p in prompts]
    assert any(ref.answer_length < 30 for ref in refs)  # some answers do end at EOS
    assert_replay_matches_decoding(target, draft, prompts)
    adapted = get_peft_model(draft, EdaConfig(init_private_weights="random"))
    assert_replay_matches_decoding(target, adapted, prompts[:2])


def test_chain_decoding_stops_at_eos_like_plain_greedy():
    target, draft, prompts = fitted("llama", eos_from_answers=True)
    for prompt in prompts:
        plain = target.generate(prompt, do_sample=False, max_new_tokens=30, attention_mask=torch.ones_like(prompt))
        chained = speculative_generate(target, draft, prompt, max_new_tokens=30, **CHAIN)
        assert torch.equal(chained, plain)


def test_measure_tau_replay_and_decode_agree_and_reuse_references():
    target, draft, prompts = fitted("qwen2")
    refs = [greedy_reference(target, p, 24) for p in prompts]
    for tree in (None, TREES[0]):
        decoded = measure_tau(draft, target, prompts, tree=tree, max_new_tokens=24, method="decode")
        replayed = measure_tau(draft, target, prompts, tree=tree, max_new_tokens=24, method="replay", references=refs)
        assert replayed.per_prompt == decoded.per_prompt
        assert replayed.tau == decoded.tau and replayed.ci95 == decoded.ci95
    with pytest.raises(ValueError, match="method must be one of"):
        measure_tau(draft, target, prompts, method="simulate")


def test_replay_equals_decoding_with_a_routed_adapter():
    """Replay scores a routed EDA adapter (4 private experts, top-2) exactly as chain and tree decoding do."""
    target, draft, prompts = fitted("qwen2")
    torch.manual_seed(4)
    routed = get_peft_model(draft, EdaConfig(num_private_experts=4, num_experts_per_tok=2,
                                             init_private_weights="random")).eval()
    assert routed.peft_config["default"].is_routed
    assert_replay_matches_decoding(target, routed, prompts[:2])


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_batched_references_are_token_identical_to_one_at_a_time(family):
    target, _, prompts = fitted(family, eos_from_answers=True)
    torch.manual_seed(7)
    prompts = prompts + [torch.randint(0, VOCAB, (1, 3 + 2 * i)) for i in range(4)]  # ragged lengths
    batched = greedy_references(target, prompts, 30, batch_size=3)
    assert any(ref.answer_length < 30 for ref in batched)  # some rows stop at EOS while others go on
    for prompt, ref in zip(prompts, batched):
        plain = target.generate(prompt, do_sample=False, max_new_tokens=30, attention_mask=torch.ones_like(prompt))[0]
        assert torch.equal(ref.sequence, plain)
        assert ref.prompt_length == prompt.shape[1] and ref.features.shape[0] == plain.numel() - 1
        # features captured while generating == a teacher-forced forward over the finished answer, to rounding
        forced = target(input_ids=plain[None, :-1], output_hidden_states=True).hidden_states[-1][0]
        torch.testing.assert_close(ref.features, forced, atol=1e-4, rtol=1e-4)
