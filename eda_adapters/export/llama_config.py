"""What the EAGLE-1 and EAGLE-3 layouts share: the Llama fields of an exported `config.json`, and the checks of what
the engines' Llama layers accept."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import EdaInputError


def check_silu_mlp(config: Any, layers: str) -> None:
    """One-line error unless the draft's MLP runs SiLU, the only activation the engines' `layers` (Llama) run."""
    if config.hidden_act != "silu":
        raise EdaInputError(
            f"This draft's MLP uses hidden_act={config.hidden_act!r}; the engines' {layers} (Llama) layers only run "
            "'silu': export with format='hf' and serve it with eda_adapters instead."
        )


def checked_embedding(embed_weight: torch.Tensor, config: Any) -> torch.Tensor:
    """The target's input embedding to write as `embed_tokens.weight`, detached, after checking it fits the draft."""
    if tuple(embed_weight.shape) != (config.vocab_size, config.hidden_size):
        raise EdaInputError(
            f"embed_weight has shape {tuple(embed_weight.shape)}, expected (vocab_size, hidden_size) = "
            f"{(config.vocab_size, config.hidden_size)}: pass the embedding of the target this draft was built for."
        )
    return embed_weight.detach()


def llama_config_fields(config: Any, attention_bias: bool, fc_bias: bool, dtype: torch.dtype) -> dict[str, Any]:
    """The fields of a draft's `config.json` that transformers' `LlamaConfig` (4.x and 5.x), the engines' config
    readers and the EAGLE reference code understand (all but `architectures`). `fc_bias` says whether `fc.bias` is in
    the weights: the EAGLE reference loader builds `fc` with a bias unless `"bias": false` says otherwise (and would
    keep a random one)."""
    rope = dict(config.rope_parameters)
    rope_theta = float(rope.get("rope_theta", 10000.0))
    # transformers 4.x (which engines pin) reads `rope_theta` + `rope_scaling`; 5.x reads `rope_parameters`.
    # transformers < 4.45 and the EAGLE reference code read the scaling kind as `rope_scaling["type"]`
    rope_scaling = None
    if rope.get("rope_type", "default") != "default":
        rope_scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        rope_scaling["type"] = rope_scaling["rope_type"]
    dtype_name = str(dtype).removeprefix("torch.")
    return {
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "hidden_act": config.hidden_act,
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": rope_theta,
        "rope_scaling": rope_scaling,
        "rope_parameters": rope,
        "attention_bias": attention_bias,
        "bias": fc_bias,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "torch_dtype": dtype_name,
        "dtype": dtype_name,
    }
