"""Configuration of the stage-2 trainer (an EDA adapter of a shared draft, for a fine-tuned target)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .eagle_config import EagleTrainingConfig


@dataclass
class EdaTrainingConfig(EagleTrainingConfig):
    r"""Configuration of [`EdaTrainer`]: stage 2, training only the private EDA adapter of a shared draft.

    Same fields as [`EagleTrainingConfig`] (the objective is the same); only defaults differ: adapters train a small,
    zero-initialised branch, so `learning_rate` defaults to `5e-4`. The adapter's shape (experts, top-k, width,
    router load-balancing weight `router_aux_loss_coef`) lives in [`EdaConfig`], which the trainer takes as
    `peft_config=`, like TRL trainers take a LoRA config.
    """

    learning_rate: float = field(default=5e-4, metadata={"help": "Initial learning rate (AdamW) of the adapter."})
