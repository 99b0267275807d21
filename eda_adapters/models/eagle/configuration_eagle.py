"""Configuration of the shared EAGLE draft model."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters

from ...errors import EdaInputError


@strict
class EagleDraftConfig(PreTrainedConfig):
    r"""Configuration of an [`EagleDraftModel`], an EAGLE-1 style draft for one target LLM.

    The draft reads the target's last (post-norm) hidden state at position `t` and the embedding of token `t+1`, fuses
    them with `fc`, runs `num_hidden_layers` Llama-style decoder layers and predicts the target's hidden state at `t+1`.
    Logits come from the target's own output head. Most sizes are copied from the target by
    [`EagleDraftModel.from_target`]; you rarely build this config by hand.

    Args:
        vocab_size (`int`): Rows of the target's input embedding (and its output head).
        hidden_size (`int`): Hidden size of the target (and of the draft).
        intermediate_size (`int`): Width of the draft's shared SwiGLU MLP.
        num_hidden_layers (`int`, defaults to 1): Number of draft decoder layers.
        num_attention_heads (`int`): Attention heads of the draft layers.
        num_key_value_heads (`int`, *optional*): Key/value heads (grouped-query attention); defaults to
            `num_attention_heads`.
        head_dim (`int`, *optional*): Size of one head; defaults to `hidden_size // num_attention_heads`.
        hidden_act (`str`, defaults to `"silu"`): Activation of the SwiGLU MLP.
        max_position_embeddings (`int`): Longest position the rotary embedding is meant for.
        rms_norm_eps (`float`): Epsilon of the RMS norms.
        rope_parameters (`dict`, *optional*): Rotary embedding parameters in the transformers 5 format
            (`{"rope_type": "default", "rope_theta": 10000.0}`, or any type of `ROPE_INIT_FUNCTIONS`).
        attention_bias (`bool`, defaults to `False`): Bias on the q/k/v/o projections.
        fc_bias (`bool`, defaults to `False`): Bias on the fusion layer `fc` (EAGLE-1 checkpoints have one).
        target_model_type (`str`, *optional*): `model_type` of the target the draft was built for.
        target_name_or_path (`str`, *optional*): Name or path of that target, recorded for model cards and checks.
        target_fingerprint (`str`, *optional*): Weight fingerprint of that target (`eda_adapters.fingerprints.
            target_fingerprint`): `check_target` names both when the draft serves a target with other weights.
        draft_vocab_size (`int`, *optional*): Size of a reduced draft vocabulary (as EAGLE-3 and FR-Spec use): the draft
            then scores only these tokens with its own head `draft_head` `[draft_vocab_size, hidden]` (initialised from
            the target head's rows) and the buffer `d2t` maps draft ids to target ids. Other tokens get logit `-inf`,
            so the draft never proposes them; the target still verifies, so outputs stay exact. `None`: the target's
            full head. Set by `EagleDraftModel.from_target(..., draft_vocab=token_ids)`.
        draft_head_trainable (`bool`, defaults to `True`): Whether the reduced head trains (otherwise its rows stay
            the target's).
        save_target_heads (`bool`, defaults to `False`): Whether `save_pretrained` also writes the target's embedding
            and output head (normally they are re-attached from the target at load time).
        target_tie_word_embeddings (`bool`, defaults to `False`): Whether the target ties its embedding and output
            head (SmolLM2, Qwen2.5-0.5B..3B, Llama-3.2, Gemma 3 do). Recorded for exports and checks; the draft itself
            never ties modules it does not own.
        tie_word_embeddings (`bool`, *optional*): The draft's own tying flag. It is derived (true only when the draft
            saves the target's heads and the target ties them) and kept for older configs, which stored the target's
            flag here.
    """

    model_type = "eagle_draft"
    keys_to_ignore_at_inference = ["past_key_values"]

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 1
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-6
    rope_parameters: RopeParameters | dict | None = None
    attention_bias: bool = False
    attention_dropout: int | float = 0.0
    fc_bias: bool = False
    initializer_range: float = 0.02
    target_model_type: str | None = None
    target_name_or_path: str | None = None
    target_fingerprint: str | None = None
    draft_vocab_size: int | None = None
    draft_head_trainable: bool = True
    save_target_heads: bool = False
    target_tie_word_embeddings: bool | None = None
    tie_word_embeddings: bool | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        if self.target_tie_word_embeddings is None:  # configs written before the field existed stored it in the tie flag
            self.target_tie_word_embeddings = bool(self.tie_word_embeddings)
        self.tie_word_embeddings = self.draft_ties_heads
        complete_attention_fields(self, super().__post_init__, **kwargs)

    def validate_architecture(self) -> None:
        """Part of `@strict` validation: sizes are positive and fit together."""
        validate_draft_sizes(self)

    @property
    def draft_ties_heads(self) -> bool:
        """Whether the draft's own (saved) embedding and head are one tensor: only when it owns copies of them."""
        return bool(self.save_target_heads and self.target_tie_word_embeddings)


def complete_attention_fields(config: PreTrainedConfig, base_post_init: Any, **kwargs: Any) -> None:
    """Derive the attention fields a draft config leaves unset (key/value heads, head size, rotary defaults) around
    `PreTrainedConfig.__post_init__` (`base_post_init`), which also moves a legacy top-level `rope_theta` into
    `rope_parameters`. Shared by the EAGLE-1 and EAGLE-3 configs."""
    if config.num_key_value_heads is None:
        config.num_key_value_heads = config.num_attention_heads
    if config.head_dim is None and isinstance(config.num_attention_heads, int) and config.num_attention_heads > 0:
        config.head_dim = config.hidden_size // config.num_attention_heads
    base_post_init(**kwargs)
    rope = dict(config.rope_parameters or {})
    rope.setdefault("rope_type", "default")
    rope.setdefault("rope_theta", 10000.0)
    config.rope_parameters = rope


def validate_draft_sizes(config: PreTrainedConfig) -> None:
    """Sizes are positive integers, heads group evenly and a reduced draft vocabulary fits the target's."""
    name_of = type(config).__name__
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        value = getattr(config, name)
        if not isinstance(value, int) or value <= 0:
            raise EdaInputError(f"{name_of}.{name} must be a positive integer, got {value!r}.")
    if config.num_attention_heads % config.num_key_value_heads != 0:
        raise EdaInputError(
            f"num_attention_heads ({config.num_attention_heads}) must be a multiple of num_key_value_heads "
            f"({config.num_key_value_heads})."
        )
    size = config.draft_vocab_size
    if size is not None and not (isinstance(size, int) and 0 < size <= config.vocab_size):
        raise EdaInputError(
            f"{name_of}.draft_vocab_size must be an integer in [1, vocab_size={config.vocab_size}], got {size!r}."
        )


__all__ = ["EagleDraftConfig"]
