"""What a draft trainer minimises, as a piece the trainers plug in.

A trainer ([`DraftTrainer`] and its siblings) owns everything around the loss: the target's features, gradient
accumulation over ragged batches, the router's balancing loss, the finiteness check, logging. An objective owns the
draft's forward passes on one batch and the loss they give. [`EagleObjective`] is EAGLE-1's: one teacher-forced pass
predicting the target's next feature. [`TrainingTimeTestObjective`] is EAGLE-3's: the draft unrolled on its own
outputs. [`default_objective`] picks the one a draft was designed for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import nn
from transformers import DynamicCache

from ..errors import EdaInputError
from .losses import DraftVocabLogits, add_feature_noise, draft_vocab_cross_entropy, eagle_loss, shift_for_draft


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
    """A draft training objective: the loss of `model` on one batch, given the frozen target's features.

    An objective whose class sets `reads_draft_vocab_logits = True` scores a reduced draft head on the target's
    draft-vocabulary logits alone: for such a draft, and cached features that store the target's top token, the
    trainer passes `target_logits` as a [`DraftVocabLogits`] instead of the vocabulary-wide tensor.
    """

    def loss_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss tokens of a collated batch, counted before any forward: the trainer divides each micro-batch's
        summed loss by those of the whole optimizer step."""

    def signature(self, args: Any) -> dict[str, Any] | None:
        """What of this objective a run signature records (a checkpoint of another is refused), or None."""

    def __call__(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        features: torch.Tensor,
        target_logits: torch.Tensor | DraftVocabLogits,
        args: Any,
        training: bool,
    ) -> ObjectiveOutput: ...


