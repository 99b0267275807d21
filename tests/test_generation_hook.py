"""The `generate(assistant_model=draft)` hook: generator selection, fallbacks, draft resolution, errors, schedules and
acceptance statistics."""

from __future__ import annotations

import pytest
import torch
from conftest import make_target
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation.candidate_generator import AssistedCandidateGenerator, PromptLookupCandidateGenerator
from transformers.generation.utils import GenerationMixin

from eda_adapters import EagleCandidateGenerator, EagleDraftModel, compute_tau, track_acceptance
from eda_adapters.generation import SpeculativeStats, install_generate_hook, prepare_draft
from eda_adapters.generation.candidate_generator import DEFAULT_NUM_DRAFT_TOKENS




@pytest.fixture
def draft(llama_target):
    torch.manual_seed(0)
    return EagleDraftModel.from_target(llama_target)


def _prompt(length: int = 6, seed: int = 0) -> torch.LongTensor:
    return torch.randint(3, 97, (1, length), generator=torch.Generator().manual_seed(seed))


def _spy_generators(monkeypatch) -> list:
    """Record the candidate generator every assisted `generate` call uses."""
    made = []
    hooked = GenerationMixin._get_candidate_generator

    def spy(self, *args, **kwargs):
        generator = hooked(self, *args, **kwargs)
        made.append(generator)
        return generator

    monkeypatch.setattr(GenerationMixin, "_get_candidate_generator", spy)
    return made


def test_hook_selects_eagle_generator_and_keeps_other_modes(llama_target, draft, monkeypatch):
    made = _spy_generators(monkeypatch)
    prompt = _prompt()
    reference = llama_target.generate(prompt, do_sample=False, max_new_tokens=12)

    assert torch.equal(llama_target.generate(prompt, assistant_model=draft, max_new_tokens=12), reference)
    assert isinstance(made[-1], EagleCandidateGenerator)

    # a vanilla assistant model still goes through transformers' own generator
    assistant = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=1)).eval()
    with track_acceptance() as vanilla_stats:
        out = llama_target.generate(prompt, assistant_model=assistant, max_new_tokens=12)
    assert torch.equal(out, reference)
    assert type(made[-1]) is AssistedCandidateGenerator
    assert vanilla_stats.num_steps > 0

    # prompt lookup keeps precedence, as in transformers
    with track_acceptance() as lookup_stats:
        out = llama_target.generate(prompt, prompt_lookup_num_tokens=3, max_new_tokens=12)
    assert torch.equal(out, reference)
    assert isinstance(made[-1], PromptLookupCandidateGenerator)
    # each step yields accepted + 1 tokens: the record accounts for every token after the prefill
    assert sum(n + 1 for n in lookup_stats.accepted_lengths) in (12, 11)


def test_install_is_idempotent():
    before = GenerationMixin._get_candidate_generator
    install_generate_hook()
    assert GenerationMixin._get_candidate_generator is before


def test_stats_count_every_generated_token(llama_target, draft):
    prompt = _prompt(seed=3)
    with track_acceptance() as stats:
        out = llama_target.generate(prompt, assistant_model=draft, max_new_tokens=15, num_assistant_tokens=3)
    new_tokens = out.shape[1] - prompt.shape[1]
    # the prefill yields one token; every verification step yields accepted + 1
    assert 1 + sum(n + 1 for n in stats.accepted_lengths) == new_tokens
    assert stats.tau == compute_tau(stats.accepted_lengths)
    assert all(d <= 3 for d in stats.drafted_lengths)
    assert all(a <= d for a, d in zip(stats.accepted_lengths, stats.drafted_lengths))


def test_num_draft_tokens_constant_default_and_heuristic(llama_target, draft, monkeypatch):
    made = _spy_generators(monkeypatch)
    prompt = _prompt(seed=4)
    reference = llama_target.generate(prompt, do_sample=False, max_new_tokens=20)

    with track_acceptance() as stats:
        out = llama_target.generate(prompt, assistant_model=draft, max_new_tokens=20, num_assistant_tokens=2)
    assert torch.equal(out, reference)
    # k tokens per step, fewer only when the length limit is near
    assert stats.drafted_lengths[:3] == [2, 2, 2] and max(stats.drafted_lengths) == 2

    with track_acceptance() as stats:
        llama_target.generate(prompt, assistant_model=draft, max_new_tokens=20)
    assert made[-1].num_assistant_tokens == DEFAULT_NUM_DRAFT_TOKENS
    assert stats.drafted_lengths[0] == DEFAULT_NUM_DRAFT_TOKENS

    # heuristic: a random draft is rejected at every step, so the chain shrinks to 1 token
    with track_acceptance() as stats:
        out = llama_target.generate(
            prompt, assistant_model=draft, max_new_tokens=20, num_assistant_tokens=6,
            num_assistant_tokens_schedule="heuristic",
        )
    assert torch.equal(out, reference)
    assert stats.drafted_lengths[0] == 6
    assert stats.drafted_lengths[1] == (8 if stats.accepted_lengths[0] == 6 else 5)
    assert min(stats.drafted_lengths) < 6


