"""The shared EAGLE draft model: one readable file, Llama-style layers, target heads borrowed from the target.

Data flow of one draft step (EAGLE-1):

    features_t   = target's last (post-norm) hidden state at position t          [B, S, H]
    embedding    = target.embed_tokens(token_{t+1})                                [B, S, H]
    x            = fc(concat(embedding, features_t))                               [B, S, H]
    x            = decoder layers (attention with RoPE + KV cache, SwiGLU MLP)     [B, S, H]
    features_t+1 ~ x ;  logits_t+1 = target.lm_head(x)

The first decoder layer has no input norm (its input is the fused `fc` output), as in EAGLE-1 checkpoints, so that
the weights map one-to-one onto the layouts serving engines load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import eager_attention_forward
from transformers.utils import ModelOutput

from .configuration_eagle import EagleDraftConfig
from ...errors import EdaInputError
from ...fingerprints import target_fingerprint
from ...schemas.tensors import features_tensor, token_ids_tensor

TARGET_HEAD_KEYS = ("embed_tokens.weight", "lm_head.weight", "lm_head.bias")


@dataclass
class EagleDraftOutput(ModelOutput):
    """Output of [`EagleDraftModel.forward`].

    Args:
        last_hidden_state: The draft's prediction of the target's next hidden state, `[batch, seq, hidden]`.
        logits: The target output head applied to `last_hidden_state` (`None` when `compute_logits=False`).
        past_key_values: The draft's KV cache, when `use_cache=True`.
    """

    last_hidden_state: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: Cache | None = None


class EagleRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class EagleRotaryEmbedding(nn.Module):
    """Rotary position embedding; any rope type transformers knows (default, llama3, yarn, ...) through its config."""

    def __init__(self, config: EagleDraftConfig) -> None:
        super().__init__()
        self.config = config
        inv_freq, self.attention_scaling = self.compute_inv_freq()
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def compute_inv_freq(self) -> tuple[torch.Tensor, float]:
        rope_type = self.config.rope_parameters.get("rope_type", "default")
        if rope_type != "default":
            return ROPE_INIT_FUNCTIONS[rope_type](self.config)
        dim = self.config.head_dim
        base = self.config.rope_parameters["rope_theta"]
        return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim)), 1.0

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(x.dtype), sin.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x` `[batch, heads, seq, head_dim]` by the angles of `cos`/`sin` `[batch, seq, head_dim]`."""
    return x * cos.unsqueeze(1) + _rotate_half(x) * sin.unsqueeze(1)


class EagleAttention(nn.Module):
    """Grouped-query attention with RoPE, dispatched by `config._attn_implementation` (eager, sdpa, flash, flex).

    q/k/v read `input_size` features (default `hidden_size`; an EAGLE-3 layer reads `2 * hidden_size`).
    """

    def __init__(self, config: EagleDraftConfig, layer_idx: int, input_size: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_kv_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        bias = config.attention_bias
        width = input_size or config.hidden_size
        self.q_proj = nn.Linear(width, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(width, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(width, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        past_key_values: Cache | None = None,
    ) -> torch.Tensor:
        batch, seq, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden_states).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden_states).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = position_embeddings
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out, _ = attention(
            self, q, k, v, attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
        )
        return self.o_proj(out.reshape(batch, seq, self.num_heads * self.head_dim))


class EagleMLP(nn.Module):
    """The *shared* SwiGLU MLP of a draft layer: `down(act(gate(x)) * up(x))`. EDA adapters wrap this module."""

    def __init__(self, config: EagleDraftConfig, intermediate_size: int | None = None) -> None:
        super().__init__()
        self.hidden_size = config.hidden_size
        self.intermediate_size = intermediate_size or config.intermediate_size
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class EagleDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: EagleDraftConfig, layer_idx: int) -> None:
        super().__init__()
        # EAGLE-1: the first layer reads the fused fc output directly, without an input norm.
        self.input_layernorm = EagleRMSNorm(config.hidden_size, config.rms_norm_eps) if layer_idx > 0 else None
        self.self_attn = EagleAttention(config, layer_idx)
        self.post_attention_layernorm = EagleRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = EagleMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
    ) -> torch.Tensor:
        residual = hidden_states
        if self.input_layernorm is not None:
            hidden_states = self.input_layernorm(hidden_states)
        hidden_states = residual + self.self_attn(hidden_states, position_embeddings, attention_mask, past_key_values)
        residual = hidden_states
        return residual + self.mlp(self.post_attention_layernorm(hidden_states))


