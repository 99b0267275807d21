"""Export adapted drafts in the checkpoint layouts serving engines load.

vLLM and SGLang ship EAGLE-1 draft classes with one plain SwiGLU MLP per layer and no slot for an EDA private branch.
A router-free EDA adapter merges exactly into that MLP (it only gets wider, see `EdaLayer.merge`), so an adapted draft
can be served as an ordinary, wider EAGLE-1 draft. This module merges (with PEFT's `merge_and_unload`), checks that the
result is expressible in the chosen layout and writes it:

- `format="eagle"`: the EAGLE-1 layout (`config.json` readable as a `LlamaConfig` plus `model.safetensors` with
  `fc.*`, `layers.{i}.*`; no `lm_head`, no `embed_tokens` unless asked). Two engine flavours differ in details:

  | engine     | `architectures`             | `fc.bias`                                                       |
  |------------|-----------------------------|-----------------------------------------------------------------|
  | `"vllm"`   | `["LlamaForCausalLM"]`      | never written: vLLM's `EagleLlamaForCausalLM` builds `fc` without bias |
  | `"sglang"` | `["LlamaForCausalLMEagle"]` | always written (zeros when the draft has none): SGLang's `fc` has one |

  Both write `"bias"` (whether `fc.bias` is in the weights) for the EAGLE reference loader, which otherwise builds
  `fc` with a random bias; since vLLM's and SGLang's Llama layers read `"bias": true` as "attention projections have
  biases", the SGLang flavour also writes attention biases (zeros where the draft has none). They write the rope
  settings under transformers 5's `rope_parameters` as well as the older
  `rope_theta` + `rope_scaling` (with both `rope_type` and the pre-4.45 `type`).

  A non-zero `fc` bias cannot be written for vLLM; `fold_fc_bias=True` folds it exactly into layer 0's attention
  biases instead (layer 0 has no input norm, so `fc` output `Wx + b` reaches the q/k/v projections and the residual
  unchanged: `b_q += W_q b`, `b_k += W_k b`, `b_v += W_v b`, `b_o += b`), which turns on `attention_bias`.
- `format="hf"`: the merged draft in this library's own `save_pretrained` format.

An EAGLE-3 draft (`Eagle3DraftModel`) merges the same way (its adapter wraps `midlayer.mlp`) and is written by
[`eagle3_layout`] (`eagle3.py`) for `engine="vllm"`, `"sglang"` or `"speculators"`: the layouts, the aux-layer id
conventions and the fields written explicitly are in that module's docstring.

Every export writes into a temporary sibling directory and moves it into place at the end, so a failed export never
leaves a half-written output.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from peft import PeftModel
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from ..atomic import atomic_directory
from ..models import DRAFT_MODEL_CLASSES, Eagle3DraftModel, EagleDraftModel
from ..tuners import EdaConfig, draft_fingerprint
from ..validation import check_disjoint, load_adapter_checked
from ..errors import EdaInputError
from ..run_directory import RunDirectory
from .eagle3 import eagle3_layout
from .llama_config import check_silu_mlp, checked_embedding, llama_config_fields

EXPORT_FORMATS = ("eagle", "hf")
#: Engines an export targets: EAGLE-1 drafts for vLLM and SGLang, EAGLE-3 drafts for those and `speculators`.
SERVING_ENGINES = ("vllm", "sglang", "speculators")
EAGLE_ARCHITECTURES = {"vllm": "LlamaForCausalLM", "sglang": "LlamaForCausalLMEagle"}
#: Extra file written beside each export recording where it came from (engines ignore it).
EXPORT_INFO_NAME = "eda_export.json"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ExportOptions:
    """How [`export_draft`], [`export_adapters`] and `eda export` write a servable draft (checked on creation).

    Args:
        format: `"eagle"` (EAGLE-1 layout for serving engines) or `"hf"` (this library's `save_pretrained` format).
        engine: The engine whose layout `format="eagle"` writes: `"vllm"` or `"sglang"` (EAGLE-1 and EAGLE-3 drafts),
            `"speculators"` (EAGLE-3 drafts, vLLM's speculators format).
        include_embeddings: Also write the target's input embedding as `embed_tokens.weight` (needs it attached).
        dtype: `"float32"`, `"float16"`, `"bfloat16"` (or a torch dtype); default keeps the draft's dtype.
        fold_fc_bias: vLLM only: fold a non-zero `fc` bias into layer 0's attention biases (exact) instead of refusing.
        overwrite: Replace a non-empty output directory.
        allow_fingerprint_mismatch: Export an adapter that records another draft's fingerprint.
        verifier: speculators only: the target's name or path, recorded as the draft's verifier.
    """

    format: Literal["eagle", "hf"] = "eagle"
    engine: Literal["vllm", "sglang", "speculators"] = "vllm"
    include_embeddings: bool = False
    dtype: str | torch.dtype | None = None
    fold_fc_bias: bool = False
    overwrite: bool = False
    allow_fingerprint_mismatch: bool = False
    verifier: str | None = None

    def __post_init__(self) -> None:
        if self.format not in EXPORT_FORMATS:
            raise EdaInputError(f"format must be one of {EXPORT_FORMATS}, got {self.format!r}.")
        if self.format == "hf" and self.include_embeddings:
            raise EdaInputError(
                "include_embeddings applies to format='eagle'; the hf format re-attaches the target's embedding at "
                "load time (eda_adapters.load_draft(path, target_model=target))."
            )
        if self.engine not in SERVING_ENGINES:
            raise EdaInputError(f"engine must be one of {SERVING_ENGINES}, got {self.engine!r}.")
        if isinstance(self.dtype, str) and self.dtype not in _DTYPES:
            raise EdaInputError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}.")

    @property
    def torch_dtype(self) -> torch.dtype | None:
        return _DTYPES[self.dtype] if isinstance(self.dtype, str) else self.dtype

    @classmethod
    def build(cls, options: ExportOptions | None = None, **fields: Any) -> ExportOptions:
        """`options` (default: the defaults) with `fields` replaced; an unknown field is a one-line `TypeError`."""
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"Unknown export option(s) {unknown}: the options are the fields of ExportOptions.")
        return dataclasses.replace(options or cls(), **fields)


# ---------------------------------------------------------------------------------------------------------- merging
def merge_for_export(
    model: EagleDraftModel | Eagle3DraftModel | PeftModel,
    adapter_name: str | None = None,
    allow_fingerprint_mismatch: bool = False,
) -> EagleDraftModel | Eagle3DraftModel:
    """Return a plain draft (`EagleDraftModel` or `Eagle3DraftModel`) holding `model` with one EDA adapter merged in;
    `model` is left untouched.

    Args:
        model: A draft (returned as a copy, nothing to merge) or a `PeftModel` wrapping one with EDA adapters.
        adapter_name: The adapter to merge; defaults to the active one.
        allow_fingerprint_mismatch: Merge even if the adapter records another draft's fingerprint.

    The copy does not include the modules the draft borrows from the target (its embedding, and an EAGLE-1 draft's
    output head: shared, and possibly large); the merged draft has none attached.
    """
    if isinstance(model, DRAFT_MODEL_CLASSES):
        return _copy_without_target_heads(model)
    if not isinstance(model, PeftModel) or not isinstance(model.get_base_model(), DRAFT_MODEL_CLASSES):
        raise TypeError(
            f"Expected an EagleDraftModel, an Eagle3DraftModel or a PeftModel wrapping one, got "
            f"{type(model).__name__}: export the draft returned by from_target / peft.get_peft_model(draft, "
            "EdaConfig(...))."
        )
    name = adapter_name or _single_active_adapter(model)
    if name not in model.peft_config:
        raise EdaInputError(f"No adapter named '{name}' on this model (it has {sorted(model.peft_config)}).")
    config = model.peft_config[name]
    check_exportable_adapter(config, name, model.get_base_model(), allow_fingerprint_mismatch)
    merged = _copy_without_target_heads(model).merge_and_unload(adapter_names=[name])
    _check_uniform_mlp_width(merged)
    return merged


def check_exportable_adapter(
    config: EdaConfig,
    adapter_name: str,
    draft: EagleDraftModel | Eagle3DraftModel,
    allow_fingerprint_mismatch: bool = False,
) -> None:
    """Raise a one-line `ValueError` if adapter `adapter_name` cannot be merged exactly into `draft`."""
    if not isinstance(config, EdaConfig):
        raise EdaInputError(
            f"Adapter '{adapter_name}' is a {type(config).__name__}, not an EDA adapter: only EDA adapters can be "
            "merged into a servable EAGLE draft by eda export."
        )
    if config.is_routed:
        raise EdaInputError(
            f"Cannot export EDA adapter '{adapter_name}': it routes each token to {config.num_experts_per_tok} of "
            f"{config.num_private_experts} private experts, and the router's choice and weights depend on the token, "
            "so no single MLP computes the same function (an exact merge is impossible) and engines' EAGLE drafts "
            "have no router. Serve the PeftModel with eda_adapters, or train a single-expert adapter "
            "(EdaConfig(num_private_experts=1)) to export."
        )
    recorded, actual = config.draft_fingerprint, draft_fingerprint(draft)
    if recorded is not None and recorded != actual and not allow_fingerprint_mismatch:
        raise EdaInputError(
            f"EDA adapter '{adapter_name}' belongs to another draft: its adapter_config.json records draft "
            f"fingerprint {recorded}, but this draft's is {actual} (same sizes, different shared weights), so the "
            "merged draft would not be the one the adapter was trained with. Export it with its own draft "
            f"({config.base_model_name_or_path or 'see adapter_config.json'}), or pass "
            "allow_fingerprint_mismatch=True (--allow-fingerprint-mismatch) if you know the shared weights are "
            "equivalent."
        )


def _single_active_adapter(model: PeftModel) -> str:
    active = list(model.active_adapters)
    if len(active) != 1:
        raise EdaInputError(
            f"This PeftModel has {len(active)} active adapters {active}: pass adapter_name= to choose the one to "
            "export."
        )
    return active[0]


def _copy_without_target_heads(model: nn.Module) -> Any:
    """Deep-copy a draft (or a PeftModel around one) without the modules it borrows from the target."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    borrowed = () if getattr(base.config, "save_target_heads", False) else base.borrowed_modules
    kept = {name: getattr(base, name) for name in borrowed}
    for name in borrowed:
        setattr(base, name, None)
    try:
        return copy.deepcopy(model)
    finally:
        for name, module in kept.items():
            setattr(base, name, module)


def _check_uniform_mlp_width(draft: EagleDraftModel | Eagle3DraftModel) -> None:
    widths = [layer.mlp.gate_proj.out_features for _, layer in draft.named_decoder_layers()]
    if any(width != draft.config.intermediate_size for width in widths):
        raise EdaInputError(
            f"The merged draft's layers have MLP widths {widths}: the adapter wraps only some layers, and a draft "
            "config (like the engines' LlamaConfig) holds one intermediate_size. Export an adapter that wraps every "
            "layer's mlp (EdaConfig(target_modules=None))."
        )


# ---------------------------------------------------------------------------------------------------------- layout
def eagle_layout(
    draft: EagleDraftModel,
    engine: Literal["vllm", "sglang"] = "vllm",
    embed_weight: torch.Tensor | None = None,
    fold_fc_bias: bool = False,
    dtype: torch.dtype | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The EAGLE-1 `config.json` dict and tensors (name -> tensor) for a plain (merged) `draft`.

    Nothing is written; tensors may live on the meta device (then `fc` biases count as non-zero), which is how the
    layout of a full-size draft can be inspected without allocating it.

    Args:
        draft: A plain `EagleDraftModel` (merge adapters first with [`merge_for_export`]).
        engine: `"vllm"` or `"sglang"` (see the module docstring for what differs).
        embed_weight: The target's input embedding to include as `embed_tokens.weight` (omitted when `None`).
        fold_fc_bias: For vLLM, fold a non-zero `fc` bias into layer 0's attention biases instead of refusing.
        dtype: Cast the tensors to this dtype (default: keep the draft's).
    """
    if engine not in EAGLE_ARCHITECTURES:
        raise EdaInputError(
            f"An EAGLE-1 draft exports for engine in {tuple(EAGLE_ARCHITECTURES)}, got {engine!r} (speculators takes "
            "EAGLE-3 drafts)."
        )
    config = draft.config
    if getattr(config, "draft_vocab_size", None) is not None:
        raise EdaInputError(
            "This draft has a reduced draft vocabulary (its own head over draft_vocab_size tokens and a d2t map), "
            "which the EAGLE-1 layouts have no field for: export with format='hf' (--format hf) and serve it with "
            "eda_adapters, or build the draft without draft_vocab for vLLM/SGLang."
        )
    check_silu_mlp(config, "EAGLE-1")
    _check_uniform_mlp_width(draft)
    params = {
        name: p.detach() for name, p in draft.named_parameters() if not name.startswith(("embed_tokens.", "lm_head."))
    }
    expected = _expected_draft_keys(config)
    unexpected = sorted(set(params) - expected)
    if unexpected:
        raise EdaInputError(
            f"The draft has parameters the EAGLE-1 layout has no place for ({unexpected[:3]}...): pass a plain, merged "
            "EagleDraftModel (merge_for_export(peft_model))."
        )

    tensors = {name: params[name] for name in sorted(params) if name != "fc.bias"}
    attention_bias = bool(config.attention_bias)
    fc_bias = params.get("fc.bias")
    fc_bias_nonzero = fc_bias is not None and (fc_bias.is_meta or bool(fc_bias.count_nonzero()))
    if engine == "sglang":
        tensors["fc.bias"] = fc_bias if fc_bias is not None else params["fc.weight"].new_zeros(config.hidden_size)
        # config.json then says `"bias": true` (for the EAGLE reference loader's fc), which the engines' Llama layers
        # also read as "attention projections have biases": write them (zeros where the draft has none; exact)
        attention_bias = True
    elif fc_bias_nonzero and not fold_fc_bias:
        raise EdaInputError(
            "This draft's fc layer has a non-zero bias, which vLLM's EAGLE-1 draft class cannot express (it builds fc "
            "without bias and drops fc.bias): export with engine='sglang' (--engine sglang), or fold the bias exactly "
            "into layer 0's attention biases with fold_fc_bias=True (--fold-fc-bias; sets attention_bias)."
        )
    elif fc_bias_nonzero:
        attention_bias = True
        _fold_fc_bias(tensors, fc_bias)

    if attention_bias and not config.attention_bias:
        # LlamaConfig.attention_bias is one switch for every layer: give the layers without folded biases zero ones.
        for i in range(config.num_hidden_layers):
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                key = f"layers.{i}.self_attn.{proj}"
                tensors.setdefault(f"{key}.bias", tensors[f"{key}.weight"].new_zeros(tensors[f"{key}.weight"].shape[0]))
    if embed_weight is not None:
        tensors["embed_tokens.weight"] = checked_embedding(embed_weight, config)
    out_dtype = dtype or params["fc.weight"].dtype
    tensors = {name: t.to(out_dtype).contiguous() for name, t in sorted(tensors.items())}
    fields = llama_config_fields(config, attention_bias, "fc.bias" in tensors, out_dtype)
    return {"architectures": [EAGLE_ARCHITECTURES[engine]], **fields}, tensors


def _expected_draft_keys(config: Any) -> set[str]:
    keys = {"fc.weight", "fc.bias"}
    for i in range(config.num_hidden_layers):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            keys |= {f"layers.{i}.self_attn.{proj}.weight", f"layers.{i}.self_attn.{proj}.bias"}
        keys |= {f"layers.{i}.mlp.{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")}
        keys |= {f"layers.{i}.post_attention_layernorm.weight", f"layers.{i}.input_layernorm.weight"}
    return keys


@torch.no_grad()
def _fold_fc_bias(tensors: dict[str, torch.Tensor], fc_bias: torch.Tensor) -> None:
    """Move `fc`'s bias `b` into layer 0: q/k/v biases gain `W b` (their input is `Wx + b`), o's bias gains `b`."""
    attn = "layers.0.self_attn"
    b = fc_bias.float()
    for proj in ("q_proj", "k_proj", "v_proj"):
        weight = tensors[f"{attn}.{proj}.weight"]
        old = tensors.get(f"{attn}.{proj}.bias")
        folded = weight.float() @ b + (old.float() if old is not None else 0.0)
        tensors[f"{attn}.{proj}.bias"] = folded.to(weight.dtype)
    old_o = tensors.get(f"{attn}.o_proj.bias")
    tensors[f"{attn}.o_proj.bias"] = (b + (old_o.float() if old_o is not None else 0.0)).to(fc_bias.dtype)


# ---------------------------------------------------------------------------------------------------------- writing
def check_export_dir(output_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Raise `RunMismatchError` unless `output_dir` is missing, empty, or may be overwritten."""
    return RunDirectory(output_dir, "export").require_empty(overwrite, "pass overwrite=True (--overwrite)")


@contextmanager
def _atomic_output_dir(output_dir: str | os.PathLike, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary directory beside `output_dir`; move it into place only if the block succeeds."""
    with atomic_directory(check_export_dir(output_dir, overwrite)) as tmp:
        yield tmp


def _write_one(
    merged: EagleDraftModel | Eagle3DraftModel,
    directory: Path,
    options: ExportOptions,
    embed_weight: torch.Tensor | None,
    info: dict[str, Any],
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    format, engine, dtype = options.format, options.engine, options.torch_dtype
    if format == "hf":
        if dtype is not None:
            merged.to(dtype)
        merged.save_pretrained(directory)
    else:
        if isinstance(merged, Eagle3DraftModel):
            config, tensors = eagle3_layout(merged, engine, embed_weight, dtype=dtype, verifier=options.verifier)
            info = {**info, "engine": engine}
        else:
            config, tensors = eagle_layout(
                merged, engine, embed_weight, fold_fc_bias=options.fold_fc_bias, dtype=dtype
            )
            folded = bool(config["attention_bias"] and not merged.config.attention_bias)
            info = {**info, "engine": engine, "fc_bias_folded": folded}
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    info = {**info, "format": format, "intermediate_size": merged.config.intermediate_size}
    (directory / EXPORT_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")


def _embedding_of(model: nn.Module, include_embeddings: bool) -> torch.Tensor | None:
    if not include_embeddings:
        return None
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    if base.embed_tokens is None:
        raise EdaInputError(
            "include_embeddings needs the target's embedding: attach the target first "
            "(draft.attach_target(target), or --target PATH on the command line)."
        )
    return base.embed_tokens.weight


def export_draft(
    model: EagleDraftModel | Eagle3DraftModel | PeftModel,
    output_dir: str | os.PathLike,
    *,
    adapter_name: str | None = None,
    options: ExportOptions | None = None,
    **option_fields: Any,
) -> Path:
    """Merge one EDA adapter into its draft and write a servable draft to `output_dir`.

    Args:
        model: A `PeftModel` with EDA adapters on an `EagleDraftModel` or `Eagle3DraftModel` (or a bare draft,
            exported as is). It is not modified.
        output_dir: Where to write; must be missing or empty unless `overwrite=True`.
        adapter_name: Which adapter to merge (defaults to the active one).
        options: How to write it ([`ExportOptions`]).
        option_fields: Fields of [`ExportOptions`] given as keywords (`format=`, `engine=`, `include_embeddings=`,
            `dtype=`, `fold_fc_bias=`, `overwrite=`, `allow_fingerprint_mismatch=`), replacing those of `options`.

    Returns:
        The output directory.

    Example:

    ```python
    >>> from eda_adapters import export_draft
    >>> export_draft(peft_draft, "out/qwen-math-eagle", engine="vllm", dtype="bfloat16")
    ```
    """
    options = ExportOptions.build(options, **option_fields)
    if isinstance(model, PeftModel):
        adapter_name = adapter_name or _single_active_adapter(model)
    with _atomic_output_dir(output_dir, options.overwrite) as tmp:
        merged = merge_for_export(model, adapter_name, options.allow_fingerprint_mismatch)
        info = {"adapter_name": adapter_name, "draft_fingerprint": draft_fingerprint(merged)}
        embed = _embedding_of(model, options.include_embeddings)
        _write_one(merged, tmp, options, embed, info)
    return Path(output_dir)


def find_adapters(adapter_path: str | os.PathLike) -> dict[str, Path]:
    """Adapters saved in `adapter_path` by `PeftModel.save_pretrained`: name -> directory.

    PEFT writes the adapter named `"default"` at the root and every other adapter in a subfolder named after it, so a
    directory holding one shared draft's `math` and `code` adapters looks like `DIR/math/adapter_config.json`,
    `DIR/code/adapter_config.json` (plus `DIR/adapter_config.json` if there is a `default` one).
    """
    root = Path(adapter_path)
    if not root.is_dir():
        raise FileNotFoundError(f"No adapter directory at {root}: pass the directory PeftModel.save_pretrained wrote.")
    found = {}
    if (root / "adapter_config.json").is_file():
        found["default"] = root
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if (sub / "adapter_config.json").is_file():
            found[sub.name] = sub
    if not found:
        raise FileNotFoundError(
            f"No adapter_config.json in {root} or its subfolders: pass the directory PeftModel.save_pretrained wrote."
        )
    return found


def export_adapters(
    draft: EagleDraftModel | Eagle3DraftModel,
    adapter_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    adapter_names: list[str] | None = None,
    options: ExportOptions | None = None,
    **option_fields: Any,
) -> dict[str, Path]:
    """Write one servable draft per saved EDA adapter of one shared `draft`.

    `adapter_path` is a directory written by `PeftModel.save_pretrained` (see [`find_adapters`]); `adapter_names`
    picks some of its adapters (default: all). With one adapter the draft is written to `output_dir` itself, with
    several to `output_dir/<adapter name>/`. Every adapter is checked (routing, sizes, fingerprint) before anything is
    moved into place, so one bad adapter leaves no output at all. `options` and the option keywords are those of
    [`export_draft`] ([`ExportOptions`]).

    Returns:
        Adapter name -> directory written.
    """
    options = ExportOptions.build(options, **option_fields)
    if not isinstance(draft, DRAFT_MODEL_CLASSES):
        raise TypeError(
            f"export_adapters needs the shared draft (EagleDraftModel or Eagle3DraftModel), got {type(draft).__name__}."
        )
    available = find_adapters(adapter_path)
    check_disjoint(output_dir, {"adapter_path": adapter_path}, "output_dir")  # --overwrite would delete the adapter
    names = adapter_names or list(available)
    missing = [n for n in names if n not in available]
    if missing:
        raise EdaInputError(f"No adapter named {missing} in {adapter_path} (found {sorted(available)}).")
    embed = _embedding_of(draft, options.include_embeddings)
    written = {}
    with _atomic_output_dir(output_dir, options.overwrite) as tmp:
        for name in tqdm(names, desc="eda export", disable=len(names) < 2):
            copy_of_draft = _copy_without_target_heads(draft)
            # the fingerprint is checked (with its own override) by merge_for_export
            peft_model = load_adapter_checked(
                copy_of_draft, available[name], f"adapter {name!r}", allow_fingerprint_mismatch=True, adapter_name=name
            )
            merged = merge_for_export(peft_model, name, options.allow_fingerprint_mismatch)
            info = {
                "adapter_name": name,
                "adapter_path": str(available[name]),
                "draft_fingerprint": draft_fingerprint(merged),
            }
            subdir = name if len(names) > 1 else ""
            _write_one(merged, tmp / subdir, options, embed, info)
            written[name] = Path(output_dir) / subdir
            del copy_of_draft, peft_model, merged
    return written
