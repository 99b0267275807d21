"""eda_adapters: Efficient Draft Adaptation of EAGLE drafts to fine-tuned targets, as a PEFT adapter type.

Importing the package registers the `eagle_draft` and `eagle3_draft` model types with transformers' Auto classes and the `EDA` adapter
type with PEFT.
"""

from typing import TYPE_CHECKING

# What `import eda_adapters` must do: register the draft with transformers' Auto classes (models), register the EDA
# adapter type with PEFT (tuners) and install the `generate(assistant_model=draft)` hook (generation). These import
# little beyond torch, transformers and peft; everything else (trainers, datasets, plots, export) loads on first use.
from .generation import (
    EagleCandidateGenerator,
    SpeculativeStats,
    TreeConfig,
    compute_tau,
    speculative_generate,
    track_acceptance,
)
from .models import (
    PACKAGED_TARGETS,
    Eagle3DraftConfig,
    Eagle3DraftModel,
    Eagle3DraftOutput,
    EagleDraftConfig,
    EagleDraftModel,
    EagleDraftOutput,
    EagleMLP,
    convert_gguf,
    load_draft,
    load_target,
    load_target_tokenizer,
)
from .errors import DraftMismatchWarning, EdaInputError, MissingExtraError
from .lazy import lazy_attributes
from .tuners import EdaConfig, EdaLayer, EdaModel, draft_fingerprint, load_official_eda_checkpoint, router_aux_loss

if TYPE_CHECKING:
    from .data import (
        CachedFeatureDataset,
        PromptFilter,
        check_target_signature,
        extract_features,
        load_regenerated,
        regenerate,
        SelectionStrategy,
        representation_shift,
        select_by_shift,
        self_prompts,
        target_signature,
    )
    from .compute_dtype import choose_dtype
    from .diagnose import Diagnosis, diagnose
    from .console import quiet_console
    from .export import ExportOptions, eagle_layout, export_adapters, export_draft, find_adapters, merge_for_export
    from .hub import push_to_hub
    from .run_directory import RunDirectory, RunMismatchError
    from .training import EagleTrainer, EagleTrainingConfig, EdaTrainer, EdaTrainingConfig, NonFiniteLossError

# public name -> module (relative to this package) that defines it, imported on first access (PEP 562)
_LAZY_NAMES: dict[str, str] = {
    **dict.fromkeys(
        (
            "CachedFeatureDataset",
            "PromptFilter",
            "check_target_signature",
            "extract_features",
            "load_regenerated",
            "regenerate",
            "SelectionStrategy",
            "representation_shift",
            "select_by_shift",
            "self_prompts",
            "target_signature",
        ),
        ".data",
    ),
    **dict.fromkeys(
        ("ExportOptions", "eagle_layout", "export_adapters", "export_draft", "find_adapters", "merge_for_export"),
        ".export",
    ),
    "push_to_hub": ".hub",
    "choose_dtype": ".compute_dtype",
    **dict.fromkeys(("Diagnosis", "diagnose"), ".diagnose"),
    "quiet_console": ".console",
    **dict.fromkeys(("RunDirectory", "RunMismatchError"), ".run_directory"),
    **dict.fromkeys(
        ("EagleTrainer", "EagleTrainingConfig", "EdaTrainer", "EdaTrainingConfig", "NonFiniteLossError"), ".training"
    ),
}
# subpackages and modules reachable as attributes (`eda_adapters.data`) without an explicit import, as before; the
# research side (`eda_adapters.research`) is imported by name, never through the runtime package
_LAZY_MODULES = (
    "atomic", "bench", "cli", "compute_dtype", "console", "data", "diagnose", "export", "fingerprints", "hub", "run_directory",
    "training",
)

__version__ = "0.1.0"

__all__ = [
    "quiet_console",
    "Diagnosis",
    "diagnose",
    "EagleTrainer",
    "EagleTrainingConfig",
    "EdaTrainer",
    "EdaTrainingConfig",
    "NonFiniteLossError",
    "CachedFeatureDataset",
    "PromptFilter",
    "check_target_signature",
    "extract_features",
    "load_regenerated",
    "regenerate",
    "SelectionStrategy",
    "representation_shift",
    "select_by_shift",
    "self_prompts",
    "target_signature",
    "EagleCandidateGenerator",
    "Eagle3DraftConfig",
    "Eagle3DraftModel",
    "Eagle3DraftOutput",
    "EagleDraftConfig",
    "EagleDraftModel",
    "EagleDraftOutput",
    "EagleMLP",
    "DraftMismatchWarning",
    "EdaInputError",
    "MissingExtraError",
    "RunDirectory",
    "RunMismatchError",
    "EdaConfig",
    "EdaLayer",
    "EdaModel",
    "SpeculativeStats",
    "TreeConfig",
    "compute_tau",
    "draft_fingerprint",
    "load_official_eda_checkpoint",
    "ExportOptions",
    "eagle_layout",
    "export_adapters",
    "export_draft",
    "find_adapters",
    "merge_for_export",
    "PACKAGED_TARGETS",
    "choose_dtype",
    "convert_gguf",
    "load_draft",
    "load_target",
    "load_target_tokenizer",
    "push_to_hub",
    "router_aux_loss",
    "speculative_generate",
    "track_acceptance",
]


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY_NAMES, _LAZY_MODULES)