# Implementations that take an explicit 4D mask (a speculation tree); flash kernels only know causal + padding.
TREE_MASK_IMPLEMENTATIONS = ("sdpa", "eager")


def build_attention_mask(
    config: EagleDraftConfig,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    past_key_values: Cache | None,
) -> torch.Tensor | None:
    """The mask `config._attn_implementation` expects, built by transformers' `create_causal_mask`.

    `attention_mask` is either a 2D padding mask over past + current tokens (1 = real token), or an explicit 4D boolean
    mask (True = attend; e.g. a tree), which sdpa takes as it is and eager as an additive float mask. Fully padded
    query rows come out finite (transformers unmasks them), so they never leak NaN into later layers.
    """
    implementation = config._attn_implementation
    if attention_mask is not None and attention_mask.dim() == 4:
        if implementation not in TREE_MASK_IMPLEMENTATIONS:
            raise EdaInputError(
                f"A 4D attention mask (a speculation tree) needs attn_implementation in {TREE_MASK_IMPLEMENTATIONS}, "
                f"but this draft uses {implementation!r}: load it with attn_implementation='sdpa'."
            )
        allowed = attention_mask.to(device=inputs_embeds.device, dtype=torch.bool)
        if implementation == "sdpa":
            return allowed
        blocked = torch.finfo(inputs_embeds.dtype).min
        additive = torch.zeros(allowed.shape, dtype=inputs_embeds.dtype, device=allowed.device)
        return additive.masked_fill(~allowed, blocked)
    if attention_mask is not None:
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        expected = (inputs_embeds.shape[0], past_len + inputs_embeds.shape[1])
        if tuple(attention_mask.shape) != expected:
            raise EdaInputError(
                f"attention_mask must have shape [batch, past + new tokens] = {expected}, "
                f"got {tuple(attention_mask.shape)}."
            )
    return create_causal_mask(
        config=config,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        past_key_values=past_key_values,
        # Always materialised: the same SDPA kernel whether or not a batch is padded, so outputs do not depend on it.
        allow_is_causal_skip=False,
    )


