"""The EAGLE training objective, shared by the stage-1 and stage-2 trainers (and anything else that fits a draft)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import EdaInputError


@dataclass
class EagleLossOutput:
    """Loss terms of one batch. `loss` is the weighted total; the others are detached for logging."""

    loss: torch.Tensor
    regression_loss: torch.Tensor
    ce_loss: torch.Tensor
    accuracy: torch.Tensor
    num_tokens: int


#: Feature-noise kinds of `add_feature_noise` (and of `EagleTrainingConfig.feature_noise_type`).
FEATURE_NOISE_TYPES = ("uniform", "gaussian", "length_scaled")


def add_feature_noise(
    features: torch.Tensor,
    noise_std: float,
    kind: str = "uniform",
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """EAGLE's input noise on the target features the draft reads (training only).

    Args:
        features (`torch.Tensor`): `[B, S, H]` features.
        noise_std (`float`): Scale of the noise; `0` disables it.
        kind (`str`, defaults to `"uniform"`):
            - `"uniform"`: zero-mean uniform noise with standard deviation `noise_std`.
            - `"gaussian"`: zero-mean Gaussian noise with standard deviation `noise_std`.
            - `"length_scaled"`: the EAGLE/EDA authors' training scripts: uniform on `[-a, a]` with
              `a = noise_std * 256 / L`, `L` the length of each sequence (their `(rand - 0.5) * std * 512 / L`, used
              with `std=0.2`), so short sequences get more noise.
        lengths (`torch.Tensor`, *optional*): `[B]` sequence lengths for `"length_scaled"`; defaults to `S`.
    """
    if noise_std <= 0:
        return features
    if kind == "gaussian":
        return features + torch.randn_like(features) * noise_std
    if kind == "uniform":
        half_width = noise_std * 3**0.5  # U(-a, a) has std a / sqrt(3)
    elif kind == "length_scaled":
        if lengths is None:
            lengths = torch.full((features.shape[0],), features.shape[1], device=features.device)
        half_width = (noise_std * 256.0 / lengths.to(features.dtype).clamp_min(1.0)).view(-1, 1, 1)
    else:
        raise EdaInputError(f"Unknown feature noise kind {kind!r}: use one of {list(FEATURE_NOISE_TYPES)}.")
    return features + (torch.rand_like(features) * 2 - 1) * half_width


def eagle_loss(
    draft_hidden: torch.Tensor,
    draft_logits: torch.Tensor,
    target_hidden: torch.Tensor,
    target_logits: torch.Tensor | DraftVocabLogits,
    loss_mask: torch.Tensor,
    regression_weight: float = 1.0,
    ce_weight: float = 0.1,
    draft_token_ids: torch.LongTensor | None = None,
) -> EagleLossOutput:
    """EAGLE objective on aligned positions: SmoothL1 on the next hidden state + cross-entropy to the target's
    next-token distribution (soft labels through the frozen head).

    All tensors are aligned so that position `i` of the draft output predicts position `i` of the targets:
    `draft_hidden`/`target_hidden` `[B, S, H]`, `draft_logits`/`target_logits` `[B, S, V]`, `loss_mask` `[B, S]`
    (1 where the position counts, e.g. response tokens). Returns the masked means and top-1 agreement (draft argmax
    == target argmax). `-inf` draft logits (tokens outside a reduced draft vocabulary) are left out of the
    cross-entropy, whose target distribution is renormalised over the tokens the draft scores. The same loss, without
    the target-vocabulary-wide tensors: a reduced head's own logits `[B, S, draft_vocab_size]` as `draft_logits` and
    its token ids as `draft_token_ids` (see [`draft_vocab_cross_entropy`]); then `target_logits` may be a
    [`DraftVocabLogits`].
    """
    mask = loss_mask.to(draft_hidden.dtype)
    num_tokens = int(mask.sum().item())
    denom = mask.sum().clamp_min(1.0)
    regression = F.smooth_l1_loss(draft_hidden.float(), target_hidden.float(), reduction="none").mean(-1)
    regression = (regression * mask).sum() / denom
    if draft_token_ids is not None:
        terms = draft_vocab_cross_entropy(draft_logits, target_logits, draft_token_ids, loss_mask)
        ce, accuracy = terms.loss, terms.accuracy
    elif isinstance(target_logits, DraftVocabLogits):
        raise EdaInputError("DraftVocabLogits need the draft's `draft_token_ids`: pass them to eagle_loss.")
    else:
        draft_logp = torch.log_softmax(draft_logits.float(), dim=-1)
        # A draft with a reduced vocabulary scores only its tokens (-inf elsewhere): the target distribution is
        # renormalised over them, as EAGLE-3 trains its reduced head.
        scored = torch.isfinite(draft_logp)
        target_probs = torch.softmax(target_logits.float().masked_fill(~scored, float("-inf")), dim=-1)
        ce = -(target_probs * draft_logp.masked_fill(~scored, 0.0)).sum(-1)
        ce = (ce * mask).sum() / denom
        agree = (draft_logits.argmax(-1) == target_logits.argmax(-1)).to(mask.dtype)
        accuracy = (agree * mask).sum() / denom
    loss = regression_weight * regression + ce_weight * ce
    return EagleLossOutput(loss, regression.detach(), ce.detach(), accuracy.detach(), num_tokens)


def shift_for_draft(
    input_ids: torch.LongTensor, features: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.LongTensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align a sequence for EAGLE training: the draft reads (feature_t, token_{t+1}) and predicts feature_{t+1}.

    Returns `(draft_input_ids, draft_input_features, target_features, loss_mask)`, each one position shorter. The
    target logits that go with `target_features` are `target_logits[:, 1:]`.
    """
    return input_ids[:, 1:], features[:, :-1], features[:, 1:], mask[:, 1:]


