"""Import published EAGLE-3 drafts as an [`Eagle3DraftModel`].

Three layouts (a folder with `config.json` and safetensors or plain-tensor weights):

- **EAGLE** (the authors' project): `architectures: ["LlamaForCausalLMEagle3"]`, a Llama-style config with
  `draft_vocab_size` (and optionally `target_hidden_size`); keys `fc.weight`, `midlayer.{hidden_norm,input_layernorm,
  post_attention_layernorm}.weight`, `midlayer.self_attn.{q,k,v,o}_proj.weight`, `midlayer.mlp.{gate,up,down}_proj.weight`,
  `norm.weight`, `lm_head.weight`, `d2t`, `t2d` (and often `embed_tokens.weight`, the target's: dropped). EAGLE's
  aux states are fixed, the states entering layers 2, L//2 and L-3 of the target, so the config does not record them:
  pass `target_model=` to resolve L.
- **SpecForge and SGLang**: the same keys; the aux ids, when recorded, are in the nested
  `eagle_config.eagle_aux_hidden_state_layer_ids` as *output-of-layer* ids (ours - 1).
- **speculators** (vLLM's training library): `speculators_model_type: "eagle3"`, the layer's sizes in the nested
  `transformer_layer_config` (written as a diff against its class defaults), `draft_vocab_size`,
  `target_hidden_size`, `norm_before_residual` and a top-level `eagle_aux_hidden_state_layer_ids` in *input-of-layer*
  ids (ours as they are); keys `layers.0.*` instead of `midlayer.*`; `d2t`/`t2d` only when the vocabularies differ.

A top-level `eagle_aux_hidden_state_layer_ids` (vLLM's convention) is read as it is in every layout; when a config also
holds the nested SpecForge key, the two must agree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from ..eagle.checkpoints import checkpoint_rope_parameters, read_checkpoint_config, read_checkpoint_tensors
from ..eagle.modeling_eagle import _ties_embeddings
from .configuration_eagle3 import Eagle3DraftConfig, default_aux_layer_ids
from ...errors import EdaInputError

EAGLE3_ARCHITECTURES = ("LlamaForCausalLMEagle3",)
SPECULATORS_FIELDS = ("transformer_layer_config", "draft_vocab_size")
_LAYER_PARTS = (
    "hidden_norm.weight", "input_layernorm.weight", "post_attention_layernorm.weight",
    *(f"self_attn.{p}_proj.weight" for p in "qkvo"), *(f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")),
)
EXPECTED_KEYS = frozenset(
    {"fc.weight", "norm.weight", "lm_head.weight", "d2t", "t2d"} | {f"midlayer.{part}" for part in _LAYER_PARTS}
)
#: Keys a published checkpoint may carry that the draft does not own: the target's embedding (ours is borrowed).
DROPPED_KEYS = frozenset({"embed_tokens.weight"})


def detect_layout(checkpoint_config: dict[str, Any]) -> str:
    """`"speculators"`, `"specforge"` (nested `eagle_config`) or `"eagle"`; a config of none of them is refused."""
    if checkpoint_config.get("speculators_model_type") is not None:
        if checkpoint_config["speculators_model_type"] != "eagle3":
            raise EdaInputError(
                f"This speculators checkpoint is a {checkpoint_config['speculators_model_type']!r} draft; only "
                "'eagle3' drafts import as Eagle3DraftModel."
            )
        return "speculators"
    if set(checkpoint_config.get("architectures") or ()) & set(EAGLE3_ARCHITECTURES):
        return "specforge" if isinstance(checkpoint_config.get("eagle_config"), dict) else "eagle"
    raise EdaInputError(
        f"config.json names architectures {checkpoint_config.get('architectures')} and no speculators_model_type: "
        f"not an EAGLE-3 draft (expected {list(EAGLE3_ARCHITECTURES)} or speculators_model_type 'eagle3'); import "
        "EAGLE-1 drafts with EagleDraftModel.from_eagle_checkpoint."
    )


def aux_layer_ids(checkpoint_config: dict[str, Any], num_target_layers: int | None) -> list[int] | None:
    """The aux states in our convention (indices of `hidden_states`), from whichever key the config holds."""
    top = checkpoint_config.get("eagle_aux_hidden_state_layer_ids")
    nested = (checkpoint_config.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
    from_nested = None if nested is None else [int(i) + 1 for i in nested]  # SpecForge/SGLang: output of layer i
    if top is not None and from_nested is not None and sorted(int(i) for i in top) != sorted(from_nested):
        raise EdaInputError(
            f"config.json records two different aux layers: eagle_aux_hidden_state_layer_ids {top} (input-of-layer) "
            f"and eagle_config.eagle_aux_hidden_state_layer_ids {nested} (output-of-layer, i.e. {from_nested}): "
            "fix the one that is wrong."
        )
    if top is not None:
        return [int(i) for i in top]
    if from_nested is not None:
        return from_nested
    return None if num_target_layers is None else default_aux_layer_ids(num_target_layers)


def _speculators_layer_config(checkpoint_config: dict[str, Any]) -> dict[str, Any]:
    missing = [name for name in SPECULATORS_FIELDS if name not in checkpoint_config]
    if missing:
        raise EdaInputError(
            f"This speculators eagle3 config.json lacks {', '.join(missing)}: it is incomplete; re-save it with "
            "speculators, which writes transformer_layer_config and draft_vocab_size."
        )
    if checkpoint_config.get("norm_before_residual", False):
        raise EdaInputError(
            "This speculators draft was trained with norm_before_residual=true (the residual is the normed hidden "
            "state), a variant Eagle3DraftModel does not implement: use a draft trained with it false."
        )
    layer = dict(checkpoint_config["transformer_layer_config"])
    model_type = layer.pop("model_type", "llama")
    try:  # written as a diff against the class's defaults: complete it the way speculators reads it
        return AutoConfig.for_model(model_type, **layer).to_dict()
    except (KeyError, ValueError, TypeError) as err:
        raise EdaInputError(f"transformer_layer_config cannot be read as a {model_type!r} config ({err}).") from err


def load_eagle3_checkpoint(path: str | os.PathLike, target_model: Any = None, dtype: torch.dtype | None = None) -> Any:
    """Load an EAGLE-3 draft folder in any of the module docstring's layouts (or this library's own format) as an
    `Eagle3DraftModel`, attached to `target_model` when one is given (and checked against it)."""
    from .modeling_eagle3 import Eagle3DraftModel

    folder = Path(path)
    checkpoint_config = read_checkpoint_config(folder)
    if checkpoint_config.get("model_type") == Eagle3DraftConfig.model_type:
        return Eagle3DraftModel.from_pretrained(folder, target_model=target_model)
    layout = detect_layout(checkpoint_config)
    tensors = read_checkpoint_tensors(folder)
    if layout == "speculators":
        layer_config = _speculators_layer_config(checkpoint_config)
        tensors = {_speculators_key(key): value for key, value in tensors.items()}
    else:
        layer_config = checkpoint_config
    state = {key: value for key, value in tensors.items() if key not in DROPPED_KEYS}
    vocab_size = int(layer_config.get("vocab_size") or 0)
    draft_vocab_size = int(checkpoint_config.get("draft_vocab_size") or vocab_size)
    if "d2t" not in state and "t2d" not in state and draft_vocab_size == vocab_size and vocab_size:
        # speculators and vLLM leave the maps out when the draft scores the whole target vocabulary
        state["d2t"] = torch.zeros(vocab_size, dtype=torch.long)
        state["t2d"] = torch.ones(vocab_size, dtype=torch.bool)
    _check_keys(folder, layout, state)
    target_config = None if target_model is None else target_model.config.get_text_config()
    config = _draft_config(checkpoint_config, layer_config, state, vocab_size, draft_vocab_size, target_config)
    _check_vocab_shapes(state, config)
    draft = Eagle3DraftModel(config)
    state["d2t"], state["t2d"] = state["d2t"].long(), state["t2d"].bool()  # never a float dtype
    draft.load_state_dict(state, strict=False)  # the key set was checked above; the embedding is the target's
    draft.check_vocab_maps()
    draft.to(dtype or state["fc.weight"].dtype)
    if target_model is not None:
        draft.config.target_tie_word_embeddings = _ties_embeddings(target_model)
        draft.attach_target(target_model)
    return draft.eval()


def _speculators_key(key: str) -> str:
    if key.startswith("layers.0."):
        return "midlayer." + key.removeprefix("layers.0.")
    return key


def _check_keys(folder: Path, layout: str, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = sorted(EXPECTED_KEYS - set(state)), sorted(set(state) - EXPECTED_KEYS)
    if missing or unexpected:
        raise EdaInputError(
            f"The weights in {str(folder)!r} match no EAGLE-3 layout (config.json says {layout}): expected "
            f"{sorted(EXPECTED_KEYS)} (speculators: layers.0.* for midlayer.*); missing {missing}, found instead "
            f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}."
        )


def _check_vocab_shapes(state: dict[str, torch.Tensor], config: Eagle3DraftConfig) -> None:
    shapes = {
        "d2t": (tuple(state["d2t"].shape), (config.draft_vocab_size,)),
        "t2d": (tuple(state["t2d"].shape), (config.vocab_size,)),
        "lm_head.weight": (tuple(state["lm_head.weight"].shape), (config.draft_vocab_size, config.hidden_size)),
    }
    wrong = [f"{key} has shape {found}, expected {expected}" for key, (found, expected) in shapes.items()
             if found != expected]
    if wrong:
        raise EdaInputError(
            f"d2t/t2d/lm_head are inconsistent with draft_vocab_size={config.draft_vocab_size} and "
            f"vocab_size={config.vocab_size} ({'; '.join(wrong)}): the config belongs to other weights."
        )


def _draft_config(
    checkpoint_config: dict[str, Any],
    layer_config: dict[str, Any],
    state: dict[str, torch.Tensor],
    vocab_size: int,
    draft_vocab_size: int,
    target_config: Any,
) -> Eagle3DraftConfig:
    """An `Eagle3DraftConfig` from a published config and the shapes of its tensors (shapes win where both exist)."""
    fc = state["fc.weight"]
    hidden = fc.shape[0]
    target_hidden = int(checkpoint_config.get("target_hidden_size") or layer_config.get("target_hidden_size") or hidden)
    if fc.shape[1] != 3 * target_hidden:
        raise EdaInputError(
            f"fc.weight has shape {tuple(fc.shape)}, but target_hidden_size={target_hidden} makes it "
            f"[{hidden}, {3 * target_hidden}]: the config belongs to other weights."
        )
    heads = int(layer_config.get("num_attention_heads") or 0)
    if heads <= 0:
        raise EdaInputError("The checkpoint's config.json has no num_attention_heads: it is not an EAGLE-3 config.")
    head_dim = state["midlayer.self_attn.q_proj.weight"].shape[0] // heads  # EAGLE ignores a head_dim field
    num_layers = None if target_config is None else int(target_config.num_hidden_layers)
    aux = aux_layer_ids(checkpoint_config, num_layers)
    if aux is None:
        raise EdaInputError(
            "This EAGLE checkpoint does not record which target layers it reads (EAGLE fixes them at 2, L//2, L-3 "
            "of the target's L layers): pass target_model= to Eagle3DraftModel.from_eagle_checkpoint."
        )
    verifier = (checkpoint_config.get("speculators_config") or {}).get("verifier") or {}
    return Eagle3DraftConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=state["midlayer.mlp.gate_proj.weight"].shape[0],
        num_attention_heads=heads,
        num_key_value_heads=state["midlayer.self_attn.k_proj.weight"].shape[0] // head_dim,
        head_dim=head_dim,
        hidden_act=layer_config.get("hidden_act", "silu"),
        max_position_embeddings=int(layer_config.get("max_position_embeddings", 8192)),
        rms_norm_eps=float(layer_config.get("rms_norm_eps", 1e-6)),
        rope_parameters=checkpoint_rope_parameters(layer_config),
        target_hidden_size=target_hidden,
        target_num_hidden_layers=num_layers,
        eagle_aux_hidden_state_layer_ids=aux,
        draft_vocab_size=draft_vocab_size,
        target_model_type=None if target_config is None else target_config.model_type,
        target_name_or_path=verifier.get("name_or_path") or checkpoint_config.get("_name_or_path") or None,
    )
