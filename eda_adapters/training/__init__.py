"""Training EAGLE drafts: the shared objective, stage 1 (`EagleTrainer`: the whole shared draft for a base target)
and stage 2 (`EdaTrainer`: only the private EDA adapter, for a fine-tuned target). See docs/training.md."""

from .acceptance import greedy_acceptance_length, prompts_from_dataset
from .collator import DraftDataCollator
from .eagle_config import EagleTrainingConfig
from .eagle_trainer import EagleTrainer, NonFiniteLossError
from .eda_config import EdaTrainingConfig
from .eda_trainer import EdaTrainer
from .losses import EagleLossOutput, add_feature_noise, eagle_loss, shift_for_draft

__all__ = [
    "DraftDataCollator",
    "EagleLossOutput",
    "EagleTrainer",
    "EagleTrainingConfig",
    "EdaTrainer",
    "EdaTrainingConfig",
    "NonFiniteLossError",
    "add_feature_noise",
    "eagle_loss",
    "greedy_acceptance_length",
    "prompts_from_dataset",
    "shift_for_draft",
]
