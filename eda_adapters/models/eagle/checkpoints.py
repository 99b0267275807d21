"""Import EAGLE-1 draft checkpoints that other tools wrote, as an [`EagleDraftModel`].

Accepted layouts (a folder with `config.json` and weights):

- the EAGLE project's EAGLE-1 drafts: a `LlamaConfig`-style (or Qwen2-style) `config.json`, optionally with a `bias`
  flag for `fc`, and weights `fc.weight` (+ `fc.bias`), `layers.{i}.self_attn.*`, `layers.{i}.mlp.*`,
  `layers.{i}.post_attention_layernorm.weight`, `layers.{i>0}.input_layernorm.weight`, optionally `embed_tokens.weight`
  (ignored: the target's embedding is used), in `model.safetensors` (possibly sharded) or in a PyTorch
  `pytorch_model.bin`, read with `torch.load(weights_only=True)` only: a file that is not plain tensors is refused,
  never unpickled;
- what `eda export` writes: the vLLM and SGLang flavours (same layout) and `--format hf` (this library's own format).

Whether `fc` and the attention projections have biases is read from the weights themselves, not from the config: the
EAGLE reference code defaults `bias` to true, so a config without the key says nothing reliable. A Qwen2-style draft
with q/k/v biases and none on `o_proj` gets a zero `o_proj` bias (exact).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .configuration_eagle import EagleDraftConfig
from ...errors import EdaInputError

SAFETENSORS_NAMES = ("model.safetensors", "model.safetensors.index.json")
TORCH_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


def read_checkpoint_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder: `model.safetensors`, its sharded index, or `pytorch_model.bin` (plain
    tensors only). Keys keep their names, except a leading `model.` which some exporters add."""
    folder = Path(path)
    for name in SAFETENSORS_NAMES + TORCH_NAMES:
        if (folder / name).is_file():
            break
    else:
        raise FileNotFoundError(
            f"No weights in {str(folder)!r}: expected one of {', '.join(SAFETENSORS_NAMES + TORCH_NAMES)}."
        )
    files = [folder / name]
    if name.endswith(".index.json"):
        weight_map = json.loads(files[0].read_text(encoding="utf-8")).get("weight_map", {})
        files = [folder / shard for shard in sorted(set(weight_map.values()))]
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(_read_weight_file(file))
    return {key.removeprefix("model."): value for key, value in tensors.items()}