def loss_positions(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The positions a draft's loss counts, as `shift_for_draft` aligns them (the first token has no previous feature)."""
    return (batch["loss_mask"] * batch["attention_mask"])[:, 1:].sum()


class EagleObjective:
    """EAGLE-1: the draft reads (feature_t, token_{t+1}) with noisy features and predicts feature_{t+1};
    `regression_weight * SmoothL1 + ce_weight * CE(target distribution, draft distribution)` ([`eagle_loss`])."""

    reads_draft_vocab_logits = True

    def loss_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss_positions(batch)

    def signature(self, args: Any) -> None:
        return None  # the objective's weights are among the signature's hyperparameters already

    def __call__(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        features: torch.Tensor,
        target_logits: torch.Tensor | DraftVocabLogits,
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
        # A reduced head's loss needs only its own logits: mapping them onto the target vocabulary (-inf elsewhere)
        # would make every softmax of the loss vocabulary-wide, most of a step's time on a 49k-token target.
        draft = unwrap_draft(model)
        reduced = getattr(draft, "draft_head", None) is not None
        outputs = model(input_ids=draft_ids, hidden_states=draft_features, attention_mask=attention_mask[:, 1:],
                        compute_logits=not reduced)
        logits = draft.draft_head(outputs.last_hidden_state) if reduced else outputs.logits
        terms = eagle_loss(
            outputs.last_hidden_state,
            logits,
            target_features,
            target_logits[:, 1:],
            loss_mask,
            regression_weight=args.regression_weight,
            ce_weight=args.ce_weight,
            draft_token_ids=draft.d2t if reduced else None,
        )
        if reduced and not training:  # what `forward` gives, for `compute_loss(..., return_outputs=True)`
            outputs.logits = draft.draft_logits_to_vocab(logits.detach())
        metrics = {"regression_loss": terms.regression_loss, "ce_loss": terms.ce_loss, "accuracy": terms.accuracy}
        return ObjectiveOutput(terms.loss, terms.num_tokens, metrics, outputs)


def unwrap_draft(model: nn.Module) -> nn.Module:
    """The draft model itself, under a DDP wrapper and a PEFT adapter."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def training_time_test_mask(length: int, step: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The attention of unrolled step `step` over the keys of steps `0 .. step` (each `length` long, in order):
    causal over step 0's, and only the same position's key of every later step. `[1, 1, length, (step + 1) * length]`
    boolean, True = attend.

    Position `t` of step `k` stands for the token `k` places after `t` at inference: it sees the prefix the target
    verified (step 0, fed the target's features) and its own chain of drafted states at `t` (steps 1 .. k).
    """
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    same_position = torch.eye(length, dtype=torch.bool, device=device)
    return torch.cat([causal] + [same_position] * step, dim=-1)[None, None]


def _shift_left(values: torch.Tensor) -> torch.Tensor:
    """`values` one position to the left along the sequence axis, zero-filled at the end (tokens read where nothing is
    predicted)."""
    return torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)


def unroll_training_time_test(
    model: nn.Module, input_ids: torch.Tensor, hidden_states: torch.Tensor, num_steps: int
) -> Iterator[Any]:
    """Yield the draft's outputs of each unrolled step `0 .. num_steps - 1` of the training-time test.

    `input_ids[:, t]` is the token after `t` and `hidden_states[:, t]` the target's features at `t` (what the draft
    reads at step 0, as [`shift_for_draft`] aligns them). Step `k` reads the previous step's `last_hidden_state` and
    the tokens shifted `k` places left, at position ids `t + k`, with [`training_time_test_mask`] over one KV cache.
    Position `t` of step `k` predicts the token `k + 1` places after `t + 1`; the last `k` positions of step `k` read
    padding and predict nothing.
    """
    batch, length = input_ids.shape
    positions = torch.arange(length, device=input_ids.device).expand(batch, length)
    cache = DynamicCache(config=unwrap_draft(model).config)
    for step in range(num_steps):
        outputs = model(
            input_ids=input_ids,
            hidden_states=hidden_states,
            attention_mask=training_time_test_mask(length, step, input_ids.device),
            position_ids=positions + step,
            past_key_values=cache,
            use_cache=True,
        )
        yield outputs
        hidden_states, input_ids = outputs.last_hidden_state, _shift_left(input_ids)


class TrainingTimeTestObjective:
    """EAGLE-3's training-time test: the draft unrolled `num_steps` times on its own outputs.

    Step 0 reads the target's fused features at `t` and token `t+1`, as at inference after a verification. Step `k`
    reads, at every position `t`, the draft's own `last_hidden_state` of step `k-1` at `t` and the data's token
    `t+1+k`, at position id `t+k`; its attention sees the causal prefix of step 0 and the same position's keys of steps
    `1 .. k` ([`training_time_test_mask`]). Each step's loss is the soft cross-entropy from the target's next-token
    distribution, renormalised over the draft vocabulary ([`draft_vocab_cross_entropy`]). The total is
    `sum_k step_weight**k * (summed loss of step k) / (loss positions of step 0)`: step k counts fewer positions (the
    last k have no token k places on), and dividing every step by the same count keeps the loss a sum over tokens,
    so micro-batches and processes of ragged rows add up to the loss of one big batch. (The references divide each
    step by its own count; the two differ by a factor of about `1 - k / length` on step k.) There is no feature
    regression and no input noise: the draft learns from its own errors instead.

    Args:
        num_steps: The unroll length; `None` reads `args.ttt_steps`.
        step_weight: The weight ratio between consecutive steps; `None` reads `args.ttt_step_weight`.

    Logged: `ce_loss` and `accuracy` of step 0, and `accuracy_step_k` for every later step (teacher-forced tokens, the
    draft's own features: about the acceptance rate at depth k given the earlier tokens were accepted).
    """

    reads_draft_vocab_logits = True

    def __init__(self, num_steps: int | None = None, step_weight: float | None = None) -> None:
        if num_steps is not None and num_steps < 1:
            raise EdaInputError(f"TrainingTimeTestObjective needs num_steps >= 1, got {num_steps}.")
        self.num_steps = num_steps
        self.step_weight = step_weight

    def settings(self, args: Any) -> tuple[int, float]:
        """`(num_steps, step_weight)`, from the objective or else from the training config."""
        steps = self.num_steps if self.num_steps is not None else args.ttt_steps
        weight = self.step_weight if self.step_weight is not None else args.ttt_step_weight
        return steps, weight

    def loss_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss_positions(batch)  # step 0's: every step's summed loss is divided by them (see the class docstring)

    def signature(self, args: Any) -> dict[str, Any]:
        steps, weight = self.settings(args)
        return {"name": "training_time_test", "steps": steps, "step_weight": weight}

    def __call__(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        features: torch.Tensor,
        target_logits: torch.Tensor | DraftVocabLogits,
        args: Any,
        training: bool,
    ) -> ObjectiveOutput:
        steps, weight = self.settings(args)
        draft = unwrap_draft(model)
        token_ids = draft.draft_token_ids
        input_ids, hidden_states, _, loss_mask = shift_for_draft(
            inputs["input_ids"], features, inputs["loss_mask"] * inputs["attention_mask"]
        )
        target_logits = target_logits[:, 1:]
        length = input_ids.shape[1]
        total = None
        metrics: dict[str, torch.Tensor] = {}
        first = outputs = None
        for step, outputs in enumerate(unroll_training_time_test(model, input_ids, hidden_states, steps)):
            # position t of step k predicts the token after t+1+k: the last k positions have none. Slices are views
            # (the target's logits may span its whole vocabulary: never copied per step)
            kept = length - step
            terms = draft_vocab_cross_entropy(
                outputs.logits[:, :kept], target_logits[:, step:], token_ids, loss_mask[:, step:]
            )
            total = terms.summed if total is None else total + weight**step * terms.summed
            if step == 0:
                first = terms
                metrics["ce_loss"], metrics["accuracy"] = terms.loss.detach(), terms.accuracy
            else:
                metrics[f"accuracy_step_{step}"] = terms.accuracy
        return ObjectiveOutput(total / max(first.num_tokens, 1), first.num_tokens, metrics, outputs)


def default_objective(draft: nn.Module) -> DraftObjective:
    """The objective a draft was designed for: training-time test for EAGLE-3, EAGLE-1's otherwise."""
    from ..models import Eagle3DraftModel

    if isinstance(unwrap_draft(draft), Eagle3DraftModel):
        return TrainingTimeTestObjective()
    return EagleObjective()
