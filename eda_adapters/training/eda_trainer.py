"""Stage 2: adapt a shared draft to a fine-tuned target by training only its private EDA adapter."""

from __future__ import annotations

import os
from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel

from ..models import DRAFT_MODEL_CLASSES, Eagle3DraftModel, EagleDraftModel
from ..models.draft_loading import load_draft
from ..tuners import EdaConfig, EdaLayer, draft_fingerprint
from .eagle_config import EagleTrainingConfig
from .draft_trainer import DraftTrainer
from .eda_config import EdaTrainingConfig
from .joint import STAGE1_ADAPTER_DIR, adapter_signature
from ..errors import EdaInputError

class EdaTrainer(DraftTrainer):
    r"""Trainer for stage 2: only the private EDA adapter of a shared draft trains, for a fine-tuned target.

    A sibling of [`EagleTrainer`] over [`DraftTrainer`]: the same objective, data, logging, checkpointing and
    multi-GPU behaviour; the differences:

    - `model` is the shared stage-1 draft plus `peft_config=EdaConfig(...)` (wrapped with `peft.get_peft_model`, as TRL
      trainers do with a LoRA config), or a `PeftModel` that already holds a trainable EDA adapter.
    - Only the active adapter's private parameters train, plus PEFT's trained copies of the shared modules its
      `EdaConfig.modules_to_save` declares (e.g. `["fc"]`, as the authors do); the shared draft's own tensors and the
      target's heads stay bit-identical, and any other trainable parameter is refused.
    - `peft_config=LoraConfig(...)` trains PEFT's own LoRA on the draft instead (the baseline EDA is compared with);
      the same rule holds: only the adapter's tensors train.
    - The private experts start as `EdaConfig.init_private_weights` says: zero down projection, random, or a copy of
      the stage-1 private expert (`"copy"` with `init_private_from=<stage-1 output>/stage1_adapter`).
    - Routed adapters (`num_private_experts > 1`) add `EdaConfig.router_aux_loss_coef * eda_adapters.router_aux_loss`.
    - Checkpoints and `save_model` hold the adapter (PEFT format: `adapter_config.json` + `adapter_model.safetensors`),
      not the whole draft; load them with `PeftModel.from_pretrained(draft, path)`.

    Example:

    ```python
    >>> draft = EagleDraftModel.from_pretrained("draft-qwen2.5-7b", target_model=math_target)
    >>> trainer = EdaTrainer(
    ...     model=draft, target_model=math_target, args=EdaTrainingConfig(output_dir="eda-math", max_steps=500),
    ...     train_dataset=regenerated, peft_config=EdaConfig(num_private_experts=1),
    ... )
    >>> trainer.train()
    ```
    """

    stage = "eda"
    card_stage = "EDA adapter (stage 2)"

    @classmethod
    def _default_config_class(cls) -> type[EagleTrainingConfig]:
        return EdaTrainingConfig

    def _prepare_draft(
        self,
        model: nn.Module | str | None,
        target: PreTrainedModel,
        args: EagleTrainingConfig,
        peft_config: Any,
        train_dataset: Any = None,
    ) -> nn.Module:
        if model is None:
            raise EdaInputError(
                "EdaTrainer needs model= the shared stage-1 draft (an EagleDraftModel or Eagle3DraftModel, a path to one, or a PeftModel "
                "holding an EDA adapter); train one with EagleTrainer first."
            )
        if isinstance(model, (str, os.PathLike)):
            model = load_draft(model, target_model=target)
        if isinstance(model, PeftModel):
            if peft_config is not None:
                raise EdaInputError(
                    "model is already a PeftModel with an adapter: pass either it, or the plain draft with "
                    "peft_config=, not both."
                )
            adapter = model.peft_config[model.active_adapter]
            if not isinstance(adapter, (EdaConfig, LoraConfig)):
                raise TypeError(
                    f"EdaTrainer trains EDA adapters (and LoRA, the baseline); the active adapter "
                    f"{model.active_adapter!r} is {type(adapter).__name__}: wrap the draft with EdaConfig(...) instead."
                )
            model.get_base_model().attach_target(target)
        else:
            if not isinstance(model, DRAFT_MODEL_CLASSES):
                raise TypeError(
                    "model must be an EagleDraftModel or Eagle3DraftModel, a path to one, or a PeftModel; got "
                    f"{type(model).__name__}."
                )
            if peft_config is None:
                raise EdaInputError(
                    "EdaTrainer trains only a private EDA adapter: pass peft_config=EdaConfig(...) (or a PeftModel). "
                    "To train the whole draft use EagleTrainer."
                )
            if not isinstance(peft_config, (EdaConfig, LoraConfig)):
                raise TypeError(
                    "peft_config must be an EdaConfig (or a LoraConfig, the baseline), got "
                    f"{type(peft_config).__name__}."
                )
            copies = isinstance(peft_config, EdaConfig) and peft_config.init_private_weights == "copy"
            if copies and not os.path.isdir(peft_config.init_private_from):
                raise FileNotFoundError(
                    f"EdaConfig(init_private_from={peft_config.init_private_from!r}) is not a directory: pass the "
                    f"stage-1 adapter saved by EagleTrainer(peft_config=...) as <output_dir>/{STAGE1_ADAPTER_DIR}."
                )
            if isinstance(peft_config, EdaConfig):
                _check_shared_mlps(model, peft_config)
            model.attach_target(target)
            model = get_peft_model(model, peft_config)
        trainable = [name for name, param in model.named_parameters() if param.requires_grad]
        if not trainable:
            raise EdaInputError(
                "The adapter has no trainable parameters: load it with PeftModel.from_pretrained(draft, path, "
                "is_trainable=True)."
            )
        adapter_name = model.active_adapter
        declared = model.peft_config[adapter_name].modules_to_save or []
        # the adapter's own tensors (private experts or LoRA factors, and PEFT's trained copies of the declared
        # modules_to_save) are keyed by the adapter name; nothing else may train
        shared = [name for name in trainable if f".{adapter_name}." not in name]
        if shared:
            raise EdaInputError(
                f"Stage 2 trains the private EDA parameters and the declared modules_to_save {declared}, but other "
                f"shared ones are trainable too ({shared[:3]}...): freeze them (requires_grad_(False)), declare them "
                "in EdaConfig(modules_to_save=[...]), or train the whole draft with EagleTrainer."
            )
        self._upcast_trainable(model, args)
        return model

    def _draft_signature(self, draft_config: Any) -> dict[str, Any]:
        model = self.accelerator.unwrap_model(self.model)
        return {
            **super()._draft_signature(draft_config),
            "shared_fingerprint": draft_fingerprint(model.get_base_model()),
            "adapter": adapter_signature(model),
        }

    def model_card_info(self) -> dict[str, Any]:
        model = self.accelerator.unwrap_model(self.model)
        base = model.peft_config[model.active_adapter].base_model_name_or_path
        return {"base draft": base, **super().model_card_info()}


def _check_shared_mlps(draft: EagleDraftModel | Eagle3DraftModel, config: EdaConfig) -> None:
    """One-line error when the draft has no plain shared SwiGLU MLP for the adapter to wrap."""
    if config.target_modules is not None:
        return  # custom targets: PEFT and EdaLayer check them
    layers = draft.named_decoder_layers()
    if not layers:
        raise EdaInputError("This draft has no decoder layers, so no shared MLP for an EDA adapter to wrap.")
    for name, layer in layers:
        mlp = getattr(layer, "mlp", None)
        if isinstance(mlp, EdaLayer):
            raise EdaInputError(
                f"{name}.mlp already wraps an EDA adapter: pass the PeftModel itself (no peft_config), or "
                "merge_and_unload() it first to get a plain shared draft."
            )
        projections = ("gate_proj", "up_proj", "down_proj")
        if mlp is None or not all(isinstance(getattr(mlp, p, None), nn.Linear) for p in projections):
            raise EdaInputError(
                f"{name}.mlp of this draft is not a shared SwiGLU MLP (gate_proj/up_proj/down_proj): an EDA "
                "adapter has nothing to wrap; use a draft built with from_target."
            )
