"""Recognise our EAGLE drafts (plain, PEFT-wrapped, merged) and make one ready to serve a target."""

from __future__ import annotations

import logging
from typing import Any

from transformers import PreTrainedModel

from ..models import DRAFT_MODEL_CLASSES, Eagle3DraftModel, EagleDraftModel

#: A draft this package decodes with: EAGLE-1 or EAGLE-3. Both read `draft.target_features(outputs.hidden_states)`
#: (the states `draft.hidden_state_indices` select) and give `draft.target_vocab_logits(out.logits)`.
EagleDraft = EagleDraftModel | Eagle3DraftModel

logger = logging.getLogger(__name__)


def as_eagle_draft(model: Any) -> EagleDraft | None:
    """Return the [`EagleDraftModel`] or [`Eagle3DraftModel`] behind `model`, or `None` if `model` is not one of our
    drafts.

    Accepts a draft (fresh, trained or a merged EDA draft) and a `peft.PeftModel` wrapping one (e.g. an EDA
    adapter). Adapter layers are injected into the wrapped model, so running the returned base model uses the
    active adapter.
    """
    if isinstance(model, DRAFT_MODEL_CLASSES):
        return model
    get_base_model = getattr(model, "get_base_model", None)
    if callable(get_base_model):
        base = get_base_model()
        if isinstance(base, DRAFT_MODEL_CLASSES):
            return base
    return None


def prepare_draft(draft: Any, target: PreTrainedModel) -> EagleDraft:
    """Check that `draft` fits `target` and return the EAGLE-1 or EAGLE-3 draft to run, in eval mode.

    A draft saved without the target's embedding and output head (the default) gets the target's own attached
    (`draft.attach_target(target)`): an EAGLE draft always decodes with the head of the target it serves. A draft
    that already has heads keeps them. Raises a one-line `TypeError` if `draft` is not an EAGLE draft and a
    `ValueError` if it was built for another target (hidden size or vocabulary mismatch).
    """
    base = as_eagle_draft(draft)
    if base is None:
        raise TypeError(
            f"Expected an EagleDraftModel, an Eagle3DraftModel or a PeftModel wrapping one, got "
            f"{type(draft).__name__}: build the draft with EagleDraftModel.from_target(target)."
        )
    base.check_compatible(target)
    if not base.has_target_heads:
        logger.info("The draft has no target heads attached: using the target's embedding and output head.")
        base.attach_target(target)
    base.eval()
    return base
