"""EAGLE-3 drafts in the layouts the serving engines load. [`export_draft`] calls [`eagle3_layout`] for a merged
`Eagle3DraftModel`; nothing here writes files.

Every layout holds the same tensors: `fc.weight` `[H, 3 * target_hidden_size]`, the decoder layer's norms
(`hidden_norm`, `input_layernorm`, `post_attention_layernorm`), `self_attn.{q,k,v}_proj.weight` `[out, 2H]`,
`self_attn.o_proj.weight`, `mlp.{gate,up,down}_proj.weight`, `norm.weight`, `lm_head.weight` `[draft_vocab_size, H]`,
`d2t` (int64: draft id `i` is target id `i + d2t[i]`) and `t2d` (bool over the target vocabulary). They differ in:

| engine          | `architectures`              | layer keys   | aux layer ids                                                      |
|-----------------|------------------------------|--------------|--------------------------------------------------------------------|
| `"vllm"`        | `["LlamaForCausalLMEagle3"]` | `midlayer.*` | top-level `eagle_aux_hidden_state_layer_ids`, input of layer `i`   |
| `"sglang"`      | `["LlamaForCausalLMEagle3"]` | `midlayer.*` | `eagle_config.eagle_aux_hidden_state_layer_ids`, output of layer `i` |
| `"speculators"` | `["Eagle3Speculator"]`       | `layers.0.*` | top-level, input of layer `i`; the layer's config nested in `transformer_layer_config` |

Our ids are indices of transformers' `hidden_states` tuple, the input of layer `i`: vLLM's and speculators' as they
are, SGLang's minus one. An id an engine cannot capture is refused: the embeddings (0) in SGLang, and the last entry
(`L`, taken after the target's final norm, which no engine captures) everywhere.

Fields the loaders read with a default that would change the model are always written: `tie_word_embeddings: false`
(SGLang would share the embedding as the head), `draft_vocab_size` (SGLang would load the target's head),
`target_hidden_size`, `attention_bias: false` and `bias: false` (vLLM gives `o_proj` a bias if either is set),
`norm_before_residual: false` (vLLM's speculators reader assumes `true` when it is absent), and, for speculators,
`norm_before_fc`, `fc_norm`, `norm_output` (all `false`) and a `speculators_config` with the proposal length and the
verifier that vLLM's reader requires.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from ..errors import EdaInputError
from ..models import Eagle3DraftModel
from ..models.eagle3.checkpoints import EXPECTED_KEYS
from .llama_config import check_silu_mlp, checked_embedding, llama_config_fields

EAGLE3_ENGINES = ("vllm", "sglang", "speculators")
EAGLE3_ARCHITECTURE = "LlamaForCausalLMEagle3"
SPECULATORS_ARCHITECTURE = "Eagle3Speculator"
#: Proposal length written into a speculators config (vLLM's default `num_speculative_tokens`; overridable there).
DEFAULT_SPECULATIVE_TOKENS = 3


def engine_aux_layer_ids(aux_layer_ids: list[int], target_num_hidden_layers: int, engine: str) -> list[int]:
    """Our aux layer ids (`hidden_states` indices) in `engine`'s convention; a one-line error for any it cannot
    capture."""
    lowest = 1 if engine == "sglang" else 0  # SGLang's output-of-layer ids start at layer 0's output
    highest = target_num_hidden_layers - 1  # index L is after the final norm: no engine captures it
    outside = [i for i in aux_layer_ids if not lowest <= i <= highest]
    if outside:
        raise EdaInputError(
            f"This draft reads the target's hidden_states {list(aux_layer_ids)}, but {engine} can capture only "
            f"{lowest} .. {highest} of this {target_num_hidden_layers}-layer target ({outside} cannot be expressed): "
            "train the draft on other aux layers (Eagle3DraftModel.from_target(target, aux_layer_ids=[...]))"
            + (", or export it for vllm or speculators." if engine == "sglang" and min(outside) < lowest else ".")
        )
    if engine == "speculators" and len(set(aux_layer_ids)) != len(aux_layer_ids):
        raise EdaInputError(
            f"This draft reads the target's hidden_states {list(aux_layer_ids)}, which repeat a layer: the speculators "
            "library refuses repeated aux ids. Train the draft on three distinct layers, or export it for vllm."
        )
    return [i - 1 for i in aux_layer_ids] if engine == "sglang" else list(aux_layer_ids)


def eagle3_layout(
    draft: Eagle3DraftModel,
    engine: Literal["vllm", "sglang", "speculators"] = "vllm",
    embed_weight: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    verifier: str | None = None,
    speculative_tokens: int = DEFAULT_SPECULATIVE_TOKENS,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The `config.json` dict and tensors (name -> tensor) of a plain (merged) EAGLE-3 `draft` for `engine`.

    Args:
        draft: A plain `Eagle3DraftModel` (merge adapters first with [`merge_for_export`]).
        engine: `"vllm"`, `"sglang"` or `"speculators"` (see the module docstring).
        embed_weight: The target's input embedding to include as `embed_tokens.weight` (omitted when `None`: every
            engine then shares the target's).
        dtype: Cast the floating-point tensors to this dtype (default: keep the draft's); `d2t` stays int64 and
            `t2d` bool, as every loader reads them.
        verifier: speculators only: the target's name or path, recorded as the verifier (vLLM serves it when given
            the draft folder alone); default: the target the draft records (`config.target_name_or_path`).
        speculative_tokens: speculators only: the proposal length recorded in `speculators_config`.
    """
    if engine not in EAGLE3_ENGINES:
        raise EdaInputError(f"An EAGLE-3 draft exports for engine in {EAGLE3_ENGINES}, got {engine!r}.")
    if not isinstance(draft, Eagle3DraftModel):
        raise TypeError(f"eagle3_layout needs a plain Eagle3DraftModel, got {type(draft).__name__}.")
    config = draft.config
    check_silu_mlp(config, "EAGLE-3")
    if config.attention_bias:
        raise EdaInputError(
            "This draft's attention projections have biases, which the engines' EAGLE-3 layers do not load (SGLang "
            "builds q/k/v without bias): export with format='hf' and serve it with eda_adapters instead."
        )
    draft.check_vocab_maps()
    aux_ids = engine_aux_layer_ids(
        list(config.eagle_aux_hidden_state_layer_ids), config.target_num_hidden_layers, engine
    )
    state = {name: tensor.detach() for name, tensor in draft.state_dict().items() if not name.startswith("embed_tokens.")}
    unexpected = sorted(set(state) - EXPECTED_KEYS)
    if unexpected:
        raise EdaInputError(
            f"The draft has tensors the EAGLE-3 layouts have no place for ({unexpected[:3]}...): pass a plain, merged "
            "Eagle3DraftModel (merge_for_export(peft_model))."
        )
    out_dtype = dtype or state["fc.weight"].dtype
    tensors = {
        name: (tensor if name in ("d2t", "t2d") else tensor.to(out_dtype)).contiguous() for name, tensor in state.items()
    }
    tensors["d2t"], tensors["t2d"] = tensors["d2t"].to(torch.int64), tensors["t2d"].to(torch.bool)
    if embed_weight is not None:
        tensors["embed_tokens.weight"] = checked_embedding(embed_weight, config).to(out_dtype).contiguous()

    layer = llama_config_fields(config, attention_bias=False, fc_bias=False, dtype=out_dtype)
    eagle3_fields = {
        "draft_vocab_size": config.draft_vocab_size,
        "target_hidden_size": config.target_hidden_size,
        "norm_before_residual": False,
    }
    if engine == "speculators":
        reduced = config.draft_vocab_size != config.vocab_size or bool(tensors["d2t"].any())
        if not reduced:  # speculators writes the maps only for a reduced vocabulary
            del tensors["d2t"], tensors["t2d"]
        tensors = {name.replace("midlayer.", "layers.0.", 1): tensor for name, tensor in tensors.items()}
        config_dict = {
            "architectures": [SPECULATORS_ARCHITECTURE],
            "speculators_model_type": "eagle3",
            "transformer_layer_config": {key: value for key, value in layer.items() if key != "architectures"},
            **eagle3_fields,
            "norm_before_fc": False,
            "fc_norm": False,
            "norm_output": False,
            "eagle_aux_hidden_state_layer_ids": aux_ids,
            "speculators_config": {
                "algorithm": "eagle3",
                "default_proposal_method": "greedy",
                "proposal_methods": [{"proposal_type": "greedy", "speculative_tokens": speculative_tokens}],
                "verifier": {"name_or_path": verifier or getattr(config, "target_name_or_path", None), "architectures": []},
            },
            "torch_dtype": layer["torch_dtype"],
            "dtype": layer["dtype"],
        }
    else:
        config_dict = {**layer, "architectures": [EAGLE3_ARCHITECTURE], **eagle3_fields}
        if engine == "vllm":
            config_dict["eagle_aux_hidden_state_layer_ids"] = aux_ids
        else:
            config_dict["eagle_config"] = {"eagle_aux_hidden_state_layer_ids": aux_ids, "use_aux_hidden_state": True}
    return config_dict, dict(sorted(tensors.items()))