class EagleDraftPreTrainedModel(PreTrainedModel):
    config_class = EagleDraftConfig
    config: EagleDraftConfig
    base_model_prefix = "eagle"
    _no_split_modules = ["EagleDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    supports_gradient_checkpointing = True

    #: Checkpoint keys a saved draft may lack (borrowed from the target, or recomputed).
    optional_checkpoint_keys: frozenset[str] = frozenset()

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, target_model: PreTrainedModel | None = None,
        **kwargs: Any,
    ) -> Any:
        """`PreTrainedModel.from_pretrained`, plus `target_model=` to attach the target's modules the draft borrows.

        Unlike the base method, a checkpoint that does not hold every weight of the draft (or holds weights the draft
        does not have) is refused with a one-line error instead of being completed with random values. With
        `target_model=`, the draft follows the target's dtype and device.
        """
        wants_info = bool(kwargs.pop("output_loading_info", False))
        draft, info = super().from_pretrained(
            pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
        )
        _check_loading_info(pretrained_model_name_or_path, info, cls.optional_checkpoint_keys, cls.__name__)
        draft.check_loaded()
        if target_model is not None:
            draft.attach_target(target_model)
        return (draft, info) if wants_info else draft

    def check_target(self, target_model: PreTrainedModel) -> str | None:
        """`None` when `target_model` has the weights this draft was trained for (or the draft does not record them),
        else one line naming both. Not an error: the draft still decodes losslessly with any target it fits, it only
        accepts less; an EDA adapter is how it is made to fit a fine-tuned target."""
        recorded = getattr(self.config, "target_fingerprint", None)
        if not recorded:
            return None
        actual = target_fingerprint(target_model)
        if actual == recorded:
            return None
        trained_for = self.config.target_name_or_path or self.config.target_model_type or "another target"
        serving = getattr(target_model.config, "_name_or_path", None) or target_model.config.model_type
        return (f"this draft was trained for {trained_for} (weights {recorded}), but the target is {serving} "
                f"(weights {actual}): decoding stays lossless but accepts fewer tokens; adapt the draft to this target "
                "with an EDA adapter (`eda adapt`)")

    def check_loaded(self) -> None:
        """Checks a loaded draft's weights must pass beyond their names and shapes (none by default)."""

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:  # type: ignore[override]
        """Push the draft with an `eda_adapters` model card (see [`eda_adapters.push_to_hub`])."""
        from ...hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    def embed_inputs(self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor | None) -> torch.Tensor:
        """`inputs_embeds`, or the borrowed target embedding of `input_ids`."""
        if inputs_embeds is not None:
            return inputs_embeds
        if input_ids is None:
            raise EdaInputError(f"{type(self).__name__}.forward needs input_ids= or inputs_embeds=.")
        self._require_heads()
        return self.embed_tokens(token_ids_tensor(input_ids, where=f"{type(self).__name__}.forward"))

    def prepare_step(
        self,
        inputs_embeds: torch.Tensor,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.LongTensor | None,
        past_key_values: Cache | None,
        use_cache: bool,
    ) -> tuple[Cache | None, torch.LongTensor, torch.Tensor | None]:
        """The cache (created when `use_cache`), the positions (default: continuing after the cache) and the mask;
        `hidden_states` were checked against the tokens (`schemas.tensors.features_tensor`)."""
        batch, seq = inputs_embeds.shape[:2]
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + seq, device=inputs_embeds.device).expand(batch, seq)
        return past_key_values, position_ids, build_attention_mask(self.config, inputs_embeds, attention_mask,
                                                                   past_key_values)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(mean=0.0, std=std)
        elif isinstance(module, EagleRMSNorm):
            module.weight.fill_(1.0)
        elif isinstance(module, EagleRotaryEmbedding):
            # a non-persistent buffer: from_pretrained leaves it uninitialised, so it is recomputed here
            module.inv_freq.copy_(module.compute_inv_freq()[0])