def _read_weight_file(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        try:
            return load_file(str(file))
        except (SafetensorError, OSError) as err:
            raise EdaInputError(f"{str(file)!r} is damaged or not a safetensors file ({err}): re-download it.") from err
    try:
        state = torch.load(str(file), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise EdaInputError(
            f"{str(file)!r} is not a file of plain tensors, so it was refused rather than unpickled (unpickling "
            "runs code): convert it to safetensors where you trust it."
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EdaInputError(f"{str(file)!r} does not hold a flat name -> tensor state dict.")
    return state


def eagle1_draft_config(checkpoint_config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> EagleDraftConfig:
    """An `EagleDraftConfig` for an EAGLE-1 checkpoint, from its `config.json` and the shapes of its tensors."""
    fc_weight = tensors["fc.weight"]
    hidden = fc_weight.shape[0]
    layers = 1 + max(int(key.split(".")[1]) for key in tensors if key.startswith("layers."))
    heads = int(checkpoint_config.get("num_attention_heads") or 0)
    if heads <= 0:
        raise EdaInputError("The checkpoint's config.json has no num_attention_heads: it is not an EAGLE-1 config.")
    q_rows = tensors["layers.0.self_attn.q_proj.weight"].shape[0]
    k_rows = tensors["layers.0.self_attn.k_proj.weight"].shape[0]
    head_dim = q_rows // heads
    return EagleDraftConfig(
        vocab_size=int(checkpoint_config.get("vocab_size") or tensors.get("embed_tokens.weight", fc_weight).shape[0]),
        hidden_size=hidden,
        intermediate_size=int(
            tensors["layers.0.mlp.gate_proj.weight"].shape[0] if "layers.0.mlp.gate_proj.weight" in tensors
            else checkpoint_config.get("intermediate_size") or 4 * hidden
        ),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=k_rows // head_dim,
        head_dim=head_dim,
        hidden_act=checkpoint_config.get("hidden_act", "silu"),
        max_position_embeddings=int(checkpoint_config.get("max_position_embeddings", 4096)),
        rms_norm_eps=float(checkpoint_config.get("rms_norm_eps", 1e-6)),
        rope_parameters=checkpoint_rope_parameters(checkpoint_config),
        attention_bias=any(f"layers.0.self_attn.{p}.bias" in tensors for p in _ATTENTION),
        fc_bias="fc.bias" in tensors,
        target_model_type=checkpoint_config.get("model_type"),
        target_name_or_path=checkpoint_config.get("_name_or_path") or None,
    )


def checkpoint_rope_parameters(checkpoint_config: dict[str, Any]) -> dict[str, Any]:
    """Rotary parameters in the transformers 5 format from a published config: `rope_parameters`, or the older
    `rope_theta` + `rope_scaling` (whose `type` key is the newer `rope_type`)."""
    rope = dict(checkpoint_config.get("rope_parameters") or {})
    if not rope:
        rope = dict(checkpoint_config.get("rope_scaling") or {})
        if "type" in rope and "rope_type" not in rope:
            rope["rope_type"] = rope.pop("type")
        rope["rope_theta"] = float(checkpoint_config.get("rope_theta", 10000.0))
    rope.setdefault("rope_type", "default")
    return rope


def expected_eagle1_keys(config: EagleDraftConfig) -> set[str]:
    """The parameter names of an EAGLE-1 draft with `config` (biases included only where the config has them)."""
    keys = {"fc.weight"} | ({"fc.bias"} if config.fc_bias else set())
    for i in range(config.num_hidden_layers):
        prefix = f"layers.{i}"
        keys |= {f"{prefix}.self_attn.{p}.weight" for p in _ATTENTION}
        if config.attention_bias:
            keys |= {f"{prefix}.self_attn.{p}.bias" for p in _ATTENTION}
        keys |= {f"{prefix}.mlp.{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")}
        keys.add(f"{prefix}.post_attention_layernorm.weight")
        if i > 0:
            keys.add(f"{prefix}.input_layernorm.weight")
    return keys


def eagle1_state_dict(tensors: dict[str, torch.Tensor], config: EagleDraftConfig) -> dict[str, torch.Tensor]:
    """The draft's state dict from EAGLE-1 tensors: target heads dropped, absent attention biases as zeros; any other
    difference from the expected keys is refused with both lists in one line."""
    state = {k: v for k, v in tensors.items() if not k.startswith(("embed_tokens.", "lm_head.")) and k != "d2t"}
    if config.attention_bias:
        for i in range(config.num_hidden_layers):
            for p in _ATTENTION:
                weight = state.get(f"layers.{i}.self_attn.{p}.weight")
                if weight is not None:
                    state.setdefault(f"layers.{i}.self_attn.{p}.bias", weight.new_zeros(weight.shape[0]))
    expected = expected_eagle1_keys(config)
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise EdaInputError(
            "Unknown draft layout: expected EAGLE-1 keys such as "
            f"{', '.join(sorted(expected)[:5])}, ...; missing {missing[:5]}, found instead {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}."
        )
    return state


def load_eagle_checkpoint(path: str | os.PathLike, target_model: Any = None, dtype: torch.dtype | None = None) -> Any:
    """Load an EAGLE-1 draft folder (the EAGLE project's layout, or any `eda export` flavour) as an `EagleDraftModel`.

    With `target_model=`, the target's embedding and head are attached (and the sizes checked). See the module
    docstring for the layouts and how biases are decided.
    """
    from .modeling_eagle import EagleDraftModel

    folder = Path(path)
    checkpoint_config = read_checkpoint_config(folder)
    if checkpoint_config.get("model_type") == EagleDraftConfig.model_type:
        return EagleDraftModel.from_pretrained(folder, target_model=target_model)
    tensors = read_checkpoint_tensors(folder)
    if "lm_head.weight" in tensors and "midlayer.self_attn.q_proj.weight" in tensors:
        raise EdaInputError(
            f"{str(folder)!r} is an EAGLE-3 draft (midlayer.*): import it with Eagle3DraftModel.from_eagle_checkpoint."
        )
    if checkpoint_config.get("speculators_model_type") == "eagle3":
        raise EdaInputError(
            f"{str(folder)!r} is a speculators EAGLE-3 draft: import it with Eagle3DraftModel.from_eagle_checkpoint."
        )
    if any(".block_sparse_moe." in key for key in tensors):
        raise EdaInputError(
            f"{str(folder)!r} holds an EDA draft with shared and private experts: import it with "
            "eda_adapters.load_official_eda_checkpoint(path), which splits it into a shared draft and an adapter."
        )
    return draft_from_eagle1_tensors(checkpoint_config, tensors, folder, dtype, target_model).eval()


def read_checkpoint_config(folder: Path) -> dict[str, Any]:
    """The `config.json` of a checkpoint folder, with one-line errors for a missing or broken file."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"No config.json in {str(folder)!r}: pass an EAGLE draft folder.")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EdaInputError(f"{str(config_file)!r} is not valid JSON ({err}).") from err


def draft_from_eagle1_tensors(
    checkpoint_config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    source: Path,
    dtype: torch.dtype | None,
    target_model: Any = None,
) -> Any:
    """A plain `EagleDraftModel` holding EAGLE-1 `tensors`, attached to `target_model` when one is given."""
    from .modeling_eagle import EagleDraftModel

    if "fc.weight" not in tensors or "layers.0.self_attn.q_proj.weight" not in tensors:
        raise EdaInputError(
            f"Unknown draft layout in {str(source)!r}: expected EAGLE-1 keys fc.weight, layers.0.self_attn.*, "
            f"layers.0.mlp.*; found {sorted(tensors)[:6]}."
        )
    config = eagle1_draft_config(checkpoint_config, tensors)
    draft = EagleDraftModel(config)
    state = eagle1_state_dict(tensors, config)
    try:
        draft.load_state_dict(state, strict=False)  # strictness is checked by eagle1_state_dict (heads are absent)
    except RuntimeError as err:
        raise EdaInputError(
            f"The weights in {str(source)!r} disagree with its config.json: {_first_line(err)}"
        ) from err
    draft.to(dtype or state["fc.weight"].dtype)
    return draft if target_model is None else draft.attach_target(target_model)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[1] if len(lines) > 1 and lines[0].startswith("Error(s)") else (lines[0] if lines else repr(err))
