"""Load a saved draft of either architecture by the `model_type` its `config.json` records."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from .eagle import EagleDraftConfig, EagleDraftModel
from .eagle3 import Eagle3DraftConfig, Eagle3DraftModel
from ..errors import EdaInputError

DRAFT_CLASSES_BY_MODEL_TYPE: dict[str, type] = {
    EagleDraftConfig.model_type: EagleDraftModel,
    Eagle3DraftConfig.model_type: Eagle3DraftModel,
}


def load_draft(
    path: str | os.PathLike, target_model: PreTrainedModel | None = None, **kwargs: Any
) -> EagleDraftModel | Eagle3DraftModel:
    """`EagleDraftModel.from_pretrained` or `Eagle3DraftModel.from_pretrained`, whichever wrote `path` (a folder of
    `save_pretrained`); `kwargs` go to `from_pretrained` (e.g. `dtype=`). Published EAGLE checkpoints are imported
    with the classes' `from_eagle_checkpoint` instead."""
    config_file = Path(path) / "config.json"
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError) as err:
        raise EdaInputError(f"Cannot read {str(config_file)!r} ({err}): pass a draft.save_pretrained folder.") from err
    draft_class = DRAFT_CLASSES_BY_MODEL_TYPE.get(model_type)
    if draft_class is None:
        raise EdaInputError(
            f"{str(path)!r} holds a {model_type!r} model, not a draft of this library "
            f"({sorted(DRAFT_CLASSES_BY_MODEL_TYPE)}): import a published EAGLE draft with "
            "EagleDraftModel/Eagle3DraftModel.from_eagle_checkpoint first."
        )
    return draft_class.from_pretrained(path, target_model=target_model, **kwargs)
