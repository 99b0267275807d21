"""Training EAGLE drafts: sibling trainers over `DraftTrainer`, stage 1 (`EagleTrainer`: the whole shared draft for a
base target) and stage 2 (`EdaTrainer`: only the private EDA adapter, for a fine-tuned target), each minimising a
pluggable objective (`EagleObjective` for EAGLE-1 drafts, `TrainingTimeTestObjective` for EAGLE-3). See docs/training.md."""

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

if TYPE_CHECKING:
    from .acceptance import greedy_acceptance_length, prompts_from_dataset
    from .collator import DraftDataCollator
    from .eagle_config import EagleTrainingConfig
    from .draft_trainer import DraftTrainer, NonFiniteLossError
    from .eagle_trainer import EagleTrainer
    from .eda_config import EdaTrainingConfig
    from .eda_trainer import EdaTrainer
    from .losses import (
        DraftVocabLogits,
        DraftVocabLossOutput,
        EagleLossOutput,
        add_feature_noise,
        draft_vocab_cross_entropy,
        eagle_loss,
        shift_for_draft,
    )
    from .objectives import (
        DraftObjective,
        EagleObjective,
        ObjectiveOutput,
        TrainingTimeTestObjective,
        default_objective,
        training_time_test_mask,
        unroll_training_time_test,
    )

# public name -> defining module, imported on first access: `training.eagle_config` (the CLI's option parser) must not
# load the trainers
_LAZY_NAMES = {
    "greedy_acceptance_length": ".acceptance",
    "prompts_from_dataset": ".acceptance",
    "DraftDataCollator": ".collator",
    "EagleTrainingConfig": ".eagle_config",
    "EagleTrainer": ".eagle_trainer",
    "NonFiniteLossError": ".draft_trainer",
    "DraftTrainer": ".draft_trainer",
    "DraftObjective": ".objectives",
    "EagleObjective": ".objectives",
    "ObjectiveOutput": ".objectives",
    "TrainingTimeTestObjective": ".objectives",
    "default_objective": ".objectives",
    "training_time_test_mask": ".objectives",
    "unroll_training_time_test": ".objectives",
    "DraftVocabLogits": ".losses",
    "DraftVocabLossOutput": ".losses",
    "draft_vocab_cross_entropy": ".losses",
    "EdaTrainingConfig": ".eda_config",
    "EdaTrainer": ".eda_trainer",
    "EagleLossOutput": ".losses",
    "add_feature_noise": ".losses",
    "eagle_loss": ".losses",
    "shift_for_draft": ".losses",
}

__all__ = [
    "DraftDataCollator",
    "DraftObjective",
    "DraftTrainer",
    "DraftVocabLogits",
    "DraftVocabLossOutput",
    "EagleObjective",
    "ObjectiveOutput",
    "EagleLossOutput",
    "EagleTrainer",
    "EagleTrainingConfig",
    "EdaTrainer",
    "EdaTrainingConfig",
    "NonFiniteLossError",
    "TrainingTimeTestObjective",
    "add_feature_noise",
    "default_objective",
    "draft_vocab_cross_entropy",
    "eagle_loss",
    "greedy_acceptance_length",
    "prompts_from_dataset",
    "shift_for_draft",
    "training_time_test_mask",
    "unroll_training_time_test",
]

__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY_NAMES)
