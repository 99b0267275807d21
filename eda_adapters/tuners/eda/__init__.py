"""EDA: the private component of an EAGLE draft as a PEFT adapter type.

Importing this package registers the type with PEFT, so `peft.get_peft_model(draft, EdaConfig(...))`,
`PeftModel.from_pretrained(draft, path)` and the other PEFT verbs work on drafts.
"""

from aenum import extend_enum
from peft.utils import PeftType
from peft.utils.peft_types import register_peft_method

from .checkpoints import load_official_eda_checkpoint
from .config import EdaConfig
from .layer import EdaLayer, ExpertLinear
from .model import TRANSFORMERS_MODELS_TO_EDA_TARGET_MODULES_MAPPING, EdaModel, draft_fingerprint, router_aux_loss


def _register() -> None:
    """Add `PeftType.EDA` to PEFT's closed enum and register the method; safe to call more than once."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    if "EDA" not in PeftType.__members__:
        extend_enum(PeftType, "EDA", "EDA")
    if PeftType.EDA not in PEFT_TYPE_TO_CONFIG_MAPPING:
        register_peft_method(name="eda", config_cls=EdaConfig, model_cls=EdaModel, prefix="eda_")


_register()

__all__ = [
    "TRANSFORMERS_MODELS_TO_EDA_TARGET_MODULES_MAPPING",
    "EdaConfig",
    "EdaLayer",
    "EdaModel",
    "ExpertLinear",
    "draft_fingerprint",
    "load_official_eda_checkpoint",
    "router_aux_loss",
]
