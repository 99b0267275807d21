"""The EDA tuner: injects [`EdaLayer`] around the shared MLPs of an EAGLE draft."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from ...fingerprints import draft_fingerprint
from .config import EdaConfig
from .layer import EdaLayer
from ...errors import EdaInputError

#: Default `target_modules` per draft `model_type`.
TRANSFORMERS_MODELS_TO_EDA_TARGET_MODULES_MAPPING: dict[str, list[str]] = {
    "eagle_draft": ["mlp"],  # layers.N.mlp
    "eagle3_draft": ["mlp"],  # midlayer.mlp
}
#: What an adapter saved before `EdaConfig.draft_model_type` existed was made for: the only draft there was.
LEGACY_DRAFT_MODEL_TYPE = "eagle_draft"


class EdaModel(BaseTuner):
    """Adds EDA private experts to a draft model. Created by `peft.get_peft_model(draft, EdaConfig(...))`.

    Example:

    ```python
    >>> import eda_adapters  # registers the "EDA" PEFT type
    >>> from peft import get_peft_model
    >>> draft = eda_adapters.EagleDraftModel.from_target(target)
    >>> model = get_peft_model(draft, eda_adapters.EdaConfig(num_private_experts=1))
    >>> model.print_trainable_parameters()
    ```
    """

    prefix: str = "eda_"
    tuner_layer_cls = EdaLayer
    target_module_mapping = TRANSFORMERS_MODELS_TO_EDA_TARGET_MODULES_MAPPING

    def _pre_injection_hook(self, model: nn.Module, config: EdaConfig, adapter_name: str) -> None:
        """Record which draft the adapter belongs to, or check it when loading a saved adapter."""
        if not getattr(self, "_checks_loaded_shapes", False):
            self.register_load_state_dict_pre_hook(_check_loaded_shapes)
            self._checks_loaded_shapes = True
        draft_config = getattr(model, "config", None)
        hidden = getattr(draft_config, "hidden_size", None)
        intermediate = getattr(draft_config, "intermediate_size", None)
        fingerprint = draft_fingerprint(model) if hasattr(model, "fc") else None
        model_type = getattr(draft_config, "model_type", None)
        recorded_type = config.draft_model_type
        if recorded_type is None and config.draft_hidden_size is not None:  # saved by a version without the field
            recorded_type = LEGACY_DRAFT_MODEL_TYPE
        if recorded_type is not None and model_type is not None and recorded_type != model_type:
            raise EdaInputError(
                f"EDA adapter '{adapter_name}' was made for an {_ARCHITECTURE_NAMES.get(recorded_type, recorded_type)} "
                f"draft ({recorded_type}), but this draft is {_ARCHITECTURE_NAMES.get(model_type, model_type)} "
                f"({model_type}): load it onto a draft of its own architecture, or train a new adapter for this one."
            )
        if config.draft_hidden_size is not None and hidden is not None and config.draft_hidden_size != hidden:
            raise EdaInputError(
                f"EDA adapter '{adapter_name}' was made for a draft with hidden size {config.draft_hidden_size}, but "
                f"this draft has {hidden}: load it onto the draft it was trained with "
                f"({config.base_model_name_or_path or 'see adapter_config.json'})."
            )
        if (
            config.draft_intermediate_size is not None
            and intermediate is not None
            and config.draft_intermediate_size != intermediate
        ):
            raise EdaInputError(
                f"EDA adapter '{adapter_name}' was made for a draft whose shared MLP has width "
                f"{config.draft_intermediate_size}, but this draft's is {intermediate}: load it onto the draft it was "
                f"trained with ({config.base_model_name_or_path or 'see adapter_config.json'})."
            )
        if config.draft_fingerprint is not None and fingerprint is not None and config.draft_fingerprint != fingerprint:
            from ...errors import DraftMismatchWarning

            warnings.warn(
                f"EDA adapter '{adapter_name}' was trained on another draft: its adapter_config.json records draft "
                f"fingerprint {config.draft_fingerprint}, this draft's is {fingerprint} (same sizes, other shared "
                f"weights), so its outputs will not be the trained ones; load it onto its own draft "
                f"({config.base_model_name_or_path or 'see adapter_config.json'}).",
                DraftMismatchWarning,
                stacklevel=2,
            )
        config.draft_model_type = recorded_type or model_type
        config.draft_hidden_size = config.draft_hidden_size or hidden
        config.draft_intermediate_size = config.draft_intermediate_size or intermediate
        config.draft_fingerprint = config.draft_fingerprint or fingerprint

    def inject_adapter(self, model: nn.Module, adapter_name: str, *args: Any, **kwargs: Any) -> None:
        super().inject_adapter(model, adapter_name, *args, **kwargs)
        config = self.peft_config[adapter_name]
        if config.init_private_weights == "copy":
            copy_private_weights(model, adapter_name, config.init_private_from)

    def _create_and_replace(
        self,
        peft_config: EdaConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **optional_kwargs: Any,
    ) -> None:
        if isinstance(target, EdaLayer):
            target.update_layer(adapter_name, peft_config)
            return
        new_module = EdaLayer(target, adapter_name, peft_config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _replace_module(self, parent: nn.Module, child_name: str, new_module: nn.Module, child: nn.Module) -> None:
        # BaseTuner._replace_module copies `child.weight` when unloading; a whole MLP has none, so unloading (the new
        # module is the wrapped MLP itself) is a plain swap.
        if isinstance(child, EdaLayer) and new_module is child.get_base_layer():
            setattr(parent, child_name, new_module)
            return
        super()._replace_module(parent, child_name, new_module, child)

    def _unload_and_optionally_merge(self, merge: bool = True, **kwargs: Any) -> nn.Module:
        model = super()._unload_and_optionally_merge(merge=merge, **kwargs)
        if merge:
            _sync_intermediate_size(model)
        return model

    def unmerge_adapter(self, adapter_names: list[str] | str | None = None) -> None:
        """Unmerge merged EDA adapters in place: all of them (PEFT's default), or only `adapter_names`."""
        names = [adapter_names] if isinstance(adapter_names, str) else adapter_names
        for module in self.model.modules():
            if isinstance(module, EdaLayer):
                module.unmerge(names)

    def router_aux_loss(self) -> torch.Tensor | None:
        """Load-balancing loss of the last forward, summed over wrapped MLPs (None when no adapter is routed)."""
        return router_aux_loss(self.model)


_ARCHITECTURE_NAMES = {"eagle_draft": "EAGLE-1", "eagle3_draft": "EAGLE-3"}


def _check_loaded_shapes(module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str, *args: Any) -> None:
    """Refuse saved EDA weights whose shapes disagree with the adapter's config in one line (an edited
    adapter_config.json, or weights of another adapter), instead of torch's `size mismatch` RuntimeError."""
    params = dict(module.named_parameters())
    for key, value in state_dict.items():
        param = params.get(key[len(prefix):]) if key.startswith(prefix) and ".eda_" in key else None
        if param is not None and tuple(param.shape) != tuple(value.shape):
            from ...errors import EdaInputError

            raise EdaInputError(
                f"The saved EDA adapter's weights do not match its adapter_config.json: {key} has shape "
                f"{tuple(value.shape)}, but the config (num_private_experts, private_intermediate_size) makes "
                f"{tuple(param.shape)}; the config was edited or belongs to other weights: save the adapter again."
            )


def router_aux_loss(model: nn.Module) -> torch.Tensor | None:
    """Sum of the routed EDA adapters' load-balancing losses from the last forward pass of `model`."""
    losses = [loss for m in model.modules() if isinstance(m, EdaLayer) and (loss := m.router_aux_loss()) is not None]
    return torch.stack(losses).sum() if losses else None


def copy_private_weights(model: nn.Module, adapter_name: str, source: str | None) -> None:
    """Start adapter `adapter_name`'s private experts (and router) from the saved EDA adapter at `source`.

    `source` is typically the stage-1 adapter trained jointly with the shared draft (`<output_dir>/stage1_adapter` of
    `EagleTrainer(peft_config=EdaConfig(...))`). A missing source only warns: when a saved adapter whose config says
    "copy" is loaded again, its own weights replace these anyway (trainers check the path before creating one).
    """
    import os

    from peft.utils import load_peft_weights

    if not source or not os.path.isdir(source):
        warnings.warn(
            f"EDA adapter '{adapter_name}': init_private_from={source!r} is not a directory; its private experts keep "
            "their random initialisation (expected only when loading a saved adapter, whose weights replace them)."
        )
        return
    weights = load_peft_weights(source, device="cpu")
    copied = 0
    for name, module in model.named_modules():
        if not isinstance(module, EdaLayer) or adapter_name not in module.eda_gate_proj:
            continue
        for proj_name in EdaLayer.adapter_layer_names:
            proj = getattr(module, proj_name)
            if adapter_name not in proj:
                continue
            key = f"base_model.model.{name}.{proj_name}.weight"
            if key not in weights:
                raise EdaInputError(
                    f"init_private_from={source!r} has no {key!r}: copy from an EDA adapter of this draft's layout "
                    "(same target_modules and number of experts)."
                )
            weight = proj[adapter_name].weight
            if tuple(weights[key].shape) != tuple(weight.shape):
                raise EdaInputError(
                    f"init_private_from={source!r}: {key} has shape {tuple(weights[key].shape)}, this adapter's is "
                    f"{tuple(weight.shape)}: use the same num_private_experts and private_intermediate_size."
                )
            with torch.no_grad():
                weight.copy_(weights[key].to(weight.dtype))
            copied += 1
    if not copied:
        raise EdaInputError(f"init_private_from={source!r}: no wrapped MLP of this draft matches its weights.")


def _sync_intermediate_size(model: nn.Module) -> None:
    """After merging, set `config.intermediate_size` to the (now wider) MLP width if all layers agree."""
    widths = {m.gate_proj.out_features for n, m in model.named_modules() if n.endswith("mlp") and hasattr(m, "gate_proj")}
    config = getattr(model, "config", None)
    if config is None or not widths:
        return
    if len(widths) > 1:
        warnings.warn(
            f"Merging left draft MLPs of different widths {sorted(widths)} (the adapter targeted only some layers): a "
            "draft config holds one intermediate_size, so this merged draft cannot be saved and reloaded; merge "
            "adapters that wrap every layer's mlp."
        )
        return
    config.intermediate_size = widths.pop()
