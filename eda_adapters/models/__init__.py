from transformers import AutoConfig, AutoModel

from .eagle import EagleDraftConfig, EagleDraftModel, EagleDraftOutput, EagleMLP
from .loading import PACKAGED_TARGETS, convert_gguf, load_target, load_target_tokenizer

AutoConfig.register(EagleDraftConfig.model_type, EagleDraftConfig, exist_ok=True)
AutoModel.register(EagleDraftConfig, EagleDraftModel, exist_ok=True)

__all__ = [
    "EagleDraftConfig",
    "EagleDraftModel",
    "EagleDraftOutput",
    "EagleMLP",
    "PACKAGED_TARGETS",
    "convert_gguf",
    "load_target",
    "load_target_tokenizer",
]
