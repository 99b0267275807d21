"""Configuration of the EAGLE-3 draft model."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters

from ..eagle.configuration_eagle import complete_attention_fields, validate_draft_sizes
from ...errors import EdaInputError

#: How many target hidden states an EAGLE-3 draft fuses (low, middle, high).
NUM_AUX_HIDDEN_STATES = 3


def default_aux_layer_ids(num_target_layers: int) -> list[int]:
    """The engines' default aux states for a target of `num_target_layers` layers: the states entering layers 2, L//2
    and L-3, i.e. indices `[2, L//2, L-3]` of transformers' `hidden_states` tuple (index 0 = the embeddings)."""
    return [2, num_target_layers // 2, num_target_layers - 3]


@strict
class Eagle3DraftConfig(PreTrainedConfig):
    r"""Configuration of an [`Eagle3DraftModel`], an EAGLE-3 draft for one target LLM.

    The draft fuses three of the target's hidden states with `fc` (`3 * target_hidden_size -> hidden_size`), runs one
    decoder layer whose attention reads `[input_layernorm(embedding), hidden_norm(fused)]` and predicts the next token
    with its own head over a draft vocabulary. Sizes are copied from the target by [`Eagle3DraftModel.from_target`].

    Args:
        vocab_size (`int`): Rows of the target's input embedding (the target vocabulary).
        hidden_size (`int`): Hidden size of the draft layer; equal to the target's for drafts built here.
        intermediate_size (`int`): Width of the draft layer's SwiGLU MLP (the module EDA adapters wrap).
        num_hidden_layers (`int`, defaults to 1): Always 1: an EAGLE-3 draft has one decoder layer (`midlayer`).
        num_attention_heads (`int`): Attention heads of the draft layer.
        num_key_value_heads (`int`, *optional*): Key/value heads; defaults to `num_attention_heads`.
        head_dim (`int`, *optional*): Size of one head; defaults to `hidden_size // num_attention_heads`.
        hidden_act (`str`, defaults to `"silu"`): Activation of the SwiGLU MLP.
        max_position_embeddings (`int`): Longest position the rotary embedding is meant for.
        rms_norm_eps (`float`): Epsilon of the RMS norms.
        rope_parameters (`dict`, *optional*): Rotary parameters in the transformers 5 format.
        attention_bias (`bool`, defaults to `False`): Bias on the q/k/v/o projections.
        target_hidden_size (`int`, *optional*): Hidden size of the target; defaults to `hidden_size`. `fc` reads
            `3 * target_hidden_size` features.
        target_num_hidden_layers (`int`, *optional*, defaults to 32): Number of decoder layers of the target, used for
            the default aux ids and to check them (`None` when unknown, e.g. an imported draft).
        eagle_aux_hidden_state_layer_ids (`list[int]`, *optional*): The three target states the draft fuses, as
            **indices of transformers' `hidden_states` tuple**, where index 0 is the embeddings and index `k` the state
            entering layer `k`. This is the input-of-layer convention of vLLM and `speculators`; SpecForge and SGLang
            write output-of-layer ids, one lower (their `[1, L//2-1, L-4]` is this field's `[2, L//2, L-3]`, the
            default).
        draft_vocab_size (`int`, *optional*): Size of the draft vocabulary scored by `lm_head`; defaults to
            `vocab_size`. The buffer `d2t` maps draft id `i` to target id `i + d2t[i]`.
        target_model_type (`str`, *optional*): `model_type` of the target the draft was built for.
        target_name_or_path (`str`, *optional*): Name or path of that target.
        target_fingerprint (`str`, *optional*): Weight fingerprint of that target (`eda_adapters.fingerprints.
            target_fingerprint`): `check_target` names both when the draft serves a target with other weights.
        target_tie_word_embeddings (`bool`, *optional*): Whether the target ties its embedding and head (recorded for
            exports; the draft's own head is never tied).
        tie_word_embeddings (`bool`, defaults to `False`): Always false: the draft borrows the target's embedding and
            owns its head, so there is nothing to tie.
    """

    model_type = "eagle3_draft"
    keys_to_ignore_at_inference = ["past_key_values"]

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_hidden_layers: int = 1
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 8192
    rms_norm_eps: float = 1e-6
    rope_parameters: RopeParameters | dict | None = None
    attention_bias: bool = False
    attention_dropout: int | float = 0.0
    initializer_range: float = 0.02
    target_hidden_size: int | None = None
    target_num_hidden_layers: int | None = 32
    eagle_aux_hidden_state_layer_ids: list[int] | None = None
    draft_vocab_size: int | None = None
    target_model_type: str | None = None
    target_name_or_path: str | None = None
    target_fingerprint: str | None = None
    target_tie_word_embeddings: bool | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        if self.target_hidden_size is None:
            self.target_hidden_size = self.hidden_size
        if self.draft_vocab_size is None:
            self.draft_vocab_size = self.vocab_size
        if self.eagle_aux_hidden_state_layer_ids is None and isinstance(self.target_num_hidden_layers, int):
            self.eagle_aux_hidden_state_layer_ids = default_aux_layer_ids(self.target_num_hidden_layers)
        if self.eagle_aux_hidden_state_layer_ids is not None:
            self.eagle_aux_hidden_state_layer_ids = [int(i) for i in self.eagle_aux_hidden_state_layer_ids]
        self.tie_word_embeddings = False
        complete_attention_fields(self, super().__post_init__, **kwargs)

    def validate_architecture(self) -> None:
        """Part of `@strict` validation: sizes are positive and fit together, the aux ids fit the target."""
        validate_draft_sizes(self)
        if self.num_hidden_layers != 1:
            raise EdaInputError(
                f"Eagle3DraftConfig.num_hidden_layers must be 1 (an EAGLE-3 draft has one decoder layer), got "
                f"{self.num_hidden_layers!r}."
            )
        ids = self.eagle_aux_hidden_state_layer_ids
        if ids is None:
            raise EdaInputError(
                "Eagle3DraftConfig needs eagle_aux_hidden_state_layer_ids or target_num_hidden_layers (for the default "
                "[2, L//2, L-3]): build the draft with Eagle3DraftModel.from_target(target)."
            )
        layers = self.target_num_hidden_layers
        top = layers if isinstance(layers, int) else None
        if len(ids) != NUM_AUX_HIDDEN_STATES or any(i < 0 or (top is not None and i > top) for i in ids):
            bound = f"[0, {top}] for a target of {top} layers" if top is not None else "non-negative"
            raise EdaInputError(
                f"eagle_aux_hidden_state_layer_ids must be {NUM_AUX_HIDDEN_STATES} hidden_states indices, each "
                f"{bound}, got {ids}: pick three of the target's layers (default [2, L//2, L-3])."
            )


__all__ = ["Eagle3DraftConfig", "default_aux_layer_ids"]