class EagleDraftModel(EagleDraftPreTrainedModel):
    r"""An EAGLE-1 style draft model that predicts a target LLM's next hidden state.

    Build it for a target with [`EagleDraftModel.from_target`]; it then borrows (shares, frozen) the target's input
    embedding and output head, which are not written by `save_pretrained` unless `config.save_target_heads` is set.
    A draft loaded with `from_pretrained` gets them back with `from_pretrained(path, target_model=target)` or
    [`EagleDraftModel.attach_target`].

    Example:

    ```python
    >>> draft = EagleDraftModel.from_target(target)              # sizes read from target.config
    >>> out = draft(input_ids=next_tokens, hidden_states=target_features)
    >>> out.logits.shape                                          # [batch, seq, vocab]
    ```
    """

    _tied_weights_keys = {"lm_head.weight": "embed_tokens.weight"}
    #: Modules shared with the target, never saved or fingerprinted as the draft's own.
    borrowed_modules = ("embed_tokens", "lm_head")
    optional_checkpoint_keys = frozenset(TARGET_HEAD_KEYS) | {"rotary_emb.inv_freq"}

    def __init__(self, config: EagleDraftConfig) -> None:
        super().__init__(config)
        self.fc = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=config.fc_bias)
        self.layers = nn.ModuleList(EagleDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.rotary_emb = EagleRotaryEmbedding(config)
        # Reduced draft vocabulary: the draft's own head over `d2t` (draft id -> target id), see `draft_logits_to_vocab`.
        self.draft_head: nn.Linear | None = None
        self.register_buffer("d2t", None)
        if config.draft_vocab_size is not None:
            self.draft_head = nn.Linear(config.hidden_size, config.draft_vocab_size, bias=False)
            self.register_buffer("d2t", torch.arange(config.draft_vocab_size, dtype=torch.long))
        if config.save_target_heads:
            self.embed_tokens: nn.Embedding | None = nn.Embedding(config.vocab_size, config.hidden_size)
            self.lm_head: nn.Linear | None = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        else:
            self.embed_tokens = None
            self.lm_head = None
        self.post_init()
        if self.draft_head is not None:
            self.draft_head.weight.requires_grad_(bool(config.draft_head_trainable))
        if not config.save_target_heads:
            self._keys_to_ignore_on_save = set(self._keys_to_ignore_on_save or ()) | set(TARGET_HEAD_KEYS)

    # ------------------------------------------------------------------ construction from / link to a target
    @classmethod
    def from_target(
        cls,
        target_model: PreTrainedModel,
        num_layers: int = 1,
        draft_vocab: Any = None,
        **overrides: Any,
    ) -> EagleDraftModel:
        """Build a fresh draft sized for `target_model` (any Hugging Face decoder-only causal LM).

        Sizes (hidden, heads, MLP width, rotary parameters, norm epsilon) are read from the target's config; any
        `EagleDraftConfig` field can be overridden by keyword (e.g. `intermediate_size=...`, `fc_bias=True`). The
        target's input embedding and output head are shared with the draft and frozen.

        `draft_vocab` (target token ids, e.g. the most frequent ones of the training data, see
        `eda_adapters.data.most_frequent_tokens`) gives the draft a reduced vocabulary: its own head over these
        tokens, initialised from the target head's rows, which makes each draft step several times cheaper on
        large-vocabulary targets.
        """
        fields = {**target_config_fields(target_model), "num_hidden_layers": num_layers}
        vocab_size = fields["vocab_size"]
        check_config_overrides(cls, EagleDraftConfig, fields, overrides)
        vocab_ids = None
        if draft_vocab is not None:
            vocab_ids = _draft_vocab_ids(draft_vocab, vocab_size)
            fields["draft_vocab_size"] = int(vocab_ids.numel())
        save_heads = bool(fields.pop("save_target_heads", False))
        # Built without heads of its own: the target's are attached below, and saved only when asked to.
        draft = cls(EagleDraftConfig(**fields))
        draft.config.save_target_heads = save_heads
        draft.config.tie_word_embeddings = draft.config.draft_ties_heads
        if save_heads:
            draft._keys_to_ignore_on_save = set()
        draft.attach_target(target_model)
        if vocab_ids is not None:
            draft.set_draft_vocab(vocab_ids)
        return draft

    @classmethod
    def from_eagle_checkpoint(
        cls, path: str | os.PathLike, target_model: PreTrainedModel | None = None, dtype: torch.dtype | None = None
    ) -> EagleDraftModel:
        """Import an EAGLE-1 draft another tool wrote: the EAGLE project's layout (`fc.*`, `layers.N.*`, safetensors
        or a plain-tensor `pytorch_model.bin`) or any `eda export` flavour. See `eda_adapters.models.eagle.checkpoints`.
        """
        from .checkpoints import load_eagle_checkpoint

        return load_eagle_checkpoint(path, target_model=target_model, dtype=dtype)

    def attach_target(self, target_model: PreTrainedModel) -> EagleDraftModel:
        """Share (and freeze) the target's input embedding and output head; checks that the sizes match.

        The draft is moved to the device and dtype of the target's embedding, so that a draft saved in float32 runs
        with a bfloat16 target on a GPU as it is.
        """
        self.check_compatible(target_model)
        embed, head = target_model.get_input_embeddings(), target_model.get_output_embeddings()
        self.to(device=embed.weight.device, dtype=embed.weight.dtype)
        for param in list(embed.parameters()) + list(head.parameters()):
            param.requires_grad_(False)
        # Plain attribute assignment registers them as submodules: the draft forwards through them and moves with
        # `.to()`, while `_keys_to_ignore_on_save` keeps them out of the checkpoint.
        self.embed_tokens = embed
        self.lm_head = head
        return self

    @torch.no_grad()
    def set_draft_vocab(self, token_ids: Any) -> EagleDraftModel:
        """Point the reduced head at `token_ids` (target ids) and copy the attached target head's rows into it."""
        if self.draft_head is None:
            raise EdaInputError(
                "This draft scores the target's full vocabulary: build it with "
                "EagleDraftModel.from_target(target, draft_vocab=token_ids) for a reduced one."
            )
        self._require_heads()
        ids = _draft_vocab_ids(token_ids, self.config.vocab_size).to(self.d2t.device)
        if ids.numel() != self.config.draft_vocab_size:
            raise EdaInputError(f"Expected {self.config.draft_vocab_size} token ids, got {ids.numel()}.")
        head = self.lm_head
        if getattr(head, "bias", None) is not None:
            raise EdaInputError("A reduced draft vocabulary needs a target head without bias.")
        self.d2t.copy_(ids)
        self.draft_head.weight.copy_(head.weight[ids.to(head.weight.device)].to(self.draft_head.weight))
        return self

    @property
    def draft_token_ids(self) -> torch.Tensor | None:
        """The target id of each draft id, `[draft_vocab_size]`; `None` when the draft scores the full vocabulary."""
        return self.d2t

    def draft_logits_to_vocab(self, draft_logits: torch.Tensor) -> torch.Tensor:
        """Reduced-head logits `[..., draft_vocab_size]` as target-vocabulary logits `[..., vocab_size]`: the draft's
        tokens at their target ids, `-inf` elsewhere (probability 0, never proposed)."""
        return scatter_to_vocab(draft_logits, self.d2t, self.config.vocab_size)

    def named_decoder_layers(self) -> list[tuple[str, nn.Module]]:
        """`(name, layer)` of each decoder layer, in order (an EDA adapter wraps each one's `mlp`)."""
        return [(f"layers.{index}", layer) for index, layer in enumerate(self.layers)]

    # ------------------------------------------------------------------ what the draft reads from the target
    @property
    def hidden_state_indices(self) -> list[int]:
        """The target `hidden_states` the draft reads, `[-1]` (the last, post-norm one): pass as
        `target(..., output_hidden_states=...)`."""
        return [-1]

    def target_features(self, hidden_states: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
        """The draft's input from a target's `hidden_states` tuple: its last state, `[batch, seq, hidden]`."""
        return concat_hidden_states(hidden_states, self.hidden_state_indices)

    def target_vocab_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """`forward`'s logits over the target vocabulary: they already are (a reduced head is mapped in `forward`)."""
        return logits

    def check_compatible(self, target_model: PreTrainedModel) -> None:
        """Raise a one-line `ValueError` if `target_model` does not fit this draft (hidden size, vocabulary)."""
        target_config = _check_causal_lm(target_model).get_text_config()
        vocab = target_model.get_input_embeddings().weight.shape[0]
        head_vocab = target_model.get_output_embeddings().weight.shape[0]
        problems = []
        if target_config.hidden_size != self.config.hidden_size:
            problems.append(f"hidden size {target_config.hidden_size} != draft's {self.config.hidden_size}")
        if vocab != self.config.vocab_size or head_vocab != self.config.vocab_size:
            problems.append(f"vocabulary {vocab} != draft's {self.config.vocab_size}")
        if problems:
            built_for = self.config.target_name_or_path or self.config.target_model_type or "another target"
            raise EdaInputError(
                f"This draft was built for {built_for} and does not fit this target ({'; '.join(problems)}): "
                "use a draft built with EagleDraftModel.from_target(target) for this target's family."
            )

    @property
    def has_target_heads(self) -> bool:
        return self.embed_tokens is not None and self.lm_head is not None

    def get_input_embeddings(self) -> nn.Module | None:
        return self.embed_tokens

    def get_output_embeddings(self) -> nn.Module | None:
        return self.lm_head

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def _require_heads(self) -> None:
        if not self.has_target_heads:
            raise EdaInputError(
                "This draft has no target attached (its embedding and output head come from the target): call "
                "draft.attach_target(target) or EagleDraftModel.from_pretrained(path, target_model=target)."
            )

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool = False,
        compute_logits: bool = True,
    ) -> EagleDraftOutput:
        r"""Predict the target's next hidden states.

        Args:
            input_ids: Tokens `t+1`, `[batch, seq]` (or pass `inputs_embeds`).
            hidden_states: Target features at positions `t`, `[batch, seq, hidden]`.
            attention_mask: 2D padding mask over past + new tokens, or a 4D boolean mask (True = attend), e.g. a tree.
            position_ids: Positions of the new tokens; default continues after the cache.
            past_key_values: The draft's own KV cache (a `transformers` `Cache`); created when `use_cache=True`.
            use_cache: Return the updated cache.
            compute_logits: Apply the target's output head (set `False` when only features are needed).
        """
        if hidden_states is None:
            raise EdaInputError("EagleDraftModel.forward needs hidden_states= (the target's last hidden states).")
        inputs_embeds = self.embed_inputs(input_ids, inputs_embeds)
        hidden_states = features_tensor(hidden_states, self.config.hidden_size, inputs_embeds,
                                        where="EagleDraftModel.forward")
        past_key_values, position_ids, mask = self.prepare_step(
            inputs_embeds, hidden_states, attention_mask, position_ids, past_key_values, use_cache
        )
        x = self.fc(torch.cat((inputs_embeds, hidden_states.to(inputs_embeds.dtype)), dim=-1))
        position_embeddings = self.rotary_emb(x, position_ids)
        for layer in self.layers:
            x = layer(x, position_embeddings, attention_mask=mask, past_key_values=past_key_values)

        logits = None
        if compute_logits:
            self._require_heads()
            logits = self.lm_head(x) if self.draft_head is None else self.draft_logits_to_vocab(self.draft_head(x))
        return EagleDraftOutput(
            last_hidden_state=x, logits=logits, past_key_values=past_key_values if use_cache else None
        )


def scatter_to_vocab(draft_logits: torch.Tensor, target_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Draft-vocabulary logits `[..., n]` as target-vocabulary logits `[..., vocab_size]`: draft token `i` at target id
    `target_ids[i]`, `-inf` elsewhere (probability 0: never proposed; the target still verifies)."""
    full = draft_logits.new_full((*draft_logits.shape[:-1], vocab_size), float("-inf"))
    return full.index_copy(-1, target_ids, draft_logits)


def concat_hidden_states(hidden_states: tuple[torch.Tensor | None, ...], indices: list[int]) -> torch.Tensor:
    """The states `indices` of a target's `hidden_states` tuple, concatenated on the last dimension (the order given)."""
    chosen = [hidden_states[i] for i in indices]
    if any(state is None for state in chosen):
        raise EdaInputError(
            f"The target returned no hidden state at some of {indices}: run it with output_hidden_states={indices}."
        )
    return chosen[0] if len(chosen) == 1 else torch.cat(chosen, dim=-1)


def target_config_fields(target_model: PreTrainedModel) -> dict[str, Any]:
    """The draft config fields both draft architectures copy from a target: sizes, attention and rotary settings,
    and what identifies the target."""
    target_config = _check_causal_lm(target_model).get_text_config()
    return {
        "vocab_size": target_model.get_input_embeddings().weight.shape[0],
        "hidden_size": target_config.hidden_size,
        "intermediate_size": getattr(target_config, "intermediate_size", 4 * target_config.hidden_size),
        "num_attention_heads": target_config.num_attention_heads,
        "num_key_value_heads": getattr(target_config, "num_key_value_heads", None),
        "head_dim": getattr(target_config, "head_dim", None),
        "hidden_act": getattr(target_config, "hidden_act", "silu"),
        "max_position_embeddings": getattr(target_config, "max_position_embeddings", 4096),
        "rms_norm_eps": getattr(target_config, "rms_norm_eps", 1e-6),
        "rope_parameters": _draft_rope_parameters(target_config),
        "target_model_type": target_config.model_type,
        "target_name_or_path": getattr(target_model.config, "_name_or_path", None) or None,
        "target_fingerprint": target_fingerprint(target_model),
        "target_tie_word_embeddings": _ties_embeddings(target_model),
    }


def check_config_overrides(model_class: type, config_class: type, fields: dict[str, Any], overrides: dict) -> None:
    """`from_target(**overrides)` takes config fields only: a misspelt one is a `TypeError` naming it."""
    unknown = set(overrides) - set(config_class().to_dict()) - set(fields)
    if unknown:
        raise TypeError(f"{model_class.__name__}.from_target got unknown config fields {sorted(unknown)}.")
    fields.update(overrides)


def _draft_vocab_ids(token_ids: Any, vocab_size: int) -> torch.Tensor:
    """Validated reduced-vocabulary ids: a 1-D long tensor of distinct target ids in [0, vocab_size)."""
    ids = torch.as_tensor(token_ids, dtype=torch.long).flatten().cpu()
    if ids.numel() == 0:
        raise EdaInputError("draft_vocab is empty: pass the target token ids the draft should score.")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise EdaInputError(f"draft_vocab has ids outside the target's vocabulary [0, {vocab_size}).")
    if ids.unique().numel() != ids.numel():
        raise EdaInputError("draft_vocab has repeated ids: each target token may appear once.")
    return ids


def _draft_rope_parameters(target_config: Any) -> dict[str, Any]:
    """The target's rotary parameters as the draft uses them: one set for every draft layer.

    Targets with several attention kinds (Gemma 3: sliding and full layers) keep one set per layer type; the draft
    attends over the whole context, so it takes the full-attention set. The draft rotates whole heads, so a partial
    rotary factor (GPT-NeoX, Phi) is not copied.
    """
    rope = dict(getattr(target_config, "rope_parameters", None) or {})
    if rope and all(isinstance(value, dict) for value in rope.values()):
        rope = dict(rope.get("full_attention") or next(iter(rope.values())))
    rope.pop("partial_rotary_factor", None)
    return rope


def _ties_embeddings(model: PreTrainedModel) -> bool:
    """Whether the model's output head is its input embedding (the same tensor), whatever its config says."""
    head = model.get_output_embeddings()
    return head is not None and head.weight is model.get_input_embeddings().weight


def _check_loading_info(path: str | os.PathLike, info: dict[str, Any], optional: frozenset[str], importer: str) -> None:
    """Refuse a checkpoint that lacks weights of the draft (other than `optional` ones) or holds others, in one line."""
    missing = sorted(set(info.get("missing_keys") or ()) - optional)
    unexpected = sorted(set(info.get("unexpected_keys") or ()) - optional)
    mismatched = sorted(str(item[0]) for item in info.get("mismatched_keys") or ())
    problems = [
        f"{label} {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched))
        if keys
    ]
    if problems:
        raise EdaInputError(
            f"The draft checkpoint {str(path)!r} does not match its config.json ({'; '.join(problems)}): it is "
            "damaged or in another layout; re-save it with draft.save_pretrained(), or import an EAGLE checkpoint "
            f"with {importer}.from_eagle_checkpoint()."
        )


def _check_causal_lm(model: Any) -> Any:
    """Return the model's config, or raise `TypeError` if it is not a decoder-only causal LM."""
    config = getattr(model, "config", None)
    causal_lm_classes = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    # a masked LM (BERT, RoBERTa, ...) also loads through AutoModelForCausalLM, but attends both ways
    bidirectional = (
        config is not None
        and getattr(config, "model_type", None) in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        and not getattr(config, "is_decoder", False)
    )
    if (
        bidirectional
        or not isinstance(model, PreTrainedModel)
        or config is None
        or not (type(model).__name__ in causal_lm_classes or type(model).__name__.endswith("ForCausalLM"))
        or getattr(config, "is_encoder_decoder", False)
        or not callable(getattr(model, "get_output_embeddings", None))
        or model.get_output_embeddings() is None
        or model.get_input_embeddings() is None
        or not hasattr(config.get_text_config(), "hidden_size")
    ):
        kind = type(model).__name__
        if bidirectional:
            kind += f" (a bidirectional {config.model_type} model, not a decoder-only causal LM)"
        raise TypeError(
            f"Expected a decoder-only causal LM (e.g. AutoModelForCausalLM.from_pretrained(...)), got {kind}: pass a "
            "causal LM such as Llama, Qwen2 or Mistral."
        )
    return config
