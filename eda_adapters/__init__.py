"""eda_adapters: Efficient Draft Adaptation of EAGLE drafts to fine-tuned targets, as a PEFT adapter type.

Importing the package registers the `eagle_draft` model type with transformers' Auto classes and the `EDA` adapter
type with PEFT.
"""

from .hub import push_to_hub
from .models import EagleDraftConfig, EagleDraftModel, EagleDraftOutput, EagleMLP
from .tuners import EdaConfig, EdaLayer, EdaModel, draft_fingerprint, router_aux_loss

__version__ = "0.1.0"

__all__ = [
    "EagleDraftConfig",
    "EagleDraftModel",
    "EagleDraftOutput",
    "EagleMLP",
    "EdaConfig",
    "EdaLayer",
    "EdaModel",
    "draft_fingerprint",
    "push_to_hub",
    "router_aux_loss",
]
