"""Shared fixtures: tiny random targets of several families, built from config (no download)."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny models run fastest on one thread, and CI's two cores are shared with the test process's own workers.
torch.set_num_threads(1)

VOCAB = 97
TINY = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)
FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
}


def make_target(family: str = "llama", seed: int = 0, **overrides) -> PreTrainedModel:
    """A tiny random causal LM of `family` in eval mode; deterministic for a given seed."""
    config_cls, model_cls = FAMILIES[family]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**{**TINY, **overrides}))
    return model.eval()


@pytest.fixture(params=sorted(FAMILIES))
def family(request) -> str:
    return request.param


@pytest.fixture
def target(family) -> PreTrainedModel:
    return make_target(family)


@pytest.fixture
def llama_target() -> PreTrainedModel:
    return make_target("llama")
