"""eda_adapters: Efficient Draft Adaptation of EAGLE drafts to fine-tuned targets, as a PEFT adapter type.

Importing the package registers the `eagle_draft` model type with transformers' Auto classes and the `EDA` adapter
type with PEFT.
"""

from .data import (
    CachedFeatureDataset,
    check_target_signature,
    extract_features,
    load_regenerated,
    regenerate,
    representation_shift,
    select_by_shift,
    target_signature,
)
from .export import eagle_layout, export_adapters, export_draft, find_adapters, merge_for_export
from .generation import (
    EagleCandidateGenerator,
    SpeculativeStats,
    TreeConfig,
    compute_tau,
    speculative_generate,
    track_acceptance,
)
from .hub import push_to_hub
from .models import (
    PACKAGED_TARGETS,
    EagleDraftConfig,
    EagleDraftModel,
    EagleDraftOutput,
    EagleMLP,
    convert_gguf,
    load_target,
    load_target_tokenizer,
)
from .tuners import EdaConfig, EdaLayer, EdaModel, draft_fingerprint, router_aux_loss
from .training import EagleTrainer, EagleTrainingConfig, EdaTrainer, EdaTrainingConfig, NonFiniteLossError

__version__ = "0.1.0"

__all__ = [
    "EagleTrainer",
    "EagleTrainingConfig",
    "EdaTrainer",
    "EdaTrainingConfig",
    "NonFiniteLossError",
    "CachedFeatureDataset",
    "check_target_signature",
    "extract_features",
    "load_regenerated",
    "regenerate",
    "representation_shift",
    "select_by_shift",
    "target_signature",
    "EagleCandidateGenerator",
    "EagleDraftConfig",
    "EagleDraftModel",
    "EagleDraftOutput",
    "EagleMLP",
    "EdaConfig",
    "EdaLayer",
    "EdaModel",
    "SpeculativeStats",
    "TreeConfig",
    "compute_tau",
    "draft_fingerprint",
    "eagle_layout",
    "export_adapters",
    "export_draft",
    "find_adapters",
    "merge_for_export",
    "PACKAGED_TARGETS",
    "convert_gguf",
    "load_target",
    "load_target_tokenizer",
    "push_to_hub",
    "router_aux_loss",
    "speculative_generate",
    "track_acceptance",
]
