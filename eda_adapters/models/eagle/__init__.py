from .configuration_eagle import EagleDraftConfig
from .modeling_eagle import EagleDraftModel, EagleDraftOutput, EagleMLP

__all__ = ["EagleDraftConfig", "EagleDraftModel", "EagleDraftOutput", "EagleMLP"]
