from transformers import AutoConfig, AutoModel

from .eagle import EagleDraftConfig, EagleDraftModel, EagleDraftOutput, EagleMLP
from .eagle3 import Eagle3DraftConfig, Eagle3DraftModel, Eagle3DraftOutput
from .draft_loading import load_draft
from .loading import PACKAGED_TARGETS, convert_gguf, load_target, load_target_tokenizer

AutoConfig.register(EagleDraftConfig.model_type, EagleDraftConfig, exist_ok=True)
AutoModel.register(EagleDraftConfig, EagleDraftModel, exist_ok=True)
AutoConfig.register(Eagle3DraftConfig.model_type, Eagle3DraftConfig, exist_ok=True)
AutoModel.register(Eagle3DraftConfig, Eagle3DraftModel, exist_ok=True)

#: Every draft architecture of the library (what `generate(assistant_model=...)` and the tuners accept).
DRAFT_MODEL_CLASSES = (EagleDraftModel, Eagle3DraftModel)

__all__ = [
    "DRAFT_MODEL_CLASSES",
    "Eagle3DraftConfig",
    "Eagle3DraftModel",
    "Eagle3DraftOutput",
    "EagleDraftConfig",
    "EagleDraftModel",
    "EagleDraftOutput",
    "EagleMLP",
    "PACKAGED_TARGETS",
    "convert_gguf",
    "load_draft",
    "load_target",
    "load_target_tokenizer",
]
