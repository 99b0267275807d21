"""The EAGLE-3 draft model: one readable file; the layer parts it shares with EAGLE-1 are imported from there.

Data flow of one draft step (EAGLE-3):

    aux        = cat(target hidden_states[low], [mid], [high])                        [B, S, 3 * H_target]
    fused      = fc(aux)                        (first step: real target features)     [B, S, H]
               = the draft's own previous pre-norm output  (later steps, fc skipped)   [B, S, H]
    x          = cat(input_layernorm(embed(token_{t+1})), hidden_norm(fused))          [B, S, 2H]
    h          = fused + o_proj(attention(q/k/v(x)))          (the residual is the un-normed fused state)
    h          = h + mlp(post_attention_layernorm(h))                                 -> last_hidden_state
    logits     = lm_head(norm(h))                              over the draft vocabulary [B, S, draft_vocab]
    target id  = draft id i + d2t[i]

Module names (`fc`, `midlayer.*`, `norm`, `lm_head`, `d2t`, `t2d`) are those of the EAGLE project's checkpoints, which
SGLang and vLLM load as they are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from ..eagle.modeling_eagle import (
    EagleAttention,
    EagleDraftPreTrainedModel,
    EagleMLP,
    EagleRMSNorm,
    EagleRotaryEmbedding,
    _check_causal_lm,
    _draft_vocab_ids,
    check_config_overrides,
    concat_hidden_states,
    scatter_to_vocab,
    target_config_fields,
)
from .configuration_eagle3 import NUM_AUX_HIDDEN_STATES, Eagle3DraftConfig, default_aux_layer_ids
from ...errors import EdaInputError
from ...schemas.tensors import features_tensor

HEAD_INITS = ("target", "random")


@dataclass
class Eagle3DraftOutput(ModelOutput):
    """Output of [`Eagle3DraftModel.forward`].

    Args:
        last_hidden_state: The layer's pre-norm output `[batch, seq, hidden]`, which the next draft step reads.
        logits: `lm_head(norm(last_hidden_state))` over the draft vocabulary `[batch, seq, draft_vocab_size]`
            (`None` when `compute_logits=False`); [`Eagle3DraftModel.target_vocab_logits`] maps them to target ids.
        past_key_values: The draft's KV cache, when `use_cache=True`.
    """

    last_hidden_state: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: Cache | None = None


class Eagle3DecoderLayer(GradientCheckpointingLayer):
    """The single EAGLE-3 layer: attention over `[normed embedding, normed fused state]`, then a SwiGLU MLP."""

    def __init__(self, config: Eagle3DraftConfig) -> None:
        super().__init__()
        self.hidden_norm = EagleRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.input_layernorm = EagleRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = EagleAttention(config, layer_idx=0, input_size=2 * config.hidden_size)
        self.post_attention_layernorm = EagleRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = EagleMLP(config)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
    ) -> torch.Tensor:
        residual = hidden_states
        x = torch.cat((self.input_layernorm(inputs_embeds), self.hidden_norm(hidden_states)), dim=-1)
        hidden_states = residual + self.self_attn(x, position_embeddings, attention_mask, past_key_values)
        residual = hidden_states
        return residual + self.mlp(self.post_attention_layernorm(hidden_states))


class Eagle3DraftPreTrainedModel(EagleDraftPreTrainedModel):
    config_class = Eagle3DraftConfig
    config: Eagle3DraftConfig
    base_model_prefix = "eagle3"
    _no_split_modules = ["Eagle3DecoderLayer"]


class Eagle3DraftModel(Eagle3DraftPreTrainedModel):
    r"""An EAGLE-3 draft: fuses three target hidden states and predicts the next token over a draft vocabulary.

    Build it for a target with [`Eagle3DraftModel.from_target`], or import a published one with
    [`Eagle3DraftModel.from_eagle_checkpoint`]. It borrows (shares, frozen) the target's input embedding, which
    `save_pretrained` does not write; its `lm_head` over the draft vocabulary is its own. A draft loaded with
    `from_pretrained` gets the embedding back with `from_pretrained(path, target_model=target)` or
    [`Eagle3DraftModel.attach_target`].

    Example:

    ```python
    >>> draft = Eagle3DraftModel.from_target(target, draft_vocab=token_ids)
    >>> out = target(ids, output_hidden_states=draft.hidden_state_indices)
    >>> step = draft(input_ids=next_tokens, hidden_states=draft.target_features(out.hidden_states))
    >>> step.logits.shape                                         # [batch, seq, draft_vocab_size]
    ```
    """

    #: Modules shared with the target, never saved or fingerprinted as the draft's own (the head is the draft's).
    borrowed_modules = ("embed_tokens",)
    optional_checkpoint_keys = frozenset({"embed_tokens.weight", "rotary_emb.inv_freq"})

    def __init__(self, config: Eagle3DraftConfig) -> None:
        super().__init__(config)
        self.fc = nn.Linear(NUM_AUX_HIDDEN_STATES * config.target_hidden_size, config.hidden_size, bias=False)
        self.midlayer = Eagle3DecoderLayer(config)
        self.norm = EagleRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.draft_vocab_size, bias=False)
        self.rotary_emb = EagleRotaryEmbedding(config)
        # draft id i is target id i + d2t[i] (int64 offsets, as every engine reads them); t2d marks the target ids kept
        self.register_buffer("d2t", torch.zeros(config.draft_vocab_size, dtype=torch.long))
        t2d = torch.zeros(config.vocab_size, dtype=torch.bool)
        t2d[: config.draft_vocab_size] = True
        self.register_buffer("t2d", t2d)
        self.embed_tokens: nn.Module | None = None
        self.post_init()
        self._keys_to_ignore_on_save = set(self._keys_to_ignore_on_save or ()) | {"embed_tokens.weight"}

    # ------------------------------------------------------------------ construction from / link to a target
    @classmethod
    def from_target(
        cls,
        target_model: PreTrainedModel,
        draft_vocab: Any = None,
        aux_layer_ids: list[int] | None = None,
        head_init: Literal["target", "random"] = "target",
        **overrides: Any,
    ) -> Eagle3DraftModel:
        """Build a fresh EAGLE-3 draft sized for `target_model` (any Hugging Face decoder-only causal LM).

        Args:
            target_model: The target the draft serves; its embedding is shared with the draft, frozen.
            draft_vocab: Target token ids the draft scores (e.g. `eda_adapters.data.most_frequent_tokens` over the
                answer tokens of the training data); `None`: the whole target vocabulary.
            aux_layer_ids: The three `hidden_states` indices the draft fuses (see
                `Eagle3DraftConfig.eagle_aux_hidden_state_layer_ids`); default `[2, L//2, L-3]`.
            head_init: `"target"` copies the target head's rows of the draft vocabulary into `lm_head`; `"random"`
                initialises it randomly (as EAGLE and SpecForge do).
            overrides: Any other `Eagle3DraftConfig` field, e.g. `intermediate_size=...`.
        """
        if head_init not in HEAD_INITS:
            raise EdaInputError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}.")
        fields = target_config_fields(target_model)
        num_layers = target_model.config.get_text_config().num_hidden_layers
        default = default_aux_layer_ids(num_layers)
        if aux_layer_ids is None and (len(set(default)) < NUM_AUX_HIDDEN_STATES or min(default) < 0):
            raise EdaInputError(
                f"The target has {num_layers} layers, too few for the default aux states [2, L//2, L-3] (they repeat a "
                "layer below 7 layers): pass aux_layer_ids=[...] (three distinct hidden_states indices in [0, L])."
            )
        vocab_size = fields["vocab_size"]
        vocab_ids = None if draft_vocab is None else _draft_vocab_ids(draft_vocab, vocab_size).sort().values
        fields.update({
            "target_hidden_size": fields["hidden_size"],
            "target_num_hidden_layers": num_layers,
            "eagle_aux_hidden_state_layer_ids": list(aux_layer_ids or default_aux_layer_ids(num_layers)),
            "draft_vocab_size": vocab_size if vocab_ids is None else int(vocab_ids.numel()),
        })
        check_config_overrides(cls, Eagle3DraftConfig, fields, overrides)
        draft = cls(Eagle3DraftConfig(**fields))
        draft.attach_target(target_model)
        if vocab_ids is not None:
            draft.set_draft_vocab(vocab_ids)
        if head_init == "target":
            draft.init_head_from_target(target_model)
        return draft

    @classmethod
    def from_eagle_checkpoint(
        cls, path: str | os.PathLike, target_model: PreTrainedModel | None = None, dtype: torch.dtype | None = None
    ) -> Eagle3DraftModel:
        """Import a published EAGLE-3 draft: the EAGLE project's layout (`LlamaForCausalLMEagle3`, `midlayer.*`),
        SpecForge's and SGLang's (the same keys, output-of-layer aux ids) or `speculators`' (`layers.0.*`). See
        `eda_adapters.models.eagle3.checkpoints`."""
        from .checkpoints import load_eagle3_checkpoint

        return load_eagle3_checkpoint(path, target_model=target_model, dtype=dtype)

    def attach_target(self, target_model: PreTrainedModel) -> Eagle3DraftModel:
        """Share (and freeze) the target's input embedding after checking that the target fits the draft; the draft
        moves to the embedding's device and dtype (`d2t`/`t2d` keep their integer and boolean types)."""
        self.check_compatible(target_model)
        embed = target_model.get_input_embeddings()
        self.to(device=embed.weight.device, dtype=embed.weight.dtype)
        for param in embed.parameters():
            param.requires_grad_(False)
        self.embed_tokens = embed
        return self

    def check_compatible(self, target_model: PreTrainedModel) -> None:
        """Raise a one-line error if `target_model` does not fit this draft (hidden size, vocabulary, layers)."""
        target_config = _check_causal_lm(target_model).get_text_config()
        vocab = target_model.get_input_embeddings().weight.shape[0]
        problems = []
        if target_config.hidden_size != self.config.target_hidden_size:
            problems.append(
                f"hidden size {target_config.hidden_size} != the draft's target_hidden_size "
                f"{self.config.target_hidden_size}"
            )
        elif target_config.hidden_size != self.config.hidden_size:
            problems.append(
                f"the draft's hidden size {self.config.hidden_size} differs from the target's "
                f"{target_config.hidden_size}, and a draft here reads the target's own embedding"
            )
        if vocab != self.config.vocab_size:
            problems.append(f"vocabulary {vocab} != draft's {self.config.vocab_size}")
        top = max(self.config.eagle_aux_hidden_state_layer_ids)
        if top > target_config.num_hidden_layers:
            problems.append(
                f"aux layer id {top} is out of range for a target of {target_config.num_hidden_layers} layers"
            )
        if problems:
            built_for = self.config.target_name_or_path or self.config.target_model_type or "another target"
            raise EdaInputError(
                f"This EAGLE-3 draft was built for {built_for} and does not fit this target ({'; '.join(problems)}): "
                "use a draft built with Eagle3DraftModel.from_target(target) for this target."
            )

    @torch.no_grad()
    def set_draft_vocab(self, token_ids: Any) -> Eagle3DraftModel:
        """Set the draft vocabulary to `token_ids` (target ids, stored ascending): fills `d2t` and `t2d`."""
        ids = _draft_vocab_ids(token_ids, self.config.vocab_size).sort().values.to(self.d2t.device)
        if ids.numel() != self.config.draft_vocab_size:
            raise EdaInputError(
                f"Expected {self.config.draft_vocab_size} token ids (draft_vocab_size), got {ids.numel()}."
            )
        self.d2t.copy_(ids - torch.arange(ids.numel(), device=ids.device))
        self.t2d.zero_()
        self.t2d[ids.to(self.t2d.device)] = True
        return self

    @torch.no_grad()
    def init_head_from_target(self, target_model: PreTrainedModel) -> Eagle3DraftModel:
        """Copy the target head's rows of the draft vocabulary into `lm_head`."""
        head = target_model.get_output_embeddings()
        if getattr(head, "bias", None) is not None:
            raise EdaInputError(
                "The target's output head has a bias, which the draft's lm_head has not: build the draft with "
                "head_init='random'."
            )
        rows = head.weight[self.draft_token_ids.to(head.weight.device)]
        self.lm_head.weight.copy_(rows.to(self.lm_head.weight))
        return self

    @property
    def draft_token_ids(self) -> torch.Tensor:
        """The target id of each draft id, `[draft_vocab_size]` (`arange + d2t`)."""
        return torch.arange(self.d2t.numel(), device=self.d2t.device) + self.d2t

    def check_vocab_maps(self) -> None:
        """Raise a one-line error unless `d2t` and `t2d` describe the same `draft_vocab_size` target ids."""
        size, vocab = self.config.draft_vocab_size, self.config.vocab_size
        problems = []
        if tuple(self.d2t.shape) != (size,) or self.d2t.dtype != torch.long:
            problems.append(f"d2t must be int64 of shape [{size}], got {self.d2t.dtype} {tuple(self.d2t.shape)}")
        if tuple(self.t2d.shape) != (vocab,):
            problems.append(f"t2d must have shape [{vocab}], got {tuple(self.t2d.shape)}")
        if not problems:
            ids = self.draft_token_ids
            if int(ids.min()) < 0 or int(ids.max()) >= vocab or ids.unique().numel() != size:
                problems.append("d2t maps draft ids outside the target vocabulary or onto the same target id twice")
            elif int(self.t2d.sum()) != size or not bool(self.t2d[ids].all()):
                problems.append(f"t2d marks {int(self.t2d.sum())} target ids, not the {size} that d2t maps to")
        if problems:
            raise EdaInputError(
                f"The draft's vocabulary maps do not agree with draft_vocab_size={size} ({'; '.join(problems)}): the "
                "checkpoint is damaged or its config belongs to other weights."
            )

    @property
    def has_target_heads(self) -> bool:
        return self.embed_tokens is not None

    def _require_heads(self) -> None:
        if self.embed_tokens is None:
            raise EdaInputError(
                "This draft has no target attached (it reads the target's embedding): call "
                "draft.attach_target(target) or Eagle3DraftModel.from_pretrained(path, target_model=target)."
            )

    def check_loaded(self) -> None:
        """A loaded draft's `d2t` and `t2d` must describe its draft vocabulary."""
        self.check_vocab_maps()

    def get_input_embeddings(self) -> nn.Module | None:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def named_decoder_layers(self) -> list[tuple[str, nn.Module]]:
        """`(name, layer)` of each decoder layer, in order (an EDA adapter wraps each one's `mlp`)."""
        return [("midlayer", self.midlayer)]

    # ------------------------------------------------------------------ what the draft reads from the target
    @property
    def hidden_state_indices(self) -> list[int]:
        """The target `hidden_states` the draft reads: pass as `target(..., output_hidden_states=...)`."""
        return list(self.config.eagle_aux_hidden_state_layer_ids)

    def target_features(self, hidden_states: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
        """The draft's input from a target's `hidden_states` tuple: the three aux states, low to high, concatenated
        to `[batch, seq, 3 * target_hidden_size]`."""
        return concat_hidden_states(hidden_states, self.hidden_state_indices)

    def _d2t_is_identity(self) -> bool:
        """Whether `d2t` maps every draft id to itself; read from the device once per change of the buffer (its
        version counter moves on every in-place write, e.g. `load_state_dict`), not once per decoding step."""
        key = (self.d2t.data_ptr(), self.d2t._version)
        if getattr(self, "_d2t_identity_key", None) != key:
            self._d2t_identity = not bool(self.d2t.any())
            self._d2t_identity_key = key
        return self._d2t_identity

    def target_vocab_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Draft-vocabulary logits `[..., draft_vocab_size]` as target-vocabulary logits `[..., vocab_size]`: each
        draft token at its target id, `-inf` elsewhere (never proposed; the target still verifies)."""
        if self.config.draft_vocab_size == self.config.vocab_size and self._d2t_is_identity():
            return logits
        return scatter_to_vocab(logits, self.draft_token_ids, self.config.vocab_size)

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
    ) -> Eagle3DraftOutput:
        r"""One draft step over `seq` positions.

        Args:
            input_ids: Tokens `t+1`, `[batch, seq]` (or pass `inputs_embeds`).
            hidden_states: Either the target's aux states at positions `t`, `[batch, seq, 3 * target_hidden_size]`
                (see `target_features`), which go through `fc`, or the draft's own `last_hidden_state` of the previous
                step, `[batch, seq, hidden_size]`, which skips it.
            attention_mask: 2D padding mask over past + new tokens, or a 4D boolean mask (True = attend), e.g. a tree.
            position_ids: Positions of the new tokens; default continues after the cache.
            past_key_values: The draft's own KV cache; created when `use_cache=True`.
            use_cache: Return the updated cache.
            compute_logits: Apply `norm` and `lm_head` (set `False` when only the hidden state is needed).
        """
        if hidden_states is None:
            raise EdaInputError(
                "Eagle3DraftModel.forward needs hidden_states= (draft.target_features(target_outputs.hidden_states), "
                "or the draft's previous last_hidden_state)."
            )
        inputs_embeds = self.embed_inputs(input_ids, inputs_embeds)
        fused_width = NUM_AUX_HIDDEN_STATES * self.config.target_hidden_size
        width = hidden_states.shape[-1] if isinstance(hidden_states, torch.Tensor) and hidden_states.dim() else None
        if width not in (fused_width, self.config.hidden_size):
            raise EdaInputError(
                f"hidden_states have size {width}, but this EAGLE-3 draft reads {fused_width} (three target states: "
                f"pass draft.target_features(outputs.hidden_states)) or {self.config.hidden_size} (its own previous "
                "last_hidden_state)."
            )
        hidden_states = features_tensor(hidden_states, width, inputs_embeds, where="Eagle3DraftModel.forward")
        if width == fused_width:
            hidden_states = self.fc(hidden_states.to(self.fc.weight.dtype))
        hidden_states = hidden_states.to(inputs_embeds.dtype)
        past_key_values, position_ids, mask = self.prepare_step(
            inputs_embeds, hidden_states, attention_mask, position_ids, past_key_values, use_cache
        )
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        hidden_states = self.midlayer(
            inputs_embeds, hidden_states, position_embeddings, attention_mask=mask, past_key_values=past_key_values
        )
        logits = self.lm_head(self.norm(hidden_states)) if compute_logits else None
        return Eagle3DraftOutput(
            last_hidden_state=hidden_states, logits=logits, past_key_values=past_key_values if use_cache else None
        )


__all__ = ["Eagle3DraftModel", "Eagle3DraftOutput", "Eagle3DecoderLayer"]
