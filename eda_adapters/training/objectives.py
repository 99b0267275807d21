"""What a draft trainer minimises, as a piece the trainers plug in.

A trainer ([`DraftTrainer`] and its siblings) owns everything around the loss: the target's features, gradient
accumulation over ragged batches, the router's balancing loss, the finiteness check, logging. An objective owns the
draft's forward passes on one batch and the loss they give. [`EagleObjective`] is EAGLE-1's: one teacher-forced pass
predicting the target's next feature. A training-time-test objective (EAGLE-3) unrolls the draft on its own outputs
instead, and plugs in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from .losses import add_feature_noise, eagle_loss, shift_for_draft


@dataclass
class ObjectiveOutput:
    """One batch's loss and what to log.

    Args:
        loss: Mean over the batch's loss tokens (the trainer rescales it for gradient accumulation).
        num_tokens: Loss tokens in the batch.
        metrics: Scalars to log as running means (`accuracy`, `ce_loss`, ...).
        outputs: The draft's output of the batch (returned by `compute_loss(..., return_outputs=True)`).
    """

    loss: torch.Tensor
    num_tokens: int
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    outputs: Any = None


class DraftObjective(Protocol):
    """A draft training objective: the loss of `model` on one batch, given the frozen target's features."""

    def loss_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss tokens of a collated batch, counted before any forward: the trainer divides each micro-batch's
        summed loss by those of the whole optimizer step."""

    def __call__(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        features: torch.Tensor,
        target_logits: torch.Tensor,
        args: Any,
        training: bool,
    ) -> ObjectiveOutput: ...


class EagleObjective:
    """EAGLE-1: the draft reads (feature_t, token_{t+1}) with noisy features and predicts feature_{t+1};
    `regression_weight * SmoothL1 + ce_weight * CE(target distribution, draft distribution)` ([`eagle_loss`])."""

    def loss_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The positions the loss counts, as `shift_for_draft` aligns them (the first token has no previous feature)."""
        return (batch["loss_mask"] * batch["attention_mask"])[:, 1:].sum()

    def __call__(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        features: torch.Tensor,
        target_logits: torch.Tensor,
        args: Any,
        training: bool,
    ) -> ObjectiveOutput:
        attention_mask = inputs["attention_mask"]
        draft_ids, draft_features, target_features, loss_mask = shift_for_draft(
            inputs["input_ids"], features, inputs["loss_mask"] * attention_mask
        )
        if training:
            draft_features = add_feature_noise(
                draft_features, args.feature_noise_std, kind=args.feature_noise_type, lengths=attention_mask.sum(-1)
            )
        outputs = model(input_ids=draft_ids, hidden_states=draft_features, attention_mask=attention_mask[:, 1:])
        terms = eagle_loss(
            outputs.last_hidden_state,
            outputs.logits,
            target_features,
            target_logits[:, 1:],
            loss_mask,
            regression_weight=args.regression_weight,
            ce_weight=args.ce_weight,
        )
        metrics = {"regression_loss": terms.regression_loss, "ce_loss": terms.ce_loss, "accuracy": terms.accuracy}
        return ObjectiveOutput(terms.loss, terms.num_tokens, metrics, outputs)
