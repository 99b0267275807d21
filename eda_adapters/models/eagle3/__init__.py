from .configuration_eagle3 import Eagle3DraftConfig
from .modeling_eagle3 import Eagle3DraftModel, Eagle3DraftOutput

__all__ = ["Eagle3DraftConfig", "Eagle3DraftModel", "Eagle3DraftOutput"]