def test_confidence_threshold_stops_an_unsure_chain(llama_target, draft, monkeypatch):
    made = _spy_generators(monkeypatch)
    prompt = _prompt(seed=5)
    reference = llama_target.generate(prompt, do_sample=False, max_new_tokens=20)
    # transformers' placeholder default counts as unset: full chains
    with track_acceptance() as stats:
        llama_target.generate(prompt, assistant_model=draft, max_new_tokens=20, num_assistant_tokens=4)
    assert made[-1].confidence_threshold == 0.0 and stats.drafted_lengths[0] == 4
    # a random draft over 97 tokens is never 99% sure: one drafted token per step, output unchanged
    with track_acceptance() as stats:
        out = llama_target.generate(prompt, assistant_model=draft, max_new_tokens=20, num_assistant_tokens=4,
                                    assistant_confidence_threshold=0.99)
    assert torch.equal(out, reference)
    assert max(stats.drafted_lengths) == 1  # (0 only at the length limit)
    # with sampling too the chain stops at the first unsure token
    with track_acceptance() as stats:
        llama_target.generate(prompt, assistant_model=draft, max_new_tokens=8, num_assistant_tokens=4,
                              assistant_confidence_threshold=0.99, do_sample=True)
    assert max(stats.drafted_lengths) == 1  # (0 only at the length limit)
    with pytest.raises(ValueError, match="assistant_confidence_threshold"):
        llama_target.generate(prompt, assistant_model=draft, max_new_tokens=4, assistant_confidence_threshold=1.5)


def test_draft_without_heads_gets_the_target_heads(llama_target, draft, tmp_path):
    draft.save_pretrained(tmp_path)
    reloaded = EagleDraftModel.from_pretrained(tmp_path)
    assert not reloaded.has_target_heads
    prompt = _prompt(seed=5)
    out = llama_target.generate(prompt, assistant_model=reloaded, max_new_tokens=10)
    assert torch.equal(out, llama_target.generate(prompt, do_sample=False, max_new_tokens=10))
    assert reloaded.lm_head is llama_target.get_output_embeddings()


def test_bad_inputs_raise_clear_errors(llama_target, draft):
    other = EagleDraftModel.from_target(make_target("llama", hidden_size=48, num_attention_heads=4))
    with pytest.raises(ValueError, match="does not fit this target"):
        llama_target.generate(_prompt(), assistant_model=other, max_new_tokens=5)
    other_vocab = EagleDraftModel.from_target(make_target("qwen2", vocab_size=120))
    with pytest.raises(ValueError, match="vocabulary"):
        llama_target.generate(_prompt(), assistant_model=other_vocab, max_new_tokens=5)
    with pytest.raises(ValueError, match="batch_size = 1"):
        llama_target.generate(torch.randint(3, 97, (2, 5)), assistant_model=draft, max_new_tokens=5)
    with pytest.raises(TypeError, match="EagleDraftModel"):
        prepare_draft(torch.nn.Linear(2, 2), llama_target)


def test_compute_tau():
    assert compute_tau([0, 2, 4]) == pytest.approx(3.0)
    assert compute_tau([]) == 0.0
    with pytest.raises(ValueError):
        compute_tau([1, -1])
    stats = SpeculativeStats()
    stats.record(2, 4)
    stats.record(0, 4)
    assert stats.tau == 2.0 and stats.num_steps == 2 and stats.acceptance_rate == 0.25


def test_generate_options_still_work(llama_target, draft):
    """return_dict_in_generate / output_scores / output_hidden_states / streamer go through the hook untouched."""
    from transformers.generation.streamers import BaseStreamer

    class Collect(BaseStreamer):
        def __init__(self):
            self.tokens = []

        def put(self, value):
            self.tokens += value.flatten().tolist()

        def end(self):
            pass

    prompt = _prompt(seed=6)
    reference = llama_target.generate(prompt, do_sample=False, max_new_tokens=8)
    streamer = Collect()
    out = llama_target.generate(
        prompt, assistant_model=draft, max_new_tokens=8, return_dict_in_generate=True, output_scores=True,
        output_hidden_states=True, streamer=streamer,
    )
    assert torch.equal(out.sequences, reference)
    assert len(out.scores) == 8
    assert len(out.hidden_states[0]) == llama_target.config.num_hidden_layers + 1  # all layers kept when asked
    assert streamer.tokens[prompt.shape[1]:] == reference[0, prompt.shape[1]:].tolist()
