"""The official EDA design's stage 1: a shared draft trained jointly with a private EDA expert, saved as two parts.

The authors' draft MLP is a shared expert plus a private expert from the start; stage 1 trains both on general data
for the base target, so the shared expert learns what is common and the private one what is specific to that target.
Here the private expert is an EDA adapter (`peft.get_peft_model(draft, EdaConfig(...))`) whose shared MLP is left
trainable. The result is saved as the plain shared draft (what stage 2 freezes and every adapter belongs to) plus the
stage-1 adapter (what a stage-2 adapter may start from with `EdaConfig(init_private_weights="copy")`).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from peft import PeftModel, get_peft_model, set_peft_model_state_dict
from peft.utils import load_peft_weights
from safetensors.torch import load_file
from torch import nn

from ..tuners import EdaConfig, draft_fingerprint
from ..tuners.eda.config import USER_FIELDS
from ..errors import EdaInputError

#: Sub-folder of a joint stage-1 output directory that holds the stage-1 private adapter.
STAGE1_ADAPTER_DIR = "stage1_adapter"

#: EdaConfig fields that define an adapter being trained (part of the run signatures).
ADAPTER_SIGNATURE_FIELDS = ("target_modules", *USER_FIELDS)


def adapter_signature(model: PeftModel) -> dict[str, Any]:
    """The fields of the active EDA adapter's config that define the run (see `ADAPTER_SIGNATURE_FIELDS`)."""
    adapter = model.peft_config[model.active_adapter]
    if not isinstance(adapter, EdaConfig):  # the LoRA baseline
        return {"peft_type": str(adapter.peft_type), "r": adapter.r, "target_modules": adapter.target_modules}
    return {key: getattr(adapter, key) for key in ADAPTER_SIGNATURE_FIELDS}


def joint_draft(draft: nn.Module, config: EdaConfig) -> PeftModel:
    """Wrap `draft` with a private EDA adapter and leave its own (shared) parameters trainable too.

    The parameters that train are those that trained before wrapping (the target's embedding and head, attached to
    the draft and frozen, stay frozen) plus the adapter's.
    """
    trainable = {id(param) for param in draft.parameters() if param.requires_grad}
    model = get_peft_model(draft, config)
    for param in model.parameters():
        if id(param) in trainable:
            param.requires_grad_(True)
    return model


def shared_state_dict(model: PeftModel) -> dict[str, torch.Tensor]:
    """The plain shared draft's state dict: the wrapped draft's tensors without the adapter, under their own keys."""
    state = model.get_base_model().state_dict()
    return {key.replace(".base_layer.", "."): value for key, value in state.items() if ".eda_" not in key}


def save_joint_draft(model: PeftModel, output_dir: str) -> None:
    """Save the shared draft to `output_dir` and the stage-1 adapter to `output_dir/stage1_adapter`.

    The adapter's recorded `draft_fingerprint` is set to the trained shared draft's, the draft it belongs to (it was
    recorded from the untrained draft when the adapter was created).
    """
    base = model.get_base_model()
    os.makedirs(output_dir, exist_ok=True)
    base.save_pretrained(output_dir, state_dict=shared_state_dict(model))
    config = model.peft_config[model.active_adapter]
    config.draft_fingerprint = draft_fingerprint(base)
    model.save_pretrained(os.path.join(output_dir, STAGE1_ADAPTER_DIR))


def load_joint_draft(model: PeftModel, folder: str) -> None:
    """Load a folder written by `save_joint_draft` into `model` (same layout) in place, e.g. to resume training."""
    path = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder} holds no model.safetensors: it is not a joint stage-1 checkpoint.")
    own = model.get_base_model().state_dict()
    plain_to_own = {key.replace(".base_layer.", "."): key for key in own if ".eda_" not in key}
    shared = load_file(path)
    unknown = sorted(set(shared) - set(plain_to_own))
    if unknown:
        raise EdaInputError(f"{path} holds tensors this draft does not have ({unknown[:3]}): another draft layout.")
    model.get_base_model().load_state_dict({plain_to_own[key]: value for key, value in shared.items()}, strict=False)
    set_peft_model_state_dict(
        model, load_peft_weights(os.path.join(folder, STAGE1_ADAPTER_DIR), device="cpu"), model.active_adapter
    )