@dataclass
class DraftVocabLossOutput:
    """Soft cross-entropy of one unrolled step: `loss` is the mean over the counted positions, `summed` their sum
    (both keep their graph); `accuracy` is detached."""

    loss: torch.Tensor
    summed: torch.Tensor
    accuracy: torch.Tensor
    num_tokens: int


@dataclass(frozen=True)
class DraftVocabLogits:
    """The target's logits over a draft's vocabulary alone, with its top token over its whole vocabulary: all that a
    reduced head's loss and accuracy read, at a fraction of the cost of the vocabulary-wide logits (the trainer builds
    it from cached features that store the top token, see `eda_adapters.data.feature_cache`).

    Args:
        logits: `[B, S, draft_vocab_size]`, column `i` the target's logit of the draft's token `i`.
        top_token: `[B, S]`, the target's most likely token (a target id).
    """

    logits: torch.Tensor
    top_token: torch.Tensor

    def __getitem__(self, positions: Any) -> DraftVocabLogits:
        """The same positions of both (`[:, 1:]`); the vocabulary axis is never indexed."""
        return DraftVocabLogits(self.logits[positions], self.top_token[positions])

    @classmethod
    def from_head(cls, head: torch.nn.Linear, hidden_states: torch.Tensor, draft_token_ids: torch.LongTensor,
                  top_token: torch.Tensor) -> DraftVocabLogits:
        """The target's logits through its `head` rows of `draft_token_ids` alone, from its last `hidden_states`."""
        bias = None if head.bias is None else head.bias[draft_token_ids]
        return cls(F.linear(hidden_states, head.weight[draft_token_ids], bias), top_token)


def draft_vocab_cross_entropy(
    draft_logits: torch.Tensor,
    target_logits: torch.Tensor | DraftVocabLogits,
    draft_token_ids: torch.LongTensor,
    loss_mask: torch.Tensor,
) -> DraftVocabLossOutput:
    """EAGLE-3's loss on aligned positions: cross-entropy from the target's next-token distribution, renormalised over
    the draft vocabulary, to the draft's.

    Args:
        draft_logits: `[B, S, draft_vocab_size]`, the draft head's logits.
        target_logits: `[B, S, vocab_size]`, the target's logits at the same positions, or only their draft-vocabulary
            columns and top token ([`DraftVocabLogits`]).
        draft_token_ids: `[draft_vocab_size]`, the target id of each draft id.
        loss_mask: `[B, S]`, 1 where the position counts.

    `accuracy` is the share of counted positions where the draft's top token (as a target id) is the target's top token
    over its whole vocabulary: a token outside the draft vocabulary can never be accepted, so it counts as a miss.
    """
    mask = loss_mask.to(torch.float32)
    num_tokens = int(mask.sum().item())
    denom = mask.sum().clamp_min(1.0)
    if isinstance(target_logits, DraftVocabLogits):
        scored, target_top = target_logits.logits, target_logits.top_token
    else:
        scored, target_top = target_logits.index_select(-1, draft_token_ids), target_logits.argmax(-1)
    target_probs = torch.softmax(scored.float(), dim=-1)
    draft_logp = torch.log_softmax(draft_logits.float(), dim=-1)
    ce = -(target_probs * draft_logp).sum(-1)
    summed = (ce * mask).sum()
    agree = (draft_token_ids[draft_logits.argmax(-1)] == target_top).to(mask.dtype)
    accuracy = (agree * mask).sum() / denom
    return DraftVocabLossOutput(summed / denom, summed, accuracy.detach(), num_tokens)
